//! Power iteration for the eigenvalue of largest magnitude, with its sign.

use rand_distr::{Distribution, StandardNormal};

use super::op::SymOp;
use super::vec::{axpy, dot, norm, scale};
use crate::data::synthetic::rng;
use crate::{Error, Result};

/// The dominant eigenpair estimate of a power iteration.
#[derive(Debug, Clone)]
pub struct PowerResult {
    /// Rayleigh quotient lambda = v^T A v of the final unit vector (signed: the top-|lambda| eigenvalue).
    pub value: f64,
    /// The final unit vector v (length dim).
    pub vector: Vec<f64>,
    /// Residual ||A v - lambda v||; some eigenvalue of A lies within it of `value`.
    pub residual: f64,
    /// Operator applications used.
    pub iterations: usize,
    /// Whether residual <= tol * |value| was reached within `iters`.
    pub converged: bool,
}

/// Top-magnitude eigenvalue of a symmetric operator by power iteration v <- A v / ||A v||, with Rayleigh quotient
/// lambda = v^T A v; stops when ||A v - lambda v|| <= tol |lambda| or after `iters` applications.
///
/// Converges at rate |lambda_2 / lambda_1| per step; if lambda and -lambda are both dominant it does not converge
/// (reported by `converged`). Prefer [`super::lanczos`] for accuracy per operator application. Deterministic
/// (Gaussian start vector from `seed`). Errors: dim == 0, iters == 0, bad tol, non-finite operator output.
pub fn power_iteration(op: &impl SymOp, iters: usize, tol: f64, seed: u64) -> Result<PowerResult> {
    op.validate()?;
    let n = op.dim();
    if n == 0 {
        return Err(Error::Config("power iteration: operator has dimension 0".into()));
    }
    if iters == 0 {
        return Err(Error::Config("power iteration: iters must be at least 1".into()));
    }
    if !(tol >= 0.0 && tol.is_finite()) {
        return Err(Error::Config(format!("power iteration: tol must be finite and >= 0, got {tol}")));
    }
    let mut r = rng(seed);
    let mut v: Vec<f64> = (0..n).map(|_| StandardNormal.sample(&mut r)).collect();
    let n0 = norm(&v);
    scale(&mut v, 1.0 / n0);
    let mut w = vec![0.0; n];
    let mut res = vec![0.0; n];
    let (mut value, mut residual) = (0.0, f64::INFINITY);
    for it in 1..=iters {
        op.apply(&v, &mut w);
        if let Some(i) = w.iter().position(|x| !x.is_finite()) {
            return Err(Error::Numerical(format!(
                "power iteration: operator output has non-finite entry {} at index {i} (step {it})",
                w[i]
            )));
        }
        value = dot(&v, &w);
        res.copy_from_slice(&w);
        axpy(&mut res, -value, &v);
        residual = norm(&res);
        let nw = norm(&w);
        if residual <= tol * value.abs() || nw == 0.0 {
            return Ok(PowerResult { value, vector: v, residual, iterations: it, converged: true });
        }
        if it < iters {
            scale(&mut w, 1.0 / nw);
            std::mem::swap(&mut v, &mut w);
        }
    }
    Ok(PowerResult { value, vector: v, residual, iterations: iters, converged: false })
}

#[cfg(test)]
mod tests {
    use super::super::testutil::with_spectrum;
    use super::super::{max_eigenvalue, min_eigenvalue, FnOp};
    use super::*;

    #[test]
    fn finds_signed_dominant_eigenvalue() {
        // Dominant eigenvalue -5 against a spectrum in [-1, 3]: ratio 0.6 per step, so 1e-10 needs ~45 steps
        // (the residual also contracts at 0.6). Bauer-Fike: |value - lambda| <= residual <= 1e-10 * 5.
        let n = 100;
        let mut lambda: Vec<f64> = (0..n - 1).map(|i| -1.0 + 4.0 * i as f64 / (n - 2) as f64).collect();
        lambda.push(-5.0);
        let a = with_spectrum(&lambda, 4);
        let truth = min_eigenvalue(a.as_ref()).unwrap();
        assert!(max_eigenvalue(a.as_ref()).unwrap() < truth.abs());
        let p = power_iteration(&a, 1000, 1e-10, 3).unwrap();
        assert!(p.converged, "residual {}", p.residual);
        assert!((p.value - truth).abs() <= p.residual + 1e-13 * 5.0, "{} vs {truth}", p.value);
        // Explicit residual of the returned vector.
        let mut av = vec![0.0; n];
        a.apply(&p.vector, &mut av);
        let r: f64 = av.iter().zip(&p.vector).map(|(x, v)| (x - p.value * v).powi(2)).sum::<f64>().sqrt();
        assert!((r - p.residual).abs() < 1e-12);
    }

    #[test]
    fn reports_non_convergence_and_errors() {
        // +2 and -2 both dominant: the iterate oscillates, never an eigenvector.
        let d = FnOp::new(3, |v: &[f64], out: &mut [f64]| {
            out[0] = 2.0 * v[0];
            out[1] = -2.0 * v[1];
            out[2] = 0.5 * v[2];
        });
        let p = power_iteration(&d, 50, 1e-10, 0).unwrap();
        assert!(!p.converged && p.iterations == 50);
        assert!(matches!(power_iteration(&d, 0, 1e-10, 0), Err(Error::Config(_))));
        let bad = FnOp::new(3, |_: &[f64], out: &mut [f64]| out.fill(f64::NAN));
        assert!(matches!(power_iteration(&bad, 5, 1e-10, 0), Err(Error::Numerical(_))));
        let empty = FnOp::new(0, |_: &[f64], _: &mut [f64]| {});
        assert!(matches!(power_iteration(&empty, 5, 1e-10, 0), Err(Error::Config(_))));
    }
}
