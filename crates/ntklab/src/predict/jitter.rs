//! Cholesky factorization of K + reg I with automatic diagonal jitter for singular or near-singular kernels.

use faer::linalg::solvers::Llt;
use faer::{Mat, MatRef, Side};

use crate::spectrum::check_symmetric;
use crate::{Error, Result};

/// First jitter tried, relative to the mean diagonal of the kernel: 1e-10 * mean(K_ii).
pub const JITTER_START_REL: f64 = 1e-10;
/// Factor by which the jitter grows after each failed attempt.
pub const JITTER_GROWTH: f64 = 10.0;
/// Largest jitter tried, relative to the mean diagonal; beyond it the factorization is reported as failed.
pub const JITTER_MAX_REL: f64 = 1e-4;

/// L L^T = K + (reg + jitter) I with the smallest jitter in {0, 1e-10 s, 1e-9 s, ..., 1e-4 s}
/// (s = mean |K_ii|, or 1 if that is 0) for which Cholesky succeeds and is not numerically singular.
///
/// Numerically singular: min_i L_ii^2 <= n eps max_i (K_ii + reg + jitter), i.e. a pivot at rounding level
/// (then the solve would amplify rounding errors by ~1/eps).
pub(crate) fn cholesky_with_jitter(k: MatRef<'_, f64>, reg: f64, what: &str) -> Result<(Llt<f64>, f64)> {
    check_symmetric(k, what)?;
    if !(reg >= 0.0 && reg.is_finite()) {
        return Err(Error::InvalidInput(format!("regularization / noise variance must be finite and >= 0, got {reg}")));
    }
    let n = k.nrows();
    if n == 0 {
        return Err(Error::Shape(format!("{what} is empty (no training points)")));
    }
    let mean_diag = (0..n).map(|i| k[(i, i)].abs()).sum::<f64>() / n as f64;
    let s = if mean_diag > 0.0 { mean_diag } else { 1.0 };
    let max_diag = (0..n).map(|i| k[(i, i)]).fold(f64::NEG_INFINITY, f64::max);
    let mut jitter = 0.0;
    let mut next = JITTER_START_REL * s;
    let mut last_problem;
    loop {
        let shift = reg + jitter;
        let a = Mat::from_fn(n, n, |i, j| if i == j { k[(i, i)] + shift } else { k[(i, j)] });
        match a.llt(Side::Lower) {
            Ok(llt) => {
                let min_piv = (0..n).map(|i| llt.L()[(i, i)].powi(2)).fold(f64::INFINITY, f64::min);
                let bound = n as f64 * f64::EPSILON * (max_diag + shift).max(0.0);
                if min_piv > bound {
                    return Ok((llt, jitter));
                }
                last_problem = format!("smallest pivot {min_piv:.3e} at rounding level (<= {bound:.3e})");
            }
            Err(e) => last_problem = format!("Cholesky failed ({e:?})"),
        }
        if next > JITTER_MAX_REL * s * (1.0 + 1e-9) {
            return Err(Error::Numerical(format!(
                "{what} + {reg:e} I is not positive definite even with jitter {jitter:.3e} \
                 ({JITTER_MAX_REL:e} x mean diagonal {s:.3e}): {last_problem}"
            )));
        }
        jitter = next;
        next *= JITTER_GROWTH;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_only_when_needed() {
        let k = Mat::<f64>::from_fn(3, 3, |i, j| if i == j { 2.0 } else { 0.5 });
        assert_eq!(cholesky_with_jitter(k.as_ref(), 0.0, "K").unwrap().1, 0.0);
        // Rank one: needs jitter; the first tried (1e-10 * mean diagonal) suffices.
        let r1 = Mat::<f64>::from_fn(3, 3, |i, j| (i + 1) as f64 * (j + 1) as f64);
        let (_, j) = cholesky_with_jitter(r1.as_ref(), 0.0, "K").unwrap();
        let s = (1.0 + 4.0 + 9.0) / 3.0;
        assert!(j > 0.0 && j <= 1e-9 * s, "jitter {j}");
        // A regularization already large enough needs none.
        assert_eq!(cholesky_with_jitter(r1.as_ref(), 1e-3, "K").unwrap().1, 0.0);
        // Clearly indefinite: no admissible jitter.
        let ind = Mat::<f64>::from_fn(2, 2, |i, j| if i == j { 1.0 } else { 2.0 });
        assert!(matches!(cholesky_with_jitter(ind.as_ref(), 0.0, "K"), Err(Error::Numerical(_))));
        assert!(matches!(cholesky_with_jitter(k.as_ref(), -1.0, "K"), Err(Error::InvalidInput(_))));
    }
}
