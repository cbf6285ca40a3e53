//! Matrix-free symmetric operators: anything that can compute out = A v for a symmetric A.

use faer::linalg::matmul::matmul;
use faer::{Accum, ColMut, ColRef, Mat, MatRef, Par};
use rayon::prelude::*;

use crate::{Error, Result};

/// A symmetric linear operator A (dim x dim) known through products out = A v.
///
/// Symmetry is the caller's promise; Lanczos results are meaningless for a non-symmetric operator.
pub trait SymOp {
    /// Dimension of the space A acts on.
    fn dim(&self) -> usize;
    /// out = A v, with `v.len() == out.len() == self.dim()`. `out` holds garbage on entry.
    fn apply(&self, v: &[f64], out: &mut [f64]);
    /// Checks that the operator is usable (e.g. a dense matrix is square and symmetric); called once by solvers.
    fn validate(&self) -> Result<()> {
        Ok(())
    }
}

impl<T: SymOp + ?Sized> SymOp for &T {
    fn dim(&self) -> usize {
        (**self).dim()
    }
    fn apply(&self, v: &[f64], out: &mut [f64]) {
        (**self).apply(v, out)
    }
    fn validate(&self) -> Result<()> {
        (**self).validate()
    }
}

/// A closure `f(v, out)` computing out = A v, with its dimension: the matrix-free operator of choice
/// (e.g. `FnOp::new(p, |v, out| hvp(params, v, out))`).
#[derive(Clone, Copy)]
pub struct FnOp<F> {
    dim: usize,
    f: F,
}

impl<F: Fn(&[f64], &mut [f64])> FnOp<F> {
    /// Wraps `f(v, out)` (out = A v, both of length `dim`) as a [`SymOp`].
    pub fn new(dim: usize, f: F) -> Self {
        FnOp { dim, f }
    }
}

impl<F: Fn(&[f64], &mut [f64])> SymOp for FnOp<F> {
    fn dim(&self) -> usize {
        self.dim
    }
    fn apply(&self, v: &[f64], out: &mut [f64]) {
        (self.f)(v, out)
    }
}

/// Rows per parallel task of the dense product; fixed so that results do not depend on the thread count.
const ROWS: usize = 256;

/// Relative asymmetry max|A - A^T| / max|A| accepted for a dense operator (catches a wrong matrix, not rounding).
pub(crate) const SYM_TOL: f64 = 1e-8;

/// Checks that `a` is square, finite and symmetric to [`SYM_TOL`] relative to its largest entry.
pub(crate) fn check_symmetric(a: MatRef<'_, f64>, what: &str) -> Result<()> {
    if a.nrows() != a.ncols() {
        return Err(Error::Shape(format!("{what} must be square, got {} x {}", a.nrows(), a.ncols())));
    }
    let n = a.nrows();
    let mut max_abs = 0.0f64;
    for j in 0..n {
        for i in 0..n {
            let x = a[(i, j)];
            if !x.is_finite() {
                return Err(Error::InvalidInput(format!("{what} has a non-finite entry {x} at ({i}, {j})")));
            }
            max_abs = max_abs.max(x.abs());
        }
    }
    for j in 0..n {
        for i in j + 1..n {
            let d = (a[(i, j)] - a[(j, i)]).abs();
            if d > SYM_TOL * max_abs {
                return Err(Error::InvalidInput(format!(
                    "{what} is not symmetric: |A[{i},{j}] - A[{j},{i}]| = {d:.3e} exceeds {SYM_TOL:e} * max|A| = {:.3e}",
                    SYM_TOL * max_abs
                )));
            }
        }
    }
    Ok(())
}

/// out = A v for a dense matrix, parallel over fixed row blocks (each block a sequential GEMV: deterministic).
fn dense_apply(a: MatRef<'_, f64>, v: &[f64], out: &mut [f64]) {
    let n = a.ncols();
    let vm = ColRef::from_slice(v).as_mat();
    let block = |(b, oc): (usize, &mut [f64])| {
        let rows = a.subrows(b * ROWS, oc.len());
        matmul(ColMut::from_slice_mut(oc).as_mat_mut(), Accum::Replace, rows, vm, 1.0, Par::Seq);
    };
    if n * a.nrows() < 1 << 16 {
        out.chunks_mut(ROWS).enumerate().for_each(block);
    } else {
        out.par_chunks_mut(ROWS).enumerate().for_each(block);
    }
}

impl SymOp for MatRef<'_, f64> {
    fn dim(&self) -> usize {
        self.nrows()
    }
    fn apply(&self, v: &[f64], out: &mut [f64]) {
        dense_apply(*self, v, out)
    }
    fn validate(&self) -> Result<()> {
        check_symmetric(*self, "dense operator")
    }
}

impl SymOp for Mat<f64> {
    fn dim(&self) -> usize {
        self.nrows()
    }
    fn apply(&self, v: &[f64], out: &mut [f64]) {
        dense_apply(self.as_ref(), v, out)
    }
    fn validate(&self) -> Result<()> {
        check_symmetric(self.as_ref(), "dense operator")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dense_apply_matches_loops_and_validates() {
        // Exact comparison is not expected (GEMV may reorder sums); 1e-12 relative is far below any real error.
        let n = 300;
        let a = Mat::<f64>::from_fn(n, n, |i, j| {
            ((i + j) % 7) as f64 - 3.0 + (i * j % 5) as f64 * 0.1 * ((i == j) as u8 as f64)
        });
        let v: Vec<f64> = (0..n).map(|i| (i as f64).sin()).collect();
        let mut out = vec![0.0; n];
        a.apply(&v, &mut out);
        for i in 0..n {
            let e: f64 = (0..n).map(|j| a[(i, j)] * v[j]).sum();
            assert!((out[i] - e).abs() < 1e-12 * n as f64);
        }
        assert!(a.validate().is_ok());
        let mut b = a.clone();
        b[(0, 1)] += 1.0;
        assert!(matches!(b.validate(), Err(Error::InvalidInput(_))));
        assert!(matches!(Mat::<f64>::zeros(2, 3).as_ref().validate(), Err(Error::Shape(_))));
    }
}
