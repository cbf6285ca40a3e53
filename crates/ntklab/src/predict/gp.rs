//! Gaussian-process regression: the posterior of an infinitely wide network under Bayesian inference (NNGP).

use faer::linalg::triangular_solve::solve_lower_triangular_in_place;
use faer::{Mat, MatRef, Par};

use super::jitter::cholesky_with_jitter;
use super::krr::check_shapes;
use crate::spectrum::check_symmetric;
use crate::{Error, Result};

/// GP posterior at the test points, with the jitter that was needed.
#[derive(Debug, Clone)]
pub struct GpPosterior {
    /// Posterior mean K_*x (K + s2 I)^{-1} y, t x m (one column per output; outputs are independent GPs).
    pub mean: Mat<f64>,
    /// Posterior covariance K_** - K_*x (K + s2 I)^{-1} K_x*, t x t (shared by all outputs), exactly symmetric.
    pub cov: Mat<f64>,
    /// Diagonal jitter added on top of the noise variance (0 if none was needed).
    pub jitter: f64,
}

/// Zero-mean GP posterior: mean = K_*x (K + s2 I)^{-1} y, cov = K_** - K_*x (K + s2 I)^{-1} K_x*
/// (Rasmussen & Williams 2006, eqs. 2.23-2.24, Algorithm 2.1). K (n x n), y (n x m), K_*x (t x n), K_** (t x t),
/// noise variance s2 >= 0 (0: noiseless conditioning; jitter is added and reported if K is singular).
pub fn gp_posterior(
    k_train: MatRef<'_, f64>,
    y: MatRef<'_, f64>,
    k_test_train: MatRef<'_, f64>,
    k_test_test: MatRef<'_, f64>,
    noise_var: f64,
) -> Result<GpPosterior> {
    check_shapes(k_train, y, k_test_train)?;
    let t = k_test_train.nrows();
    if k_test_test.nrows() != t || k_test_test.ncols() != t {
        return Err(Error::Shape(format!(
            "test-test kernel is {} x {} but there are {t} test points",
            k_test_test.nrows(),
            k_test_test.ncols()
        )));
    }
    check_symmetric(k_test_test, "test-test kernel")?;
    let (llt, jitter) = cholesky_with_jitter(k_train, noise_var, "training kernel")?;
    let l = llt.L();
    // V = L^{-1} K_x* (n x t), b = L^{-1} y (n x m): mean = V^T b, cov = K_** - V^T V.
    let mut v = k_test_train.transpose().to_owned();
    solve_lower_triangular_in_place(l, v.as_mut(), Par::rayon(0));
    let mut b = y.to_owned();
    solve_lower_triangular_in_place(l, b.as_mut(), Par::rayon(0));
    let mean = v.transpose() * &b;
    let vtv = v.transpose() * &v;
    let cov =
        Mat::from_fn(t, t, |i, j| 0.5 * ((k_test_test[(i, j)] - vtv[(i, j)]) + (k_test_test[(j, i)] - vtv[(j, i)])));
    Ok(GpPosterior { mean, cov, jitter })
}

#[cfg(test)]
mod tests {
    use super::super::krr;
    use super::super::testutil::{max_abs_diff, rbf};
    use super::*;
    use crate::data::synthetic::gaussian;
    use crate::spectrum::sym_eigenvalues;
    use faer::linalg::solvers::Solve;

    #[test]
    fn one_point_closed_form() {
        // n = t = 1: mean = b y / (a + s2), var = c - b^2 / (a + s2).
        let (a, b, c, s2, y) = (2.0, 0.7, 1.5, 0.1, 3.0);
        let m = |x: f64| Mat::from_fn(1, 1, |_, _| x);
        let p = gp_posterior(m(a).as_ref(), m(y).as_ref(), m(b).as_ref(), m(c).as_ref(), s2).unwrap();
        assert!((p.mean[(0, 0)] - b * y / (a + s2)).abs() < 1e-15);
        assert!((p.cov[(0, 0)] - (c - b * b / (a + s2))).abs() < 1e-15);
        assert_eq!(p.jitter, 0.0);
    }

    #[test]
    fn matches_explicit_formula_and_is_psd() {
        // Independent route: explicit inverse-free LU solve (K + s2 I) X = K_x*, cov = K_** - K_*x X.
        // cond(K + s2 I) <= ~1e3 so both agree to ~1e-13; PSD up to rounding of entries of size ~1.
        let x = gaussian(12, 3, 11);
        let xt = gaussian(5, 3, 12);
        let y = gaussian(12, 2, 13);
        let (k, kt, ktt) = (rbf(x.as_ref(), x.as_ref()), rbf(xt.as_ref(), x.as_ref()), rbf(xt.as_ref(), xt.as_ref()));
        let s2 = 1e-2;
        let p = gp_posterior(k.as_ref(), y.as_ref(), kt.as_ref(), ktt.as_ref(), s2).unwrap();
        let a = Mat::from_fn(12, 12, |i, j| k[(i, j)] + if i == j { s2 } else { 0.0 });
        let lu = a.partial_piv_lu();
        let explicit_cov = &ktt - &kt * lu.solve(kt.transpose());
        let explicit_mean = &kt * lu.solve(&y);
        assert!(max_abs_diff(p.cov.as_ref(), explicit_cov.as_ref()) < 1e-10);
        assert!(max_abs_diff(p.mean.as_ref(), explicit_mean.as_ref()) < 1e-10);
        // The mean is kernel ridge regression with reg = noise variance.
        let r = krr(k.as_ref(), y.as_ref(), kt.as_ref(), s2).unwrap();
        assert!(max_abs_diff(p.mean.as_ref(), r.prediction.as_ref()) < 1e-12);
        let ev = sym_eigenvalues(p.cov.as_ref()).unwrap();
        assert!(ev[0] >= -1e-12, "min eigenvalue {}", ev[0]);
        // Noiseless conditioning at training points: zero posterior variance, mean = targets.
        let p0 = gp_posterior(k.as_ref(), y.as_ref(), k.as_ref(), k.as_ref(), 0.0).unwrap();
        assert!((0..12).all(|i| p0.cov[(i, i)].abs() < 1e-8));
        assert!(max_abs_diff(p0.mean.as_ref(), y.as_ref()) < 1e-6);
    }

    #[test]
    fn singular_kernel_reports_jitter_and_bad_shapes_error() {
        // Duplicate training point: K singular, Cholesky needs jitter.
        let mut x = gaussian(5, 2, 21);
        x[(4, 0)] = x[(1, 0)];
        x[(4, 1)] = x[(1, 1)];
        let k = rbf(x.as_ref(), x.as_ref());
        let y = Mat::from_fn(5, 1, |i, _| x[(i, 1)]);
        let p = gp_posterior(k.as_ref(), y.as_ref(), k.as_ref(), k.as_ref(), 0.0).unwrap();
        assert!(p.jitter > 0.0);
        let ev = sym_eigenvalues(p.cov.as_ref()).unwrap();
        assert!(ev[0] >= -1e-10);
        let bad = Mat::<f64>::zeros(4, 4);
        assert!(matches!(gp_posterior(k.as_ref(), y.as_ref(), k.as_ref(), bad.as_ref(), 0.0), Err(Error::Shape(_))));
    }
}
