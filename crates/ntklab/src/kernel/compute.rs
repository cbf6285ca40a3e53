//! Evaluation of the layer recursions on data, fused per output tile: a GEMM for the tile of Sigma0, then an
//! elementwise pass that carries each (i, j) entry through every layer in cache (only per-row variances are
//! precomputed), then the copy onto the mirror tile in the symmetric case.

use faer::linalg::matmul::matmul;
use faer::prelude::ReborrowMut;
use faer::{Accum, Mat, MatMut, MatRef, Par};
use rayon::prelude::*;

use super::activation::Dual;
use super::arch::{Architecture, Parameterization};
use super::fastmath::{self, Real};
use super::graph::Op;
use crate::layers;
use crate::runs::OnProgress;
use crate::{Error, Result};

/// NNGP and NTK matrices between two input sets: `nngp`, `ntk` are N1 x N2.
#[derive(Debug, Clone)]
pub struct Kernel<T> {
    /// Output-layer NNGP covariance, N1 x N2.
    pub nngp: Mat<T>,
    /// Output-layer neural tangent kernel, N1 x N2.
    pub ntk: Mat<T>,
}

impl<T: Real> Kernel<T> {
    /// The kernel (rows from `r0` on of a larger one) if every entry is finite; else the error naming the first
    /// one that overflowed.
    pub fn finite(self, r0: usize) -> Result<Self> {
        match non_finite(self.nngp.as_ref(), self.ntk.as_ref(), (r0, 0)) {
            Some(e) => Err(e),
            None => Ok(self),
        }
    }
}

/// One step of the per-entry recursion on registers of (K, Theta) values. Register 0 starts as Sigma0 (and
/// Theta = 0) and ends as the output; a chain uses register 0 only, in place.
#[derive(Debug, Clone)]
pub(crate) enum Stage {
    /// K' = w2 K + b2; Theta' = tk K + tc + w2 Theta (with tk, tc chosen per parameterization), on `reg`.
    Affine { reg: usize, w2: f64, b2: f64, tk: f64, tc: f64, ntk_uses_new_k: bool },
    /// K' = T(q1_slot[i], K, q2_slot[j]); Theta' = Theta Tdot, on `reg`. `slot` indexes the per-row variance
    /// tables.
    Nonlin { reg: usize, dual: Dual, slot: usize },
    /// (K, Theta)[dst] = (K, Theta)[src] (neural-tangents `FanOut`).
    Copy { src: usize, dst: usize },
    /// (K, Theta)[dst] = a (K, Theta)[dst] + b (K, Theta)[src] (`FanInSum`: a = b = 1; `FanInConcat`: the
    /// width-weighted average).
    Mix { dst: usize, src: usize, a: f64, b: f64 },
}

/// The stages of an architecture and the number of registers they use.
#[derive(Debug, Clone)]
struct Plan {
    stages: Vec<Stage>,
    regs: usize,
}

impl Plan {
    /// Number of nonlinearities (row-table slots).
    fn slots(&self) -> usize {
        self.stages.iter().filter(|s| matches!(s, Stage::Nonlin { .. })).count()
    }

    /// The exact scalar recursion on one diagonal entry (x = x', so q1 = q2 = K before each nonlinearity):
    /// returns (K, Theta) of the output and calls `seen(slot, K)` before each nonlinearity.
    fn diagonal(&self, q0: f64, mut seen: impl FnMut(usize, f64)) -> (f64, f64) {
        let mut k = vec![0.0; self.regs];
        let mut t = vec![0.0; self.regs];
        k[0] = q0;
        for st in &self.stages {
            match st {
                Stage::Affine { reg, w2, b2, tk, tc, ntk_uses_new_k } => {
                    let kn = w2 * k[*reg] + b2;
                    let base = if *ntk_uses_new_k { kn } else { tk * k[*reg] + tc };
                    t[*reg] = base + w2 * t[*reg];
                    k[*reg] = kn;
                }
                Stage::Nonlin { reg, dual, slot } => {
                    seen(*slot, k[*reg]);
                    let q = k[*reg];
                    let (tv, td) = dual.eval(q, q, q);
                    k[*reg] = tv;
                    t[*reg] *= td;
                }
                Stage::Copy { src, dst } => {
                    k[*dst] = k[*src];
                    t[*dst] = t[*src];
                }
                Stage::Mix { dst, src, a, b } => {
                    k[*dst] = a * k[*dst] + b * k[*src];
                    t[*dst] = a * t[*dst] + b * t[*src];
                }
            }
        }
        (k[0], t[0])
    }
}

/// Compile the architecture into stages over registers, checking what the infinite-width limit needs: every
/// nonlinearity and sum reads Gaussian pre-activations (the input, a Dense output, or sums of those), as in
/// neural-tangents; a concatenation reads anything and is read only by linear layers.
fn plan(arch: &Architecture, d: usize) -> Result<Plan> {
    match arch.parameterization {
        Parameterization::Ntk | Parameterization::Standard => {}
        p => {
            return Err(Error::Config(format!(
                "the infinite-width kernel is defined here for the 'ntk' and 'standard' parameterizations, not '{p}'"
            )))
        }
    }
    let g = arch.graph(d)?;
    let nn = g.nodes.len();
    let mut remaining: Vec<usize> = g.consumers().iter().map(|c| c.len()).collect();
    let mut reg_of = vec![0usize; nn];
    let mut gaussian = vec![true; nn];
    let mut free: Vec<usize> = Vec::new();
    let mut regs = 1usize;
    let mut stages = Vec::new();
    let mut slots = 0usize;
    for v in 1..nn {
        let node = &g.nodes[v];
        let u0 = node.inputs[0];
        let uses = |u: usize| node.inputs.iter().filter(|&&w| w == u).count();
        // Work in place on the first input's register when this node is its last reader.
        let r = if remaining[u0] == 1 {
            reg_of[u0]
        } else {
            let r = free.pop().unwrap_or_else(|| {
                regs += 1;
                regs - 1
            });
            stages.push(Stage::Copy { src: reg_of[u0], dst: r });
            r
        };
        let what = |v: usize| if g.is_chain() { format!("layer {v}") } else { format!("node `{}`", g.nodes[v].name) };
        match &node.op {
            Op::Input => unreachable!("node 0 is the only input"),
            // On feature vectors flatten is the identity (neural-tangents' Flatten of a 2-d input).
            Op::Flatten if !g.nodes[u0].shape.is_spatial() => {
                gaussian[v] = gaussian[u0];
            }
            Op::Conv { .. } | Op::AvgPool { .. } | Op::GlobalAvgPool | Op::Flatten => {
                return Err(Error::Config(format!(
                    "{} is a spatial layer: its kernel needs inputs with spatial axes (N x H x W x C), computed by \
                     kernel::cnn",
                    what(v)
                )));
            }
            Op::Dense { w_std, b_std, .. } => {
                stages.push(layers::dense::kernel_stage(r, *w_std, *b_std, arch.parameterization, g.nodes[u0].width));
            }
            Op::Activation(a) => {
                if matches!(g.nodes[u0].op, Op::Concat) {
                    return Err(Error::Config(format!(
                        "{} (`{a}`) reads the concatenation `{}`: its feature blocks have different covariances, so \
                         no single kernel rule applies (neural-tangents refuses this too); put a dense layer after \
                         the concatenation",
                        what(v),
                        g.nodes[u0].name
                    )));
                }
                if !gaussian[u0] {
                    return Err(Error::Config(format!(
                        "{} (`{a}`) follows another activation: its input is not Gaussian in the infinite-width \
                         limit, so no kernel rule applies; put a dense layer between them",
                        what(v)
                    )));
                }
                stages.push(layers::activation::kernel_stage(r, a, slots));
                slots += 1;
                gaussian[v] = false;
            }
            Op::Sum | Op::Concat => {
                // A concatenation's kernel is its blocks' kernels weighted by width, whatever their laws (each
                // feature lies in one block); a sum's needs the cross-covariance of its inputs, zero only for
                // independent mean-zero Gaussians (neural-tangents draws the same line).
                let sum = matches!(node.op, Op::Sum);
                if let Some(&bad) = node.inputs.iter().find(|&&u| sum && !gaussian[u]) {
                    return Err(Error::Config(format!(
                        "{} sums `{}`, which is not Gaussian (an activation or a concatenation): the infinite-width \
                         kernel of a sum is defined for Gaussian (pre-activation) inputs only, as in \
                         neural-tangents; end each branch with a dense layer, or concatenate the branches",
                        what(v),
                        g.nodes[bad].name
                    )));
                }
                let widths: Vec<usize> = node.inputs.iter().map(|&u| g.nodes[u].width).collect();
                // Concatenated features are not identically distributed: only a Dense layer may read them.
                gaussian[v] = !matches!(node.op, Op::Concat);
                let w = layers::fan_in::kernel_weights(&node.op, &widths);
                for (i, &u) in node.inputs.iter().enumerate().skip(1) {
                    let a = if i == 1 { w[0] } else { 1.0 };
                    stages.push(Stage::Mix { dst: r, src: reg_of[u], a, b: w[i] });
                }
            }
        }
        reg_of[v] = r;
        let mut seen = Vec::new();
        for &u in &node.inputs {
            if seen.contains(&u) {
                continue;
            }
            seen.push(u);
            remaining[u] -= uses(u);
            if remaining[u] == 0 && reg_of[u] != r {
                free.push(reg_of[u]);
            }
        }
    }
    let out = reg_of[g.output()];
    if out != 0 {
        stages.push(Stage::Copy { src: out, dst: 0 });
    }
    Ok(Plan { stages, regs })
}

/// Per-row variance before each nonlinearity: `out[slot][i]`, starting from q0 = |x_i|^2/d.
fn diag_tables(plan: &Plan, q0: &[f64]) -> Vec<Vec<f64>> {
    let mut tables = vec![Vec::with_capacity(q0.len()); plan.slots()];
    for &q in q0 {
        plan.diagonal(q, |slot, k| tables[slot].push(k));
    }
    tables
}

/// Scalar types the kernel can be computed in: storage, GEMM and the per-entry recursion (its row tables
/// and the exact diagonal of a symmetric kernel are computed in f64).
pub trait KernelScalar: Real {
    /// dst = alpha * a b^T on the calling thread.
    fn gemm_seq(dst: MatMut<'_, Self>, a: MatRef<'_, Self>, b: MatRef<'_, Self>, alpha: f64);
}

macro_rules! impl_scalar {
    ($t:ty) => {
        impl KernelScalar for $t {
            fn gemm_seq(dst: MatMut<'_, Self>, a: MatRef<'_, Self>, b: MatRef<'_, Self>, alpha: f64) {
                matmul(dst, Accum::Replace, a, b.transpose(), alpha as $t, Par::Seq);
            }
        }
    };
}
impl_scalar!(f64);
impl_scalar!(f32);

fn check_finite<T: KernelScalar>(x: MatRef<'_, T>, name: &str) -> Result<()> {
    for j in 0..x.ncols() {
        for i in 0..x.nrows() {
            let v = x[(i, j)].wide();
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
        .map(|i| (0..x.ncols()).map(|j| x[(i, j)].wide().powi(2)).sum::<f64>() / d as f64)
        .collect()
}

/// Generic driver behind [`kernel`] and [`kernel_f32`].
pub fn kernel_generic<T: KernelScalar>(
    arch: &Architecture,
    x1: MatRef<'_, T>,
    x2: Option<MatRef<'_, T>>,
) -> Result<Kernel<T>> {
    kernel_with(arch, x1, x2, simd_level(), &crate::runs::no_progress)
}

/// [`kernel_generic`] calling `progress(done, total)` (from worker threads) as output tiles finish, e.g. for a
/// progress bar with an ETA; an error from it stops the computation. Unlike the others, it returns entries that
/// overflowed (inf, NaN) as they are, for a caller that checks them itself: the CLI's writer refuses them, or
/// writes them with `--allow-nonfinite`.
pub fn kernel_with_progress<T: KernelScalar>(
    arch: &Architecture,
    x1: MatRef<'_, T>,
    x2: Option<MatRef<'_, T>>,
    progress: OnProgress,
) -> Result<Kernel<T>> {
    kernel_in(arch, x1, x2, simd_level(), progress, false)
}

/// [`kernel_generic`] with a chosen build of the block kernels (tests compare them).
pub(crate) fn kernel_with<T: KernelScalar>(
    arch: &Architecture,
    x1: MatRef<'_, T>,
    x2: Option<MatRef<'_, T>>,
    simd: Simd,
    progress: OnProgress,
) -> Result<Kernel<T>> {
    kernel_in(arch, x1, x2, simd, progress, true)
}

/// The kernel pair into new matrices; `finite`: an entry that overflowed is an error.
fn kernel_in<T: KernelScalar>(
    arch: &Architecture,
    x1: MatRef<'_, T>,
    x2: Option<MatRef<'_, T>>,
    simd: Simd,
    progress: OnProgress,
    finite: bool,
) -> Result<Kernel<T>> {
    check_inputs(x1, x2)?;
    let (n1, n2) = (x1.nrows(), x2.unwrap_or(x1).nrows());
    crate::data::memory::check_alloc(
        n1.saturating_mul(n2).saturating_mul(2 * std::mem::size_of::<T>()),
        &format!("the NNGP and NTK matrices ({n1} x {n2} each; split the inputs into blocks with --x2 to tile)"),
    )?;
    let prof = Profile::start();
    let mut nngp = alloc_mat::<T>(n1, n2);
    let mut ntk = alloc_mat::<T>(n1, n2);
    prof.mark("alloc + prefault");
    fused_pass(arch, x1, x2, simd, (nngp.as_mut(), ntk.as_mut()), progress, finite)?;
    prof.mark("fused pass");
    Ok(Kernel { nngp, ntk })
}

/// [`kernel_with_progress`] into caller-provided column-major N1 x N2 matrices (any column stride >= N1), e.g.
/// memory that another runtime owns and hands out without a copy: every entry is written; contents before the
/// call do not matter, and the pages are faulted in from all threads first.
pub fn kernel_into<T: KernelScalar>(
    arch: &Architecture,
    x1: MatRef<'_, T>,
    x2: Option<MatRef<'_, T>>,
    mut nngp: MatMut<'_, T>,
    mut ntk: MatMut<'_, T>,
    progress: OnProgress,
) -> Result<()> {
    check_inputs(x1, x2)?;
    let (n1, n2) = (x1.nrows(), x2.unwrap_or(x1).nrows());
    for (m, what) in [(nngp.as_ref(), "the NNGP output"), (ntk.as_ref(), "the NTK output")] {
        if (m.nrows(), m.ncols()) != (n1, n2) {
            return Err(Error::Shape(format!("{what} is {} x {}, the kernel {n1} x {n2}", m.nrows(), m.ncols())));
        }
        if (n1 > 1 && m.row_stride() != 1) || (n2 > 1 && m.col_stride() < n1 as isize) {
            return Err(Error::Shape(format!("{what} must be column-major")));
        }
    }
    for m in [nngp.rb_mut(), ntk.rb_mut()] {
        // From the first entry to the last, not past it (a view into a larger matrix).
        let span = if n2 > 1 { m.col_stride() as usize * (n2 - 1) + n1 } else { n1 };
        prefault(m.as_ptr_mut().cast(), span * std::mem::size_of::<T>());
    }
    fused_pass(arch, x1, x2, simd_level(), (nngp, ntk), progress, true)
}

/// Errors for inputs a kernel cannot be computed from (empty, mismatched, non-finite).
fn check_inputs<T: KernelScalar>(x1: MatRef<'_, T>, x2: Option<MatRef<'_, T>>) -> Result<()> {
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
    Ok(())
}

/// The fused pass of [`kernel_with`] into column-major outputs of the right size ([`check_inputs`] passed).
fn fused_pass<T: KernelScalar>(
    arch: &Architecture,
    x1: MatRef<'_, T>,
    x2: Option<MatRef<'_, T>>,
    simd: Simd,
    (mut nngp, mut ntk): (MatMut<'_, T>, MatMut<'_, T>),
    progress: OnProgress,
    finite: bool,
) -> Result<()> {
    let d = x1.ncols();
    let stages = plan(arch, d)?;
    let regs = stages.regs;
    let symmetric = x2.is_none();
    let x2m = x2.unwrap_or(x1);
    let (n1, n2) = (x1.nrows(), x2m.nrows());

    // One pass over output tiles: each task computes a TILE x TILE block of the Gram matrix with a
    // single-threaded GEMM into its place in the NNGP buffer, carries it through every layer while it is
    // in cache, writes the NTK block, and (symmetric case) copies both onto the mirror tile.
    let q1 = row_sq_norms(x1, d);
    let t1 = RowTables::<T>::new(&stages, &q1);
    let t2 = if symmetric { None } else { Some(RowTables::<T>::new(&stages, &row_sq_norms(x2m, d))) };
    let t2 = t2.as_ref().unwrap_or(&t1);
    let kout = OutMat::new(nngp.rb_mut());
    let tout = OutMat::new(ntk.rb_mut());
    let nslots = t1.q.len();
    let (nb1, nb2) = (n1.div_ceil(TILE), n2.div_ceil(TILE));
    let tiles: Vec<(usize, usize)> = if symmetric {
        (0..nb2).flat_map(|jb| (jb..nb1).map(move |ib| (ib, jb))).collect()
    } else {
        (0..nb2).flat_map(|jb| (0..nb1).map(move |ib| (ib, jb))).collect()
    };
    let inv_d = 1.0 / d as f64;
    let finished = std::sync::atomic::AtomicUsize::new(0);
    // The first error from `progress`: the tasks not yet started return at once.
    let stopped = std::sync::Mutex::new(None);
    let stopping = std::sync::atomic::AtomicBool::new(false);
    progress(0, tiles.len())?;
    tiles.par_iter().with_max_len(1).for_each_init(
        || ColVars::<T>::new(nslots, regs),
        |col, &(ib, jb)| {
            if stopping.load(std::sync::atomic::Ordering::Relaxed) {
                return;
            }
            let (i0, i1) = (ib * TILE, ((ib + 1) * TILE).min(n1));
            let (j0, j1) = (jb * TILE, ((jb + 1) * TILE).min(n2));
            // SAFETY: the block rows i0..i1 x columns j0..j1 belongs to this task only (tiles are disjoint;
            // in the symmetric case the mirror copies below go to the strict upper triangle, which no tile
            // covers).
            let mut blk = unsafe { kout.block(i0, i1 - i0, j0, j1 - j0) };
            for jj in 0..blk.ncols() {
                blk.rb_mut()
                    .col_mut(jj)
                    .try_as_col_major_mut()
                    .expect("column-major block")
                    .as_slice_mut()
                    .fill(T::ZERO);
            }
            T::gemm_seq(blk, x1.subrows(i0, i1 - i0), x2m.subrows(j0, j1 - j0), inv_d);
            for j in j0..j1 {
                let a = if symmetric && ib == jb { j } else { i0 };
                if a < i1 {
                    col.load(t2, j);
                    // SAFETY: entries (a..i1, j) are in this task's tile.
                    unsafe { segment(simd, &stages, &t1, col, j, a, i1 - a, kout, tout) };
                }
            }
            if symmetric {
                for i in i0..i1 {
                    for j in j0..j1.min(i) {
                        // SAFETY: (j, i) with j < i is the mirror of this tile's (i, j); no other task touches it.
                        unsafe {
                            kout.set(j, i, kout.get(i, j));
                            tout.set(j, i, tout.get(i, j));
                        }
                    }
                }
            }
            // The tile is complete (a diagonal tile's upper half by the mirror copies) and still in cache: an
            // entry that overflowed (huge inputs or scales, an Exp of a large variance) is an error, not a NaN
            // in the result. About 1 % of an MLP kernel's time.
            // SAFETY: this task's tile, as above, read after its last write.
            let (kb, tb) = unsafe { (kout.block(i0, i1 - i0, j0, j1 - j0), tout.block(i0, i1 - i0, j0, j1 - j0)) };
            let checked = match finite.then(|| non_finite(kb.as_ref(), tb.as_ref(), (i0, j0))).flatten() {
                Some(e) => Err(e),
                None => progress(finished.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1, tiles.len()),
            };
            if let Err(e) = checked {
                stopping.store(true, std::sync::atomic::Ordering::Relaxed);
                stopped.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get_or_insert(e);
            }
        },
    );
    if let Some(e) = stopped.into_inner().unwrap_or_else(std::sync::PoisonError::into_inner) {
        return Err(e);
    }
    if symmetric {
        // The diagonal by the exact scalar recursion (s12 == s11 == s22, so cos(theta) is exactly 1 there).
        for (i, &q) in q1.iter().enumerate() {
            let (k, t) = stages.diagonal(q, |_, _| {});
            let (k, t) = (T::of(k), T::of(t));
            if finite {
                let (kv, tv) = ([k], [t]);
                let (km, tm) = (MatRef::from_column_major_slice(&kv, 1, 1), MatRef::from_column_major_slice(&tv, 1, 1));
                if let Some(e) = non_finite(km, tm, (i, i)) {
                    return Err(e);
                }
            }
            // SAFETY: single-threaded here; (i, i) is in bounds.
            unsafe {
                kout.set(i, i, k);
                tout.set(i, i, t);
            }
        }
    }
    Ok(())
}

/// The error for the first non-finite entry of equal (column-major) blocks of the NNGP and the NTK, whose entry
/// (0, 0) is the kernels' `at`: naming the kernel, the entry and the cause.
fn non_finite<T: Real>(nngp: MatRef<'_, T>, ntk: MatRef<'_, T>, at: (usize, usize)) -> Option<Error> {
    for (b, which) in [(nngp, "NNGP"), (ntk, "NTK")] {
        for j in 0..b.ncols() {
            let c = b.col(j).try_as_col_major().expect("column-major block").as_slice();
            // A branch-free fold the compiler vectorizes; the position is only looked for when it fails.
            if !c.iter().fold(true, |ok, v| ok & v.wide().is_finite()) {
                let i = c.iter().position(|v| !v.wide().is_finite()).unwrap_or(0);
                let (v, i, j) = (c[i].wide(), at.0 + i, at.1 + j);
                return Some(Error::Numerical(format!(
                    "the {which} kernel is not finite ({v}) at row {i}, column {j}: the inputs, or the layers' \
                     weight and bias scales, are too large for the variances to stay within the float range \
                     (rescale them)"
                )));
            }
        }
    }
    None
}

/// Per-slot tables over rows: variance q before nonlinearity `slot`, r = sqrt(q) and 1/r (0 where q = 0).
struct RowTables<R> {
    q: Vec<Vec<R>>,
    r: Vec<Vec<R>>,
    ri: Vec<Vec<R>>,
}

impl<R: Real> RowTables<R> {
    fn new(stages: &Plan, q0: &[f64]) -> Self {
        let q = diag_tables(stages, q0);
        let map = |f: fn(f64) -> f64| -> Vec<Vec<R>> {
            q.iter().map(|t| t.iter().map(|&v| R::of(if v > 0.0 { f(v) } else { 0.0 })).collect()).collect()
        };
        RowTables { q: map(|v| v), r: map(f64::sqrt), ri: map(|v| 1.0 / v.sqrt()) }
    }
}

/// One column's variance, root and reciprocal root before each nonlinearity, and one task's scratch
/// registers 1.. (TILE entries each; register 0 is the output block itself).
struct ColVars<R> {
    q: Vec<R>,
    r: Vec<R>,
    ri: Vec<R>,
    ks: Vec<R>,
    ts: Vec<R>,
}

impl<R: Real> ColVars<R> {
    fn new(n: usize, regs: usize) -> Self {
        let scratch = (regs - 1) * TILE;
        ColVars {
            q: vec![R::ZERO; n],
            r: vec![R::ZERO; n],
            ri: vec![R::ZERO; n],
            ks: vec![R::ZERO; scratch],
            ts: vec![R::ZERO; scratch],
        }
    }
    fn load(&mut self, t: &RowTables<R>, j: usize) {
        for s in 0..self.q.len() {
            self.q[s] = t.q[s][j];
            self.r[s] = t.r[s][j];
            self.ri[s] = t.ri[s][j];
        }
    }
}

/// A column-major output matrix shared by the tile tasks, which write disjoint entries.
#[derive(Clone, Copy)]
struct OutMat<T> {
    ptr: *mut T,
    cs: usize,
}

// SAFETY: the tasks write disjoint entries (see the callers); T is f32 or f64.
unsafe impl<T: Send> Send for OutMat<T> {}
unsafe impl<T: Sync> Sync for OutMat<T> {}

impl<T: KernelScalar> OutMat<T> {
    fn new(m: MatMut<'_, T>) -> Self {
        let cs = m.col_stride();
        assert!(
            (cs >= m.nrows() as isize || m.ncols() <= 1) && (m.row_stride() == 1 || m.nrows() <= 1),
            "column-major storage"
        );
        OutMat { ptr: m.as_ptr_mut(), cs: cs as usize }
    }
    /// # Safety
    /// In bounds, and no other thread touches the entry now.
    #[inline(always)]
    unsafe fn get(self, i: usize, j: usize) -> T {
        *self.ptr.add(j * self.cs + i)
    }
    /// # Safety
    /// As [`Self::get`].
    #[inline(always)]
    unsafe fn set(self, i: usize, j: usize, v: T) {
        *self.ptr.add(j * self.cs + i) = v
    }
    /// The block rows i0..i0+r x columns j0..j0+c as a matrix view.
    ///
    /// # Safety
    /// In bounds, and no other thread touches the block while the view lives.
    #[inline(always)]
    unsafe fn block<'a>(self, i0: usize, r: usize, j0: usize, c: usize) -> MatMut<'a, T> {
        MatMut::from_raw_parts_mut(self.ptr.add(j0 * self.cs + i0), r, c, 1, self.cs as isize)
    }
    /// # Safety
    /// As [`Self::get`], for rows i0..i0+len of column j.
    #[inline(always)]
    unsafe fn col<'a>(self, j: usize, i0: usize, len: usize) -> &'a mut [T] {
        std::slice::from_raw_parts_mut(self.ptr.add(j * self.cs + i0), len)
    }
}

/// Carry rows i0..i0+len of column j (Gram values in `kout`) through every stage, in place, writing the NNGP
/// over the Gram values and the NTK into `tout`.
///
/// # Safety
/// Those entries are in bounds and no other thread touches them now.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn segment<T: KernelScalar>(
    simd: Simd,
    stages: &Plan,
    rows: &RowTables<T>,
    col: &mut ColVars<T>,
    j: usize,
    i0: usize,
    len: usize,
    kout: OutMat<T>,
    tout: OutMat<T>,
) {
    let kb = kout.col(j, i0, len);
    let tb = tout.col(j, i0, len);
    tb.fill(T::ZERO);
    run_block(simd, stages, rows, col, i0, kb, tb);
}

/// Phase timings on stderr when the environment variable `NTKLAB_PROFILE` is set (for the benchmarks).
struct Profile(Option<std::cell::Cell<std::time::Instant>>);

impl Profile {
    fn start() -> Self {
        Profile(std::env::var_os("NTKLAB_PROFILE").map(|_| std::cell::Cell::new(std::time::Instant::now())))
    }
    fn mark(&self, what: &str) {
        if let Some(t) = &self.0 {
            let now = std::time::Instant::now();
            eprintln!("[profile] kernel {what}: {:.4} s", (now - t.get()).as_secs_f64());
            t.set(now);
        }
    }
}

/// An n1 x n2 matrix with unspecified contents, for outputs whose every entry is written before it is read
/// (the fused pass and its mirror copies). Its pages are pre-faulted from all threads at once
/// (`MADV_POPULATE_WRITE` on Linux), which is cheaper than taking a fault per 4 KiB page inside the passes.
fn alloc_mat<T: KernelScalar>(n1: usize, n2: usize) -> Mat<T> {
    let mut m = Mat::<T>::with_capacity(n1, n2);
    // SAFETY: T is f32 or f64 (Copy, no drop glue, every bit pattern valid) and all callers write each entry
    // before reading it.
    unsafe { m.set_dims(n1, n2) };
    let bytes = (m.col_stride().max(1) as usize) * n2 * std::mem::size_of::<T>();
    prefault(m.as_ptr_mut().cast(), bytes);
    m
}

#[cfg(target_os = "linux")]
fn prefault(ptr: *mut u8, bytes: usize) {
    const PAGE: usize = 4096;
    const CHUNK: usize = 8 << 20;
    if bytes < CHUNK {
        return;
    }
    let start = (ptr as usize).div_ceil(PAGE) * PAGE;
    let end = (ptr as usize + bytes) / PAGE * PAGE;
    (start..end).into_par_iter().step_by(CHUNK).for_each(|a| {
        let len = CHUNK.min(end - a);
        // SAFETY: the range lies inside our own live, writable allocation; MADV_POPULATE_WRITE only faults
        // its pages in (contents are unchanged). Kernels before 5.14 answer EINVAL, which is harmless: the
        // pages then fault in on first write as usual.
        unsafe { libc::madvise(a as *mut libc::c_void, len, libc::MADV_POPULATE_WRITE) };
    });
}

#[cfg(not(target_os = "linux"))]
fn prefault(_ptr: *mut u8, _bytes: usize) {}

/// Rows and columns per output tile: a 256 x 256 Gram block is a GEMM big enough to run near peak on one
/// thread, and its NNGP and NTK blocks (2 x 512 KiB in f64) stay in L2 for the layer pass and the mirror copy.
const TILE: usize = 256;

/// Which build of the block kernels runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Simd {
    /// Portable code, no fused multiply-add.
    Generic,
    /// AVX2 + FMA.
    #[cfg(target_arch = "x86_64")]
    Avx2,
    /// AVX-512 (F, VL) + FMA.
    #[cfg(target_arch = "x86_64")]
    Avx512,
}

/// The widest build of the block kernels this CPU can run (`NTKLAB_SIMD=avx2|generic`, read once per process,
/// caps it, for benchmarks).
pub fn simd_level() -> Simd {
    static LEVEL: std::sync::OnceLock<Simd> = std::sync::OnceLock::new();
    *LEVEL.get_or_init(detect_simd_level)
}

fn detect_simd_level() -> Simd {
    #[cfg(target_arch = "x86_64")]
    {
        let cap = std::env::var("NTKLAB_SIMD").unwrap_or_default();
        let avx2 = std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma");
        let avx512 = avx2 && std::is_x86_feature_detected!("avx512f") && std::is_x86_feature_detected!("avx512vl");
        if cap != "generic" {
            if avx512 && cap != "avx2" {
                return Simd::Avx512;
            }
            if avx2 {
                return Simd::Avx2;
            }
        }
    }
    Simd::Generic
}

/// Every build this CPU can run, narrowest first (tests compare them; ignores `NTKLAB_SIMD`).
pub fn simd_builds() -> Vec<Simd> {
    #[allow(unused_mut)]
    let mut builds = vec![Simd::Generic];
    #[cfg(target_arch = "x86_64")]
    {
        let avx2 = std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma");
        if avx2 {
            builds.push(Simd::Avx2);
        }
        if avx2 && std::is_x86_feature_detected!("avx512f") && std::is_x86_feature_detected!("avx512vl") {
            builds.push(Simd::Avx512);
        }
    }
    builds
}

/// Applies `dual` to a block of (K, Theta) stored as `cols` contiguous columns of `q_rows.len()` entries: entry i
/// of column j has variances (`q_rows[i]`, `q_cols[j]`). The vectorized builds of the ReLU family and erf run
/// where the dual has one, the scalar dual otherwise (the CNN kernel's P x P position blocks).
pub(crate) fn dual_columns<R: Real>(simd: Simd, dual: &Dual, q_rows: &[R], q_cols: &[R], k: &mut [R], t: &mut [R]) {
    match simd {
        // SAFETY: each arm is only taken when the CPU reports the features it was built for.
        #[cfg(target_arch = "x86_64")]
        Simd::Avx512 => unsafe { dual_columns_avx512(dual, q_rows, q_cols, k, t) },
        #[cfg(target_arch = "x86_64")]
        Simd::Avx2 => unsafe { dual_columns_avx2(dual, q_rows, q_cols, k, t) },
        Simd::Generic => dual_columns_generic::<R, false>(dual, q_rows, q_cols, k, t),
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn dual_columns_avx2<R: Real>(dual: &Dual, q_rows: &[R], q_cols: &[R], k: &mut [R], t: &mut [R]) {
    dual_columns_generic::<R, true>(dual, q_rows, q_cols, k, t)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512vl,avx2,fma")]
unsafe fn dual_columns_avx512<R: Real>(dual: &Dual, q_rows: &[R], q_cols: &[R], k: &mut [R], t: &mut [R]) {
    dual_columns_generic::<R, true>(dual, q_rows, q_cols, k, t)
}

#[inline(always)]
fn dual_columns_generic<R: Real, const FMA: bool>(dual: &Dual, q_rows: &[R], q_cols: &[R], k: &mut [R], t: &mut [R]) {
    let n = q_rows.len();
    let r: Vec<R> = q_rows.iter().map(|v| v.sqrt()).collect();
    let ri: Vec<R> = q_rows.iter().map(|v| R::ONE.div(v.sqrt())).collect();
    let rows = RowVars { q: q_rows, r: &r, ri: &ri };
    for (j, &qc) in q_cols.iter().enumerate() {
        let c = (qc, qc.sqrt(), R::ONE.div(qc.sqrt()));
        let rv = RowVars { q: rows.q, r: rows.r, ri: rows.ri };
        nonlin_block::<R, FMA>(dual, rv, c, &mut k[j * n..(j + 1) * n], &mut t[j * n..(j + 1) * n]);
    }
}

/// Carry a block of entries (rows i0.., one column) through every stage.
fn run_block<R: Real>(
    simd: Simd,
    plan: &Plan,
    rows: &RowTables<R>,
    col: &mut ColVars<R>,
    i0: usize,
    kb: &mut [R],
    tb: &mut [R],
) {
    match simd {
        // SAFETY: each arm is only taken when the CPU reports the features it was built for.
        #[cfg(target_arch = "x86_64")]
        Simd::Avx512 => unsafe { run_block_avx512(plan, rows, col, i0, kb, tb) },
        #[cfg(target_arch = "x86_64")]
        Simd::Avx2 => unsafe { run_block_avx2(plan, rows, col, i0, kb, tb) },
        Simd::Generic => run_block_generic::<R, false>(plan, rows, col, i0, kb, tb),
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn run_block_avx2<R: Real>(
    plan: &Plan,
    rows: &RowTables<R>,
    col: &mut ColVars<R>,
    i0: usize,
    kb: &mut [R],
    tb: &mut [R],
) {
    run_block_generic::<R, true>(plan, rows, col, i0, kb, tb)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512vl,avx2,fma")]
unsafe fn run_block_avx512<R: Real>(
    plan: &Plan,
    rows: &RowTables<R>,
    col: &mut ColVars<R>,
    i0: usize,
    kb: &mut [R],
    tb: &mut [R],
) {
    run_block_generic::<R, true>(plan, rows, col, i0, kb, tb)
}

/// Register `reg` of a block: the output block for 0, else a slice of the scratch.
#[inline(always)]
fn reg_mut<'a, R>(
    kb: &'a mut [R],
    tb: &'a mut [R],
    ks: &'a mut [R],
    ts: &'a mut [R],
    reg: usize,
) -> (&'a mut [R], &'a mut [R]) {
    let len = kb.len();
    if reg == 0 {
        (kb, tb)
    } else {
        let o = (reg - 1) * TILE;
        (&mut ks[o..o + len], &mut ts[o..o + len])
    }
}

/// Registers `src` (read) and `dst` (written) of a block, `src != dst`.
#[allow(clippy::type_complexity)]
#[inline(always)]
fn reg_pair<'a, R>(
    kb: &'a mut [R],
    tb: &'a mut [R],
    ks: &'a mut [R],
    ts: &'a mut [R],
    src: usize,
    dst: usize,
) -> ((&'a [R], &'a [R]), (&'a mut [R], &'a mut [R])) {
    let len = kb.len();
    if src == 0 {
        let d0 = (dst - 1) * TILE;
        ((kb, tb), (&mut ks[d0..d0 + len], &mut ts[d0..d0 + len]))
    } else if dst == 0 {
        let so = (src - 1) * TILE;
        ((&ks[so..so + len], &ts[so..so + len]), (kb, tb))
    } else {
        let (so, d0) = ((src - 1) * TILE, (dst - 1) * TILE);
        let split = |v: &'a mut [R]| -> (&'a [R], &'a mut [R]) {
            if so < d0 {
                let (a, b) = v.split_at_mut(d0);
                (&a[so..so + len], &mut b[..len])
            } else {
                let (a, b) = v.split_at_mut(so);
                (&b[..len], &mut a[d0..d0 + len])
            }
        };
        let ((sk, dk), (st, dt)) = (split(ks), split(ts));
        ((sk, st), (dk, dt))
    }
}

#[inline(always)]
fn run_block_generic<R: Real, const FMA: bool>(
    plan: &Plan,
    rows: &RowTables<R>,
    col: &mut ColVars<R>,
    i0: usize,
    kb: &mut [R],
    tb: &mut [R],
) {
    let len = kb.len();
    let ColVars { q: cq, r: cr, ri: cri, ks, ts } = col;
    for st in &plan.stages {
        match st {
            Stage::Affine { reg, w2, b2, tk, tc, ntk_uses_new_k } => {
                let (kb, tb) = reg_mut(kb, tb, ks, ts, *reg);
                let (w2, b2, tk, tc) = (R::of(*w2), R::of(*b2), R::of(*tk), R::of(*tc));
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
            Stage::Nonlin { reg, dual, slot } => {
                let (kb, tb) = reg_mut(kb, tb, ks, ts, *reg);
                let s = *slot;
                let r = i0..i0 + len;
                let row = RowVars { q: &rows.q[s][r.clone()], r: &rows.r[s][r.clone()], ri: &rows.ri[s][r] };
                nonlin_block::<R, FMA>(dual, row, (cq[s], cr[s], cri[s]), kb, tb);
            }
            Stage::Copy { src, dst } => {
                let ((sk, st), (dk, dt)) = reg_pair(kb, tb, ks, ts, *src, *dst);
                dk.copy_from_slice(sk);
                dt.copy_from_slice(st);
            }
            Stage::Mix { dst, src, a, b } => {
                let ((sk, st), (dk, dt)) = reg_pair(kb, tb, ks, ts, *src, *dst);
                let (a, b) = (R::of(*a), R::of(*b));
                for (d, &s) in dk.iter_mut().zip(sk) {
                    *d = a * *d + b * s;
                }
                for (d, &s) in dt.iter_mut().zip(st) {
                    *d = a * *d + b * s;
                }
            }
        }
    }
}

/// A block's row variances, roots and reciprocal roots before one nonlinearity.
struct RowVars<'a, R> {
    q: &'a [R],
    r: &'a [R],
    ri: &'a [R],
}

/// Apply one nonlinearity to a block: vectorizable closed forms for the ReLU family and erf, the
/// scalar f64 dual otherwise. `c` is the column's (variance, root, reciprocal root).
#[inline(always)]
fn nonlin_block<R: Real, const FMA: bool>(dual: &Dual, row: RowVars<'_, R>, c: (R, R, R), kb: &mut [R], tb: &mut [R]) {
    use super::activation::Activation as A;
    match dual {
        Dual::Closed(A::Relu) => relu_family_block::<R, FMA>(0.0, 1.0, &row, c, kb, tb),
        Dual::Closed(A::LeakyRelu { a }) => relu_family_block::<R, FMA>(*a, 1.0, &row, c, kb, tb),
        Dual::Closed(A::AbRelu { a, b }) => relu_family_block::<R, FMA>(*a, *b, &row, c, kb, tb),
        Dual::Closed(A::Abs) => relu_family_block::<R, FMA>(-1.0, 1.0, &row, c, kb, tb),
        Dual::Closed(A::Identity) => {}
        Dual::Closed(A::Erf { a, b, c: cc }) => erf_block::<R, FMA>(*a, *b, *cc, row.q, c.0, kb, tb),
        _ => {
            let q2 = c.0.wide();
            for ((k, t), &qa) in kb.iter_mut().zip(tb.iter_mut()).zip(row.q) {
                let (tv, td) = dual.eval(qa.wide(), k.wide(), q2);
                *k = R::of(tv);
                *t = R::of(t.wide() * td);
            }
        }
    }
}

/// ABReLU(a, b) dual on a block: `T = a b s12 + (b-a)^2 T_relu`, `Tdot = a b + (b-a)^2 (pi - theta)/(2 pi)`.
///
/// cos(theta) = s12 / (r1 r2) uses the precomputed reciprocal roots; off the diagonal that costs an ulp or two
/// of cos, well inside the conditioning of theta itself. Diagonal entries of a symmetric kernel, where
/// theta = 0 is ill-conditioned, are recomputed exactly (in f64) by the caller.
#[inline(always)]
fn relu_family_block<R: Real, const FMA: bool>(
    a: f64,
    b: f64,
    row: &RowVars<'_, R>,
    c: (R, R, R),
    kb: &mut [R],
    tb: &mut [R],
) {
    let ab = R::of(a * b);
    let d = R::of((b - a) * (b - a));
    let inv2pi = R::of(1.0 / (2.0 * std::f64::consts::PI));
    let quarter = R::of(0.25);
    let (_, r2, ri2) = c;
    for (((k, t), &ra), &ria) in kb.iter_mut().zip(tb.iter_mut()).zip(row.r).zip(row.ri) {
        let s12 = *k;
        let sq = ra * r2;
        let pos = sq > R::ZERO;
        let cos = (s12 * (ria * ri2)).max(-R::ONE).min(R::ONE);
        let pm = R::PI - fastmath::acos::<R, FMA>(cos);
        let sin = ((R::ONE - cos) * (R::ONE + cos)).sqrt();
        let tr = if pos { sq * (sin + pm * cos) * inv2pi } else { R::ZERO };
        let tdr = if pos { pm * inv2pi } else { quarter };
        *k = ab * s12 + d * tr;
        *t = *t * (ab + d * tdr);
    }
}

/// Erf(a, b, c) dual on a block (Williams 1997), see [`super::activation::Activation::closed_dual`].
#[inline(always)]
fn erf_block<R: Real, const FMA: bool>(a: f64, b: f64, c: f64, q1: &[R], q2: R, kb: &mut [R], tb: &mut [R]) {
    use std::f64::consts::PI;
    let b2 = b * b;
    let p2 = R::of(1.0) + R::of(2.0 * b2) * q2;
    let (ct, cd, cc) = (R::of(a * a * 2.0 / PI), R::of(4.0 * a * a * b2 / PI), R::of(c * c));
    let (two_b2, four_b4) = (R::of(2.0 * b2), R::of(4.0 * b2 * b2));
    for ((k, t), &qa) in kb.iter_mut().zip(tb.iter_mut()).zip(q1) {
        let s12 = *k;
        let p1 = R::ONE + two_b2 * qa;
        let pp = p1 * p2;
        let arg = (two_b2 * s12).div(pp.sqrt()).max(-R::ONE).min(R::ONE);
        // Expanded determinant (see `kernel::activation::erf_dual`): no cancellation at large variance.
        let det =
            (R::ONE + two_b2 * (qa + q2) + four_b4 * R::det2::<FMA>(qa, q2, s12).max(R::ZERO)).max(R::MIN_POSITIVE);
        *k = ct * fastmath::asin::<R, FMA>(arg) + cc;
        *t = *t * cd.div(det.sqrt());
    }
}

/// Infinite-width NNGP and NTK of `arch` between the rows of `x1` (N1 x d) and `x2` (N2 x d), in f64.
/// With `x2 = None` the symmetric kernel of `x1` with itself is computed (one triangle, then mirrored).
pub fn kernel(arch: &Architecture, x1: MatRef<'_, f64>, x2: Option<MatRef<'_, f64>>) -> Result<Kernel<f64>> {
    kernel_generic(arch, x1, x2)
}

/// As [`kernel`] in f32: storage, GEMM and the per-entry recursion run in f32 lanes (the row tables and the
/// diagonal of a symmetric kernel are computed in f64, so the diagonal is exact to f32 rounding).
pub fn kernel_f32(arch: &Architecture, x1: MatRef<'_, f32>, x2: Option<MatRef<'_, f32>>) -> Result<Kernel<f32>> {
    kernel_generic(arch, x1, x2)
}
