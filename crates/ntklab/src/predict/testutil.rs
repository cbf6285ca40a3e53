//! Small kernels and comparisons for the prediction tests.

use faer::{Mat, MatRef};

/// RBF kernel exp(-|a_i - b_j|^2 / (2 d)) between the rows of a (N1 x d) and b (N2 x d): N1 x N2, PSD.
pub(crate) fn rbf(a: MatRef<'_, f64>, b: MatRef<'_, f64>) -> Mat<f64> {
    let d = a.ncols() as f64;
    Mat::from_fn(a.nrows(), b.nrows(), |i, j| {
        let s: f64 = (0..a.ncols()).map(|c| (a[(i, c)] - b[(j, c)]).powi(2)).sum();
        (-s / (2.0 * d)).exp()
    })
}

/// max_ij |a_ij - b_ij|.
pub(crate) fn max_abs_diff(a: MatRef<'_, f64>, b: MatRef<'_, f64>) -> f64 {
    assert_eq!((a.nrows(), a.ncols()), (b.nrows(), b.ncols()));
    let mut m = 0.0f64;
    for j in 0..a.ncols() {
        for i in 0..a.nrows() {
            m = m.max((a[(i, j)] - b[(i, j)]).abs());
        }
    }
    m
}
