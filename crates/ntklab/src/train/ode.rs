//! Adaptive explicit Runge–Kutta integration of autonomous ODEs dy/dt = f(y): Dormand–Prince 5(4) with FSAL
//! (Dormand & Prince 1980; Hairer, Nørsett & Wanner, Solving ODEs I, II.4-5), local extrapolation (the 5th
//! order solution is propagated) and the standard step-size controller.
//!
//! Error estimate per step: err = sqrt(mean_i (e_i / (atol + rtol max(|y_i|, |y_new_i|)))^2) with e = h sum_j
//! (b_j - b*_j) k_j; the step is accepted when err <= 1, and the next h = h min(5, max(0.2, 0.9 err^(-1/5)))
//! (no growth right after a rejection). A stage whose f is not finite rejects the step with h <- h / 5.

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// Settings of the adaptive integrator.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct OdeOptions {
    /// Relative tolerance per component, > 0.
    pub rtol: f64,
    /// Absolute tolerance per component, >= 0.
    pub atol: f64,
    /// First trial step (None: Hairer's starting-step heuristic).
    pub h0: Option<f64>,
    /// Largest step allowed (None: unbounded).
    pub h_max: Option<f64>,
    /// Most steps (accepted + rejected) per [`Dopri5::integrate`] call.
    pub max_steps: u64,
}

impl Default for OdeOptions {
    fn default() -> Self {
        OdeOptions { rtol: 1e-6, atol: 1e-9, h0: None, h_max: None, max_steps: 1_000_000 }
    }
}

impl OdeOptions {
    /// Checks tolerances and bounds.
    pub fn validate(&self) -> Result<()> {
        if !(self.rtol > 0.0 && self.rtol.is_finite()) {
            return Err(Error::Config(format!("ODE rtol must be finite and > 0, got {}", self.rtol)));
        }
        if !(self.atol >= 0.0 && self.atol.is_finite()) {
            return Err(Error::Config(format!("ODE atol must be finite and >= 0, got {}", self.atol)));
        }
        for (name, v) in [("h0", self.h0), ("h_max", self.h_max)] {
            if let Some(v) = v {
                if !(v > 0.0 && v.is_finite()) {
                    return Err(Error::Config(format!("ODE {name} must be finite and > 0, got {v}")));
                }
            }
        }
        if self.max_steps == 0 {
            return Err(Error::Config("ODE max_steps must be at least 1".into()));
        }
        Ok(())
    }
}

/// Step statistics of an integration so far.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct OdeStats {
    /// Accepted steps.
    pub accepted: u64,
    /// Rejected steps (error too large or a non-finite stage).
    pub rejected: u64,
    /// Evaluations of f.
    pub evals: u64,
    /// Size of the last accepted step (0 before the first).
    pub last_dt: f64,
    /// Smallest accepted step (0 before the first).
    pub min_dt: f64,
    /// Largest accepted step.
    pub max_dt: f64,
}

// Dormand–Prince 5(4) tableau (nodes c = 0, 1/5, 3/10, 4/5, 8/9, 1, 1 are unused: the system is autonomous).
const A2: [f64; 1] = [1.0 / 5.0];
const A3: [f64; 2] = [3.0 / 40.0, 9.0 / 40.0];
const A4: [f64; 3] = [44.0 / 45.0, -56.0 / 15.0, 32.0 / 9.0];
const A5: [f64; 4] = [19372.0 / 6561.0, -25360.0 / 2187.0, 64448.0 / 6561.0, -212.0 / 729.0];
const A6: [f64; 5] = [9017.0 / 3168.0, -355.0 / 33.0, 46732.0 / 5247.0, 49.0 / 176.0, -5103.0 / 18656.0];
/// 5th-order weights (= the last stage's row: FSAL).
const B: [f64; 6] = [35.0 / 384.0, 0.0, 500.0 / 1113.0, 125.0 / 192.0, -2187.0 / 6784.0, 11.0 / 84.0];
/// b - b* (5th minus embedded 4th order), stages 1..7.
const E: [f64; 7] =
    [71.0 / 57600.0, 0.0, -71.0 / 16695.0, 71.0 / 1920.0, -17253.0 / 339200.0, 22.0 / 525.0, -1.0 / 40.0];

/// Dormand–Prince 5(4) state: the step size to try next and the cached f(y) (first-same-as-last).
#[derive(Debug, Clone)]
pub struct Dopri5 {
    opts: OdeOptions,
    h: Option<f64>,
    k1: Option<Vec<f64>>,
    stats: OdeStats,
}

fn finite(v: &[f64]) -> bool {
    v.iter().all(|x| x.is_finite())
}

impl Dopri5 {
    /// A fresh integrator (validates the options).
    pub fn new(opts: OdeOptions) -> Result<Dopri5> {
        opts.validate()?;
        Ok(Dopri5 { opts, h: opts.h0, k1: None, stats: OdeStats::default() })
    }

    /// Statistics so far.
    pub fn stats(&self) -> OdeStats {
        self.stats
    }

    /// Forget the cached f(y) (call after changing y outside [`Dopri5::integrate`]).
    pub fn reset_cache(&mut self) {
        self.k1 = None;
    }

    /// Hairer's starting step (Solving ODEs I, II.4): h = min(100 h0, h1) from first-derivative scales.
    fn initial_step(&self, f: &mut impl FnMut(&[f64], &mut [f64]) -> bool, y: &[f64], k1: &[f64]) -> f64 {
        let sc: Vec<f64> = y.iter().map(|v| self.opts.atol + self.opts.rtol * v.abs()).collect();
        let rms =
            |v: &[f64]| (v.iter().zip(&sc).map(|(a, s)| (a / s) * (a / s)).sum::<f64>() / v.len().max(1) as f64).sqrt();
        let (d0, d1) = (rms(y), rms(k1));
        let h0 = if d0 < 1e-5 || d1 < 1e-5 { 1e-6 } else { 0.01 * d0 / d1 };
        let y1: Vec<f64> = y.iter().zip(k1).map(|(a, b)| a + h0 * b).collect();
        let mut k2 = vec![0.0; y.len()];
        if !f(&y1, &mut k2) || !finite(&k2) {
            return h0;
        }
        let diff: Vec<f64> = k2.iter().zip(k1).map(|(a, b)| a - b).collect();
        let d2 = rms(&diff) / h0;
        let h1 = if d1.max(d2) <= 1e-15 { (h0 * 1e-3).max(1e-6) } else { (0.01 / d1.max(d2)).powf(0.2) };
        (100.0 * h0).min(h1)
    }

    /// Advances y from `*t` to `t_end` (> `*t`), landing exactly on `t_end`. `f(y, out)` writes dy/dt and returns
    /// false when it cannot be evaluated. Errors (y is then the last accepted state, `*t` its time): f fails or is
    /// non-finite at an accepted state, the step size underflows, or `max_steps` is exceeded.
    pub fn integrate(
        &mut self,
        f: &mut impl FnMut(&[f64], &mut [f64]) -> bool,
        t: &mut f64,
        y: &mut [f64],
        t_end: f64,
    ) -> Result<()> {
        let n = y.len();
        if !(t_end.is_finite() && t_end >= *t) {
            return Err(Error::InvalidInput(format!("ODE end time {t_end} must be finite and >= start time {}", *t)));
        }
        if t_end == *t {
            return Ok(());
        }
        let mut k1 = match self.k1.take() {
            Some(k) if k.len() == n => k,
            _ => {
                let mut k = vec![0.0; n];
                self.stats.evals += 1;
                if !f(y, &mut k) || !finite(&k) {
                    return Err(Error::Numerical(format!("the vector field is not finite at t = {}", *t)));
                }
                k
            }
        };
        let mut h = match self.h {
            Some(h) => h,
            None => {
                self.stats.evals += 1;
                self.initial_step(f, y, &k1)
            }
        };
        if let Some(hm) = self.opts.h_max {
            h = h.min(hm);
        }
        let mut ks: Vec<Vec<f64>> = (0..6).map(|_| vec![0.0; n]).collect();
        let mut ytmp = vec![0.0; n];
        let mut ynew = vec![0.0; n];
        let mut rejected_last = false;
        let mut steps = 0u64;
        while *t < t_end {
            steps += 1;
            if steps > self.opts.max_steps {
                self.k1 = Some(k1);
                return Err(Error::Numerical(format!(
                    "ODE integrator exceeded {} steps before t = {t_end} (reached t = {})",
                    self.opts.max_steps, *t
                )));
            }
            let remaining = t_end - *t;
            // Stiffness: once the step size has settled (after 100 steps), a projected step count beyond the budget
            // means the run cannot finish; say so now instead of grinding through the budget.
            if steps > 100 && remaining / h > (self.opts.max_steps - steps) as f64 {
                self.k1 = Some(k1);
                return Err(Error::Numerical(format!(
                    "stiff: at t = {} the stable step size is {h:.3e}, so reaching t = {t_end} would take about {:.2e} \
                     more steps (budget {}); the gradient flow is stiff on this time scale: lower lr x steps, or use \
                     discrete GD (kind = \"gd\")",
                    *t,
                    remaining / h,
                    self.opts.max_steps
                )));
            }
            let last = h >= remaining * (1.0 - 1e-12);
            let hs = if last { remaining } else { h };
            if hs <= 1e-14 * t.abs().max(1.0) && !last {
                self.k1 = Some(k1);
                return Err(Error::Numerical(format!("ODE step size underflow ({hs:e}) at t = {}", *t)));
            }
            // Stages 2..7 into ks[0..6]; ks[5] is f(y_new) (FSAL).
            let rows: [&[f64]; 5] = [&A2, &A3, &A4, &A5, &A6];
            let mut ok = true;
            for (s, a) in rows.iter().enumerate() {
                for i in 0..n {
                    let mut acc = a[0] * k1[i];
                    for (j, aj) in a.iter().enumerate().skip(1) {
                        acc += aj * ks[j - 1][i];
                    }
                    ytmp[i] = y[i] + hs * acc;
                }
                self.stats.evals += 1;
                if !f(&ytmp, &mut ks[s]) || !finite(&ks[s]) {
                    ok = false;
                    break;
                }
            }
            let mut err = f64::INFINITY;
            if ok {
                for i in 0..n {
                    let mut acc = B[0] * k1[i];
                    for j in 1..6 {
                        acc += B[j] * ks[j - 1][i];
                    }
                    ynew[i] = y[i] + hs * acc;
                }
                self.stats.evals += 1;
                if !f(&ynew, &mut ks[5]) || !finite(&ks[5]) {
                    ok = false;
                } else {
                    let mut sum = 0.0;
                    for i in 0..n {
                        let mut e = E[0] * k1[i];
                        for j in 1..7 {
                            e += E[j] * ks[j - 1][i];
                        }
                        let sc = self.opts.atol + self.opts.rtol * y[i].abs().max(ynew[i].abs());
                        let r = hs * e / sc;
                        sum += r * r;
                    }
                    err = (sum / n.max(1) as f64).sqrt();
                    if !err.is_finite() {
                        ok = false;
                    }
                }
            }
            if ok && err <= 1.0 {
                y.copy_from_slice(&ynew);
                std::mem::swap(&mut k1, &mut ks[5]);
                *t = if last { t_end } else { *t + hs };
                let st = &mut self.stats;
                st.accepted += 1;
                st.last_dt = hs;
                st.min_dt = if st.accepted == 1 { hs } else { st.min_dt.min(hs) };
                st.max_dt = st.max_dt.max(hs);
                let mut fac = if err == 0.0 { 5.0 } else { (0.9 * err.powf(-0.2)).clamp(0.2, 5.0) };
                if rejected_last {
                    fac = fac.min(1.0);
                }
                // A final step shortened to land on t_end says nothing about the next step size: keep h.
                if !(last && hs < h) {
                    h = hs * fac;
                }
                rejected_last = false;
            } else {
                self.stats.rejected += 1;
                let fac = if ok { (0.9 * err.powf(-0.2)).clamp(0.2, 1.0) } else { 0.2 };
                h = hs * fac;
                rejected_last = true;
            }
            if let Some(hm) = self.opts.h_max {
                h = h.min(hm);
            }
        }
        self.h = Some(h);
        self.k1 = Some(k1);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_closed_forms_within_tolerance() {
        // y' = A y with A = [[-1, 2], [-2, -1]]: y(t) = e^{-t} R(2t) y0 (rotation by -2t).
        let mut f = |y: &[f64], out: &mut [f64]| {
            out[0] = -y[0] + 2.0 * y[1];
            out[1] = -2.0 * y[0] - y[1];
            true
        };
        for rtol in [1e-6, 1e-9] {
            let mut ode = Dopri5::new(OdeOptions { rtol, atol: rtol * 1e-3, ..Default::default() }).unwrap();
            let mut y = vec![1.0, 0.5];
            let mut t = 0.0;
            for &te in &[0.3, 1.0, 2.5] {
                ode.integrate(&mut f, &mut t, &mut y, te).unwrap();
                assert_eq!(t, te);
                let (c, s) = ((2.0 * te).cos(), (2.0 * te).sin());
                let want = [(-te).exp() * (c * 1.0 + s * 0.5), (-te).exp() * (-s * 1.0 + c * 0.5)];
                let e = ((y[0] - want[0]).powi(2) + (y[1] - want[1]).powi(2)).sqrt();
                // Global error of a tolerance-proportional method: a small multiple of rtol over O(1) time.
                assert!(e < 50.0 * rtol, "rtol {rtol}: error {e:e} at t = {te}");
            }
            let st = ode.stats();
            assert!(st.accepted > 0 && st.min_dt > 0.0 && st.max_dt >= st.min_dt);
        }
    }

    #[test]
    fn stiff_and_failing_fields() {
        // y' = -1000 y: explicit RK stays stable by shrinking h to about 3.3/1000; the solution decays.
        let mut f = |y: &[f64], out: &mut [f64]| {
            out[0] = -1000.0 * y[0];
            true
        };
        let mut ode = Dopri5::new(OdeOptions::default()).unwrap();
        let (mut t, mut y) = (0.0, vec![1.0]);
        ode.integrate(&mut f, &mut t, &mut y, 1.0).unwrap();
        assert!(y[0].abs() < 1e-6 && ode.stats().max_dt < 0.01);
        // Blow-up y' = y^2, y(0) = 1 at t = 1: the step size underflows (or steps run out) and it errors.
        let mut g = |y: &[f64], out: &mut [f64]| {
            out[0] = y[0] * y[0];
            true
        };
        let mut ode = Dopri5::new(OdeOptions { max_steps: 100_000, ..Default::default() }).unwrap();
        let (mut t, mut y) = (0.0, vec![1.0]);
        assert!(ode.integrate(&mut g, &mut t, &mut y, 2.0).is_err());
        // It stops near the blow-up time 1 (the stiffness projection fires once the step size has collapsed)
        // holding the last accepted, finite, large state.
        assert!((t - 1.0).abs() < 1e-4 && y[0].is_finite() && y[0] > 1e3, "t = {t}, y = {}", y[0]);
        assert!(Dopri5::new(OdeOptions { rtol: 0.0, ..Default::default() }).is_err());
    }

    #[test]
    fn a_stiff_flow_that_cannot_finish_is_reported_at_once() {
        // y' = -1e6 y up to t = 1e3 needs ~1e9 steps of h ~ 3e-6: past the 1e6 budget, so after the first 100
        // steps the integrator stops with a "stiff" error instead of taking a million of them.
        let mut evals = 0u64;
        let mut f = |y: &[f64], out: &mut [f64]| {
            evals += 1;
            out[0] = -1e6 * y[0];
            true
        };
        let mut ode = Dopri5::new(OdeOptions::default()).unwrap();
        let (mut t, mut y) = (0.0, vec![1.0]);
        let e = ode.integrate(&mut f, &mut t, &mut y, 1e3).unwrap_err().to_string();
        assert!(e.contains("stiff") && e.contains("budget"), "{e}");
        assert!(evals < 2_000, "{evals} evaluations before giving up");
    }
}
