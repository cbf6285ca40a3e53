//! Lanczos with full reorthogonalization for a few extreme eigenpairs of a symmetric operator.
//!
//! Standard symmetric Lanczos (Golub & Van Loan, Matrix Computations, 4th ed., 10.1): A V_m = V_m T_m + beta_m
//! v_{m+1} e_m^T with T_m tridiagonal. Every new vector is reorthogonalized against the whole stored basis
//! (classical Gram-Schmidt, repeated once when the DGKS test asks, "twice is enough"), so no ghost eigenvalues
//! appear; the price is storing dim x iterations numbers. Ritz pairs (theta_i, V_m s_i) come from faer's dense
//! eigensolver on T_m; the residual ||A y_i - theta_i y_i|| equals |beta_m * s_i[m-1]| exactly in exact arithmetic.

use faer::{Mat, Side};
use rand_distr::{Distribution, StandardNormal};

use super::op::SymOp;
use super::vec::{combine, dot, norm, project_out, scale};
use crate::data::synthetic::rng;
use crate::{Error, Result};

/// Which end of the spectrum to compute.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Which {
    /// The k largest eigenvalues (lambda_1 >= lambda_2 >= ...): sharpness, edge of stability.
    #[default]
    LargestAlgebraic,
    /// The k smallest eigenvalues (most negative first): negative curvature of a Hessian.
    SmallestAlgebraic,
    /// The k eigenvalues of largest |lambda|, ordered by decreasing |lambda| (ties: the positive one first).
    LargestMagnitude,
}

/// Settings of [`lanczos`]: `k` eigenpairs at the `which` end, at most `max_iter` operator applications,
/// stop when every residual <= `tol` * ||A|| (estimated by max |Ritz value|).
#[derive(Debug, Clone, PartialEq)]
pub struct LanczosOptions {
    /// Number of eigenpairs wanted, 1 <= k <= dim.
    pub k: usize,
    /// Which end of the spectrum.
    pub which: Which,
    /// Maximum number of Lanczos steps (= operator applications = stored basis vectors); clamped to dim.
    pub max_iter: usize,
    /// Relative residual tolerance: converged when ||A y_i - theta_i y_i|| <= tol * max_j |theta_j| for all i <= k.
    pub tol: f64,
    /// Seed of the Gaussian start vector (and of restart vectors after an invariant subspace is found).
    pub seed: u64,
    /// Whether to form the Ritz vectors (dim x k).
    pub vectors: bool,
}

impl LanczosOptions {
    /// `k` largest algebraic eigenvalues, max_iter = 300, tol = 1e-8, seed = 0, no vectors.
    pub fn new(k: usize) -> Self {
        LanczosOptions { k, which: Which::LargestAlgebraic, max_iter: 300, tol: 1e-8, seed: 0, vectors: false }
    }
    /// Sets [`LanczosOptions::which`].
    pub fn which(mut self, which: Which) -> Self {
        self.which = which;
        self
    }
    /// Sets [`LanczosOptions::max_iter`].
    pub fn max_iter(mut self, max_iter: usize) -> Self {
        self.max_iter = max_iter;
        self
    }
    /// Sets [`LanczosOptions::tol`].
    pub fn tol(mut self, tol: f64) -> Self {
        self.tol = tol;
        self
    }
    /// Sets [`LanczosOptions::seed`].
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }
    /// Sets [`LanczosOptions::vectors`].
    pub fn vectors(mut self, vectors: bool) -> Self {
        self.vectors = vectors;
        self
    }
}

/// Ritz approximations to k extreme eigenpairs.
#[derive(Debug, Clone)]
pub struct LanczosResult {
    /// k Ritz values, most extreme first: descending for `LargestAlgebraic`, ascending for `SmallestAlgebraic`,
    /// by descending |lambda| for `LargestMagnitude`.
    pub values: Vec<f64>,
    /// Ritz vectors (dim x k, unit norm, mutually orthogonal), column i pairs with `values[i]`; if requested.
    pub vectors: Option<Mat<f64>>,
    /// Residual norms ||A y_i - theta_i y_i|| = |beta_m s_i[m-1]| (length k). By Weyl/Bauer-Fike some eigenvalue
    /// of A lies within `residuals[i]` of `values[i]`.
    pub residuals: Vec<f64>,
    /// Lanczos steps taken (= operator applications).
    pub iterations: usize,
    /// Whether every residual met the tolerance (otherwise the values are the best estimates after `max_iter`).
    pub converged: bool,
}

/// A new direction with beta <= BREAKDOWN * max_j ||A v_j|| is treated as an invariant subspace: the coupling is
/// dropped (perturbing T by at most that much) and Lanczos restarts from a fresh random vector orthogonal to the
/// basis, which is also how repeated eigenvalues beyond the first copy are reached.
const BREAKDOWN: f64 = 1e-11;

/// DGKS criterion: reorthogonalize a second time when a pass removed more than 1 - 1/sqrt(2) of the norm.
const DGKS: f64 = std::f64::consts::FRAC_1_SQRT_2;

/// The k extreme eigenpairs of a symmetric operator by Lanczos with full reorthogonalization.
///
/// Deterministic: the start vector is Gaussian from `opts.seed`, all reductions run in a fixed order.
/// Errors: k == 0, k > dim, max_iter < k, tol negative or not finite, the operator's own `validate`, or a
/// non-finite entry in an operator output. Limitation (any single-vector Krylov method): an eigenvalue of exact
/// multiplicity r shows up once unless the Krylov space breaks down and restarts; for Hessians with exactly
/// repeated top eigenvalues use a larger k and check the residuals, or compare seeds.
pub fn lanczos(op: &impl SymOp, opts: &LanczosOptions) -> Result<LanczosResult> {
    lanczos_watched(op, opts, &crate::runs::no_progress)
}

/// [`lanczos`], calling `on(step, max_iter)` before each operator application: an error from it (normally
/// [`Error::Cancelled`]) stops the iteration there and is returned.
pub fn lanczos_watched(
    op: &impl SymOp,
    opts: &LanczosOptions,
    on: crate::runs::OnProgress<'_>,
) -> Result<LanczosResult> {
    op.validate()?;
    let n = op.dim();
    let k = opts.k;
    if k == 0 {
        return Err(Error::Config("lanczos: k must be at least 1".into()));
    }
    if k > n {
        return Err(Error::Config(format!("lanczos: k = {k} exceeds the operator dimension {n}")));
    }
    if opts.max_iter < k {
        return Err(Error::Config(format!("lanczos: max_iter = {} is smaller than k = {k}", opts.max_iter)));
    }
    if !(opts.tol >= 0.0 && opts.tol.is_finite()) {
        return Err(Error::Config(format!("lanczos: tol must be finite and >= 0, got {}", opts.tol)));
    }
    let m_max = opts.max_iter.min(n);
    let mut rng = rng(opts.seed);

    // Basis V stored column-major, grown one column per step (never preallocated: dim can be ~1e6).
    let mut basis: Vec<f64> = Vec::new();
    let mut v = random_unit(n, &mut rng, &basis, 0)?;
    basis.extend_from_slice(&v);
    let mut alphas: Vec<f64> = Vec::new();
    let mut betas: Vec<f64> = Vec::new(); // betas[j] couples v_j and v_{j+1} (0 after a restart)
    let mut w = vec![0.0; n];
    let mut scale_av = 0.0f64;
    let mut last = None;

    for j in 0..m_max {
        let m = j + 1;
        on(j, m_max)?;
        op.apply(&v, &mut w);
        if let Some(i) = w.iter().position(|x| !x.is_finite()) {
            return Err(Error::Numerical(format!(
                "lanczos: operator output has non-finite entry {} at index {i} (step {m})",
                w[i]
            )));
        }
        let before = norm(&w);
        scale_av = scale_av.max(before);
        let h = project_out(&basis, n, m, &mut w);
        let mut alpha = h[j];
        let mut beta = norm(&w);
        if beta < DGKS * before {
            let h2 = project_out(&basis, n, m, &mut w);
            alpha += h2[j];
            beta = norm(&w);
        }
        alphas.push(alpha);
        let breakdown = beta <= BREAKDOWN * scale_av;
        let check = m >= k && (m <= 128 || m % 8 == 0 || m == m_max || breakdown);
        if check {
            let ritz = ritz(&alphas, &betas, beta, k, opts.which)?;
            let anorm = ritz.anorm;
            let done = ritz.residuals.iter().all(|&r| r <= opts.tol * anorm);
            last = Some(ritz);
            if done {
                break;
            }
        }
        if m == m_max {
            break;
        }
        if breakdown {
            betas.push(0.0);
            v = random_unit(n, &mut rng, &basis, m)?;
        } else {
            betas.push(beta);
            scale(&mut w, 1.0 / beta);
            v.copy_from_slice(&w);
        }
        basis.extend_from_slice(&v);
    }

    let ritz = last.expect("the last step always checks convergence (m_max >= k)");
    let m = alphas.len();
    let converged = ritz.residuals.iter().all(|&r| r <= opts.tol * ritz.anorm);
    let vectors = if opts.vectors {
        let mut y = Mat::<f64>::zeros(n, k);
        let mut col = vec![0.0; n];
        for (c, s) in ritz.coeffs.iter().enumerate() {
            combine(&basis[..n * m], n, s, &mut col);
            let nrm = norm(&col);
            for (r, x) in col.iter().enumerate() {
                y[(r, c)] = x / nrm;
            }
        }
        Some(y)
    } else {
        None
    };
    Ok(LanczosResult { values: ritz.values, vectors, residuals: ritz.residuals, iterations: m, converged })
}

/// The k largest algebraic eigenvalues (descending) of a symmetric operator: [`lanczos`] with
/// `Which::LargestAlgebraic`, Ritz vectors included.
pub fn lanczos_top_k(op: &impl SymOp, k: usize, max_iter: usize, tol: f64, seed: u64) -> Result<LanczosResult> {
    lanczos(op, &LanczosOptions::new(k).max_iter(max_iter).tol(tol).seed(seed).vectors(true))
}

/// Selected Ritz values, residuals and their coefficient vectors s_i in the Lanczos basis.
struct Ritz {
    values: Vec<f64>,
    residuals: Vec<f64>,
    coeffs: Vec<Vec<f64>>,
    /// max |theta| over all Ritz values: the scale of the tolerance.
    anorm: f64,
}

/// Eigen-decomposes T_m (alphas on the diagonal, betas off it) and picks the k wanted Ritz pairs.
fn ritz(alphas: &[f64], betas: &[f64], beta_m: f64, k: usize, which: Which) -> Result<Ritz> {
    let m = alphas.len();
    let t = Mat::<f64>::from_fn(m, m, |i, j| {
        if i == j {
            alphas[i]
        } else if i == j + 1 {
            betas[j]
        } else if j == i + 1 {
            betas[i]
        } else {
            0.0
        }
    });
    let evd = t
        .self_adjoint_eigen(Side::Lower)
        .map_err(|e| Error::Numerical(format!("lanczos: tridiagonal eigensolver failed: {e:?}")))?;
    let theta: Vec<f64> = evd.S().column_vector().iter().copied().collect(); // ascending
    let u = evd.U();
    let idx: Vec<usize> = match which {
        Which::LargestAlgebraic => (0..m).rev().take(k).collect(),
        Which::SmallestAlgebraic => (0..k).collect(),
        Which::LargestMagnitude => {
            let mut idx: Vec<usize> = (0..m).collect();
            idx.sort_by(|&a, &b| theta[b].abs().total_cmp(&theta[a].abs()).then(theta[b].total_cmp(&theta[a])));
            idx.truncate(k);
            idx
        }
    };
    let anorm = theta.iter().fold(0.0f64, |a, t| a.max(t.abs()));
    Ok(Ritz {
        values: idx.iter().map(|&i| theta[i]).collect(),
        residuals: idx.iter().map(|&i| (beta_m * u[(m - 1, i)]).abs()).collect(),
        coeffs: idx.iter().map(|&i| (0..m).map(|r| u[(r, i)]).collect()).collect(),
        anorm,
    })
}

/// A seeded Gaussian vector orthogonalized (twice) against the first `ncols` basis columns and normalized.
fn random_unit(n: usize, rng: &mut impl rand::Rng, basis: &[f64], ncols: usize) -> Result<Vec<f64>> {
    let mut v: Vec<f64> = (0..n).map(|_| StandardNormal.sample(rng)).collect();
    let n0 = norm(&v);
    project_out(basis, n, ncols, &mut v);
    project_out(basis, n, ncols, &mut v);
    let nv = norm(&v);
    if nv.is_nan() || nv <= 1e-8 * n0 {
        return Err(Error::Numerical(format!(
            "lanczos: cannot extend a basis of {ncols} vectors in dimension {n} (random vector lies in its span)"
        )));
    }
    scale(&mut v, 1.0 / nv);
    debug_assert!(dot(&v, &v) > 0.0);
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::super::testutil::with_spectrum;
    use super::super::{sym_eigenvalues, FnOp};
    use super::*;

    /// |Ritz value - true eigenvalue| allowed: the reported residual (Bauer-Fike for symmetric matrices) plus
    /// rounding in T_m from finite-precision reorthogonalization, O(m eps ||A||) <= 1e-12 ||A|| here.
    fn close(value: f64, truth: f64, residual: f64, anorm: f64) -> bool {
        (value - truth).abs() <= residual + 1e-12 * anorm
    }

    fn wanted(sorted_asc: &[f64], k: usize, which: Which) -> Vec<f64> {
        match which {
            Which::LargestAlgebraic => sorted_asc.iter().rev().take(k).copied().collect(),
            Which::SmallestAlgebraic => sorted_asc.iter().take(k).copied().collect(),
            Which::LargestMagnitude => {
                let mut v = sorted_asc.to_vec();
                v.sort_by(|a, b| b.abs().total_cmp(&a.abs()).then(b.total_cmp(a)));
                v.truncate(k);
                v
            }
        }
    }

    fn check_against_dense(a: &Mat<f64>, k: usize, which: Which, max_iter: usize, tol: f64) -> LanczosResult {
        let truth = sym_eigenvalues(a.as_ref()).unwrap();
        let anorm = truth.iter().fold(0.0f64, |m, x| m.max(x.abs()));
        let res =
            lanczos(a, &LanczosOptions::new(k).which(which).max_iter(max_iter).tol(tol).seed(7).vectors(true)).unwrap();
        assert!(res.converged, "{which:?}: not converged in {} steps, residuals {:?}", res.iterations, res.residuals);
        let want = wanted(&truth, k, which);
        for (i, (&v, &w)) in res.values.iter().zip(&want).enumerate() {
            let r = res.residuals[i];
            assert!(r <= tol * anorm * (1.0 + 1e-12));
            assert!(close(v, w, r, anorm), "{which:?} #{i}: {v} vs {w} (residual {r:e})");
        }
        // Ritz vectors: orthonormal, and the explicit residual matches the cheap estimate (up to rounding).
        let y = res.vectors.as_ref().unwrap();
        let yty = y.transpose() * y;
        let ay = a * y;
        for i in 0..k {
            for j in 0..k {
                assert!((yty[(i, j)] - (i == j) as u8 as f64).abs() < 1e-10);
            }
            let r: f64 = (0..a.nrows()).map(|r| (ay[(r, i)] - res.values[i] * y[(r, i)]).powi(2)).sum::<f64>().sqrt();
            assert!(r <= res.residuals[i] + 1e-10 * anorm, "explicit residual {r:e} vs {:e}", res.residuals[i]);
        }
        res
    }

    #[test]
    fn random_symmetric_matches_dense() {
        // Gaussian Wigner-type matrix (semicircle spectrum, top gaps ~ n^{-2/3}): needs many steps, exact at m = n.
        let n = 120;
        let g = crate::data::synthetic::gaussian(n, n, 3);
        let a = Mat::from_fn(n, n, |i, j| (g[(i, j)] + g[(j, i)]) / (2.0 * n as f64).sqrt());
        for which in [Which::LargestAlgebraic, Which::SmallestAlgebraic, Which::LargestMagnitude] {
            check_against_dense(&a, 4, which, n, 1e-10);
        }
    }

    #[test]
    fn indefinite_well_separated_converges_early() {
        // Spectrum: outliers 5, 4, -6, -4.5 over a bulk in [-1, 1]; Krylov convergence for outliers is geometric
        // in the gap ratio, so far fewer than n steps are needed.
        let n = 400;
        let mut lambda: Vec<f64> = (0..n - 4).map(|i| -1.0 + 2.0 * i as f64 / (n - 5) as f64).collect();
        lambda.extend([5.0, 4.0, -6.0, -4.5]);
        lambda.sort_by(f64::total_cmp);
        let a = with_spectrum(&lambda, 5);
        let la = check_against_dense(&a, 2, Which::LargestAlgebraic, 200, 1e-10);
        assert!(la.iterations < 100, "{} steps", la.iterations);
        assert!((la.values[0] - 5.0).abs() < 1e-9 && (la.values[1] - 4.0).abs() < 1e-9);
        let sa = check_against_dense(&a, 2, Which::SmallestAlgebraic, 200, 1e-10);
        assert!((sa.values[0] + 6.0).abs() < 1e-9 && (sa.values[1] + 4.5).abs() < 1e-9);
        let lm = check_against_dense(&a, 3, Which::LargestMagnitude, 200, 1e-10);
        for (v, e) in lm.values.iter().zip([-6.0, 5.0, -4.5]) {
            assert!((v - e).abs() < 1e-9);
        }
    }

    #[test]
    fn clustered_top_spectrum() {
        // Five top eigenvalues 1e-3 apart above a bulk in [0, 0.5]: Lanczos must resolve the cluster.
        let n = 300;
        let mut lambda: Vec<f64> = (0..n - 5).map(|i| 0.5 * i as f64 / (n - 6) as f64).collect();
        lambda.extend((0..5).map(|i| 1.0 - 1e-3 * i as f64));
        lambda.sort_by(f64::total_cmp);
        let a = with_spectrum(&lambda, 9);
        let res = check_against_dense(&a, 5, Which::LargestAlgebraic, 250, 1e-10);
        for (i, v) in res.values.iter().enumerate() {
            assert!((v - (1.0 - 1e-3 * i as f64)).abs() < 1e-9);
        }
    }

    #[test]
    fn repeated_eigenvalues_via_restart() {
        // The identity breaks down after one step; restarts recover k copies of 1.
        let a = Mat::<f64>::identity(50, 50);
        let res = lanczos(&a, &LanczosOptions::new(3).vectors(true)).unwrap();
        assert!(res.converged);
        assert_eq!(res.iterations, 3);
        assert!(res.values.iter().all(|v| (v - 1.0).abs() < 1e-14));
        // The zero operator: all eigenvalues 0.
        let z = FnOp::new(10, |_v: &[f64], out: &mut [f64]| out.fill(0.0));
        let res = lanczos(&z, &LanczosOptions::new(2).which(Which::SmallestAlgebraic)).unwrap();
        assert!(res.converged && res.values == vec![0.0, 0.0]);
    }

    #[test]
    fn a_watched_lanczos_stops_when_told_and_otherwise_equals_the_plain_one() {
        let n = 40;
        let op = FnOp::new(n, |v: &[f64], out: &mut [f64]| {
            for (i, (o, x)) in out.iter_mut().zip(v).enumerate() {
                *o = (i + 1) as f64 * x;
            }
        });
        let opts = LanczosOptions::new(3).max_iter(n).tol(1e-10);
        let plain = lanczos(&op, &opts).unwrap();
        // One call before each operator application; the same iteration otherwise.
        let calls = std::sync::atomic::AtomicUsize::new(0);
        let watched = lanczos_watched(&op, &opts, &|_, _| {
            calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            Ok(())
        })
        .unwrap();
        assert_eq!((&watched.values, watched.iterations), (&plain.values, plain.iterations));
        assert_eq!(calls.into_inner(), plain.iterations);
        let stopped = lanczos_watched(&op, &opts, &|step, _| if step >= 2 { Err(Error::Cancelled) } else { Ok(()) });
        assert!(matches!(stopped, Err(Error::Cancelled)), "{stopped:?}");
    }

    #[test]
    fn closure_operator_laplacian() {
        // Matrix-free 1-D Dirichlet Laplacian tridiag(-1, 2, -1): lambda_j = 2 - 2 cos(pi j / (n + 1)), closed form.
        let n = 60;
        let lap = FnOp::new(n, |v: &[f64], out: &mut [f64]| {
            for i in 0..v.len() {
                let l = if i > 0 { v[i - 1] } else { 0.0 };
                let r = if i + 1 < v.len() { v[i + 1] } else { 0.0 };
                out[i] = 2.0 * v[i] - l - r;
            }
        });
        let exact = |j: usize| 2.0 - 2.0 * (std::f64::consts::PI * j as f64 / (n + 1) as f64).cos();
        let top = lanczos_top_k(&lap, 3, n, 1e-12, 1).unwrap();
        assert!(top.converged);
        for i in 0..3 {
            assert!(close(top.values[i], exact(n - i), top.residuals[i], 4.0));
        }
        let bottom =
            lanczos(&lap, &LanczosOptions::new(3).which(Which::SmallestAlgebraic).max_iter(n).tol(1e-12)).unwrap();
        for i in 0..3 {
            assert!(close(bottom.values[i], exact(i + 1), bottom.residuals[i], 4.0));
        }
    }

    #[test]
    fn deterministic_and_seeded() {
        let lambda: Vec<f64> = (0..80).map(|i| (i as f64 * 0.37).sin()).collect();
        let a = with_spectrum(&lambda, 2);
        let o = LanczosOptions::new(3).max_iter(20).tol(0.0).vectors(true);
        let r1 = lanczos(&a, &o).unwrap();
        let r2 = lanczos(&a, &o).unwrap();
        assert_eq!(r1.values, r2.values);
        assert_eq!(r1.vectors, r2.vectors);
        assert!(!r1.converged && r1.iterations == 20);
        let r3 = lanczos(&a, &o.clone().seed(1)).unwrap();
        assert_ne!(r1.values, r3.values);
    }

    #[test]
    fn errors_not_panics() {
        let a = Mat::<f64>::identity(5, 5);
        assert!(matches!(lanczos(&a, &LanczosOptions::new(0)), Err(Error::Config(_))));
        assert!(matches!(lanczos(&a, &LanczosOptions::new(6)), Err(Error::Config(_))));
        assert!(matches!(lanczos(&a, &LanczosOptions::new(3).max_iter(2)), Err(Error::Config(_))));
        assert!(matches!(lanczos(&a, &LanczosOptions::new(1).tol(f64::NAN)), Err(Error::Config(_))));
        let nan = FnOp::new(5, |v: &[f64], out: &mut [f64]| {
            out.copy_from_slice(v);
            out[2] = f64::NAN;
        });
        assert!(matches!(lanczos(&nan, &LanczosOptions::new(1)), Err(Error::Numerical(_))));
        let inf = FnOp::new(5, |_: &[f64], out: &mut [f64]| out.fill(f64::INFINITY));
        assert!(matches!(lanczos_top_k(&inf, 1, 5, 1e-8, 0), Err(Error::Numerical(_))));
        let rect = Mat::<f64>::zeros(3, 4);
        assert!(matches!(lanczos(&rect, &LanczosOptions::new(1)), Err(Error::Shape(_))));
    }
}
