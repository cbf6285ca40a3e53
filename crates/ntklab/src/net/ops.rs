//! Dense building blocks shared by the derivative passes, generic over the precision ([`Float`]: f64 or f32):
//! GEMM at machine peak (faer) and column-parallel elementwise kernels over column-major matrices (each column
//! is a contiguous slice).

use faer::linalg::matmul::matmul;
use faer::linalg::matmul::triangular::{self, BlockStructure};
use faer::prelude::ReborrowMut;
use faer::{Accum, Mat, MatMut, MatRef, Par};
use rayon::prelude::*;

use crate::kernel::fastmath::Real;

mod sealed {
    /// Only f64 and f32 are [`super::Float`]s: the lane kernels reinterpret reused buffers as values of `T`,
    /// which is sound because every bit pattern of these two is a valid value.
    pub trait Sealed {}
    impl Sealed for f64 {}
    impl Sealed for f32 {}
}

/// The precisions finite networks compute in: f64 (default) and f32 lanes. Multipliers, losses and reductions
/// across the batch stay in f64 where they are cheap; matrices, parameters and GEMMs use `Self`. Sealed: f64 and
/// f32 only.
pub trait Float:
    faer::traits::RealField + Real + Default + std::fmt::Debug + std::ops::AddAssign + std::ops::MulAssign + sealed::Sealed
{
    /// "f64" or "f32".
    const NAME: &'static str;
    /// dst (+)= alpha * a b.
    fn matmul(dst: MatMut<'_, Self>, accum: Accum, a: MatRef<'_, Self>, b: MatRef<'_, Self>, alpha: f64, par: Par);
    /// The lower triangle (diagonal included) of dst (+)= alpha * a b.
    fn matmul_lower(
        dst: MatMut<'_, Self>,
        accum: Accum,
        a: MatRef<'_, Self>,
        b: MatRef<'_, Self>,
        alpha: f64,
        par: Par,
    );
    /// `x` itself when Self is f64 (no copy), else None.
    fn from_f64_slice(x: &[f64]) -> Option<&[Self]>;
    /// `x` itself when Self is f64 (no copy), else None.
    fn from_f64_slice_mut(x: &mut [f64]) -> Option<&mut [Self]>;
}

macro_rules! impl_float {
    (@same some, $x:ident) => {
        Some($x)
    };
    (@same none, $x:ident) => {{
        let _ = $x;
        None
    }};
    ($t:ty, $name:literal, $same:ident) => {
        impl Float for $t {
            const NAME: &'static str = $name;
            #[inline]
            fn from_f64_slice(x: &[f64]) -> Option<&[Self]> {
                impl_float!(@same $same, x)
            }
            #[inline]
            fn from_f64_slice_mut(x: &mut [f64]) -> Option<&mut [Self]> {
                impl_float!(@same $same, x)
            }
            #[inline]
            fn matmul(dst: MatMut<'_, Self>, accum: Accum, a: MatRef<'_, Self>, b: MatRef<'_, Self>, alpha: f64, par: Par) {
                matmul(dst, accum, a, b, alpha as $t, par);
            }
            #[inline]
            fn matmul_lower(
                dst: MatMut<'_, Self>,
                accum: Accum,
                a: MatRef<'_, Self>,
                b: MatRef<'_, Self>,
                alpha: f64,
                par: Par,
            ) {
                triangular::matmul(
                    dst,
                    BlockStructure::TriangularLower,
                    accum,
                    a,
                    BlockStructure::Rectangular,
                    b,
                    BlockStructure::Rectangular,
                    alpha as $t,
                    par,
                );
            }
        }
    };
}
impl_float!(f64, "f64", some);
impl_float!(f32, "f32", none);

/// Below this many entries an elementwise pass runs on the calling thread.
const PAR_MIN: usize = 1 << 15;

thread_local! {
    /// Set while [`serially`] runs: the passes on this thread stay on it.
    static SERIAL: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Threads a pass may split its work over: 1 inside [`serially`], else the size of rayon's pool.
#[inline]
pub(crate) fn threads() -> usize {
    if SERIAL.with(|s| s.get()) {
        1
    } else {
        rayon::current_num_threads()
    }
}

/// faer's parallelism for a GEMM here: sequential inside [`serially`], else rayon's pool.
#[inline]
fn par() -> Par {
    if threads() == 1 {
        Par::Seq
    } else {
        Par::rayon(0)
    }
}

/// Runs `f` with the passes it makes on the calling thread (GEMMs, elementwise passes, the conv forward,
/// transposed and Jacobian passes; the conv parameter gradient's groups still fan out): for callers that already
/// run one task per thread, where a pass splitting its small share again would only add hand-offs between
/// threads. Work that rayon lets this thread steal meanwhile runs serially too (slower, never wrong).
pub(crate) fn serially<R>(f: impl FnOnce() -> R) -> R {
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            SERIAL.with(|s| s.set(self.0));
        }
    }
    let _restore = Restore(SERIAL.with(|s| s.replace(true)));
    f()
}

/// dst (+)= alpha * a b, parallel over rayon's pool (except inside [`serially`]).
#[inline]
pub(crate) fn gemm<T: Float>(dst: MatMut<'_, T>, accum: Accum, a: MatRef<'_, T>, b: MatRef<'_, T>, alpha: f64) {
    T::matmul(dst, accum, a, b, alpha, par());
}

/// The lower triangle (diagonal included) of dst (+)= alpha * a b; the strict upper triangle is left untouched.
#[inline]
pub(crate) fn gemm_lower<T: Float>(dst: MatMut<'_, T>, accum: Accum, a: MatRef<'_, T>, b: MatRef<'_, T>, alpha: f64) {
    T::matmul_lower(dst, accum, a, b, alpha, par());
}

/// Pieces of the inner dimension [`syrk_lower`] splits a product into (fixed, so results do not depend on the
/// thread count).
const SYRK_PIECES: usize = 4;

/// The lower triangle (diagonal included) of dst (+)= alpha a a^T; the strict upper triangle is left untouched.
/// A small output (N <= 1024) with a long inner dimension (P >= 4 N: a conv net's J, N x P with P >> N; the
/// input of a dense layer after a wide flatten) runs as sequential triangular products over [`SYRK_PIECES`]
/// fixed pieces of a's columns, in parallel, summed in piece order: a parallel product split by output blocks
/// gives each thread a few skinny blocks (16-channel CNN's empirical NTK: 4.5 -> 3.9 ms). In f32 with AVX-512
/// the pieces are `syrk16`'s packed kernel (the same CNN in f32: 5.3 -> 5.0 ms), else faer's. Otherwise, as
/// [`gemm_lower`].
pub(crate) fn syrk_lower<T: Float>(
    mut dst: MatMut<'_, T>,
    accum: Accum,
    a: MatRef<'_, T>,
    alpha: f64,
    pool: &mut Pool<T>,
) {
    let (n, p) = (a.nrows(), a.ncols());
    let pieces = SYRK_PIECES.min(p / 64);
    // With p < 4 N (a 512-wide layer at N = 256) faer's parallel product was faster. The choice never depends
    // on the thread count (one thread runs the pieces in turn), so neither do the results.
    if n > 1024 || p < 4 * n || pieces < 2 {
        return gemm_lower(dst, accum, a, a.transpose(), alpha);
    }
    let per = p.div_ceil(pieces);
    // f32 with AVX-512 and a column-major `a`: the pieces by `syrk16` (parts of n rounded up to its panels,
    // alpha applied when they are summed); else by faer (alpha applied in each part).
    #[cfg(target_arch = "x86_64")]
    let packed = std::mem::size_of::<T>() == 4
        && a.row_stride() == 1
        && matches!(crate::kernel::compute::simd_level(), crate::kernel::compute::Simd::Avx512);
    #[cfg(not(target_arch = "x86_64"))]
    let packed = false;
    #[cfg(target_arch = "x86_64")]
    let rows = if packed { n.next_multiple_of(super::syrk16::MR) } else { n };
    #[cfg(not(target_arch = "x86_64"))]
    let rows = n;
    let mut parts: Vec<Mat<T>> = (0..pieces).map(|_| pool.take(rows, rows)).collect();
    parts.par_iter_mut().enumerate().for_each(|(i, part)| {
        let cols = (i * per).min(p)..((i + 1) * per).min(p);
        let ai = a.subcols(cols.start, cols.len());
        #[cfg(target_arch = "x86_64")]
        if packed {
            let ldc = part.col_stride() as usize;
            let c = part.as_mut().as_ptr_mut().cast::<f32>();
            // SAFETY: T is f32 or f64 (`Float` is sealed), so 4 bytes wide it is f32: the casts change no type.
            // Simd::Avx512 is only chosen when the CPU reports the kernel's features; `part` holds `rows`
            // columns of `ldc` >= rows entries; `ai` is column-major (checked above); the scratch is as long as
            // `chunk_len` asks, f32 valid for any bits.
            unsafe {
                let ai = std::mem::transmute::<MatRef<'_, T>, MatRef<'_, f32>>(ai);
                crate::layers::conv::with_scratch::<f32, _>(super::syrk16::chunk_len(n), |buf| {
                    super::syrk16::piece(c, ldc, ai, buf)
                });
            }
            return;
        }
        serially(|| gemm_lower(part.as_mut(), Accum::Replace, ai, ai.transpose(), alpha));
    });
    let scale = T::of(if packed { alpha } else { 1.0 });
    for (i, part) in parts.into_iter().enumerate() {
        wide(|| {
            for c in 0..n {
                let o =
                    &mut dst.rb_mut().col_mut(c).try_as_col_major_mut().expect("column-major output").as_slice_mut()
                        [c..];
                let x = &part.col_as_slice(c)[c..n];
                if i == 0 && accum == Accum::Replace {
                    o.iter_mut().zip(x).for_each(|(o, &x)| *o = scale * x);
                } else {
                    o.iter_mut().zip(x).for_each(|(o, &x)| *o += scale * x);
                }
            }
        });
        pool.give(part);
    }
}

/// Column j of an owned matrix as a slice.
#[inline]
pub(crate) fn col<T: Float>(m: &Mat<T>, j: usize) -> &[T] {
    m.col_as_slice(j)
}

#[inline]
fn col_mut<T: Float>(m: MatMut<'_, T>, j: usize) -> &mut [T] {
    m.col_mut(j).try_as_col_major_mut().expect("column-major storage").as_slice_mut()
}

/// Whether the entries of an r x c matrix with these strides lie back to back, column after column, and a pass
/// over them should run on the calling thread (small, or inside [`serially`]).
fn flat_serial(r: usize, c: usize, row_stride: isize, col_stride: isize) -> bool {
    serial_pass(r * c) && (r <= 1 || row_stride == 1) && (c <= 1 || col_stride == r as isize)
}

/// Whether an elementwise pass over `len` entries runs on the calling thread.
fn serial_pass(len: usize) -> bool {
    len < PAR_MIN || threads() == 1
}

/// The entries of `m`, column after column, as one slice, when they are stored back to back and a pass over
/// them should run on the calling thread (else None: go column by column). A 16-row slice of examples
/// has 4096 columns of 16 entries, where a call per column costs more than the arithmetic.
pub(crate) fn flat_mut<T: Float>(m: &mut Mat<T>) -> Option<&mut [T]> {
    let (r, c) = (m.nrows(), m.ncols());
    if r * c == 0 || !flat_serial(r, c, m.row_stride(), m.col_stride()) {
        return None;
    }
    // SAFETY: the r c entries are back to back from the first (checked above), owned by `m`, borrowed mutably
    // for the slice's lifetime.
    Some(unsafe { std::slice::from_raw_parts_mut(m.as_ptr_mut(), r * c) })
}

/// [`flat_mut`] for reading, of any view.
pub(crate) fn flat<T: Float>(m: MatRef<'_, T>) -> Option<&[T]> {
    let (r, c) = (m.nrows(), m.ncols());
    if r * c == 0 || !flat_serial(r, c, m.row_stride(), m.col_stride()) {
        return None;
    }
    // SAFETY: the r c entries are back to back from the first (checked above), borrowed from `m`.
    Some(unsafe { std::slice::from_raw_parts(m.as_ptr(), r * c) })
}

/// Calls `f(j, column j)` for every column of `m`, in parallel over column blocks when `m` is large.
/// Each call touches only its own column, so the result does not depend on the thread count.
pub(crate) fn for_each_col<T: Float>(m: &mut Mat<T>, f: impl Fn(usize, &mut [T]) + Sync + Send) {
    let (r, c) = (m.nrows(), m.ncols());
    if r == 0 || c == 0 {
        return;
    }
    let mut mm = m.as_mut();
    if r * c < PAR_MIN || c == 1 || threads() == 1 {
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

/// Calls `f(j, column j of a, column j of b)` for every column of two matrices of equal shape, in parallel
/// over column blocks when they are large (one pass that writes both, e.g. an activation and its slope).
pub(crate) fn for_each_col2<T: Float>(
    a: &mut Mat<T>,
    b: &mut Mat<T>,
    f: impl Fn(usize, &mut [T], &mut [T]) + Sync + Send,
) {
    let (r, c) = (a.nrows(), a.ncols());
    assert_eq!((b.nrows(), b.ncols()), (r, c), "for_each_col2 needs equal shapes");
    if r == 0 || c == 0 {
        return;
    }
    let (mut am, mut bm) = (a.as_mut(), b.as_mut());
    if r * c < PAR_MIN || c == 1 || threads() == 1 {
        for j in 0..c {
            f(j, col_mut(am.rb_mut(), j), col_mut(bm.rb_mut(), j));
        }
    } else {
        let chunk = (PAR_MIN / r).clamp(1, c.div_ceil(2));
        am.par_col_chunks_mut(chunk).zip(bm.par_col_chunks_mut(chunk)).enumerate().for_each(|(ci, (mut x, mut y))| {
            for jj in 0..x.ncols() {
                f(ci * chunk + jj, col_mut(x.rb_mut(), jj), col_mut(y.rb_mut(), jj));
            }
        });
    }
}

/// Matrices a [`Pool`] keeps at most. When full it drops the one given back longest ago: a shape that passes
/// give back but never take (a small matrix some pass makes outside the pool) must not crowd out the shapes
/// that are taken. With a cap that refused newcomers instead, a conv net's empirical NTK filled its pools with
/// 60 matrices of 16 x 16 and then allocated (and zeroed) its 16 x 4096 activations afresh for every slice.
/// The policy keeps a shape as long as fewer than this many matrices are given back between two takes of it.
const POOL_KEEP: usize = 64;

/// Reusable scratch matrices, so repeated products (HVPs in Lanczos, training steps) do not pay for fresh
/// zeroed allocations and page faults on every call. Matrices taken from it hold garbage: callers overwrite them.
#[derive(Debug)]
pub(crate) struct Pool<T: Float = f64> {
    mats: Vec<Mat<T>>,
    /// Pools lent to parallel tasks ([`Pool::split`]) and kept for the next call.
    subs: Vec<Pool<T>>,
}

impl<T: Float> Default for Pool<T> {
    fn default() -> Self {
        Pool { mats: Vec::new(), subs: Vec::new() }
    }
}

impl<T: Float> Pool<T> {
    /// An r x c matrix with unspecified contents: the one of that shape given back last, else a new one.
    pub(crate) fn take(&mut self, r: usize, c: usize) -> Mat<T> {
        match self.mats.iter().rposition(|m| m.nrows() == r && m.ncols() == c) {
            Some(i) => self.mats.remove(i),
            None => Mat::zeros(r, c),
        }
    }
    /// Return a matrix for reuse. Past [`POOL_KEEP`] matrices, the one given back longest ago is dropped.
    pub(crate) fn give(&mut self, m: Mat<T>) {
        if m.nrows() * m.ncols() > 0 {
            if self.mats.len() >= POOL_KEEP {
                self.mats.remove(0);
            }
            self.mats.push(m);
        }
    }
    /// `n` pools for parallel tasks, holding what the tasks of a previous call gave back ([`Pool::join`]).
    pub(crate) fn split(&mut self, n: usize) -> Vec<Pool<T>> {
        let mut subs = std::mem::take(&mut self.subs);
        subs.resize_with(n, Pool::default);
        subs
    }
    /// Keep the pools of [`Pool::split`] for the next call.
    pub(crate) fn join(&mut self, subs: Vec<Pool<T>>) {
        self.subs = subs;
    }
    /// Bytes held.
    fn bytes(&self) -> usize {
        self.mats.iter().map(|m| m.nrows() * m.ncols() * std::mem::size_of::<T>()).sum::<usize>()
            + self.subs.iter().map(Pool::bytes).sum::<usize>()
    }
}

/// Runs `f` with the shared scratch pool, or a fresh one if another thread holds it.
pub(crate) fn with_pool<T: Float, R>(pool: &std::sync::Mutex<Pool<T>>, f: impl FnOnce(&mut Pool<T>) -> R) -> R {
    match pool.try_lock() {
        Ok(mut p) => f(&mut p),
        Err(_) => f(&mut Pool::default()),
    }
}

/// A [`Pool`] a [`Network`](super::Network) keeps between calls, so that repeated calls at the same batch
/// size (the empirical NTK in a training loop, a benchmark's repeats) reuse their matrices instead of zeroing
/// fresh ones (for a small CNN's empirical NTK, zeroing was 7 % of the time). At most [`Scratch::MAX_BYTES`]
/// are kept; a call that finds it in use (another thread) works with an empty pool. Cloning a network or
/// comparing two ignores it.
pub(crate) struct Scratch<T: Float>(std::sync::Mutex<Pool<T>>);

impl<T: Float> Default for Scratch<T> {
    fn default() -> Self {
        Scratch(std::sync::Mutex::new(Pool::default()))
    }
}

impl<T: Float> Scratch<T> {
    /// The most memory kept between calls.
    pub(crate) const MAX_BYTES: usize = 256 << 20;

    /// Runs `f` with the kept pool ([`with_pool`]), then keeps it for the next call if it is small enough
    /// (else it is freed).
    pub(crate) fn with<R>(&self, f: impl FnOnce(&mut Pool<T>) -> R) -> R {
        with_pool(&self.0, |pool| {
            let r = f(pool);
            if pool.bytes() > Self::MAX_BYTES {
                *pool = Pool::default();
            }
            r
        })
    }
}

impl<T: Float> Clone for Scratch<T> {
    fn clone(&self) -> Self {
        Scratch::default()
    }
}

impl<T: Float> PartialEq for Scratch<T> {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl<T: Float> std::fmt::Debug for Scratch<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Scratch")
    }
}

/// out = a ⊙ b (same shapes; out fully overwritten).
pub(crate) fn hadamard_into<T: Float>(out: &mut Mat<T>, a: &Mat<T>, b: &Mat<T>) {
    for_each_col(out, |j, o| {
        for ((o, &x), &y) in o.iter_mut().zip(col(a, j)).zip(col(b, j)) {
            *o = x * y;
        }
    });
}

/// a ⊙ b (same shapes).
pub(crate) fn hadamard<T: Float>(a: &Mat<T>, b: &Mat<T>) -> Mat<T> {
    let mut out = Mat::<T>::zeros(a.nrows(), a.ncols());
    hadamard_into(&mut out, a, b);
    out
}

/// Row-block broadcast product: `stack` is (k N) x n, made of k blocks of N rows; each block ⊙= `s` (N x n).
pub(crate) fn hadamard_blocks<T: Float>(stack: &mut Mat<T>, s: &Mat<T>) {
    let n = s.nrows();
    if stack.nrows() == n {
        if let (Some(o), Some(y)) = (flat_mut(stack), flat(s.as_ref())) {
            wide(|| o.iter_mut().zip(y).for_each(|(o, &y)| *o *= y));
            return;
        }
    }
    for_each_col(stack, |j, o| {
        let sc = col(s, j);
        for blk in o.chunks_exact_mut(n) {
            for (o, &y) in blk.iter_mut().zip(sc) {
                *o *= y;
            }
        }
    });
}

/// Column sums scaled: out[j] = scale * sum_i m_ij, accumulated in f64 (sequential per column: deterministic).
pub(crate) fn col_sums_into<T: Float>(m: &Mat<T>, scale: f64, out: &mut [T]) {
    for (j, o) in out.iter_mut().enumerate() {
        *o = T::of(scale * col(m, j).iter().fold(0.0, |s, v| s + v.wide()));
    }
}

/// m *= s.
pub(crate) fn scale_in_place<T: Float>(m: &mut Mat<T>, s: f64) {
    let s = T::of(s);
    for_each_col(m, |_, o| o.iter_mut().for_each(|x| *x *= s));
}

/// Copy the strict lower triangle of a square matrix onto its upper triangle.
pub(crate) fn mirror_lower<T: Float>(m: &mut Mat<T>) {
    let n = m.nrows();
    for j in 0..n {
        for i in 0..j {
            m[(i, j)] = m[(j, i)];
        }
    }
}

/// Runs `f` built for the CPU's widest vectors (AVX-512 or AVX2 with FMA where present, as
/// [`crate::kernel::compute::simd_level`] reports): the elementwise passes over a slice's activations are plain
/// loops that the compiler vectorizes, and in the baseline x86-64 build it can only use 4-lane SSE for them
/// (ReLU, the slope products and global average pooling ran at a quarter of the vector width: 7 % of the f32
/// empirical NTK). `f` must be a closure (inlined into the wide build).
#[inline(always)]
pub(crate) fn wide<R>(f: impl FnOnce() -> R) -> R {
    use crate::kernel::compute::{simd_level, Simd};
    match simd_level() {
        // SAFETY: each arm is only taken when the CPU reports the features it is built for.
        #[cfg(target_arch = "x86_64")]
        Simd::Avx512 => unsafe { wide_avx512(f) },
        #[cfg(target_arch = "x86_64")]
        Simd::Avx2 => unsafe { wide_avx2(f) },
        _ => f(),
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512vl,avx2,fma")]
unsafe fn wide_avx512<R>(f: impl FnOnce() -> R) -> R {
    f()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn wide_avx2<R>(f: impl FnOnce() -> R) -> R {
    f()
}

/// `dst` (x's shape) <- x. Rows stored back to back (a row-major view: how Python's arrays arrive) are
/// transposed eight at a time, so that their cache lines stay in L1 while each column takes eight values (a
/// per-element copy over a 256 x 768 batch missed on every read: 1-2 ms); other layouts copy as faer does.
pub(crate) fn copy_input<T: Float>(mut dst: MatMut<'_, T>, x: MatRef<'_, T>) {
    let (n, d) = (x.nrows(), x.ncols());
    assert_eq!((dst.nrows(), dst.ncols()), (n, d), "copy_input: shapes");
    if n < 2 || d < 2 || x.col_stride() != 1 || x.row_stride() != d as isize || dst.row_stride() != 1 {
        return dst.copy_from(x);
    }
    // SAFETY: the n d entries lie back to back, row after row, from the first (strides checked), borrowed from x.
    let vals = unsafe { std::slice::from_raw_parts(x.as_ptr(), n * d) };
    let (out, cs) = (dst.as_ptr_mut(), dst.col_stride());
    for (b, rows) in vals.chunks(8 * d).enumerate() {
        for j in 0..d {
            for (i, row) in rows.chunks_exact(d).enumerate() {
                // SAFETY: row b 8 + i < n and column j < d of dst (unit row stride, column stride cs).
                unsafe { *out.offset(j as isize * cs + (b * 8 + i) as isize) = row[j] };
            }
        }
    }
}

/// x as a column-major matrix ([`copy_input`]'s copy).
pub fn column_major<T: Float>(x: MatRef<'_, T>) -> Mat<T> {
    let mut m = Mat::zeros(x.nrows(), x.ncols());
    copy_input(m.as_mut(), x);
    m
}

/// A copy in another precision.
pub fn cast<S: Float, T: Float>(m: MatRef<'_, S>) -> Mat<T> {
    Mat::from_fn(m.nrows(), m.ncols(), |i, j| T::of(m[(i, j)].wide()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::synthetic::gaussian;

    #[test]
    fn input_copies_transpose_row_major_views_exactly() {
        // Row counts around the blocks of eight, a block of rows inside a larger row-major matrix, and other
        // layouts (column-major; a transposed matrix).
        for (n, d) in [(1, 5), (7, 3), (8, 4), (21, 6), (35, 1)] {
            let want = gaussian(n, d, 4);
            let rows: Vec<f64> = (0..n).flat_map(|i| (0..d).map(move |j| (i, j))).map(|(i, j)| want[(i, j)]).collect();
            let mut got = Mat::<f64>::from_fn(n, d, |_, _| f64::NAN);
            copy_input(got.as_mut(), MatRef::from_row_major_slice(&rows, n, d));
            assert!(got == want, "{n} x {d}");
            assert!(column_major(MatRef::from_row_major_slice(&rows, n, d)) == want, "{n} x {d}");
            if n > 2 {
                let mut part = Mat::<f64>::zeros(n - 2, d);
                copy_input(part.as_mut(), MatRef::from_row_major_slice(&rows, n, d).subrows(1, n - 2));
                assert!(part == want.as_ref().subrows(1, n - 2), "{n} x {d}, rows 1..{}", n - 1);
            }
            copy_input(got.as_mut(), want.as_ref());
            assert!(got == want);
            // A transposed column-major matrix: row-major with its column stride (padded or not).
            let t = gaussian(d, n, 5);
            copy_input(got.as_mut(), t.transpose());
            assert!(got == t.transpose(), "{n} x {d} transposed");
        }
    }

    #[test]
    fn pools_reuse_the_shapes_taken_when_others_fill_them() {
        // A pool full of a shape that passes give back but never take: a matrix given back now must still be
        // there for the next take of its shape (a marker written into it survives), and the pool stays capped.
        let mut pool = Pool::<f32>::default();
        for _ in 0..POOL_KEEP {
            pool.give(Mat::zeros(16, 16));
        }
        for round in 1..4 {
            let mut big = pool.take(16, 4096);
            big[(3, 7)] = round as f32;
            pool.give(big);
            for _ in 0..5 {
                pool.give(Mat::zeros(16, 16));
            }
            let again = pool.take(16, 4096);
            assert_eq!(again[(3, 7)], round as f32, "round {round}: the 16 x 4096 matrix was not kept");
            pool.give(again);
            assert_eq!(pool.mats.len(), POOL_KEEP);
        }
        // The oldest go first: enough new small ones push the big one out.
        for _ in 0..POOL_KEEP {
            pool.give(Mat::zeros(16, 16));
        }
        assert!(pool.mats.iter().all(|m| m.ncols() == 16));
    }

    #[test]
    fn f32_syrk_lower_is_the_lower_triangle_of_a_a_transpose() {
        // In f32 with AVX-512 the pieces go by `syrk16` (elsewhere by faer): one panel and several, partial
        // panels (n not a multiple of 32), several chunks of columns with a partial last one, Replace and Add,
        // against the product in f64. Sums of <= 2000 products of N(0,1) values rounded in f32: errors of order
        // sqrt(P) P 6e-8 relative to the largest entry (~P) stay below 1e-5 of it; a wrong block is O(1).
        for (n, p) in [(20, 600), (33, 257), (70, 700), (96, 2000)] {
            let a = gaussian(n, p, 3);
            let full = &a * a.transpose();
            let a32 = Mat::<f32>::from_fn(n, p, |i, j| a[(i, j)] as f32);
            let mut pool = Pool::<f32>::default();
            for accum in [Accum::Replace, Accum::Add] {
                let start = gaussian(n, n, 4);
                let mut dst = Mat::<f32>::from_fn(n, n, |i, j| start[(i, j)] as f32);
                let before = dst.clone();
                syrk_lower(dst.as_mut(), accum, a32.as_ref(), 0.5, &mut pool);
                for j in 0..n {
                    for i in 0..n {
                        if i < j {
                            assert!(dst[(i, j)].to_bits() == before[(i, j)].to_bits(), "{n} x {p}: upper ({i}, {j})");
                            continue;
                        }
                        let add = if accum == Accum::Add { f64::from(before[(i, j)]) } else { 0.0 };
                        let want = 0.5 * full[(i, j)] + add;
                        let err = (f64::from(dst[(i, j)]) - want).abs();
                        assert!(err < 1e-5 * full.norm_max(), "{n} x {p} {accum:?} ({i}, {j}): {err}");
                    }
                }
                let one = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
                let mut dst1 = before.clone();
                one.install(|| syrk_lower(dst1.as_mut(), accum, a32.as_ref(), 0.5, &mut Pool::default()));
                assert!(dst1 == dst, "{n} x {p} {accum:?}: one thread");
            }
        }
    }

    #[test]
    fn syrk_lower_is_the_lower_triangle_of_a_a_transpose() {
        // Pieces (P >= 4 N) and faer's product (P < 4 N), Replace and Add, against a plain product; the strict
        // upper triangle is left as it was. Sums of <= 600 products of N(0,1) values: 1e-12 relative is far above
        // rounding (~1e-14).
        for (n, p) in [(20, 600), (20, 70), (33, 257)] {
            let a = gaussian(n, p, 1);
            let full = &a * a.transpose();
            let mut pool = Pool::default();
            for accum in [Accum::Replace, Accum::Add] {
                let start = gaussian(n, n, 2);
                let mut dst = start.clone();
                syrk_lower(dst.as_mut(), accum, a.as_ref(), 0.5, &mut pool);
                for j in 0..n {
                    for i in 0..n {
                        let want = if i < j {
                            start[(i, j)]
                        } else {
                            0.5 * full[(i, j)] + if accum == Accum::Add { start[(i, j)] } else { 0.0 }
                        };
                        assert!((dst[(i, j)] - want).abs() < 1e-12 * full.norm_max(), "{n} x {p} {accum:?} ({i}, {j})");
                    }
                }
                // The same bits on one thread (fixed pieces).
                let one = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
                let mut dst1 = start.clone();
                one.install(|| syrk_lower(dst1.as_mut(), accum, a.as_ref(), 0.5, &mut Pool::default()));
                assert!(dst1 == dst, "{n} x {p} {accum:?}: one thread");
            }
        }
    }
}
