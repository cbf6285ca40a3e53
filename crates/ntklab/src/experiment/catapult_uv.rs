//! Extensions of `ntklab run catapult`: the solvable uv model of Lewkowycz et al. (2020), where the maximal
//! learning rate is exactly eta_max = 4 / lambda0, and ReLU networks of several depths, whose eta_max lambda0 the
//! paper finds larger than 4.
//!
//! uv model: f = v . u / sqrt(n) with u, v in R^n, one example (x = 1) with target y = 0, L = f^2 / 2. Its NTK is
//! lambda = (|u|^2 + |v|^2) / n and GD gives, exactly (eq. (3) of the paper with y = 0),
//! f' = f (1 - eta lambda + eta^2 f^2 / n), lambda' = lambda + (eta f^2 / n) (eta lambda - 4):
//! for eta lambda0 < 2 the run is lazy; for 2 < eta lambda0 < 4, |f| first grows, which lowers lambda until
//! eta lambda < 2 (the catapult); for eta lambda0 > 4, lambda grows with |f| and the run diverges. The simulation
//! below runs GD on (u, v) themselves (not on the reduced equations), so the bisection checks the prediction.

use serde::{Deserialize, Serialize};

use super::catapult::{classify, Phase};
use super::Context;
use crate::data::synthetic::{derive_seed, rng};
use crate::Result;
use rand_distr::{Distribution, StandardNormal};

/// One uv-model GD run at eta = factor * 2 / lambda0.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UvRun {
    /// c in eta = c * 2 / lambda0.
    #[serde(with = "crate::data::json_f64")]
    pub lr_factor: f64,
    /// The phase (read off the loss curve as for the networks).
    pub phase: Phase,
    /// max_t L_t / L_0.
    #[serde(with = "crate::data::json_f64")]
    pub peak_ratio: f64,
    /// lambda at the end over lambda0 (NaN after divergence).
    #[serde(with = "crate::data::json_f64")]
    pub lambda_ratio: f64,
}

/// The uv model's bisection for eta_max.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UvResult {
    /// Width n.
    pub width: usize,
    /// lambda0 = (|u0|^2 + |v0|^2) / n.
    #[serde(with = "crate::data::json_f64")]
    pub lambda0: f64,
    /// Swept and bisected runs, in the order run.
    pub runs: Vec<UvRun>,
    /// Largest converging factor c below the first failing one (eta = c * 2 / lambda0).
    #[serde(default, with = "crate::data::json_f64::opt")]
    pub max_converging_factor: Option<f64>,
    /// Smallest failing factor above it.
    #[serde(default, with = "crate::data::json_f64::opt")]
    pub first_failing_factor: Option<f64>,
}

impl UvResult {
    /// eta_max * lambda0 from the bracket's midpoint (prediction: 4).
    pub fn eta_max_lambda0(&self) -> Option<f64> {
        bracket_mid(self.max_converging_factor, self.first_failing_factor).map(|c| 2.0 * c)
    }
}

/// The midpoint of a bracket [lo, hi] of factors when both ends are known, else the known lower end.
pub fn bracket_mid(lo: Option<f64>, hi: Option<f64>) -> Option<f64> {
    match (lo, hi) {
        (Some(a), Some(b)) => Some(0.5 * (a + b)),
        (Some(a), None) => Some(a),
        _ => None,
    }
}

/// GD on the uv model from (u0, v0) at eta = factor * 2 / lambda0 for `steps` steps.
fn uv_run(u0: &[f64], v0: &[f64], steps: u64, factor: f64, divergence: f64) -> UvRun {
    let n = u0.len() as f64;
    let sq = |a: &[f64]| a.iter().map(|x| x * x).sum::<f64>();
    let lambda0 = (sq(u0) + sq(v0)) / n;
    let eta = factor * 2.0 / lambda0;
    let (mut u, mut v) = (u0.to_vec(), v0.to_vec());
    let f_of = |u: &[f64], v: &[f64]| u.iter().zip(v).map(|(a, b)| a * b).sum::<f64>() / n.sqrt();
    let mut losses = Vec::with_capacity(steps as usize + 1);
    let mut diverged = false;
    for _ in 0..=steps {
        let f = f_of(&u, &v);
        let l = 0.5 * f * f;
        losses.push(l);
        if !l.is_finite() || l > divergence * losses[0] {
            diverged = true;
            break;
        }
        // dL/du = f v / sqrt(n), dL/dv = f u / sqrt(n), applied simultaneously.
        let g = eta * f / n.sqrt();
        for (a, b) in u.iter_mut().zip(v.iter_mut()) {
            let (ua, vb) = (*a, *b);
            *a = ua - g * vb;
            *b = vb - g * ua;
        }
    }
    let peak = losses.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    UvRun {
        lr_factor: factor,
        phase: classify(&losses, diverged),
        peak_ratio: peak / losses[0],
        lambda_ratio: if diverged { f64::NAN } else { (sq(&u) + sq(&v)) / n / lambda0 },
    }
}

/// Sweep `factors` (sorted) and bisect `refine` times between the last converging and the first failing one;
/// `run(c)` performs one run and says whether it converged. Returns (runs in order, lo, hi).
pub fn sweep_and_bisect<R>(
    factors: &[f64],
    refine: usize,
    mut run: impl FnMut(f64) -> Result<R>,
    converged: impl Fn(&R) -> bool,
) -> Result<(Vec<R>, Option<f64>, Option<f64>)> {
    let mut runs = Vec::new();
    let (mut lo, mut hi) = (None, None);
    for &c in factors {
        let r = run(c)?;
        let ok = converged(&r);
        runs.push(r);
        if ok {
            lo = Some(c);
        } else {
            hi = Some(c);
            break;
        }
    }
    for _ in 0..refine {
        let (Some(a), Some(b)) = (lo, hi) else { break };
        let mid = 0.5 * (a + b);
        let r = run(mid)?;
        if converged(&r) {
            lo = Some(mid);
        } else {
            hi = Some(mid);
        }
        runs.push(r);
    }
    Ok((runs, lo, hi))
}

/// Factors swept before the uv bisection (around the predicted edge c = 2, never exactly on it).
pub const UV_FACTORS: [f64; 6] = [0.5, 1.5, 1.9, 2.1, 2.5, 3.0];

/// The uv model at width n: N(0, 1) initialization from `seed`, the sweep and `refine` bisection steps, each run
/// a checkpointed step of `ctx`.
pub fn run_uv(n: usize, steps: u64, refine: usize, divergence: f64, seed: u64, ctx: &mut Context) -> Result<UvResult> {
    let mut r = rng(derive_seed(seed, 7));
    let mut draw = || (0..n).map(|_| StandardNormal.sample(&mut r)).collect::<Vec<f64>>();
    let (u0, v0) = (draw(), draw());
    let lambda0 = (u0.iter().chain(&v0).map(|x| x * x).sum::<f64>()) / n as f64;
    let (runs, lo, hi) = sweep_and_bisect(
        &UV_FACTORS,
        refine,
        |c| ctx.step(&format!("uv lr_factor={c}"), || Ok(uv_run(&u0, &v0, steps, c, divergence))),
        |r: &UvRun| r.phase.converged(),
    )?;
    Ok(UvResult { width: n, lambda0, runs, max_converging_factor: lo, first_failing_factor: hi })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_uv_model_has_eta_max_four_over_lambda0() {
        // The bisection brackets eta_max lambda0 = 4 to its own precision: after 12 halvings of [1.9, 2.1] the
        // bracket is 0.2 / 4096 wide in c, i.e. 1e-4 in eta lambda0.
        let res = run_uv(500, 400, 12, 1e10, 3, &mut Context::quiet()).unwrap();
        let (lo, hi) = (res.max_converging_factor.unwrap(), res.first_failing_factor.unwrap());
        // c = 2 is the marginal case itself (lambda stays put to rounding): either end may land on it.
        assert!(lo <= 2.0 && 2.0 <= hi, "bracket [{lo}, {hi}] in units of 2/lambda0");
        assert!(hi - lo <= 0.2 / 4096.0 * 1.0001, "bracket width {}", hi - lo);
        assert!((res.eta_max_lambda0().unwrap() - 4.0).abs() < 1e-4);
        // Below 2/lambda0 lazy; between 2 and 4 over lambda0 a catapult that ends with eta lambda < 2.
        let by = |c: f64| res.runs.iter().find(|r| r.lr_factor == c).unwrap();
        assert_eq!(by(0.5).phase, Phase::Lazy);
        let cat = by(1.5);
        assert_eq!(cat.phase, Phase::Catapult);
        assert!(cat.lambda_ratio < 1.0 / 1.5, "lambda_T / lambda0 = {}", cat.lambda_ratio);
        assert_eq!(by(2.1).phase, Phase::Divergent);
    }
}
