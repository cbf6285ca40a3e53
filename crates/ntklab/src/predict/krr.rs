//! Kernel ridge regression.

use faer::linalg::solvers::Solve;
use faer::{Mat, MatRef};

use super::jitter::cholesky_with_jitter;
use crate::{Error, Result};

/// Kernel ridge regression predictions with the dual coefficients and the jitter that was needed.
#[derive(Debug, Clone)]
pub struct KrrPrediction {
    /// Predictions K_*x alpha at the test points, t x m.
    pub prediction: Mat<f64>,
    /// Dual coefficients alpha = (K + (reg + jitter) I)^{-1} y, n x m.
    pub coefficients: Mat<f64>,
    /// Diagonal jitter added on top of `reg` to make the Cholesky factorization succeed (0 if none was needed).
    pub jitter: f64,
}

/// Kernel ridge regression f_* = K_*x (K + reg I)^{-1} y via Cholesky; K (n x n) symmetric PSD, y (n x m),
/// K_*x (t x n), reg >= 0. Adds diagonal jitter (reported) if K + reg I is singular to working precision.
pub fn krr(
    k_train: MatRef<'_, f64>,
    y: MatRef<'_, f64>,
    k_test_train: MatRef<'_, f64>,
    reg: f64,
) -> Result<KrrPrediction> {
    check_shapes(k_train, y, k_test_train)?;
    let (llt, jitter) = cholesky_with_jitter(k_train, reg, "training kernel")?;
    let coefficients = llt.solve(y);
    let prediction = k_test_train * &coefficients;
    Ok(KrrPrediction { prediction, coefficients, jitter })
}

/// Checks K (n x n), y (n x m), K_*x (t x n) and finiteness of y and K_*x.
pub(crate) fn check_shapes(k_train: MatRef<'_, f64>, y: MatRef<'_, f64>, k_test_train: MatRef<'_, f64>) -> Result<()> {
    let n = k_train.nrows();
    if k_train.ncols() != n {
        return Err(Error::Shape(format!("training kernel must be square, got {} x {}", n, k_train.ncols())));
    }
    if y.nrows() != n {
        return Err(Error::Shape(format!("targets have {} rows but the training kernel is {n} x {n}", y.nrows())));
    }
    if k_test_train.ncols() != n {
        return Err(Error::Shape(format!(
            "test-train kernel is {} x {} but there are {n} training points",
            k_test_train.nrows(),
            k_test_train.ncols()
        )));
    }
    check_finite(y, "targets")?;
    check_finite(k_test_train, "test-train kernel")
}

/// Errors on the first non-finite entry of `a`.
pub(crate) fn check_finite(a: MatRef<'_, f64>, what: &str) -> Result<()> {
    for j in 0..a.ncols() {
        for i in 0..a.nrows() {
            if !a[(i, j)].is_finite() {
                return Err(Error::InvalidInput(format!("{what} has a non-finite entry {} at ({i}, {j})", a[(i, j)])));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{max_abs_diff, rbf};
    use super::super::JITTER_MAX_REL;
    use super::*;
    use crate::data::synthetic::gaussian;

    #[test]
    fn matches_lu_solve() {
        // Independent route: partial-pivoting LU on K + reg I. Both are backward stable; with cond(K + reg I)
        // <= ~1e4 here, the predictions agree to ~cond * eps ~ 1e-12 (tolerance 1e-9 leaves margin).
        let x = gaussian(30, 4, 1);
        let xt = gaussian(7, 4, 2);
        let y = gaussian(30, 2, 3);
        let k = rbf(x.as_ref(), x.as_ref());
        let kt = rbf(xt.as_ref(), x.as_ref());
        let reg = 1e-2;
        let p = krr(k.as_ref(), y.as_ref(), kt.as_ref(), reg).unwrap();
        assert_eq!(p.jitter, 0.0);
        let a = Mat::from_fn(30, 30, |i, j| k[(i, j)] + if i == j { reg } else { 0.0 });
        let alpha = a.partial_piv_lu().solve(&y);
        assert!(max_abs_diff(p.coefficients.as_ref(), alpha.as_ref()) < 1e-9);
        assert!(max_abs_diff(p.prediction.as_ref(), (&kt * &alpha).as_ref()) < 1e-9);
        // Interpolation with reg = 0 reproduces the training targets (K_*x = K at the training points).
        let p0 = krr(k.as_ref(), y.as_ref(), k.as_ref(), 0.0).unwrap();
        assert!(max_abs_diff(p0.prediction.as_ref(), y.as_ref()) < 1e-6);
    }

    #[test]
    fn duplicate_points_get_jitter() {
        // Two identical training points make K exactly singular; with consistent targets the fit is still fine.
        let mut x = gaussian(6, 3, 5);
        for c in 0..3 {
            x[(5, c)] = x[(0, c)];
        }
        let k = rbf(x.as_ref(), x.as_ref());
        let y = Mat::from_fn(6, 1, |i, _| (x[(i, 0)]).sin());
        let p = krr(k.as_ref(), y.as_ref(), k.as_ref(), 0.0).unwrap();
        assert!(p.jitter > 0.0 && p.jitter <= JITTER_MAX_REL, "jitter {}", p.jitter);
        assert!(max_abs_diff(p.prediction.as_ref(), y.as_ref()) < 1e-4);
    }

    #[test]
    fn shape_and_value_errors() {
        let k = Mat::<f64>::identity(3, 3);
        let y = Mat::<f64>::zeros(3, 1);
        assert!(matches!(krr(k.as_ref(), Mat::<f64>::zeros(2, 1).as_ref(), k.as_ref(), 0.0), Err(Error::Shape(_))));
        assert!(matches!(krr(k.as_ref(), y.as_ref(), Mat::<f64>::zeros(1, 2).as_ref(), 0.0), Err(Error::Shape(_))));
        assert!(matches!(krr(k.as_ref(), y.as_ref(), k.as_ref(), f64::NAN), Err(Error::InvalidInput(_))));
        let mut yn = y.clone();
        yn[(1, 0)] = f64::INFINITY;
        assert!(matches!(krr(k.as_ref(), yn.as_ref(), k.as_ref(), 0.0), Err(Error::InvalidInput(_))));
    }
}
