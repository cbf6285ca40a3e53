//! Dense building blocks shared by the derivative passes: GEMM at machine peak (faer) and column-parallel
//! elementwise kernels over column-major matrices (each column is a contiguous slice).

use faer::linalg::matmul::matmul;
use faer::linalg::matmul::triangular::{self, BlockStructure};
use faer::prelude::ReborrowMut;
use faer::{Accum, Mat, MatMut, MatRef, Par};
use rayon::prelude::*;

/// Below this many entries an elementwise pass runs on the calling thread.
const PAR_MIN: usize = 1 << 15;

/// dst (+)= alpha * a b, parallel over rayon's pool.
#[inline]
pub(crate) fn gemm(dst: MatMut<'_, f64>, accum: Accum, a: MatRef<'_, f64>, b: MatRef<'_, f64>, alpha: f64) {
    matmul(dst, accum, a, b, alpha, Par::rayon(0));
}

/// The lower triangle (diagonal included) of dst (+)= alpha * a b; the strict upper triangle is left untouched.
#[inline]
pub(crate) fn gemm_lower(dst: MatMut<'_, f64>, accum: Accum, a: MatRef<'_, f64>, b: MatRef<'_, f64>, alpha: f64) {
    triangular::matmul(
        dst,
        BlockStructure::TriangularLower,
        accum,
        a,
        BlockStructure::Rectangular,
        b,
        BlockStructure::Rectangular,
        alpha,
        Par::rayon(0),
    );
}

/// Column j of an owned matrix as a slice.
#[inline]
pub(crate) fn col(m: &Mat<f64>, j: usize) -> &[f64] {
    m.col_as_slice(j)
}

#[inline]
fn col_mut(m: MatMut<'_, f64>, j: usize) -> &mut [f64] {
    m.col_mut(j).try_as_col_major_mut().expect("column-major storage").as_slice_mut()
}

/// Calls `f(j, column j)` for every column of `m`, in parallel over column blocks when `m` is large.
/// Each call touches only its own column, so the result does not depend on the thread count.
pub(crate) fn for_each_col(m: &mut Mat<f64>, f: impl Fn(usize, &mut [f64]) + Sync + Send) {
    let (r, c) = (m.nrows(), m.ncols());
    if r == 0 || c == 0 {
        return;
    }
    let mut mm = m.as_mut();
    if r * c < PAR_MIN || c == 1 || rayon::current_num_threads() == 1 {
        for j in 0..c {
            f(j, col_mut(mm.rb_mut(), j));
        }
    } else {
        let chunk = (PAR_MIN / r).clamp(1, c.div_ceil(2));
        mm.par_col_chunks_mut(chunk).enumerate().for_each(|(ci, mut blk)| {
            for jj in 0..blk.ncols() {
                f(ci * chunk + jj, col_mut(blk.rb_mut(), jj));
            }
        });
    }
}

/// Reusable scratch matrices, so repeated products (HVPs in Lanczos) do not pay for fresh zeroed
/// allocations and page faults on every call. Matrices taken from it hold garbage: callers overwrite them.
#[derive(Debug, Default)]
pub(crate) struct Pool(Vec<Mat<f64>>);

impl Pool {
    /// An r x c matrix with unspecified contents.
    pub(crate) fn take(&mut self, r: usize, c: usize) -> Mat<f64> {
        match self.0.iter().position(|m| m.nrows() == r && m.ncols() == c) {
            Some(i) => self.0.swap_remove(i),
            None => Mat::zeros(r, c),
        }
    }
    /// Return a matrix for reuse.
    pub(crate) fn give(&mut self, m: Mat<f64>) {
        if m.nrows() * m.ncols() > 0 && self.0.len() < 64 {
            self.0.push(m);
        }
    }
}

/// out = a ⊙ b (same shapes; out fully overwritten).
pub(crate) fn hadamard_into(out: &mut Mat<f64>, a: &Mat<f64>, b: &Mat<f64>) {
    for_each_col(out, |j, o| {
        for ((o, &x), &y) in o.iter_mut().zip(col(a, j)).zip(col(b, j)) {
            *o = x * y;
        }
    });
}

/// a ⊙ b (same shapes).
pub(crate) fn hadamard(a: &Mat<f64>, b: &Mat<f64>) -> Mat<f64> {
    let mut out = Mat::<f64>::zeros(a.nrows(), a.ncols());
    for_each_col(&mut out, |j, o| {
        for ((o, &x), &y) in o.iter_mut().zip(col(a, j)).zip(col(b, j)) {
            *o = x * y;
        }
    });
    out
}

/// Row-block broadcast product: `stack` is (k N) x n, made of k blocks of N rows; each block ⊙= `s` (N x n).
pub(crate) fn hadamard_blocks(stack: &mut Mat<f64>, s: &Mat<f64>) {
    let n = s.nrows();
    for_each_col(stack, |j, o| {
        let sc = col(s, j);
        for blk in o.chunks_exact_mut(n) {
            for (o, &y) in blk.iter_mut().zip(sc) {
                *o *= y;
            }
        }
    });
}

/// Column sums scaled: out[j] = scale * sum_i m_ij (sequential per column: deterministic).
pub(crate) fn col_sums_into(m: &Mat<f64>, scale: f64, out: &mut [f64]) {
    for (j, o) in out.iter_mut().enumerate() {
        *o = scale * col(m, j).iter().sum::<f64>();
    }
}

/// m *= s.
pub(crate) fn scale_in_place(m: &mut Mat<f64>, s: f64) {
    for_each_col(m, |_, o| o.iter_mut().for_each(|x| *x *= s));
}

/// Copy the strict lower triangle of a square matrix onto its upper triangle.
pub(crate) fn mirror_lower(m: &mut Mat<f64>) {
    let n = m.nrows();
    for j in 0..n {
        for i in 0..j {
            m[(i, j)] = m[(j, i)];
        }
    }
}
