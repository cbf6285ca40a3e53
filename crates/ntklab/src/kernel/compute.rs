//! Evaluation of the layer recursions on data: one GEMM for Sigma0, then one fused elementwise pass that
//! carries each (i, j) entry through every layer in registers (only per-row variances are precomputed).

use faer::linalg::matmul::matmul;
use faer::linalg::matmul::triangular::{self, BlockStructure};
use faer::prelude::ReborrowMut;
use faer::{Accum, Mat, MatMut, MatRef, Par};
use rayon::prelude::*;

use super::activation::Dual;
use super::arch::{Architecture, Layer, Parameterization};
use crate::{Error, Result};

/// NNGP and NTK matrices between two input sets: `nngp`, `ntk` are N1 x N2.
#[derive(Debug, Clone)]
pub struct Kernel<T> {
    /// Output-layer NNGP covariance, N1 x N2.
    pub nngp: Mat<T>,
    /// Output-layer neural tangent kernel, N1 x N2.
    pub ntk: Mat<T>,
}

/// One step of the per-entry recursion on (K, Theta).
#[derive(Debug, Clone)]
enum Stage {
    /// K' = w2 K + b2; Theta' = tk K + tc + w2 Theta (with tk, tc chosen per parameterization).
    Affine { w2: f64, b2: f64, tk: f64, tc: f64, ntk_uses_new_k: bool },
    /// K' = T(q1_l[i], K, q2_l[j]); Theta' = Theta Tdot. `slot` indexes the per-row variance tables.
    Nonlin { dual: Dual, slot: usize },
}

impl Stage {
    /// Apply to an entry (k, theta) whose row/column variances at this stage are (q1, q2).
    #[inline(always)]
    fn step(&self, k: f64, theta: f64, q1: f64, q2: f64) -> (f64, f64) {
        match self {
            Stage::Affine { w2, b2, tk, tc, ntk_uses_new_k } => {
                let kn = w2 * k + b2;
                let base = if *ntk_uses_new_k { kn } else { tk * k + tc };
                (kn, base + w2 * theta)
            }
            Stage::Nonlin { dual, .. } => {
                let (t, td) = dual.eval(q1, k, q2);
                (t, theta * td)
            }
        }
    }
}

/// Turn the layer list into stages, checking what the infinite-width limit needs.
fn plan(arch: &Architecture, d: usize) -> Result<Vec<Stage>> {
    arch.validate()?;
    match arch.parameterization {
        Parameterization::Ntk | Parameterization::Standard => {}
        p => {
            return Err(Error::Config(format!(
                "the infinite-width kernel is defined here for the 'ntk' and 'standard' parameterizations, not '{p}'"
            )))
        }
    }
    let mut stages = Vec::new();
    let mut n_in = d;
    let mut slots = 0usize;
    let mut prev_was_act = false;
    for (pos, layer) in arch.layers.iter().enumerate() {
        match layer {
            Layer::Dense { width, w_std, b_std } => {
                let w2 = w_std * w_std;
                let b2 = b_std.map(|b| b * b).unwrap_or(0.0);
                let st = match arch.parameterization {
                    Parameterization::Ntk => Stage::Affine { w2, b2, tk: 0.0, tc: 0.0, ntk_uses_new_k: true },
                    _ => Stage::Affine {
                        w2,
                        b2,
                        tk: n_in as f64,
                        tc: if b_std.is_some() { 1.0 } else { 0.0 },
                        ntk_uses_new_k: false,
                    },
                };
                stages.push(st);
                n_in = *width;
                prev_was_act = false;
            }
            Layer::Activation(a) => {
                if prev_was_act {
                    return Err(Error::Config(format!(
                        "layer {} (`{a}`) follows another activation: its input is not Gaussian in the infinite-width \
                         limit, so no kernel rule applies; put a dense layer between them",
                        pos + 1
                    )));
                }
                stages.push(Stage::Nonlin { dual: a.dual(), slot: slots });
                slots += 1;
                prev_was_act = true;
            }
        }
    }
    Ok(stages)
}

/// Per-row variance before each nonlinearity: `out[slot][i]`, starting from q0 = |x_i|^2/d.
fn diag_tables(stages: &[Stage], q0: &[f64]) -> Vec<Vec<f64>> {
    let nslots = stages.iter().filter(|s| matches!(s, Stage::Nonlin { .. })).count();
    let mut tables = vec![Vec::with_capacity(q0.len()); nslots];
    for &q in q0 {
        let mut k = q;
        for st in stages {
            if let Stage::Nonlin { slot, .. } = st {
                tables[*slot].push(k);
            }
            k = st.step(k, 0.0, k, k).0;
        }
    }
    tables
}

/// Scalar types the kernel can be computed in (storage and GEMM precision; the recursion runs in f64).
pub trait KernelScalar: Copy + Send + Sync + 'static {
    /// Widen to f64.
    fn to_f64(self) -> f64;
    /// Narrow from f64.
    fn from_f64(x: f64) -> Self;
    /// dst = alpha * a b^T (only the lower triangle when `lower_only`).
    fn gram(dst: MatMut<'_, Self>, a: MatRef<'_, Self>, b: MatRef<'_, Self>, alpha: f64, lower_only: bool);
}

macro_rules! impl_scalar {
    ($t:ty) => {
        impl KernelScalar for $t {
            #[inline(always)]
            fn to_f64(self) -> f64 {
                self as f64
            }
            #[inline(always)]
            fn from_f64(x: f64) -> Self {
                x as $t
            }
            fn gram(dst: MatMut<'_, Self>, a: MatRef<'_, Self>, b: MatRef<'_, Self>, alpha: f64, lower_only: bool) {
                let par = Par::rayon(0);
                if lower_only {
                    triangular::matmul(
                        dst,
                        BlockStructure::TriangularLower,
                        Accum::Replace,
                        a,
                        BlockStructure::Rectangular,
                        b.transpose(),
                        BlockStructure::Rectangular,
                        alpha as $t,
                        par,
                    );
                } else {
                    matmul(dst, Accum::Replace, a, b.transpose(), alpha as $t, par);
                }
            }
        }
    };
}
impl_scalar!(f64);
impl_scalar!(f32);

fn check_finite<T: KernelScalar>(x: MatRef<'_, T>, name: &str) -> Result<()> {
    for j in 0..x.ncols() {
        for i in 0..x.nrows() {
            let v = x[(i, j)].to_f64();
            if !v.is_finite() {
                return Err(Error::InvalidInput(format!("{name} has a non-finite value ({v}) at row {i}, column {j}")));
            }
        }
    }
    Ok(())
}

fn row_sq_norms<T: KernelScalar>(x: MatRef<'_, T>, d: usize) -> Vec<f64> {
    (0..x.nrows())
        .into_par_iter()
        .map(|i| (0..x.ncols()).map(|j| x[(i, j)].to_f64().powi(2)).sum::<f64>() / d as f64)
        .collect()
}

/// Generic driver behind [`kernel`] and [`kernel_f32`].
pub fn kernel_generic<T: KernelScalar>(arch: &Architecture, x1: MatRef<'_, T>, x2: Option<MatRef<'_, T>>) -> Result<Kernel<T>> {
    let d = x1.ncols();
    if x1.nrows() == 0 || d == 0 {
        return Err(Error::Shape(format!("x1 must be a non-empty N x d matrix, got {} x {}", x1.nrows(), d)));
    }
    if let Some(x2) = x2 {
        if x2.ncols() != d {
            return Err(Error::Shape(format!(
                "x1 has {} features per row but x2 has {}; both must be N x d with the same d",
                d,
                x2.ncols()
            )));
        }
        if x2.nrows() == 0 {
            return Err(Error::Shape("x2 has no rows".into()));
        }
    }
    check_finite(x1, "x1")?;
    if let Some(x2) = x2 {
        check_finite(x2, "x2")?;
    }
    let stages = plan(arch, d)?;
    let symmetric = x2.is_none();
    let x2m = x2.unwrap_or(x1);
    let (n1, n2) = (x1.nrows(), x2m.nrows());

    // The Gram buffer is zeroed (in parallel, so first-touch page faults spread over threads): GEMM kernels
    // may read the destination even with `Accum::Replace`.
    let mut nngp = uninit_mat::<T>(n1, n2);
    nngp.as_mut().par_col_chunks_mut(16).for_each(|mut blk| {
        for jj in 0..blk.ncols() {
            blk.rb_mut().col_mut(jj).try_as_col_major_mut().expect("column-major storage").as_slice_mut().fill(T::from_f64(0.0));
        }
    });
    T::gram(nngp.as_mut(), x1, x2m, 1.0 / d as f64, symmetric);

    // Row variances: in the symmetric case take them from the Gram diagonal so that the
    // diagonal entries see exactly s12 == s11 == s22.
    let q1: Vec<f64> = if symmetric { (0..n1).map(|i| nngp[(i, i)].to_f64()).collect() } else { row_sq_norms(x1, d) };
    let t1 = diag_tables(&stages, &q1);
    let t2 = if symmetric { t1.clone() } else { diag_tables(&stages, &row_sq_norms(x2m, d)) };

    let mut ntk = uninit_mat::<T>(n1, n2);
    let chunk = 8usize;
    let simd = simd_available();
    nngp.as_mut()
        .par_col_chunks_mut(chunk)
        .zip(ntk.as_mut().par_col_chunks_mut(chunk))
        .enumerate()
        .for_each_init(
            || (vec![0.0f64; BLOCK], vec![0.0f64; BLOCK], vec![0.0f64; t1.len()]),
            |(kb, tb, q2), (c, (mut kblk, mut tblk))| {
                for jj in 0..kblk.ncols() {
                    let j = c * chunk + jj;
                    let i0 = if symmetric { j } else { 0 };
                    for (slot, q) in q2.iter_mut().enumerate() {
                        *q = t2[slot][j];
                    }
                    let kcol = kblk.rb_mut().col_mut(jj).try_as_col_major_mut().expect("column-major storage").as_slice_mut();
                    let tcol = tblk.rb_mut().col_mut(jj).try_as_col_major_mut().expect("column-major storage").as_slice_mut();
                    let mut i = i0;
                    while i < n1 {
                        let len = BLOCK.min(n1 - i);
                        let (kb, tb) = (&mut kb[..len], &mut tb[..len]);
                        for (d, s) in kb.iter_mut().zip(&kcol[i..i + len]) {
                            *d = s.to_f64();
                        }
                        tb.fill(0.0);
                        run_block(simd, &stages, &t1, q2, i, kb, tb);
                        for (d, s) in kcol[i..i + len].iter_mut().zip(kb.iter()) {
                            *d = T::from_f64(*s);
                        }
                        for (d, s) in tcol[i..i + len].iter_mut().zip(tb.iter()) {
                            *d = T::from_f64(*s);
                        }
                        i += len;
                    }
                }
            },
        );
    if symmetric {
        mirror_lower(&mut nngp);
        mirror_lower(&mut ntk);
    }
    Ok(Kernel { nngp, ntk })
}

/// An n1 x n2 matrix with unspecified contents, for outputs whose every entry is written before it is read
/// (the fused pass, then the mirror), which saves a serial zero-fill of hundreds of MB.
fn uninit_mat<T: KernelScalar>(n1: usize, n2: usize) -> Mat<T> {
    let mut m = Mat::<T>::with_capacity(n1, n2);
    // SAFETY: T is f32 or f64 (Copy, no drop glue, every bit pattern valid) and all callers write each entry
    // before reading it.
    unsafe { m.set_dims(n1, n2) };
    m
}

/// Rows processed together per stage (fits comfortably in L1 with its three f64 streams).
const BLOCK: usize = 256;

/// Whether the AVX2+FMA build of the block kernels can run on this CPU.
fn simd_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Carry a block of entries (rows i0.., one column) through every stage. `q2[slot]` is the column's
/// variance before nonlinearity `slot`, `t1[slot][i]` the rows'.
fn run_block(simd: bool, stages: &[Stage], t1: &[Vec<f64>], q2: &[f64], i0: usize, kb: &mut [f64], tb: &mut [f64]) {
    #[cfg(target_arch = "x86_64")]
    {
        if simd {
            // SAFETY: only taken when the CPU reports AVX2 and FMA.
            unsafe { run_block_avx2(stages, t1, q2, i0, kb, tb) };
            return;
        }
    }
    let _ = simd;
    run_block_generic(stages, t1, q2, i0, kb, tb)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn run_block_avx2(stages: &[Stage], t1: &[Vec<f64>], q2: &[f64], i0: usize, kb: &mut [f64], tb: &mut [f64]) {
    run_block_generic(stages, t1, q2, i0, kb, tb)
}

#[inline(always)]
fn run_block_generic(stages: &[Stage], t1: &[Vec<f64>], q2: &[f64], i0: usize, kb: &mut [f64], tb: &mut [f64]) {
    let len = kb.len();
    for st in stages {
        match st {
            Stage::Affine { w2, b2, tk, tc, ntk_uses_new_k } => {
                let (w2, b2, tk, tc) = (*w2, *b2, *tk, *tc);
                if *ntk_uses_new_k {
                    for (k, t) in kb.iter_mut().zip(tb.iter_mut()) {
                        let kn = w2 * *k + b2;
                        *t = kn + w2 * *t;
                        *k = kn;
                    }
                } else {
                    for (k, t) in kb.iter_mut().zip(tb.iter_mut()) {
                        *t = tk * *k + tc + w2 * *t;
                        *k = w2 * *k + b2;
                    }
                }
            }
            Stage::Nonlin { dual, slot } => {
                nonlin_block(dual, &t1[*slot][i0..i0 + len], q2[*slot], kb, tb);
            }
        }
    }
}

/// Apply one nonlinearity to a block: vectorizable closed forms for the ReLU family and erf, the
/// scalar dual otherwise.
#[inline(always)]
fn nonlin_block(dual: &Dual, q1: &[f64], q2: f64, kb: &mut [f64], tb: &mut [f64]) {
    use super::activation::Activation as A;
    match dual {
        Dual::Closed(A::Relu) => relu_family_block(0.0, 1.0, q1, q2, kb, tb),
        Dual::Closed(A::LeakyRelu { a }) => relu_family_block(*a, 1.0, q1, q2, kb, tb),
        Dual::Closed(A::AbRelu { a, b }) => relu_family_block(*a, *b, q1, q2, kb, tb),
        Dual::Closed(A::Abs) => relu_family_block(-1.0, 1.0, q1, q2, kb, tb),
        Dual::Closed(A::Identity) => {}
        Dual::Closed(A::Erf { a, b, c }) => erf_block(*a, *b, *c, q1, q2, kb, tb),
        _ => {
            for ((k, t), &qa) in kb.iter_mut().zip(tb.iter_mut()).zip(q1) {
                let (tv, td) = dual.eval(qa, *k, q2);
                *k = tv;
                *t *= td;
            }
        }
    }
}

/// ABReLU(a, b) dual on a block: `T = a b s12 + (b-a)^2 T_relu`, `Tdot = a b + (b-a)^2 (pi - theta)/(2 pi)`.
#[inline(always)]
fn relu_family_block(a: f64, b: f64, q1: &[f64], q2: f64, kb: &mut [f64], tb: &mut [f64]) {
    use std::f64::consts::PI;
    let ab = a * b;
    let d = (b - a) * (b - a);
    let inv2pi = 1.0 / (2.0 * PI);
    for ((k, t), &qa) in kb.iter_mut().zip(tb.iter_mut()).zip(q1) {
        // As `relu_dual`: sin(theta) from the same clamped cos(theta). cos = s12 / sqrt(q1 q2) (not via
        // reciprocal square roots) so that identical inputs give cos = 1 exactly (sqrt(q*q) == q in IEEE
        // arithmetic) and the ill-conditioned theta = acos(cos) near 1 sees no rounding noise.
        let s12 = *k;
        let q = qa * q2;
        let pos = q > 0.0;
        let sq = if pos { q.sqrt() } else { 1.0 };
        let cos = (s12 / sq).clamp(-1.0, 1.0);
        let pm = PI - super::fastmath::acos(cos);
        let sin = ((1.0 - cos) * (1.0 + cos)).sqrt();
        let tr = if pos { sq * (sin + pm * cos) * inv2pi } else { 0.0 };
        let tdr = if pos { pm * inv2pi } else { 0.25 };
        *k = ab * s12 + d * tr;
        *t *= ab + d * tdr;
    }
}

/// Erf(a, b, c) dual on a block (Williams 1997), see [`super::activation::Activation::closed_dual`].
#[inline(always)]
fn erf_block(a: f64, b: f64, c: f64, q1: &[f64], q2: f64, kb: &mut [f64], tb: &mut [f64]) {
    use std::f64::consts::PI;
    let b2 = b * b;
    let p2 = 1.0 + 2.0 * b2 * q2;
    let ct = a * a * 2.0 / PI;
    let cd = 4.0 * a * a * b2 / PI;
    for ((k, t), &qa) in kb.iter_mut().zip(tb.iter_mut()).zip(q1) {
        let s12 = *k;
        let p1 = 1.0 + 2.0 * b2 * qa;
        let pp = p1 * p2;
        let arg = (2.0 * b2 * s12 / pp.sqrt()).clamp(-1.0, 1.0);
        let det = (pp - 4.0 * b2 * b2 * s12 * s12).max(f64::MIN_POSITIVE);
        *k = ct * super::fastmath::asin(arg) + c * c;
        *t *= cd / det.sqrt();
    }
}

/// Copy the strict lower triangle onto the upper one, in 64 x 64 tiles so reads and writes stay in cache.
fn mirror_lower<T: KernelScalar>(m: &mut Mat<T>) {
    const B: usize = 64;
    let n = m.nrows();
    for jb in (0..n).step_by(B) {
        for ib in (0..=jb).step_by(B) {
            for j in jb..(jb + B).min(n) {
                for i in ib..(ib + B).min(j) {
                    m[(i, j)] = m[(j, i)];
                }
            }
        }
    }
}

/// Infinite-width NNGP and NTK of `arch` between the rows of `x1` (N1 x d) and `x2` (N2 x d), in f64.
/// With `x2 = None` the symmetric kernel of `x1` with itself is computed (one triangle, then mirrored).
pub fn kernel(arch: &Architecture, x1: MatRef<'_, f64>, x2: Option<MatRef<'_, f64>>) -> Result<Kernel<f64>> {
    kernel_generic(arch, x1, x2)
}

/// As [`kernel`] with f32 storage and GEMM (the per-entry recursion still runs in f64 registers).
pub fn kernel_f32(arch: &Architecture, x1: MatRef<'_, f32>, x2: Option<MatRef<'_, f32>>) -> Result<Kernel<f32>> {
    kernel_generic(arch, x1, x2)
}
