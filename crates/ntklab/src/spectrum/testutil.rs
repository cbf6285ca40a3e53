//! Test matrices with prescribed spectra.

use faer::Mat;

use crate::data::synthetic::gaussian;

/// A random orthogonal n x n matrix (Q factor of a seeded Gaussian matrix).
pub(crate) fn random_orthogonal(n: usize, seed: u64) -> Mat<f64> {
    gaussian(n, n, seed).qr().compute_Q()
}

/// Q diag(lambda) Q^T for a seeded random orthogonal Q: a symmetric matrix with exactly known eigenvalues.
pub(crate) fn with_spectrum(lambda: &[f64], seed: u64) -> Mat<f64> {
    let n = lambda.len();
    let q = random_orthogonal(n, seed);
    let ql = Mat::from_fn(n, n, |i, j| q[(i, j)] * lambda[j]);
    let a = &ql * q.transpose();
    // Exact symmetry (the product is symmetric only up to rounding).
    Mat::from_fn(n, n, |i, j| 0.5 * (a[(i, j)] + a[(j, i)]))
}
