//! Per-record diagnostics of a training run and the [`Record`] they fill (one JSON object per line).
//!
//! At a record the network is evaluated on the full training set (loss, gradient, outputs); each optional probe
//! then adds its value:
//! * `accuracy`: fraction of correct signs (k = 1: sign f = sign y) or argmaxes (k > 1), train and test.
//! * `ntk-max`, `ntk-min`: extreme eigenvalues of the empirical NTK Theta = J J^T on the first `ntk_subset`
//!   training points, all k outputs ((m k) x (m k), [`crate::net::NtkOutputs::Full`]). For MSE the linearized
//!   GD edge is eta = 2N / lambda_max(Theta) (ARCHITECTURE.md).
//! * `ntk-change`: ||Theta_t - Theta_0||_F / ||Theta_0||_F on the same points.
//! * `sharpness`: the `hessian_top_k` largest algebraic eigenvalues of the training-loss Hessian, by Lanczos on
//!   exact Hessian-vector products ([`crate::net::LossCurvature`]); compare the first with 2 / eta
//!   (edge of stability, Cohen et al. 2021).
//! * `pl`: the Polyak–Łojasiewicz ratio ||grad L||^2 / (2 L) (>= mu for all t under a mu-PL condition;
//!   Liu, Zhu & Belkin 2022).
//! * `weight-change`: ||w_t - w_0|| / ||w_0|| (absolute when w_0 = 0).
//! * `linearized`: the tangent model f_lin(x; w) = f(x; w_0) + J(w_0)(w - w_0) trained alongside with the same
//!   optimizer, batches and rates; reports its loss and ||f_t - f_lin,t||_F / sqrt(N) on train (and test) points
//!   (Lee et al. 2019; Chizat, Oyallon & Bach 2019).

use std::collections::BTreeSet;
use std::fmt;

use faer::{Mat, MatRef};
use serde::{Deserialize, Serialize};

use super::ode::OdeStats;
use crate::{Error, Result};

/// One optional diagnostic (the loss and gradient norm are always recorded).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Probe {
    /// Train (and test) accuracy.
    Accuracy,
    /// Largest eigenvalue of the empirical NTK.
    NtkMax,
    /// Smallest eigenvalue of the empirical NTK.
    NtkMin,
    /// Relative change of the empirical NTK from initialization.
    NtkChange,
    /// Top-k Hessian eigenvalues.
    Sharpness,
    /// Polyak–Łojasiewicz ratio ||grad L||^2 / (2L).
    Pl,
    /// Relative weight displacement.
    WeightChange,
    /// Distance to the linearized (tangent) model trained alongside.
    Linearized,
}

impl Probe {
    /// Every probe.
    pub const ALL: [Probe; 8] = [
        Probe::Accuracy,
        Probe::NtkMax,
        Probe::NtkMin,
        Probe::NtkChange,
        Probe::Sharpness,
        Probe::Pl,
        Probe::WeightChange,
        Probe::Linearized,
    ];

    /// Names accepted by [`Probe::parse`] (plus `all`).
    pub const NAMES: &'static str = "accuracy, ntk-max, ntk-min, ntk-change, sharpness, pl, weight-change, linearized";

    /// Parse a probe name (`_` and `-` are interchangeable).
    pub fn parse(s: &str) -> Result<Probe> {
        match s.trim().to_lowercase().replace('_', "-").as_str() {
            "accuracy" | "acc" => Ok(Probe::Accuracy),
            "ntk-max" | "ntk-top" => Ok(Probe::NtkMax),
            "ntk-min" => Ok(Probe::NtkMin),
            "ntk-change" => Ok(Probe::NtkChange),
            "sharpness" | "hessian" => Ok(Probe::Sharpness),
            "pl" | "pl-ratio" => Ok(Probe::Pl),
            "weight-change" | "weights" => Ok(Probe::WeightChange),
            "linearized" | "linearised" | "lin" => Ok(Probe::Linearized),
            other => Err(Error::parse(other, format!("unknown probe (expected `all` or some of {})", Probe::NAMES))),
        }
    }
}

impl fmt::Display for Probe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Probe::Accuracy => "accuracy",
            Probe::NtkMax => "ntk-max",
            Probe::NtkMin => "ntk-min",
            Probe::NtkChange => "ntk-change",
            Probe::Sharpness => "sharpness",
            Probe::Pl => "pl",
            Probe::WeightChange => "weight-change",
            Probe::Linearized => "linearized",
        })
    }
}

/// Which diagnostics to record, and how often.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProbeConfig {
    /// Record every `every` steps (>= 1), plus the last step.
    pub every: u64,
    /// Enabled probes.
    pub probes: BTreeSet<Probe>,
    /// NTK probes use the first `ntk_subset` training points (None: all).
    pub ntk_subset: Option<usize>,
    /// Number of top Hessian eigenvalues for `sharpness` (>= 1).
    pub hessian_top_k: usize,
    /// Lanczos iterations (Hessian-vector products) per sharpness probe.
    pub lanczos_max_iter: usize,
    /// Lanczos relative residual tolerance.
    #[serde(with = "crate::data::json_f64")]
    pub lanczos_tol: f64,
}

impl Default for ProbeConfig {
    fn default() -> Self {
        ProbeConfig::loss_only(1)
    }
}

impl ProbeConfig {
    /// Only loss and gradient norm, every `every` steps.
    pub fn loss_only(every: u64) -> ProbeConfig {
        ProbeConfig {
            every,
            probes: BTreeSet::new(),
            ntk_subset: None,
            hessian_top_k: 1,
            lanczos_max_iter: 100,
            lanczos_tol: 1e-7,
        }
    }

    /// Every probe, every `every` steps.
    pub fn all(every: u64) -> ProbeConfig {
        ProbeConfig { probes: Probe::ALL.into_iter().collect(), ..ProbeConfig::loss_only(every) }
    }

    /// Enables probe `p`.
    pub fn with(mut self, p: Probe) -> ProbeConfig {
        self.probes.insert(p);
        self
    }

    /// Whether probe `p` is enabled.
    pub fn has(&self, p: Probe) -> bool {
        self.probes.contains(&p)
    }

    /// Whether any NTK probe is enabled.
    pub fn needs_ntk(&self) -> bool {
        self.has(Probe::NtkMax) || self.has(Probe::NtkMin) || self.has(Probe::NtkChange)
    }

    /// Checks against a training set of `n` points and a network with `p` parameters.
    pub fn validate(&self, n: usize, p: usize) -> Result<()> {
        if self.every == 0 {
            return Err(Error::Config("probes: `every` must be at least 1".into()));
        }
        if let Some(m) = self.ntk_subset {
            if m == 0 || m > n {
                return Err(Error::Config(format!(
                    "probes: ntk_subset must be in 1..={n} (the training set size), got {m}"
                )));
            }
        }
        if self.has(Probe::Sharpness) {
            if self.hessian_top_k == 0 || self.hessian_top_k > p {
                return Err(Error::Config(format!(
                    "probes: hessian_top_k must be in 1..={p} (the number of parameters), got {}",
                    self.hessian_top_k
                )));
            }
            if self.lanczos_max_iter < self.hessian_top_k {
                return Err(Error::Config(format!(
                    "probes: lanczos_max_iter ({}) must be at least hessian_top_k ({})",
                    self.lanczos_max_iter, self.hessian_top_k
                )));
            }
            if !(self.lanczos_tol >= 0.0 && self.lanczos_tol.is_finite()) {
                return Err(Error::Config(format!(
                    "probes: lanczos_tol must be finite and >= 0, got {}",
                    self.lanczos_tol
                )));
            }
        }
        Ok(())
    }
}

/// The diagnostics at one record. Optional fields are present exactly when their probe is enabled (and, for
/// test metrics, when there is a test set; for the linearized model, until it diverges).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// Updates performed so far (gradient flow: t / eta).
    pub step: u64,
    /// Time t = sum of the learning rates of the updates so far.
    #[serde(with = "crate::data::json_f64")]
    pub t: f64,
    /// Learning rate of the next update.
    #[serde(with = "crate::data::json_f64")]
    pub lr: f64,
    /// Full training loss.
    #[serde(with = "crate::data::json_f64")]
    pub loss: f64,
    /// ||grad L|| of the full training loss.
    #[serde(with = "crate::data::json_f64")]
    pub grad_norm: f64,
    /// Test loss.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "crate::data::json_f64::opt")]
    pub test_loss: Option<f64>,
    /// Training accuracy.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "crate::data::json_f64::opt")]
    pub accuracy: Option<f64>,
    /// Test accuracy.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "crate::data::json_f64::opt")]
    pub test_accuracy: Option<f64>,
    /// ||grad L||^2 / (2 L).
    #[serde(default, skip_serializing_if = "Option::is_none", with = "crate::data::json_f64::opt")]
    pub pl_ratio: Option<f64>,
    /// lambda_max of the empirical NTK (subset).
    #[serde(default, skip_serializing_if = "Option::is_none", with = "crate::data::json_f64::opt")]
    pub ntk_max: Option<f64>,
    /// lambda_min of the empirical NTK (subset).
    #[serde(default, skip_serializing_if = "Option::is_none", with = "crate::data::json_f64::opt")]
    pub ntk_min: Option<f64>,
    /// ||Theta_t - Theta_0||_F / ||Theta_0||_F.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "crate::data::json_f64::opt")]
    pub ntk_change: Option<f64>,
    /// lambda_1 of the loss Hessian (= `hessian_top[0]`).
    #[serde(default, skip_serializing_if = "Option::is_none", with = "crate::data::json_f64::opt")]
    pub sharpness: Option<f64>,
    /// The top-k Hessian eigenvalues, descending.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hessian_top: Option<Vec<f64>>,
    /// Whether Lanczos met its tolerance (otherwise `hessian_top` are its best estimates).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hessian_converged: Option<bool>,
    /// ||w_t - w_0|| / ||w_0||.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "crate::data::json_f64::opt")]
    pub weight_change: Option<f64>,
    /// Training loss of the linearized model.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "crate::data::json_f64::opt")]
    pub lin_loss: Option<f64>,
    /// ||f_t - f_lin,t||_F / sqrt(N) on the training set.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "crate::data::json_f64::opt")]
    pub lin_distance: Option<f64>,
    /// ||f_t - f_lin,t||_F / sqrt(T) on the test set.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "crate::data::json_f64::opt")]
    pub lin_test_distance: Option<f64>,
    /// Integrator statistics so far (gradient flow only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ode: Option<OdeStats>,
}

impl Record {
    /// A record with the always-present fields and no probes.
    pub fn new(step: u64, t: f64, lr: f64, loss: f64, grad_norm: f64) -> Record {
        Record {
            step,
            t,
            lr,
            loss,
            grad_norm,
            test_loss: None,
            accuracy: None,
            test_accuracy: None,
            pl_ratio: None,
            ntk_max: None,
            ntk_min: None,
            ntk_change: None,
            sharpness: None,
            hessian_top: None,
            hessian_converged: None,
            weight_change: None,
            lin_loss: None,
            lin_distance: None,
            lin_test_distance: None,
            ode: None,
        }
    }
}

/// Classification accuracy of outputs F against targets Y (both N x k): k = 1 compares signs (f > 0 vs y > 0),
/// k > 1 compares argmaxes (first maximum on ties).
pub fn accuracy(f: MatRef<'_, f64>, y: MatRef<'_, f64>) -> f64 {
    let (n, k) = (f.nrows(), f.ncols());
    if n == 0 {
        return 0.0;
    }
    let argmax = |m: MatRef<'_, f64>, i: usize| (0..k).fold(0, |b, a| if m[(i, a)] > m[(i, b)] { a } else { b });
    let correct = (0..n)
        .filter(|&i| if k == 1 { (f[(i, 0)] > 0.0) == (y[(i, 0)] > 0.0) } else { argmax(f, i) == argmax(y, i) })
        .count();
    correct as f64 / n as f64
}

/// ||A - B||_F / sqrt(rows): the root-mean-square distance between two output matrices (N x k).
pub fn rms_distance(a: MatRef<'_, f64>, b: MatRef<'_, f64>) -> f64 {
    let mut s = 0.0;
    for j in 0..a.ncols() {
        for i in 0..a.nrows() {
            let d = a[(i, j)] - b[(i, j)];
            s += d * d;
        }
    }
    (s / a.nrows().max(1) as f64).sqrt()
}

/// Euclidean norm with a fixed summation order.
pub(crate) fn norm(v: &[f64]) -> f64 {
    v.iter().map(|x| x * x).sum::<f64>().sqrt()
}

/// (A + A^T) / 2 of a square matrix.
pub(crate) fn symmetrized(a: &Mat<f64>) -> Mat<f64> {
    Mat::from_fn(a.nrows(), a.ncols(), |i, j| 0.5 * (a[(i, j)] + a[(j, i)]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accuracy_and_names() {
        let f = Mat::from_fn(4, 1, |i, _| [0.3, -2.0, 1.0, -0.1][i]);
        let y = Mat::from_fn(4, 1, |i, _| [1.0, -1.0, -1.0, 1.0][i]);
        assert_eq!(accuracy(f.as_ref(), y.as_ref()), 0.5);
        let f3 = Mat::from_fn(2, 3, |i, a| [[0.1, 0.5, 0.2], [2.0, 0.0, 1.0]][i][a]);
        let y3 = Mat::from_fn(2, 3, |i, a| if [1, 2][i] == a { 1.0 } else { 0.0 });
        assert_eq!(accuracy(f3.as_ref(), y3.as_ref()), 0.5);
        for p in Probe::ALL {
            assert_eq!(Probe::parse(&p.to_string()).unwrap(), p);
            assert_eq!(serde_json::to_string(&p).unwrap(), format!("\"{p}\""));
        }
        assert!(Probe::parse("hessian_top").is_err());
        let r = Record::new(3, 0.3, 0.1, 1.5, 2.0);
        let s = serde_json::to_string(&r).unwrap();
        assert_eq!(s, r#"{"step":3,"t":0.3,"lr":0.1,"loss":1.5,"grad_norm":2.0}"#);
        assert_eq!(serde_json::from_str::<Record>(&s).unwrap(), r);
        assert!(ProbeConfig::all(0).validate(5, 5).is_err());
        assert!(ProbeConfig { ntk_subset: Some(6), ..ProbeConfig::all(1) }.validate(5, 5).is_err());
        assert!(ProbeConfig { hessian_top_k: 6, ..ProbeConfig::all(1) }.validate(5, 5).is_err());
    }
}
