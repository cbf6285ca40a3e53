//! Named reproductions of results from the literature, each a [`Reproduction`] in the [`REGISTRY`]: a typed
//! config (with `full()` and `quick()` instances, overridable key by key from TOML) -> `run(&config, ctx)` ->
//! a typed summary -> a [`crate::report::Report`] (HTML page, Markdown, plots). `ntklab run <name>` drives any
//! of them through [`Experiment`]; [`Context`] carries progress and the checkpoint that makes runs resumable.
//!
//! * [`linearity`]: transition to linearity (Liu, Zhu & Belkin 2020): the spectral norm of the Hessian of the
//!   network output and the relative NTK change after training both scale like width^(-1/2).
//! * [`linearity_dag`]: the same for networks on directed acyclic graphs (Zhu, Liu & Belkin 2022): the Hessian
//!   norm scales like (minimum in-degree)^(-1/2), and a bottleneck neuron of fixed in-degree stops it.
//! * [`nngp_prior`]: random networks of growing width converge to the NNGP Gaussian process (Neal 1994; Lee et
//!   al. 2018): covariance error and excess kurtosis ~ 1/width.
//! * [`pl`]: the PL* condition (Liu, Zhu & Belkin 2022): lambda_min of the NTK along GD stays away from 0 for
//!   wide networks, which converge at least as fast as (1 - eta mu)^t; it is 0 for under-parameterized ones.
//! * [`catapult`]: the large learning-rate phases of GD (Lewkowycz et al. 2020): lazy below eta = 2/lambda0,
//!   catapult (loss spike, then convergence to a flatter region) above it, divergence beyond eta_max.
//!
//! Progress goes through [`Context::progress`] ([`Context::quiet`] for none). All randomness comes from the
//! config's seed through [`crate::data::synthetic::derive_seed`], so results are the same on every machine and
//! thread count.

pub mod catapult;
pub mod catapult_uv;
pub mod context;
pub mod depth;
mod depth_report;
pub mod double_descent;
mod double_descent_report;
pub mod eos;
mod eos_report;
pub mod lazy;
mod lazy_report;
pub mod lazy_scaling;
pub mod linearity;
pub mod linearity_dag;
pub mod nngp_prior;
pub mod pl;
pub mod registry;
pub mod spectral_bias;
mod spectral_bias_report;

pub use context::{bytes_hash, content_hash, Context};
pub use registry::{find, Executed, Experiment, Prepared, Reproduction, Typed, REGISTRY};

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// A least-squares power law y = prefactor * x^exponent, fitted as a line through (ln x, ln y).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PowerLawFit {
    /// The fitted exponent (the log-log slope).
    #[serde(with = "crate::data::json_f64")]
    pub exponent: f64,
    /// The prefactor exp(intercept).
    #[serde(with = "crate::data::json_f64")]
    pub prefactor: f64,
    /// Coefficient of determination of the log-log fit (1: a perfect line).
    #[serde(with = "crate::data::json_f64")]
    pub r2: f64,
    /// Number of points used (those with x > 0, y > 0, both finite).
    pub points: usize,
}

impl PowerLawFit {
    /// The fitted value prefactor * x^exponent.
    pub fn eval(&self, x: f64) -> f64 {
        self.prefactor * x.powf(self.exponent)
    }
}

/// Least-squares fit of ln y = ln c + s ln x over the points with x, y > 0 and finite (Errors: fewer than two
/// such points, or all x equal).
pub fn fit_power_law(x: &[f64], y: &[f64]) -> Result<PowerLawFit> {
    if x.len() != y.len() {
        return Err(Error::Shape(format!("power-law fit: {} x values but {} y values", x.len(), y.len())));
    }
    let pts: Vec<(f64, f64)> = x
        .iter()
        .zip(y)
        .filter(|(a, b)| **a > 0.0 && **b > 0.0 && a.is_finite() && b.is_finite())
        .map(|(a, b)| (a.ln(), b.ln()))
        .collect();
    let n = pts.len();
    if n < 2 {
        return Err(Error::InvalidInput(format!("power-law fit needs at least two positive finite points, got {n}")));
    }
    let mx = pts.iter().map(|p| p.0).sum::<f64>() / n as f64;
    let my = pts.iter().map(|p| p.1).sum::<f64>() / n as f64;
    let sxx: f64 = pts.iter().map(|p| (p.0 - mx) * (p.0 - mx)).sum();
    let sxy: f64 = pts.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    let syy: f64 = pts.iter().map(|p| (p.1 - my) * (p.1 - my)).sum();
    if sxx <= 0.0 {
        return Err(Error::InvalidInput("power-law fit: all x values are equal".into()));
    }
    let slope = sxy / sxx;
    let intercept = my - slope * mx;
    let r2 = if syy > 0.0 { (sxy * sxy) / (sxx * syy) } else { 1.0 };
    Ok(PowerLawFit { exponent: slope, prefactor: intercept.exp(), r2, points: n })
}

/// Test helper: every claim-versus-measurement row of a report agrees (the message names the row).
#[cfg(test)]
pub(crate) fn assert_all_agree(checks: &[crate::report::Comparison]) {
    for c in checks {
        assert_eq!(c.agrees, Some(true), "{}: expected {}, measured {}", c.quantity, c.expected, c.measured);
    }
}

/// Mean and sample standard deviation of the finite values (NaN, 0 when there are none).
pub(crate) fn mean_std(v: &[f64]) -> (f64, f64) {
    let f: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    if f.is_empty() {
        return (f64::NAN, 0.0);
    }
    let n = f.len() as f64;
    let m = f.iter().sum::<f64>() / n;
    let s = if f.len() > 1 { (f.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / (n - 1.0)).sqrt() } else { 0.0 };
    (m, s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn power_law_fit_recovers_an_exact_power_law() {
        let x = [64.0, 128.0, 256.0, 512.0];
        let y: Vec<f64> = x.iter().map(|v: &f64| 3.0 * v.powf(-0.5)).collect();
        let f = fit_power_law(&x, &y).unwrap();
        assert!((f.exponent + 0.5).abs() < 1e-12);
        assert!((f.prefactor - 3.0).abs() < 1e-10);
        assert!((f.r2 - 1.0).abs() < 1e-12);
        assert!((f.eval(1024.0) - 3.0 / 32.0).abs() < 1e-12);
        // Non-positive and non-finite points are skipped; too few points is an error.
        let g = fit_power_law(&[1.0, 2.0, 4.0, 8.0], &[1.0, f64::NAN, 0.25, -1.0]).unwrap();
        assert_eq!(g.points, 2);
        assert!((g.exponent + 1.0).abs() < 1e-12);
        assert!(fit_power_law(&[1.0], &[1.0]).is_err());
        assert!(fit_power_law(&[2.0, 2.0], &[1.0, 3.0]).is_err());
    }
}
