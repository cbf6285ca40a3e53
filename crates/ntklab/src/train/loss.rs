//! Losses on network outputs F (N x k) against targets Y (N x k), averaged over the N examples: the value,
//! the gradient dL/dF (N x k) and the output-Hessian-vector product `(d^2L/dF^2)[V]` (N x k).
//!
//! * MSE: L = 1/(2N) sum_{i,a} (f_ia - y_ia)^2 (ARCHITECTURE.md: the GD edge of stability is then 2/lambda_max).
//! * Logistic: L = 1/N sum_{i,a} log(1 + exp(-y_ia f_ia)) with margin labels y in {-1, +1}; each of the k
//!   outputs is an independent binary problem. Soft labels y in [-1, 1] are accepted through t = (1 + y)/2:
//!   L = 1/N sum softplus(f) - t f (equal to the margin form at y = +-1).
//! * Softmax cross-entropy: L = 1/N sum_i (logsumexp(f_i) - y_i . f_i) with y_i one-hot or a probability vector.

use std::fmt;

use faer::{Mat, MatRef};

use crate::{Error, Result};

/// Tolerance on |sum_a y_ia - 1| for softmax cross-entropy targets.
const PROB_TOL: f64 = 1e-6;

/// A loss averaged over the batch; see the module docs for the formulas.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Loss {
    /// L = 1/(2N) sum (f - y)^2.
    #[default]
    Mse,
    /// L = 1/N sum log(1 + exp(-y f)), y in {-1, +1} (soft labels in [-1, 1]).
    Logistic,
    /// L = 1/N sum_i (logsumexp(f_i) - y_i . f_i), y_i a probability vector (one-hot for hard labels).
    SoftmaxCrossEntropy,
}

/// log(1 + e^x) without overflow.
#[inline]
fn softplus(x: f64) -> f64 {
    x.max(0.0) + (-x.abs()).exp().ln_1p()
}

use crate::kernel::activation::sigmoid;

/// Softmax of row i of f into p, returning logsumexp(f_i).
#[inline]
fn softmax_row(f: MatRef<'_, f64>, i: usize, p: &mut [f64]) -> f64 {
    let k = f.ncols();
    let m = (0..k).map(|a| f[(i, a)]).fold(f64::NEG_INFINITY, f64::max);
    let mut s = 0.0;
    for a in 0..k {
        p[a] = (f[(i, a)] - m).exp();
        s += p[a];
    }
    for pa in p.iter_mut() {
        *pa /= s;
    }
    m + s.ln()
}

impl Loss {
    /// Parse `mse`, `logistic` (or `bce`), `softmax-cross-entropy` (or `ce`, `cross-entropy`, `softmax`).
    pub fn parse(s: &str) -> Result<Loss> {
        match s.trim().to_lowercase().replace('_', "-").as_str() {
            "mse" | "square" | "squared" => Ok(Loss::Mse),
            "logistic" | "bce" => Ok(Loss::Logistic),
            "softmax-cross-entropy" | "cross-entropy" | "ce" | "softmax" | "xent" => Ok(Loss::SoftmaxCrossEntropy),
            other => Err(Error::parse(other, "unknown loss (expected mse, logistic or softmax-cross-entropy)")),
        }
    }

    /// Checks shapes (F and Y both N x k, N >= 1), finiteness and the targets' domain for this loss.
    pub fn check(&self, f: MatRef<'_, f64>, y: MatRef<'_, f64>) -> Result<()> {
        let (n, k) = (f.nrows(), f.ncols());
        if y.nrows() != n || y.ncols() != k {
            return Err(Error::Shape(format!("targets are {} x {} but outputs are {n} x {k}", y.nrows(), y.ncols())));
        }
        if n == 0 || k == 0 {
            return Err(Error::Shape(format!("empty outputs ({n} x {k})")));
        }
        for a in 0..k {
            for i in 0..n {
                if !f[(i, a)].is_finite() {
                    return Err(Error::InvalidInput(format!("output has a non-finite value at row {i}, column {a}")));
                }
                let t = y[(i, a)];
                if !t.is_finite() {
                    return Err(Error::InvalidInput(format!("target has a non-finite value at row {i}, column {a}")));
                }
                match self {
                    Loss::Logistic if !(-1.0..=1.0).contains(&t) => {
                        return Err(Error::InvalidInput(format!(
                            "logistic loss takes labels in {{-1, +1}} (or soft labels in [-1, 1]); target at row {i}, \
                             column {a} is {t}"
                        )))
                    }
                    Loss::SoftmaxCrossEntropy if t < 0.0 => {
                        return Err(Error::InvalidInput(format!(
                            "softmax cross-entropy targets must be probabilities; target at row {i}, column {a} is {t}"
                        )))
                    }
                    _ => {}
                }
            }
        }
        if *self == Loss::SoftmaxCrossEntropy {
            if k < 2 {
                return Err(Error::Config("softmax cross-entropy needs k >= 2 outputs".into()));
            }
            for i in 0..n {
                let s: f64 = (0..k).map(|a| y[(i, a)]).sum();
                if (s - 1.0).abs() > PROB_TOL {
                    return Err(Error::InvalidInput(format!(
                        "softmax cross-entropy targets must sum to 1 per row (one-hot or probabilities); row {i} sums to {s}"
                    )));
                }
            }
        }
        Ok(())
    }

    /// The loss value L(F, Y).
    pub fn value(&self, f: MatRef<'_, f64>, y: MatRef<'_, f64>) -> Result<f64> {
        self.check(f, y)?;
        Ok(self.value_unchecked(f, y))
    }

    /// The gradient dL/dF (N x k): (F - Y)/N, (sigmoid(F) - (1+Y)/2)/N, or (softmax(F) - Y)/N.
    pub fn gradient(&self, f: MatRef<'_, f64>, y: MatRef<'_, f64>) -> Result<Mat<f64>> {
        self.check(f, y)?;
        Ok(self.gradient_unchecked(f, y))
    }

    /// The output-Hessian-vector product `(d^2L/dF^2)[V]` (N x k): V/N, sigmoid'(F) ⊙ V/N, or per row
    /// (diag(p) - p p^T) v / N with p = softmax(f_i).
    pub fn hessian_vp(&self, f: MatRef<'_, f64>, y: MatRef<'_, f64>, v: MatRef<'_, f64>) -> Result<Mat<f64>> {
        self.check(f, y)?;
        if v.nrows() != f.nrows() || v.ncols() != f.ncols() {
            return Err(Error::Shape(format!(
                "V is {} x {} but outputs are {} x {}",
                v.nrows(),
                v.ncols(),
                f.nrows(),
                f.ncols()
            )));
        }
        Ok(self.hessian_vp_unchecked(f, y, v))
    }

    /// [`Loss::value`] without checks.
    pub(crate) fn value_unchecked(&self, f: MatRef<'_, f64>, y: MatRef<'_, f64>) -> f64 {
        let (n, k) = (f.nrows(), f.ncols());
        let mut total = 0.0;
        match self {
            Loss::Mse => {
                for a in 0..k {
                    for i in 0..n {
                        let r = f[(i, a)] - y[(i, a)];
                        total += 0.5 * r * r;
                    }
                }
            }
            Loss::Logistic => {
                for a in 0..k {
                    for i in 0..n {
                        let t = 0.5 * (1.0 + y[(i, a)]);
                        total += softplus(f[(i, a)]) - t * f[(i, a)];
                    }
                }
            }
            Loss::SoftmaxCrossEntropy => {
                let mut p = vec![0.0; k];
                for i in 0..n {
                    let lse = softmax_row(f, i, &mut p);
                    let ysum: f64 = (0..k).map(|a| y[(i, a)]).sum();
                    total += ysum * lse - (0..k).map(|a| y[(i, a)] * f[(i, a)]).sum::<f64>();
                }
            }
        }
        total / n as f64
    }

    /// [`Loss::gradient`] without checks.
    pub(crate) fn gradient_unchecked(&self, f: MatRef<'_, f64>, y: MatRef<'_, f64>) -> Mat<f64> {
        let (n, k) = (f.nrows(), f.ncols());
        let inv = 1.0 / n as f64;
        match self {
            Loss::Mse => Mat::from_fn(n, k, |i, a| (f[(i, a)] - y[(i, a)]) * inv),
            Loss::Logistic => Mat::from_fn(n, k, |i, a| (sigmoid(f[(i, a)]) - 0.5 * (1.0 + y[(i, a)])) * inv),
            Loss::SoftmaxCrossEntropy => {
                let mut g = Mat::<f64>::zeros(n, k);
                let mut p = vec![0.0; k];
                for i in 0..n {
                    softmax_row(f, i, &mut p);
                    let ysum: f64 = (0..k).map(|a| y[(i, a)]).sum();
                    for a in 0..k {
                        g[(i, a)] = (ysum * p[a] - y[(i, a)]) * inv;
                    }
                }
                g
            }
        }
    }

    /// [`Loss::hessian_vp`] without checks (the Hessian does not depend on Y for these losses, up to
    /// the row sums of Y in softmax cross-entropy, which are 1).
    pub(crate) fn hessian_vp_unchecked(&self, f: MatRef<'_, f64>, y: MatRef<'_, f64>, v: MatRef<'_, f64>) -> Mat<f64> {
        let (n, k) = (f.nrows(), f.ncols());
        let inv = 1.0 / n as f64;
        match self {
            Loss::Mse => Mat::from_fn(n, k, |i, a| v[(i, a)] * inv),
            Loss::Logistic => Mat::from_fn(n, k, |i, a| {
                let s = sigmoid(f[(i, a)]);
                s * (1.0 - s) * v[(i, a)] * inv
            }),
            Loss::SoftmaxCrossEntropy => {
                let mut h = Mat::<f64>::zeros(n, k);
                let mut p = vec![0.0; k];
                for i in 0..n {
                    softmax_row(f, i, &mut p);
                    let ysum: f64 = (0..k).map(|a| y[(i, a)]).sum();
                    let pv: f64 = (0..k).map(|a| p[a] * v[(i, a)]).sum();
                    for a in 0..k {
                        h[(i, a)] = ysum * p[a] * (v[(i, a)] - pv) * inv;
                    }
                }
                h
            }
        }
    }
}

impl fmt::Display for Loss {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Loss::Mse => "mse",
            Loss::Logistic => "logistic",
            Loss::SoftmaxCrossEntropy => "softmax-cross-entropy",
        })
    }
}

/// One-hot targets for class labels: an N x k matrix with 1 at `(i, labels[i])`.
pub fn one_hot(labels: &[usize], k: usize) -> Result<Mat<f64>> {
    if let Some((i, &c)) = labels.iter().enumerate().find(|(_, &c)| c >= k) {
        return Err(Error::InvalidInput(format!("label {c} at index {i} is out of range for {k} classes")));
    }
    Ok(Mat::from_fn(labels.len(), k, |i, a| if labels[i] == a { 1.0 } else { 0.0 }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::synthetic::gaussian;

    /// The shared test targets of `net::testutil` (Gaussian, +-1 with soft labels, probability rows).
    fn targets(loss: Loss, n: usize, k: usize) -> Mat<f64> {
        crate::net::testutil::targets(loss, n, k, 77)
    }

    const ALL: [Loss; 3] = [Loss::Mse, Loss::Logistic, Loss::SoftmaxCrossEntropy];

    #[test]
    fn gradient_and_hessian_match_central_differences() {
        // Central differences with h = 1e-5 on smooth functions of O(1) inputs: truncation ~h^2 ~ 1e-10,
        // rounding ~1e-16/h ~ 1e-11, so 1e-6 relative is a safe bound for an exact formula.
        let (n, k) = (5, 3);
        let f = Mat::from_fn(n, k, |i, a| 2.0 * gaussian(n, k, 5)[(i, a)]);
        let v = gaussian(n, k, 6);
        let h = 1e-5;
        for loss in ALL {
            let y = targets(loss, n, k);
            let g = loss.gradient(f.as_ref(), y.as_ref()).unwrap();
            let hv = loss.hessian_vp(f.as_ref(), y.as_ref(), v.as_ref()).unwrap();
            for i in 0..n {
                for a in 0..k {
                    let mut fp = f.clone();
                    let mut fm = f.clone();
                    fp[(i, a)] += h;
                    fm[(i, a)] -= h;
                    let d = (loss.value(fp.as_ref(), y.as_ref()).unwrap()
                        - loss.value(fm.as_ref(), y.as_ref()).unwrap())
                        / (2.0 * h);
                    assert!((d - g[(i, a)]).abs() < 1e-6 * g.norm_max(), "{loss} grad ({i},{a}): {d} vs {}", g[(i, a)]);
                }
            }
            let fp = &f + h * &v;
            let fm = &f - h * &v;
            let fd = (loss.gradient(fp.as_ref(), y.as_ref()).unwrap()
                - loss.gradient(fm.as_ref(), y.as_ref()).unwrap())
                / (2.0 * h);
            assert!((&fd - &hv).norm_max() < 1e-6 * hv.norm_max(), "{loss} hvp");
        }
    }

    #[test]
    fn closed_forms_and_conventions() {
        let f = Mat::from_fn(2, 1, |i, _| [1.0, -2.0][i]);
        let y = Mat::from_fn(2, 1, |i, _| [0.5, 1.0][i]);
        // MSE: 1/(2N) sum r^2 = (0.25 + 9)/4.
        assert!((Loss::Mse.value(f.as_ref(), y.as_ref()).unwrap() - 9.25 / 4.0).abs() < 1e-15);
        // Logistic with y = +-1: log(1 + exp(-y f)).
        let yl = Mat::from_fn(2, 1, |i, _| [1.0, -1.0][i]);
        let want = ((1.0 + (-1.0f64).exp()).ln() + (1.0 + (-2.0f64).exp()).ln()) / 2.0;
        assert!((Loss::Logistic.value(f.as_ref(), yl.as_ref()).unwrap() - want).abs() < 1e-15);
        // Large margins do not overflow.
        let big = Mat::from_fn(1, 1, |_, _| 800.0);
        let one = Mat::from_fn(1, 1, |_, _| -1.0);
        assert!((Loss::Logistic.value(big.as_ref(), one.as_ref()).unwrap() - 800.0).abs() < 1e-12);
        // Softmax CE with one-hot targets = -log p_label; uniform logits give log k.
        let z = Mat::<f64>::zeros(3, 4);
        let oh = one_hot(&[0, 3, 1], 4).unwrap();
        assert!((Loss::SoftmaxCrossEntropy.value(z.as_ref(), oh.as_ref()).unwrap() - 4f64.ln()).abs() < 1e-15);
        let big = Mat::from_fn(1, 2, |_, a| [1000.0, 0.0][a]);
        let lab = one_hot(&[1], 2).unwrap();
        assert!((Loss::SoftmaxCrossEntropy.value(big.as_ref(), lab.as_ref()).unwrap() - 1000.0).abs() < 1e-9);
        // Softmax Hessian annihilates the all-ones direction (shift invariance).
        let v = Mat::<f64>::from_fn(3, 4, |_, _| 1.0);
        let f3 = gaussian(3, 4, 1);
        assert!(Loss::SoftmaxCrossEntropy.hessian_vp(f3.as_ref(), oh.as_ref(), v.as_ref()).unwrap().norm_max() < 1e-16);
    }

    #[test]
    fn bad_targets_are_errors_and_names_parse() {
        let f = Mat::<f64>::zeros(2, 2);
        let bad = Mat::from_fn(2, 2, |_, _| 2.0);
        assert!(Loss::Logistic.check(f.as_ref(), bad.as_ref()).is_err());
        assert!(Loss::SoftmaxCrossEntropy.check(f.as_ref(), bad.as_ref()).is_err());
        assert!(Loss::Mse.check(f.as_ref(), bad.as_ref()).is_ok());
        assert!(Loss::Mse.check(f.as_ref(), Mat::<f64>::zeros(2, 3).as_ref()).is_err());
        assert!(Loss::SoftmaxCrossEntropy
            .check(Mat::<f64>::zeros(2, 1).as_ref(), Mat::from_fn(2, 1, |_, _| 1.0).as_ref())
            .is_err());
        assert!(one_hot(&[0, 2], 2).is_err());
        for l in ALL {
            assert_eq!(Loss::parse(&l.to_string()).unwrap(), l);
        }
        assert!(Loss::parse("hinge").is_err());
    }
}
