//! Convolution, average pooling, global average pooling and flatten in the finite view, on activations stored as
//! N x (P C) matrices (row = example; column p C + c = channel c at flat position p, i.e. NHWC flattened).
//!
//! Convolution with weights W (C_out x C_in x K..., PyTorch `nn.Conv2d` layout) and multipliers as for dense
//! layers: `Z[:, o] = w_mult sum_j H[:, i_j(o)] W_j^T + b_mult b`, where W_j (C_out x C_in) is the slice of W at
//! window offset j and i_j(o) the input position output o reads at offset j (none: zero padding).
//!
//! The passes:
//! * forward: Z[:, (o, co)] = w_mult sum_j sum_ci H[:, (i_j(o), ci)] W[co, ci, j] (+ b_mult b[co]);
//! * input cotangent (the transposed convolution): dH[:, (i, ci)] = w_mult sum_j sum_co
//!   Delta[:, (o_j(i), co)] W[co, ci, j], where o_j(i) is the output reading i at offset j (at most one: windows
//!   of one offset never collide);
//! * parameter gradient: gW[co, ci, j] = w_mult sum_o Patch_o^T Delta[:, o] with Patch_o = [H[:, i_0(o)], ...,
//!   H[:, i_{K-1}(o)]] (N x K C_in), summed over fixed groups of positions in parallel and then in group order
//!   (deterministic whatever the thread count).
//!
//! The forward pass and the transposed convolution share one kernel ([`windowed`]) with examples in vector lanes:
//! each example's convolution is a small product that a GEMM would only reach through gathered windows, while
//! L examples at a time share every weight, so a register tile of positions x channels accumulates L-lane FMAs
//! against broadcast weights. The parameter gradient is one GEMM per group of gathered windows. The empirical
//! NTK's per-example Jacobian blocks ([`jacobian_block`]) use lanes too.
//!
//! The network-level entry points (`*_node`) read a node's geometry, weights and multipliers from the
//! [`Network`] and are what the graph traversals dispatch to (ARCHITECTURE.md, "How to add a layer").

use faer::prelude::ReborrowMut;
use faer::{Accum, Mat, MatMut, MatRef, Par};
use rayon::prelude::*;

use crate::kernel::compute::{simd_level, Simd};
use crate::kernel::spatial::Window;
use crate::net::ops::{threads, Float, Pool};
use crate::net::Network;

/// The geometry of one convolution or pooling node.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Geom {
    /// Input channels and output channels (equal for pooling).
    pub c_in: usize,
    pub c_out: usize,
    /// Window size K (product of the window extents).
    pub k: usize,
    /// Input and output positions.
    pub p_in: usize,
    pub p_out: usize,
    /// `taps[o K + j]`: the input position output o reads at offset j (None: padding).
    pub taps: Vec<Option<usize>>,
    /// `inv[i K + j]`: the output position that reads input i at offset j, if any.
    pub inv: Vec<Option<usize>>,
    /// Per window offset j, the (input, output) positions of every tap that is not padding, in output order.
    pub pairs: Vec<Vec<(usize, usize)>>,
    /// Per offset j, where each chunk of [`CHUNK`] output positions starts in `pairs[j]` (one more entry than
    /// chunks: the last is the end).
    pub chunk_bounds: Vec<Vec<usize>>,
    /// Set when the node is a 3 x 3, stride-1 convolution over 2-d images with zero padding: its passes then go
    /// by Winograd's F(2 x 2, 3 x 3) ([`winograd`]) where they have the channels for it to pay
    /// (`winograd::pass_pays`, `winograd::jacobian_fits`).
    pub wino: Option<Wino>,
}

impl Geom {
    /// The geometry of `win` over inputs of extents `spatial` with `c_in` channels.
    pub fn new(win: &Window, spatial: &[usize], c_in: usize, c_out: usize) -> Geom {
        let p_in: usize = spatial.iter().product();
        let p_out: usize = win.out.iter().product();
        let k = win.size;
        // The Jacobian products read packed operands at these positions unchecked (`tile`).
        assert!(win.taps.len() == p_out * k && win.taps.iter().flatten().all(|&i| i < p_in), "taps within the input");
        let mut inv = vec![None; p_in * k];
        for o in 0..p_out {
            for j in 0..k {
                if let Some(i) = win.taps[o * k + j] {
                    debug_assert!(inv[i * k + j].is_none(), "two outputs read one input at the same offset");
                    inv[i * k + j] = Some(o);
                }
            }
        }
        let pairs: Vec<Vec<(usize, usize)>> =
            (0..k).map(|j| (0..p_out).filter_map(|o| win.taps[o * k + j].map(|p| (p, o))).collect()).collect();
        let chunks = p_out.div_ceil(CHUNK);
        let chunk_bounds = pairs
            .iter()
            .map(|pj| (0..=chunks).map(|c| pj.partition_point(|&(_, o)| o < c * CHUNK)).collect())
            .collect();
        let wino = Wino::detect(win, spatial);
        Geom { c_in, c_out, k, p_in, p_out, taps: win.taps.clone(), inv, pairs, chunk_bounds, wino }
    }
}

/// Bytes of gathered windows per GEMM: positions are processed in groups whose patch matrix stays about this
/// size (per thread, so it stays in cache and never costs fresh pages).
const PATCH_BYTES: usize = 512 << 10;

/// Positions per group for patches of `n` rows and `width` columns (at least one; independent of the thread
/// count, so results are too).
fn group_size<T>(n: usize, width: usize, positions: usize) -> usize {
    (PATCH_BYTES / (std::mem::size_of::<T>() * n * width).max(1)).clamp(1, positions.max(1))
}

/// Gather the windows of positions `start..start + count` into `patch` (row block t, column block j = m's
/// block `sel[(start + t) K + j]`, zeros for None).
fn gather_group<T: Float>(
    m: MatRef<'_, T>,
    c: usize,
    sel: &[Option<usize>],
    k: usize,
    (start, count): (usize, usize),
    patch: &mut Mat<T>,
) {
    let n = m.nrows();
    for jc in 0..k * c {
        let (j, ch) = (jc / c, jc % c);
        let dst = patch.col_as_slice_mut(jc);
        for t in 0..count {
            let seg = &mut dst[t * n..(t + 1) * n];
            match sel[(start + t) * k + j] {
                Some(i) => seg.copy_from_slice(contiguous(m, i * c + ch)),
                None => seg.fill(T::ZERO),
            }
        }
    }
}

/// One windowed pass: out[:, (o, cd)] (+)= scale sum_j sum_cs m[:, (sel(o, j), cs)] w(j, cs, cd) + bias[cd]. The
/// forward pass reads H through the taps (cs = input channel, cd = output channel); the input cotangent reads
/// Delta through the inverse taps (cs = output channel, cd = input channel).
struct Windowed<'a, T> {
    /// The source (N x P_src c_src) and its channel count.
    m: MatRef<'a, T>,
    c_src: usize,
    /// Destination channels.
    c_dst: usize,
    /// `sel[o K + j]`: the source position destination o reads at offset j (None: padding).
    sel: &'a [Option<usize>],
    k: usize,
    /// The weights W (C_out x C_in x K, PyTorch's layout), before `scale`: the weight of (offset j, source channel
    /// cs, destination channel cd) is W[cd, cs, j] forward and W[cs, cd, j] when `transposed`.
    w: &'a [T],
    transposed: bool,
    scale: f64,
    /// Added to every destination position (already scaled); None: nothing.
    bias: Option<&'a [T]>,
}

/// Runs a windowed pass into `out` (N x P_dst c_dst) with `simd`'s build: examples are the vector lanes (L of
/// them per block, packed position-major as for [`jacobian_block`]) and a tile of R destination positions by B
/// destination channels accumulates in registers over (offset, source channel), each step one vector load per
/// position and one broadcast weight per channel. No window gathers, no transposes; every entry of `out` is
/// written (Replace) or added to (Add) exactly once, and results do not depend on the thread count.
fn windowed<T: Float>(out: &mut Mat<T>, accum: Accum, pass: &Windowed<'_, T>, simd: Simd) {
    let f32_lanes = f32_lanes::<T>();
    // 4 x 4 tiles (16 accumulators) where there are 32 vector registers, 3 x 4 with 16.
    match simd {
        #[cfg(target_arch = "x86_64")]
        Simd::Avx512 if f32_lanes => windowed_lanes::<T, 16, 4, 4>(out, accum, pass, simd),
        #[cfg(target_arch = "x86_64")]
        Simd::Avx512 => windowed_lanes::<T, 8, 4, 4>(out, accum, pass, simd),
        #[cfg(target_arch = "x86_64")]
        Simd::Avx2 if f32_lanes => windowed_lanes::<T, 8, 3, 4>(out, accum, pass, simd),
        #[cfg(target_arch = "x86_64")]
        Simd::Avx2 => windowed_lanes::<T, 4, 3, 4>(out, accum, pass, simd),
        Simd::Generic if f32_lanes => windowed_lanes::<T, 4, 2, 4>(out, accum, pass, simd),
        Simd::Generic => windowed_lanes::<T, 2, 2, 4>(out, accum, pass, simd),
    }
}

/// The packed operands of one windowed pass, shared by every block of examples.
struct WindowedPlan<'a, T> {
    pass: &'a Windowed<'a, T>,
    /// Weights times scale, as [T; B] chunks at ((cd / B) K + j) c_src + cs (channels padded with zeros).
    wp: Vec<T>,
    /// Bias padded to a multiple of B (zeros where there is none).
    bias: Vec<T>,
    /// Per tile t of R destinations and offset j, at (t K + j) R + r: the chunk index (in units of L) of the
    /// source position tile t's r-th destination reads at offset j, times c_src (the zero block P_src for
    /// padding; the last destination repeated past P_dst).
    src: Vec<usize>,
    /// Destination channel chunks of B.
    nb: usize,
}

fn windowed_lanes<T: Float, const L: usize, const R: usize, const B: usize>(
    out: &mut Mat<T>,
    accum: Accum,
    pass: &Windowed<'_, T>,
    simd: Simd,
) {
    let (c_src, c_dst, k) = (pass.c_src, pass.c_dst, pass.k);
    let p_src = pass.m.ncols() / c_src;
    let p_dst = out.ncols() / c_dst;
    let nb = c_dst.div_ceil(B);
    let mut wp = vec![T::ZERO; k * c_src * nb * B];
    for cd in 0..c_dst {
        for cs in 0..c_src {
            let (co, ci, c_in) = if pass.transposed { (cs, cd, c_dst) } else { (cd, cs, c_src) };
            let wj = &pass.w[(co * c_in + ci) * k..][..k];
            for (j, &v) in wj.iter().enumerate() {
                wp[(((cd / B) * k + j) * c_src + cs) * B + cd % B] = T::of(pass.scale * v.wide());
            }
        }
    }
    let mut bias = vec![T::ZERO; nb * B];
    if let Some(b) = pass.bias {
        bias[..c_dst].copy_from_slice(&b[..c_dst]);
    }
    let tiles = p_dst.div_ceil(R);
    let mut src = vec![0; tiles * k * R];
    for t in 0..tiles {
        for j in 0..k {
            for r in 0..R {
                let o = (t * R + r).min(p_dst - 1);
                src[(t * k + j) * R + r] = pass.sel[o * k + j].unwrap_or(p_src) * c_src;
            }
        }
    }
    let plan = WindowedPlan { pass, wp, bias, src, nb };
    let blocks = pass.m.nrows().div_ceil(L);
    // Few blocks of examples (small batches): split each block's destination positions between threads too.
    let splits = threads().div_ceil(blocks).clamp(1, tiles);
    let per = tiles.div_ceil(splits) * R * c_dst;
    for_each_block::<T, L>(out.as_mut(), |bi, rows| {
        let block = |hp: &mut [T]| {
            // One zero block past the last position stands for padding.
            hp[p_src * c_src * L..].fill(T::ZERO);
            let i0 = bi * L;
            // SAFETY (every `unsafe` below): each arm is only taken when the CPU reports the features it was
            // built for.
            if splits == 1 {
                // Packing and products in one function built for the CPU's features (wide copies).
                return match simd {
                    #[cfg(target_arch = "x86_64")]
                    Simd::Avx512 => unsafe { windowed_block_avx512::<T, L, R, B>(&plan, hp, i0, rows, accum) },
                    #[cfg(target_arch = "x86_64")]
                    Simd::Avx2 => unsafe { windowed_block_avx2::<T, L, R, B>(&plan, hp, i0, rows, accum) },
                    Simd::Generic => windowed_block::<T, L, R, B, false>(&plan, hp, i0, rows, accum),
                };
            }
            pack_lanes::<T, L>(pass.m, (i0, rows.nrows()), c_src, (c_src, c_src), hp);
            let hp = &hp[..];
            rows.par_col_chunks_mut(per).enumerate().for_each(|(ci, cols)| {
                let t0 = ci * per / (R * c_dst);
                match simd {
                    #[cfg(target_arch = "x86_64")]
                    Simd::Avx512 => unsafe { windowed_avx512::<T, L, R, B>(&plan, hp, t0, cols, accum) },
                    #[cfg(target_arch = "x86_64")]
                    Simd::Avx2 => unsafe { windowed_avx2::<T, L, R, B>(&plan, hp, t0, cols, accum) },
                    Simd::Generic => windowed_tiles::<T, L, R, B, false>(&plan, hp, t0, cols, accum),
                }
            });
        };
        // SAFETY: T is f32 or f64, valid for any bits; pack_lanes writes all but the last block, zeroed above.
        unsafe { with_scratch::<T, _>((p_src + 1) * c_src * L, block) }
    });
}

/// Defines `$avx512` and `$avx2`: `$inner::<T, _, _, _, true>` (FMA on) compiled for AVX-512 and for AVX2 + FMA.
/// The kernels are generic `#[inline(always)]` functions; only a function carrying the target features makes
/// them use the wide registers (a closure called inside rayon would not inherit them).
macro_rules! feature_builds {
    ($avx512:ident, $avx2:ident => $inner:ident<$a:ident, $b:ident, $c:ident>($($arg:ident: $ty:ty),* $(,)?)) => {
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = "avx512f,avx512vl,avx2,fma")]
        unsafe fn $avx512<T: Float, const $a: usize, const $b: usize, const $c: usize>($($arg: $ty),*) {
            $inner::<T, $a, $b, $c, true>($($arg),*)
        }
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = "avx2,fma")]
        unsafe fn $avx2<T: Float, const $a: usize, const $b: usize, const $c: usize>($($arg: $ty),*) {
            $inner::<T, $a, $b, $c, true>($($arg),*)
        }
    };
}

mod winograd;
use winograd::Wino;

feature_builds!(windowed_avx512, windowed_avx2 => windowed_tiles<L, R, B>(
    plan: &WindowedPlan<'_, T>, hp: &[T], t0: usize, cols: MatMut<'_, T>, accum: Accum,
));
feature_builds!(windowed_block_avx512, windowed_block_avx2 => windowed_block<L, R, B>(
    plan: &WindowedPlan<'_, T>, hp: &mut [T], i0: usize, rows: MatMut<'_, T>, accum: Accum,
));
feature_builds!(products_avx512, products_avx2 => products<L, A, B>(
    blk: LaneBlock<'_, T, L, A, B>, rows: MatMut<'_, T>,
));

/// One block of examples (rows i0.. of the source, `rows` of the destination): pack, then every tile.
#[inline(always)]
fn windowed_block<T: Float, const L: usize, const R: usize, const B: usize, const FMA: bool>(
    plan: &WindowedPlan<'_, T>,
    hp: &mut [T],
    i0: usize,
    rows: MatMut<'_, T>,
    accum: Accum,
) {
    let c_src = plan.pass.c_src;
    pack_lanes::<T, L>(plan.pass.m, (i0, rows.nrows()), c_src, (c_src, c_src), hp);
    windowed_tiles::<T, L, R, B, FMA>(plan, hp, 0, rows, accum)
}

/// One R x B tile: acc[r][b] += sum over offsets j and the source channels `cs` of the source vector at chunk
/// offs[j][r] + cs times the weight chunk w[j c_src + cs][b].
#[inline(always)]
fn conv_tile<T: Float, const L: usize, const R: usize, const B: usize, const FMA: bool>(
    mut acc: [[[T; L]; B]; R],
    hc: &[[T; L]],
    offs: &[[usize; R]],
    w: &[[T; B]],
    (c_src, cs): (usize, std::ops::Range<usize>),
) -> [[[T; L]; B]; R] {
    for (offs_j, wj) in offs.iter().zip(w.chunks_exact(c_src)) {
        let ws = &wj[cs.clone()];
        // Each position's source vectors for these channels, checked once here rather than at every step.
        let xs: [&[[T; L]]; R] = offs_j.map(|o| &hc[o + cs.start..][..ws.len()]);
        for (i, wc) in ws.iter().enumerate() {
            // Broadcast once, used by all R positions.
            let wv: [[T; L]; B] = wc.map(|w| [w; L]);
            for (acc_r, x) in acc.iter_mut().zip(&xs) {
                // SAFETY: every xs[r] has ws.len() > i entries (sliced above).
                let x = unsafe { x.get_unchecked(i) };
                for (acc_rb, wb) in acc_r.iter_mut().zip(&wv) {
                    fma_lanes::<T, L, FMA>(acc_rb, x, wb);
                }
            }
        }
    }
    acc
}

/// Bytes of source vectors one R-position tile of [`windowed_tiles`] reads per group of source channels: the
/// group stays in L1 while every destination channel block reads it (a 64-channel source, read whole, is
/// 147 KB per tile in f32, streamed from L2 once per block of destination channels).
const WINDOW_BYTES: usize = 40 << 10;

/// The tiles t0.. of one block of examples whose destination columns are `cols` (whole tiles of R positions, the
/// last one possibly short) and rows its m <= L examples.
#[inline(always)]
fn windowed_tiles<T: Float, const L: usize, const R: usize, const B: usize, const FMA: bool>(
    plan: &WindowedPlan<'_, T>,
    hp: &[T],
    t0: usize,
    mut cols: MatMut<'_, T>,
    accum: Accum,
) {
    let (c_src, c_dst, k) = (plan.pass.c_src, plan.pass.c_dst, plan.pass.k);
    let hc = hp.as_chunks::<L>().0;
    let wc = plan.wp.as_chunks::<B>().0;
    let bc = plan.bias.as_chunks::<B>().0;
    debug_assert!(hc.len() > plan.pass.m.ncols(), "the packed source ends in a zero block");
    let groups = (k * R * c_src * std::mem::size_of::<[T; L]>()).div_ceil(WINDOW_BYTES).clamp(1, c_src);
    let per_group = c_src.div_ceil(groups);
    let positions = cols.ncols() / c_dst;
    if groups == 1 && cols.nrows() == L && cols.row_stride() == 1 {
        // All source channels in one group and a full block: each tile's accumulators stay in registers from
        // the bias to the store, one write per output vector through its column's pointer (the general path
        // below keeps them in memory between groups and stores through a column view per vector, which took a
        // third of a 3-channel first layer's time).
        let col_stride = cols.col_stride();
        let out = cols.rb_mut().as_ptr_mut();
        for tl in 0..positions.div_ceil(R) {
            let offs = &plan.src[(t0 + tl) * k * R..][..k * R];
            for (cb, &init) in bc.iter().enumerate() {
                let wb = &wc[cb * k * c_src..][..k * c_src];
                let acc = [init.map(|b| [b; L]); R];
                let acc = conv_tile::<T, L, R, B, FMA>(acc, hc, offs.as_chunks::<R>().0, wb, (c_src, 0..c_src));
                for (r, acc_r) in acc.iter().enumerate().take(positions - tl * R) {
                    for (b, lanes) in acc_r.iter().enumerate().take(c_dst.saturating_sub(cb * B)) {
                        let q = (tl * R + r) * c_dst + cb * B + b;
                        debug_assert!(q < cols.ncols());
                        // SAFETY: q < positions c_dst = cols.ncols() (r and b bounded above), and a full block's
                        // column holds L contiguous entries (row stride 1, checked before the loop).
                        unsafe { store_full(out, col_stride, q, accum, lanes) };
                    }
                }
            }
        }
        return;
    }
    // One tile's accumulators for every destination channel block (in L1 between the source channel groups).
    let mut accs = vec![[[[T::ZERO; L]; B]; R]; plan.nb];
    for tl in 0..positions.div_ceil(R) {
        let t = t0 + tl;
        let offs = &plan.src[t * k * R..][..k * R];
        for (acc, &init) in accs.iter_mut().zip(bc) {
            *acc = [init.map(|b| [b; L]); R];
        }
        for cs0 in (0..c_src).step_by(per_group) {
            let cs = cs0..(cs0 + per_group).min(c_src);
            for (cb, acc) in accs.iter_mut().enumerate() {
                let wb = &wc[cb * k * c_src..][..k * c_src];
                *acc = conv_tile::<T, L, R, B, FMA>(*acc, hc, offs.as_chunks::<R>().0, wb, (c_src, cs.clone()));
            }
        }
        for (cb, acc) in accs.iter().enumerate() {
            for (r, acc_r) in acc.iter().enumerate().take(positions - tl * R) {
                for (b, lanes) in acc_r.iter().enumerate().take(c_dst.saturating_sub(cb * B)) {
                    let q = (tl * R + r) * c_dst + cb * B + b;
                    store_lanes(cols.rb_mut().col_mut(q), accum, lanes);
                }
            }
        }
    }
}

/// Writes (Replace) or adds (Add) the first m lanes of `lanes` into column `col` (m rows, contiguous).
#[inline(always)]
fn store_lanes<T: Float, const L: usize>(col: faer::ColMut<'_, T>, accum: Accum, lanes: &[T; L]) {
    let dst = col.try_as_col_major_mut().expect("column").as_slice_mut();
    match (accum, <&mut [T; L]>::try_from(&mut *dst)) {
        // A fixed-size store (a slice copy would call memmove for L entries).
        (Accum::Replace, Ok(full)) => *full = *lanes,
        (Accum::Replace, Err(_)) => store_partial(dst, lanes),
        (Accum::Add, _) => dst.iter_mut().zip(lanes).for_each(|(o, &v)| *o += v),
    }
}

/// [`store_lanes`] for a full block through its base pointer `out` and column stride: one write (Replace) or
/// add (Add) of the L lanes of column q, without a column view per vector.
///
/// # Safety
/// Column q of the block lies at `out + q col_stride` and holds L contiguous entries the caller may write.
#[inline(always)]
pub(super) unsafe fn store_full<T: Float, const L: usize>(
    out: *mut T,
    col_stride: isize,
    q: usize,
    accum: Accum,
    lanes: &[T; L],
) {
    // SAFETY: the caller's promise.
    let dst = unsafe { &mut *out.offset(q as isize * col_stride).cast::<[T; L]>() };
    match accum {
        Accum::Replace => *dst = *lanes,
        Accum::Add => dst.iter_mut().zip(lanes).for_each(|(o, &v)| *o += v),
    }
}

/// The last block's store of fewer than L lanes, kept out of line: inlined, its copy (a memcpy of m entries)
/// and the full block's fixed 64-byte store were merged into one call to memcpy for every output vector of the
/// Winograd passes (3 % of the f32 empirical NTK's time under `perf`).
#[cold]
#[inline(never)]
fn store_partial<T: Float>(dst: &mut [T], lanes: &[T]) {
    dst.copy_from_slice(&lanes[..dst.len()]);
}

/// What a pass does to each value before it stores it (with Accum::Replace): an activation node's forward or
/// reverse step done in the convolution's own stores, one pass over the matrix fewer (`forward_node_relu`,
/// `input_cotangent_node_scaled`). The values equal those of the separate passes bit for bit.
#[derive(Clone, Copy)]
pub(crate) enum Epilogue<'a, T> {
    None,
    /// v -> v where v > 0, else 0 (NaN included: the ReLU node's rule), with the slope, 1 or 0, written into
    /// the given matrix (the output's shape) when there is one.
    Relu(Option<RawMat<'a, T>>),
    /// v -> v s, s the entry of this matrix (the output's shape) in the same row and column.
    Scale(MatRef<'a, T>),
}

/// A column-major matrix that a pass writes through its pointer, each block of rows from one thread.
#[derive(Clone, Copy)]
pub(crate) struct RawMat<'a, T> {
    ptr: *mut T,
    col_stride: isize,
    nrows: usize,
    ncols: usize,
    _borrow: std::marker::PhantomData<&'a mut T>,
}

// SAFETY: a RawMat is made from a mutable borrow of a whole matrix (`RawMat::of`), and the passes that write
// through it write disjoint blocks of rows from their threads, never reading it.
unsafe impl<T: Send> Send for RawMat<'_, T> {}
// SAFETY: as for Send.
unsafe impl<T: Send> Sync for RawMat<'_, T> {}

impl<'a, T> RawMat<'a, T> {
    pub(crate) fn of(m: &'a mut Mat<T>) -> Self {
        let (nrows, ncols, col_stride) = (m.nrows(), m.ncols(), m.col_stride());
        RawMat { ptr: m.as_mut().as_ptr_mut(), col_stride, nrows, ncols, _borrow: std::marker::PhantomData }
    }
    /// A pointer to entry (i, j).
    ///
    /// # Safety
    /// i < nrows, j < ncols.
    #[inline(always)]
    pub(crate) unsafe fn at(&self, i: usize, j: usize) -> *mut T {
        debug_assert!(i < self.nrows && j < self.ncols);
        // SAFETY: the caller's promise; entries of a column-major matrix.
        unsafe { self.ptr.offset(i as isize + j as isize * self.col_stride) }
    }
}

impl<T: Float> Epilogue<'_, T> {
    /// Whether it fits an output of `rows` x `cols` (a scaling matrix column-major).
    pub(crate) fn fits(&self, rows: usize, cols: usize) -> bool {
        match self {
            Epilogue::None | Epilogue::Relu(None) => true,
            Epilogue::Relu(Some(s)) => s.nrows == rows && s.ncols == cols,
            Epilogue::Scale(by) => by.nrows() == rows && by.ncols() == cols && by.row_stride() == 1,
        }
    }

    /// The epilogue of entry (i, j) of value v.
    ///
    /// # Safety
    /// (i, j) within the output, which the epilogue fits; no other thread writes row i of a Relu slope.
    #[inline(always)]
    pub(crate) unsafe fn apply(&self, i: usize, j: usize, v: T) -> T {
        match self {
            Epilogue::None => v,
            Epilogue::Relu(slope) => {
                let (h, d) = if v > T::ZERO { (v, T::ONE) } else { (T::ZERO, T::ZERO) };
                if let Some(s) = slope {
                    // SAFETY: the caller's promise.
                    unsafe { *s.at(i, j) = d };
                }
                h
            }
            Epilogue::Scale(by) => v * by[(i, j)],
        }
    }

    /// The epilogue applied to every entry of `out` after a pass that did not (one thread).
    pub(crate) fn apply_to(&self, out: &mut Mat<T>) {
        if matches!(self, Epilogue::None) {
            return;
        }
        assert!(self.fits(out.nrows(), out.ncols()), "an epilogue of the output's shape");
        for j in 0..out.ncols() {
            for i in 0..out.nrows() {
                // SAFETY: (i, j) within out, which the epilogue fits (asserted); this thread alone writes.
                out[(i, j)] = unsafe { self.apply(i, j, out[(i, j)]) };
            }
        }
    }
}

/// Z (+)= w_mult conv(H, W) + b_mult b into `z` (N x P_out C_out): the forward pass with Accum::Replace; each
/// stored value through `epi` (Replace only: in the Winograd pass's stores where it fuses, else after the pass).
fn conv_into<T: Float>(
    g: &Geom,
    w: &[T],
    b: Option<&[T]>,
    mults: (f64, f64),
    h: MatRef<'_, T>,
    z: &mut Mat<T>,
    (accum, epi): (Accum, Epilogue<'_, T>),
) {
    let bias: Option<Vec<T>> = b.map(|b| b.iter().map(|&v| T::of(mults.1 * v.wide())).collect());
    if let Some(wg) = g.wino.as_ref().filter(|_| winograd::pass_pays(g.c_in, g.c_out)) {
        let pass = wg.forward_pass(h, (g.c_in, g.c_out), w, mults.0, bias.as_deref()).with_epilogue(epi);
        return winograd::run(z, accum, &pass, simd_level());
    }
    let pass = Windowed {
        m: h,
        c_src: g.c_in,
        c_dst: g.c_out,
        sel: &g.taps,
        k: g.k,
        w,
        transposed: false,
        scale: mults.0,
        bias: bias.as_deref(),
    };
    windowed(z, accum, &pass, simd_level());
    epi.apply_to(z);
}

/// Z = w_mult conv(H, W) + b_mult b (N x P_out C_out).
pub(crate) fn forward<T: Float>(
    g: &Geom,
    w: &[T],
    b: Option<&[T]>,
    mults: (f64, f64),
    h: MatRef<'_, T>,
    pool: &mut Pool<T>,
) -> Mat<T> {
    let mut z = pool.take(h.nrows(), g.p_out * g.c_out);
    conv_into(g, w, b, mults, h, &mut z, (Accum::Replace, Epilogue::None));
    z
}

/// Parameter gradients from the output cotangent `delta` (N x P_out C_out): gW[co, ci, j] += w_mult
/// sum_o sum_n delta[n, (o, co)] H[n, (i_j(o), ci)], gb[co] += b_mult sum_{n, o} delta[n, (o, co)].
pub(crate) fn param_grad<T: Float>(
    g: &Geom,
    h: MatRef<'_, T>,
    delta: MatRef<'_, T>,
    mults: (f64, f64),
    gw: &mut [T],
    gb: Option<&mut [T]>,
    pool: &mut Pool<T>,
) {
    // gWm = w_mult sum over groups of Patch_group^T Delta_group, with Delta_group the group's cotangent blocks
    // stacked like the patches ((G N) x C_out); groups run in parallel and their sums are added in group order.
    let n = h.nrows();
    let kc = g.k * g.c_in;
    let gs = group_size::<T>(n, kc + g.c_out, g.p_out);
    let groups = g.p_out.div_ceil(gs);
    let ident: Vec<Option<usize>> = (0..g.p_out).map(Some).collect();
    let par = if threads() == 1 || groups >= 2 * threads() { Par::Seq } else { Par::rayon(0) };
    let parts: Vec<Mat<T>> = (0..groups)
        .into_par_iter()
        .map_init(
            || (Mat::<T>::zeros(gs * n, kc), Mat::<T>::zeros(gs * n, g.c_out)),
            |(patch, dstack), gi| {
                let count = gs.min(g.p_out - gi * gs);
                gather_group(h, g.c_in, &g.taps, g.k, (gi * gs, count), patch);
                gather_group(delta, g.c_out, &ident, 1, (gi * gs, count), dstack);
                let rows = count * n;
                let mut acc = Mat::<T>::zeros(kc, g.c_out);
                T::matmul(
                    acc.as_mut(),
                    Accum::Replace,
                    patch.as_ref().subrows(0, rows).transpose(),
                    dstack.as_ref().subrows(0, rows),
                    mults.0,
                    par,
                );
                acc
            },
        )
        .collect();
    let mut acc = pool.take(kc, g.c_out);
    acc.fill(T::ZERO);
    for part in &parts {
        acc += part;
    }
    for r in 0..kc {
        let (j, ci) = (r / g.c_in, r % g.c_in);
        for co in 0..g.c_out {
            gw[(co * g.c_in + ci) * g.k + j] += acc[(r, co)];
        }
    }
    pool.give(acc);
    if let Some(gb) = gb {
        for (co, gbc) in gb.iter_mut().enumerate() {
            let mut s = 0.0;
            for o in 0..g.p_out {
                s += delta.col(o * g.c_out + co).iter().fold(0.0, |a, v| a + v.wide());
            }
            *gbc += T::of(mults.1 * s);
        }
    }
}

/// dH (+)= w_mult delta W^T (the transposed convolution) into `dh` (N x P_in C_in), each stored value through
/// `epi` (as in `conv_into`).
fn input_cotangent_into<T: Float>(
    g: &Geom,
    w: &[T],
    w_mult: f64,
    delta: MatRef<'_, T>,
    dh: &mut Mat<T>,
    (accum, epi): (Accum, Epilogue<'_, T>),
) {
    if let Some(wg) = g.wino.as_ref().filter(|_| winograd::pass_pays(g.c_out, g.c_in)) {
        let pass = wg.transpose_pass(delta, (g.c_in, g.c_out), w, w_mult).with_epilogue(epi);
        return winograd::run(dh, accum, &pass, simd_level());
    }
    let pass = Windowed {
        m: delta,
        c_src: g.c_out,
        c_dst: g.c_in,
        sel: &g.inv,
        k: g.k,
        w,
        transposed: true,
        scale: w_mult,
        bias: None,
    };
    windowed(dh, accum, &pass, simd_level());
    epi.apply_to(dh);
}

/// The input cotangent: dH[:, i_j(o)] += w_mult delta[:, o] W_j (N x P_in C_in).
pub(crate) fn input_cotangent<T: Float>(
    g: &Geom,
    w: &[T],
    w_mult: f64,
    delta: MatRef<'_, T>,
    pool: &mut Pool<T>,
) -> Mat<T> {
    let mut dh = pool.take(delta.nrows(), g.p_in * g.c_in);
    input_cotangent_into(g, w, w_mult, delta, &mut dh, (Accum::Replace, Epilogue::None));
    dh
}

/// Forward-mode derivative: dZ = w_mult (conv(dH, W) + conv(H, dW)) + b_mult db (the layer is bilinear in
/// (H, W)).
#[allow(clippy::too_many_arguments)]
pub(crate) fn tangent<T: Float>(
    g: &Geom,
    w: &[T],
    h: MatRef<'_, T>,
    hdot: Option<MatRef<'_, T>>,
    dw: &[T],
    db: Option<&[T]>,
    mults: (f64, f64),
    pool: &mut Pool<T>,
) -> Mat<T> {
    let mut z = forward(g, dw, db, mults, h, pool);
    if let Some(hd) = hdot {
        conv_into(g, w, None, mults, hd, &mut z, (Accum::Add, Epilogue::None));
    }
    z
}

#[cfg(test)]
/// Second order (the R-operator of the reverse pass) along the direction (Hdot, V_w, V_b): given delta and
/// R{delta}, adds R{gW}, R{gb} into `rgw`, `rgb` and returns R{dH}. The layer is bilinear in (H, W), so each is a
/// sum of the first-order passes: R{gW} = gW(Hdot, delta) + gW(H, R{delta}), R{gb} = gb(R{delta}),
/// R{dH} = dH(V_w, delta) + dH(W, R{delta}).
#[allow(clippy::too_many_arguments)]
pub(crate) fn rop<T: Float>(
    g: &Geom,
    w: &[T],
    vw: &[T],
    h: MatRef<'_, T>,
    hdot: Option<MatRef<'_, T>>,
    delta: MatRef<'_, T>,
    rdelta: MatRef<'_, T>,
    mults: (f64, f64),
    rgw: &mut [T],
    rgb: Option<&mut [T]>,
) -> Mat<T> {
    let pool = &mut Pool::default();
    param_grad(g, h, rdelta, mults, rgw, rgb, pool);
    if let Some(hd) = hdot {
        param_grad(g, hd, delta, mults, rgw, None, pool);
    }
    let mut rdh = input_cotangent(g, w, mults.0, rdelta, pool);
    input_cotangent_into(g, vw, mults.0, delta, &mut rdh, (Accum::Add, Epilogue::None));
    rdh
}

/// Average pooling (divide by the window size; padding counts) as a linear map on N x P C activations.
pub(crate) fn avg_pool<T: Float>(g: &Geom, h: MatRef<'_, T>) -> Mat<T> {
    let mut z = Mat::<T>::zeros(h.nrows(), g.p_out * g.c_in);
    pool_add(g, h, &mut z, false);
    z
}

/// The transpose of [`avg_pool`] (its VJP).
pub(crate) fn avg_pool_transpose<T: Float>(g: &Geom, delta: MatRef<'_, T>) -> Mat<T> {
    let mut dh = Mat::<T>::zeros(delta.nrows(), g.p_in * g.c_in);
    pool_add(g, delta, &mut dh, true);
    dh
}

/// out += avg_pool(m) (or its transpose): column by column, each output column a sum over its window in a fixed
/// order.
fn pool_add<T: Float>(g: &Geom, m: MatRef<'_, T>, out: &mut Mat<T>, transpose: bool) {
    let inv = T::of(1.0 / g.k as f64);
    let c = g.c_in;
    let sel = if transpose { &g.inv } else { &g.taps };
    crate::net::ops::for_each_col(out, |col, o| {
        let (pos, ch) = (col / c, col % c);
        for s in sel[pos * g.k..(pos + 1) * g.k].iter().flatten() {
            for (o, &x) in o.iter_mut().zip(m.col(s * c + ch).iter()) {
                *o += inv * x;
            }
        }
    });
}

/// Global average pooling: the mean over positions of each channel (N x C).
pub(crate) fn global_avg_pool<T: Float>(h: MatRef<'_, T>, p: usize, c: usize) -> Mat<T> {
    let inv = T::of(1.0 / p as f64);
    let mut z = Mat::<T>::zeros(h.nrows(), c);
    let block = h.nrows() * c;
    if let (Some(hf), Some(zf)) = (crate::net::ops::flat(h), crate::net::ops::flat_mut(&mut z)) {
        // Columns back to back: position q's channels are one block of N C values, laid out as z's.
        crate::net::ops::wide(|| {
            for hq in hf.chunks_exact(block) {
                for (o, &x) in zf.iter_mut().zip(hq) {
                    *o += inv * x;
                }
            }
        });
        return z;
    }
    crate::net::ops::for_each_col(&mut z, |ch, o| {
        for q in 0..p {
            // A slice, not the column's iterator: that one is strided and never vectorized.
            for (o, &x) in o.iter_mut().zip(contiguous(h, q * c + ch)) {
                *o += inv * x;
            }
        }
    });
    z
}

/// The transpose of [`global_avg_pool`], into a matrix from `pool` (every entry is written, so a reused one needs
/// no zeroing).
pub(crate) fn global_avg_pool_transpose<T: Float>(
    delta: MatRef<'_, T>,
    p: usize,
    c: usize,
    pool: &mut Pool<T>,
) -> Mat<T> {
    let inv = T::of(1.0 / p as f64);
    let mut dh = pool.take(delta.nrows(), p * c);
    if let (Some(df), Some(hf)) = (crate::net::ops::flat(delta), crate::net::ops::flat_mut(&mut dh)) {
        crate::net::ops::wide(|| {
            for hq in hf.chunks_exact_mut(df.len()) {
                for (o, &x) in hq.iter_mut().zip(df) {
                    *o = inv * x;
                }
            }
        });
        return dh;
    }
    crate::net::ops::for_each_col(&mut dh, |pc, o| {
        for (o, &x) in o.iter_mut().zip(contiguous(delta, pc % c)) {
            *o = inv * x;
        }
    });
    dh
}

/// Column j of a column-major matrix as a slice.
fn contiguous<T: Float>(m: MatRef<'_, T>, j: usize) -> &[T] {
    m.col(j).try_as_col_major().expect("column-major storage").as_slice()
}

// ---- Network-level entry points: the graph traversals dispatch here. ----

/// The geometry of Conv or AvgPool node `v`.
fn geom_at<T: Float>(net: &Network<T>, v: usize) -> &Geom {
    net.geom[v].as_ref().expect("conv and avg_pool nodes have a geometry")
}

/// The (weight, bias) blocks of parameter node l in a parameter-space vector.
fn blocks<'a, T: Float>(net: &Network<T>, l: usize, v: &'a [T]) -> (&'a [T], Option<&'a [T]>) {
    let d = &net.dense[l];
    let nw = d.n_out * d.n_in;
    (&v[d.w_off..d.w_off + nw], d.b_off.map(|b| &v[b..b + d.n_out]))
}

/// The (weight, bias) blocks of parameter node l in a parameter-space vector, for writing (bias right after the
/// weights in the flat layout).
fn blocks_mut<'a, T: Float>(net: &Network<T>, l: usize, v: &'a mut [T]) -> (&'a mut [T], Option<&'a mut [T]>) {
    let d = &net.dense[l];
    let nw = d.n_out * d.n_in;
    let (w, rest) = v[d.w_off..].split_at_mut(nw);
    (w, d.b_off.map(|_| &mut rest[..d.n_out]))
}

fn mults<T: Float>(net: &Network<T>, l: usize) -> (f64, f64) {
    (net.dense[l].w_mult, net.dense[l].b_mult)
}

/// Forward of Conv node l: Z = w_mult conv(H, W) + b_mult b.
pub(crate) fn forward_node<T: Float>(net: &Network<T>, l: usize, h: MatRef<'_, T>, pool: &mut Pool<T>) -> Mat<T> {
    let (w, b) = blocks(net, l, net.params());
    forward(geom_at(net, net.dense[l].node), w, b, mults(net, l), h, pool)
}

/// Whether Conv node l's forward (or, `transposed`, its input cotangent) pass stores through an [`Epilogue`]
/// itself: the f32 Winograd pass with AVX-512 (`winograd::fuses`). Elsewhere the activation keeps its own pass.
pub(crate) fn fuses_epilogue<T: Float>(net: &Network<T>, l: usize, transposed: bool) -> bool {
    let g = geom_at(net, net.dense[l].node);
    let (c_src, c_dst) = if transposed { (g.c_out, g.c_in) } else { (g.c_in, g.c_out) };
    g.wino.is_some() && winograd::pass_pays(c_src, c_dst) && winograd::fuses::<T>(c_dst, simd_level())
}

/// Forward of Conv node l followed by ReLU in the same stores: max(Z, 0) (0 for NaN), with Z's ReLU slope
/// written into `slope` (Z's shape) when given. Where [`fuses_epilogue`] says no, the ReLU takes a pass of its
/// own after the convolution (the activation node's is faster there).
pub(crate) fn forward_node_relu<T: Float>(
    net: &Network<T>,
    l: usize,
    h: MatRef<'_, T>,
    slope: Option<&mut Mat<T>>,
    pool: &mut Pool<T>,
) -> Mat<T> {
    let (w, b) = blocks(net, l, net.params());
    let g = geom_at(net, net.dense[l].node);
    let mut z = pool.take(h.nrows(), g.p_out * g.c_out);
    conv_into(g, w, b, mults(net, l), h, &mut z, (Accum::Replace, Epilogue::Relu(slope.map(RawMat::of))));
    z
}

/// Reverse, input of Conv node l, times `slope` in the same stores: (w_mult delta W^T) ⊙ slope (delta one
/// block of cotangents, slope its input's shape). Where [`fuses_epilogue`] says no, the product takes a pass of
/// its own (the activation node's is faster there).
pub(crate) fn input_cotangent_node_scaled<T: Float>(
    net: &Network<T>,
    l: usize,
    delta: &Mat<T>,
    slope: &Mat<T>,
    pool: &mut Pool<T>,
) -> Mat<T> {
    let (w, _) = blocks(net, l, net.params());
    let g = geom_at(net, net.dense[l].node);
    let mut dh = pool.take(delta.nrows(), g.p_in * g.c_in);
    let epi = (Accum::Replace, Epilogue::Scale(slope.as_ref()));
    input_cotangent_into(g, w, net.dense[l].w_mult, delta.as_ref(), &mut dh, epi);
    dh
}

/// Reverse, parameters of Conv node l: its gradient blocks in `g` are overwritten.
pub(crate) fn param_grad_node<T: Float>(
    net: &Network<T>,
    l: usize,
    h: MatRef<'_, T>,
    delta: &Mat<T>,
    g: &mut [T],
    pool: &mut Pool<T>,
) {
    let (gw, mut gb) = blocks_mut(net, l, g);
    gw.fill(T::ZERO);
    if let Some(b) = gb.as_deref_mut() {
        b.fill(T::ZERO);
    }
    param_grad(geom_at(net, net.dense[l].node), h, delta.as_ref(), mults(net, l), gw, gb, pool);
}

/// Reverse, input of Conv node l: Gamma_u = w_mult delta W^T (transposed convolution; delta may stack b
/// cotangents).
pub(crate) fn input_cotangent_node<T: Float>(net: &Network<T>, l: usize, delta: &Mat<T>, pool: &mut Pool<T>) -> Mat<T> {
    let (w, _) = blocks(net, l, net.params());
    input_cotangent(geom_at(net, net.dense[l].node), w, net.dense[l].w_mult, delta.as_ref(), pool)
}

/// Forward mode of Conv node l along the parameter tangent v and the input tangent `hdot` (None: zero).
pub(crate) fn tangent_node<T: Float>(
    net: &Network<T>,
    l: usize,
    h: MatRef<'_, T>,
    hdot: Option<&Mat<T>>,
    v: &[T],
    pool: &mut Pool<T>,
) -> Mat<T> {
    let (w, _) = blocks(net, l, net.params());
    let (dw, db) = blocks(net, l, v);
    tangent(geom_at(net, net.dense[l].node), w, h, hdot.map(|m| m.as_ref()), dw, db, mults(net, l), pool)
}

/// R-operator of Conv node l (as `dense::rop`): R{dW}, R{db} overwrite their blocks of `out`; returns
/// R{Gamma_u} = w_mult (R{delta} W^T + delta V^T) when `input_needed` (R{delta}, R{H} = None: zero).
#[allow(clippy::too_many_arguments)]
pub(crate) fn rop_node<T: Float>(
    net: &Network<T>,
    l: usize,
    h: MatRef<'_, T>,
    hdot: Option<&Mat<T>>,
    delta: &Mat<T>,
    rdelta: Option<&Mat<T>>,
    v: &[T],
    out: &mut [T],
    input_needed: bool,
    pool: &mut Pool<T>,
) -> Option<Mat<T>> {
    let g = geom_at(net, net.dense[l].node);
    let m = mults(net, l);
    {
        let (ow, mut ob) = blocks_mut(net, l, out);
        ow.fill(T::ZERO);
        if let Some(b) = ob.as_deref_mut() {
            b.fill(T::ZERO);
        }
        if let Some(rd) = rdelta {
            param_grad(g, h, rd.as_ref(), m, ow, ob, pool);
        }
        if let Some(hd) = hdot {
            param_grad(g, hd.as_ref(), delta.as_ref(), m, ow, None, pool);
        }
    }
    input_needed.then(|| {
        let (w, _) = blocks(net, l, net.params());
        let (vw, _) = blocks(net, l, v);
        let mut r = input_cotangent(g, vw, m.0, delta.as_ref(), pool);
        if let Some(rd) = rdelta {
            input_cotangent_into(g, w, m.0, rd.as_ref(), &mut r, (Accum::Add, Epilogue::None));
        }
        r
    })
}

/// A parameter-free spatial node v (avg_pool, global_avg_pool, flatten) applied to its input's value (or
/// tangent): all three are linear.
pub(crate) fn linear_forward<T: Float>(net: &Network<T>, v: usize, h: MatRef<'_, T>) -> Mat<T> {
    let node = &net.graph.nodes[v];
    let src = &net.graph.nodes[node.inputs[0]].shape;
    match node.op {
        crate::kernel::Op::AvgPool { .. } => avg_pool(geom_at(net, v), h),
        crate::kernel::Op::GlobalAvgPool => global_avg_pool(h, src.positions(), src.channels),
        crate::kernel::Op::Flatten => h.to_owned(),
        _ => unreachable!("linear_forward is for pooling and flatten nodes"),
    }
}

/// The transpose of [`linear_forward`] at node v (its VJP; also the R-operator's).
pub(crate) fn linear_transpose<T: Float>(net: &Network<T>, v: usize, delta: Mat<T>, pool: &mut Pool<T>) -> Mat<T> {
    let node = &net.graph.nodes[v];
    let src = &net.graph.nodes[node.inputs[0]].shape;
    let out = match node.op {
        crate::kernel::Op::AvgPool { .. } => avg_pool_transpose(geom_at(net, v), delta.as_ref()),
        crate::kernel::Op::GlobalAvgPool => {
            global_avg_pool_transpose(delta.as_ref(), src.positions(), src.channels, pool)
        }
        crate::kernel::Op::Flatten => return delta,
        _ => unreachable!("linear_transpose is for pooling and flatten nodes"),
    };
    pool.give(delta);
    out
}

/// The Jacobian block of Conv node l: (k N) x P_l, row a N + i = dF_a(x_i)/d(W_l, b_l), from the stacked
/// output cotangents `d` ((k N) x P_out C_out, row a N + i) and the node's input H (N x P_in C_in).
///
/// Columns are in the block's own order: weights first, column co K C_in + j C_in + ci holding
/// G[j C_in + ci, co] = w_mult sum_o H_i[i_j(o), ci] D_(a,i)[o, co] (column [`jacobian_row_param`] of the flat
/// parameters), then the C_out bias entries b_mult sum_o D_(a,i)[o, co]. Gram products J J^T do not depend on the
/// order.
///
/// Every example has its own small product, so examples are the vector lanes: `simd`'s width of examples at a
/// time is packed in blocks of A (inputs) or B (cotangents) channels, each block position-major, and a tile of
/// A input by B output channels of G accumulates in registers over the positions of one window offset. No
/// transposes and no window gathers; results do not depend on the thread count.
pub(crate) fn jacobian_block<T: Float>(
    net: &Network<T>,
    l: usize,
    h: MatRef<'_, T>,
    d: &Mat<T>,
    simd: Simd,
    pool: &mut Pool<T>,
) -> Mat<T> {
    let n = h.nrows();
    // Every entry is written below.
    let mut jm = pool.take(d.nrows(), net.dense[l].num_params());
    for a in 0..d.nrows() / n {
        jacobian_rows(net, l, h, d.as_ref().subrows(a * n, n), simd, jm.as_mut().subrows_mut(a * n, n));
    }
    jm
}

/// One output's rows of [`jacobian_block`]: `ja` (N x P_l) = dF_a(x_i)/d(W_l, b_l) from that output's
/// cotangents `da` (N x P_out C_out), every entry written.
pub(crate) fn jacobian_rows<T: Float>(
    net: &Network<T>,
    l: usize,
    h: MatRef<'_, T>,
    da: MatRef<'_, T>,
    simd: Simd,
    ja: MatMut<'_, T>,
) {
    let dl = &net.dense[l];
    let g = geom_at(net, dl.node);
    let (wm, bm) = mults(net, l);
    let bm = dl.has_bias().then_some(T::of(bm));
    if let Some(wg) = g.wino.as_ref().filter(|_| winograd::jacobian_fits::<T>(g.c_in, g.c_out, simd)) {
        return winograd::jacobian_rows(wg, (g.c_in, g.c_out), h, da, (T::of(wm), bm), simd, ja);
    }
    direct_jacobian_rows(g, h, da, (T::of(wm), bm), simd, ja);
}

/// [`jacobian_rows`] by the direct products over window offsets (any geometry).
fn direct_jacobian_rows<T: Float>(
    g: &Geom,
    h: MatRef<'_, T>,
    da: MatRef<'_, T>,
    (wm, bm): (T, Option<T>),
    simd: Simd,
    ja: MatMut<'_, T>,
) {
    let args = (g, h, da, wm, bm, ja);
    // Lanes of 64 bytes with a 4 x 4 tile where there are 32 vector registers, 32 bytes and 2 x 4 with 16.
    match simd {
        // Three input channels (RGB images) fill a 3 x 4 tile without the zero channel a 4 x 4 one pads them to.
        #[cfg(target_arch = "x86_64")]
        Simd::Avx512 if f32_lanes::<T>() && g.c_in == 3 => lanes::<T, 16, 3, 4>(simd, args),
        #[cfg(target_arch = "x86_64")]
        Simd::Avx512 if f32_lanes::<T>() => lanes::<T, 16, 4, 4>(simd, args),
        #[cfg(target_arch = "x86_64")]
        Simd::Avx512 if g.c_in == 3 => lanes::<T, 8, 3, 4>(simd, args),
        #[cfg(target_arch = "x86_64")]
        Simd::Avx512 => lanes::<T, 8, 4, 4>(simd, args),
        #[cfg(target_arch = "x86_64")]
        Simd::Avx2 if f32_lanes::<T>() => lanes::<T, 8, 2, 4>(simd, args),
        #[cfg(target_arch = "x86_64")]
        Simd::Avx2 => lanes::<T, 4, 2, 4>(simd, args),
        Simd::Generic if f32_lanes::<T>() => lanes::<T, 4, 2, 4>(simd, args),
        Simd::Generic => lanes::<T, 2, 2, 4>(simd, args),
    }
}

/// Whether T is f32 (twice the lanes per vector).
fn f32_lanes<T>() -> bool {
    std::mem::size_of::<T>() == 4
}

/// The examples per vector in `simd`'s build of the lane kernels (the L of [`jacobian_rows`] and the windowed
/// passes): a block of this many rows, stored column-major, is already in their packed layout.
pub(crate) fn lane_width<T>(simd: Simd) -> usize {
    let bytes = match simd {
        #[cfg(target_arch = "x86_64")]
        Simd::Avx512 => 64,
        #[cfg(target_arch = "x86_64")]
        Simd::Avx2 => 32,
        Simd::Generic => 16,
    };
    bytes / std::mem::size_of::<T>()
}

/// The arguments of [`lanes`]: geometry, H, one output's cotangents D_a, w_mult, b_mult (None: no bias) and that
/// output's rows of the Jacobian.
type LanesArgs<'a, T> = (&'a Geom, MatRef<'a, T>, MatRef<'a, T>, T, Option<T>, MatMut<'a, T>);

/// [`jacobian_block`] for one output, L examples at a time in parallel (channels padded with zeros to multiples
/// of A and B).
fn lanes<T: Float, const L: usize, const A: usize, const B: usize>(
    simd: Simd,
    (g, h, d, wm, bm, jm): LanesArgs<'_, T>,
) {
    let (cip, cop) = (g.c_in.div_ceil(A) * A, g.c_out.div_ceil(B) * B);
    // Per window offset j: the packed offsets (input position, output position) of every tap that is not padding.
    let tiles = g.k * (cip / A) * group_blocks::<T, L, A, B>(g.k, cip, cop);
    for_each_block::<T, L>(jm, |bi, rows| {
        // SAFETY (scratch): T is f32 or f64, valid for any bits; pack_lanes writes every entry of hp and dp, and
        // `products` starts each group's accumulators from zero at its first chunk.
        unsafe {
            with_scratch::<T, _>(g.p_in * cip * L, |hp| {
                with_scratch::<T, _>(g.p_out * cop * L, |dp| {
                    with_scratch::<[[[T; L]; B]; A], _>(tiles, |acc| {
                        let blk = LaneBlock { g, h, d, i0: bi * L, hp, dp, acc, wm, bm };
                        // The products run in a function built for the CPU's features (a closure would not
                        // inherit them). SAFETY: each arm is only taken when the CPU reports those features.
                        match simd {
                            #[cfg(target_arch = "x86_64")]
                            Simd::Avx512 => products_avx512::<T, L, A, B>(blk, rows),
                            #[cfg(target_arch = "x86_64")]
                            Simd::Avx2 => products_avx2::<T, L, A, B>(blk, rows),
                            Simd::Generic => products::<T, L, A, B, false>(blk, rows),
                        }
                    })
                })
            })
        }
    });
}

/// A cache line: the unit of [`with_scratch`]'s buffers (aligned for any vector load).
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Line([u8; 64]);

thread_local! {
    /// Buffers [`with_scratch`] lends, kept per thread between calls.
    static SCRATCH: std::cell::RefCell<Vec<Vec<Line>>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// The most bytes of buffers [`with_scratch`] keeps per thread for later calls.
const SCRATCH_KEEP: usize = 64 << 20;

/// Runs `f` on a buffer of `len` values of E whose contents are unspecified (what an earlier call left), reused
/// from call to call on this thread: the lane kernels' packed copies are written whole before they are read,
/// and a fresh zeroed buffer per call cost a memset as large as the copy (3 % of a small CNN's empirical NTK).
///
/// # Safety
/// Every bit pattern must be a valid E (floats and arrays of them).
pub(crate) unsafe fn with_scratch<E: Copy, R>(len: usize, f: impl FnOnce(&mut [E]) -> R) -> R {
    assert!(std::mem::align_of::<E>() <= 64, "scratch values are at most 64-byte aligned");
    let bytes = len.checked_mul(std::mem::size_of::<E>()).expect("scratch size overflows");
    let mut buf = SCRATCH.with(|s| s.borrow_mut().pop()).unwrap_or_default();
    if buf.len() * 64 < bytes {
        buf.resize(bytes.div_ceil(64), Line([0; 64]));
    }
    // SAFETY: the buffer holds at least len E, aligned to 64 bytes, initialized bytes, any bits a valid E (the
    // caller's promise); it is borrowed only for this call.
    let r = f(unsafe { std::slice::from_raw_parts_mut(buf.as_mut_ptr().cast::<E>(), len) });
    SCRATCH.with(|s| {
        let mut kept = s.borrow_mut();
        // At most SCRATCH_KEEP bytes stay with a thread between calls.
        if (kept.iter().map(Vec::len).sum::<usize>() + buf.len()) * 64 <= SCRATCH_KEEP {
            kept.push(buf);
        }
    });
    r
}

/// Runs `f(block index, rows)` on every block of L rows of `m` (the last one possibly short): the blocks are
/// split into at most two contiguous runs per thread, run in parallel (on the calling thread inside
/// `net::ops::serially`).
fn for_each_block<T: Float, const L: usize>(m: MatMut<'_, T>, f: impl Fn(usize, MatMut<'_, T>) + Sync) {
    let blocks = m.nrows().div_ceil(L);
    let run = |ti: usize, per: usize, mut run: MatMut<'_, T>| {
        let rows = run.nrows();
        for b in 0..rows.div_ceil(L) {
            f(ti * per + b, run.rb_mut().subrows_mut(b * L, L.min(rows - b * L)));
        }
    };
    if threads() == 1 {
        return run(0, blocks, m);
    }
    let per = blocks.div_ceil(2 * threads()).max(1);
    m.par_row_chunks_mut(per * L).enumerate().for_each(|(ti, chunk)| run(ti, per, chunk));
}

/// Output positions per pass of [`products`]: for one pair of channel blocks, a chunk's packed inputs and
/// cotangents (about 64 + 32 positions x 4 channels x 64 bytes) stay in L1 while the tiles of every offset read
/// them, and so do the pair's K tiles of accumulators from chunk to chunk (whole images streamed from L2 once per
/// tile; chunks in the outer loop cycled every pair's accumulators through L1 instead).
const CHUNK: usize = 32;

/// Bytes of tile accumulators that [`products`] carries from chunk to chunk: it works through the output
/// channels in groups whose accumulators fit in this (well inside L2), since accumulators that spill to L3 (a
/// 64 -> 64 3x3 layer has 2.4 MB of them) are reloaded at every chunk.
const ACC_BYTES: usize = 256 << 10;

/// Blocks of B output channels per group of [`products`] (at least one; at most all of them).
fn group_blocks<T, const L: usize, const A: usize, const B: usize>(k: usize, cip: usize, cop: usize) -> usize {
    let per_block = k * (cip / A) * std::mem::size_of::<[[[T; L]; B]; A]>();
    (ACC_BYTES / per_block).clamp(1, cop / B)
}

/// One block of L examples (rows i0.. of H and D_a), and the buffers [`products`] packs them into.
struct LaneBlock<'a, T, const L: usize, const A: usize, const B: usize> {
    g: &'a Geom,
    h: MatRef<'a, T>,
    d: MatRef<'a, T>,
    i0: usize,
    hp: &'a mut [T],
    dp: &'a mut [T],
    /// The accumulators of one group's tiles, (j, ci0 / A, co0 / B - first block of the group) in that order,
    /// carried from chunk to chunk.
    acc: &'a mut [[[[T; L]; B]; A]],
    wm: T,
    bm: Option<T>,
}

/// The Jacobian rows of one block of examples (`rows`: its m <= L rows of J), packing it first.
#[inline(always)]
fn products<T: Float, const L: usize, const A: usize, const B: usize, const FMA: bool>(
    blk: LaneBlock<'_, T, L, A, B>,
    mut rows: MatMut<'_, T>,
) {
    let g = blk.g;
    let (cip, cop) = (g.c_in.div_ceil(A) * A, g.c_out.div_ceil(B) * B);
    pack_lanes::<T, L>(blk.h, (blk.i0, rows.nrows()), g.c_in, (cip, A), blk.hp);
    pack_lanes::<T, L>(blk.d, (blk.i0, rows.nrows()), g.c_out, (cop, B), blk.dp);
    let kc = g.k * g.c_in;
    let (na, nb) = (cip / A, cop / B);
    let gb = group_blocks::<T, L, A, B>(g.k, cip, cop);
    for b0 in (0..nb).step_by(gb) {
        let blocks = gb.min(nb - b0);
        for ai in 0..na {
            for bi in 0..blocks {
                for c in 0..g.p_out.div_ceil(CHUNK) {
                    for (j, pj) in g.pairs.iter().enumerate() {
                        let part = &pj[g.chunk_bounds[j][c]..g.chunk_bounds[j][c + 1]];
                        let acc = &mut blk.acc[(j * na + ai) * gb + bi];
                        let offsets = (ai * g.p_in * A * L, (b0 + bi) * g.p_out * B * L);
                        tile::<T, L, A, B, FMA>(acc, c == 0, part, blk.hp, blk.dp, offsets, (g.p_in, g.p_out));
                    }
                }
            }
        }
        for j in 0..g.k {
            for ci0 in (0..cip).step_by(A) {
                for bi in 0..blocks {
                    let co0 = (b0 + bi) * B;
                    let acc = &blk.acc[(j * na + ci0 / A) * gb + bi];
                    for (a, acc_a) in acc.iter().enumerate().take(g.c_in.saturating_sub(ci0)) {
                        for (b, lanes) in acc_a.iter().enumerate().take(g.c_out.saturating_sub(co0)) {
                            let q = (co0 + b) * kc + j * g.c_in + ci0 + a;
                            let dst = rows.rb_mut().col_mut(q).try_as_col_major_mut().expect("column").as_slice_mut();
                            for (o, &v) in dst.iter_mut().zip(lanes) {
                                *o = blk.wm * v;
                            }
                        }
                    }
                }
            }
        }
    }
    if let Some(bm) = blk.bm {
        // Per block of B channels, its positions are consecutive [[T; L]; B] arrays: sum them whole.
        for (bi, dblock) in blk.dp.chunks_exact(g.p_out * B * L).enumerate() {
            let mut s = [[T::ZERO; L]; B];
            for at in dblock.as_chunks::<L>().0.as_chunks::<B>().0 {
                for (acc, x) in s.iter_mut().zip(at) {
                    for (a, &v) in acc.iter_mut().zip(x) {
                        *a += v;
                    }
                }
            }
            for (b, lanes) in s.iter().enumerate().take(g.c_out.saturating_sub(bi * B)) {
                let q = kc * g.c_out + bi * B + b;
                let dst = rows.rb_mut().col_mut(q).try_as_col_major_mut().expect("column").as_slice_mut();
                for (o, &v) in dst.iter_mut().zip(lanes) {
                    *o = bm * v;
                }
            }
        }
    }
}

/// Rows i0..i0 + m of `src` (columns p c + ch) into `out`, channels padded with zeros to `cp` and grouped in
/// blocks of `width` (a divisor of cp), block-major: channel ch of position p at lanes
/// (((ch / width) positions + p) width + ch % width) L.. . One block of a few channels is then contiguous over the
/// positions, where a position-major layout of many channels puts a tile's successive positions a multiple of
/// 4 KiB apart, all in the same few L1 sets.
#[inline(always)]
fn pack_lanes<T: Float, const L: usize>(
    src: MatRef<'_, T>,
    (i0, m): (usize, usize),
    c: usize,
    (cp, width): (usize, usize),
    out: &mut [T],
) {
    let positions = src.ncols() / c;
    for p in 0..positions {
        for ch in 0..cp {
            let at = packed_at(ch, p, positions, width) * L;
            let dst: &mut [T; L] = (&mut out[at..][..L]).try_into().expect("L entries");
            if ch < c {
                let col = contiguous(src, p * c + ch);
                // The next block of examples reads the line after this one in every column, some 4096 columns
                // apart: ask for it now (into L2), or each of its reads waits on memory (a quarter of the
                // products' time went to these copies).
                prefetch_l2(col.as_ptr().wrapping_add(i0 + L));
                if m == L {
                    // A fixed-size copy (inlined, where a slice copy would call memmove for L entries).
                    *dst = col[i0..i0 + L].try_into().expect("L entries");
                } else {
                    dst[..m].copy_from_slice(&col[i0..i0 + m]);
                    dst[m..].fill(T::ZERO);
                }
            } else {
                *dst = [T::ZERO; L];
            }
        }
    }
}

/// Where [`pack_lanes`] puts channel `ch` of position `p` (of `positions`, channels in blocks of `width`), in
/// units of L lanes.
#[inline(always)]
fn packed_at(ch: usize, p: usize, positions: usize, width: usize) -> usize {
    ((ch / width) * positions + p) * width + ch % width
}

/// A hint to bring the cache line at `ptr` into L2 (no effect elsewhere than x86-64; never faults, so `ptr` may
/// point past an allocation).
#[inline(always)]
fn prefetch_l2<T>(ptr: *const T) {
    let _ = ptr;
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch only hints the cache; it neither reads nor faults.
    #[allow(unused_unsafe)]
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T1 }>(ptr.cast());
    }
}

/// acc += x ⊙ y, lane by lane.
#[inline(always)]
fn fma_lanes<T: Float, const L: usize, const FMA: bool>(acc: &mut [T; L], x: &[T; L], y: &[T; L]) {
    for l in 0..L {
        acc[l] = T::mad::<FMA>(x[l], y[l], acc[l]);
    }
}

/// One A x B tile of the per-lane products: acc[a][b][lane] += sum over the position `pairs` (p, o) of
/// hp[h0 + (p A + a) L + lane] dp[d0 + (o B + b) L + lane], starting from zero instead of `out` when `fresh`.
#[inline(always)]
fn tile<T: Float, const L: usize, const A: usize, const B: usize, const FMA: bool>(
    out: &mut [[[T; L]; B]; A],
    fresh: bool,
    pairs: &[(usize, usize)],
    hp: &[T],
    dp: &[T],
    (h0, d0): (usize, usize),
    ends: (usize, usize),
) {
    // Every pair's operands lie inside the buffers: pairs hold input positions below p_in and output positions
    // below p_out (`Geom::new` checks its taps), so one check of the block ends covers them all.
    let (p_in, p_out) = ends;
    assert!(h0 + p_in * A * L <= hp.len() && d0 + p_out * B * L <= dp.len());
    let (hb, db) = (hp[h0..].as_ptr(), dp[d0..].as_ptr());
    // In registers while the pairs run.
    let mut acc = if fresh { [[[T::ZERO; L]; B]; A] } else { *out };
    for &(p, o) in pairs {
        // SAFETY: in bounds (asserted above); [[T; L]; n] has T's alignment.
        let (hs, ds) =
            unsafe { (&*hb.add(p * A * L).cast::<[[T; L]; A]>(), &*db.add(o * B * L).cast::<[[T; L]; B]>()) };
        for (acc_a, x) in acc.iter_mut().zip(hs) {
            for (acc_ab, y) in acc_a.iter_mut().zip(ds) {
                fma_lanes::<T, L, FMA>(acc_ab, x, y);
            }
        }
    }
    *out = acc;
}

/// The flat parameter offset (within the node's block) of column r of [`jacobian_block`]: weights (co, ci, j) in
/// PyTorch order for r < K C_in C_out, then the bias.
pub(crate) fn jacobian_row_param<T: Float>(net: &Network<T>, l: usize, r: usize) -> usize {
    let g = geom_at(net, net.dense[l].node);
    let kc = g.k * g.c_in;
    if r >= kc * g.c_out {
        return r;
    }
    let (co, jc) = (r / kc, r % kc);
    let (j, ci) = (jc / g.c_in, jc % g.c_in);
    (co * g.c_in + ci) * g.k + j
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::synthetic::gaussian;
    use crate::kernel::spatial::Padding;

    fn geom(n: &[usize], k: &[usize], s: &[usize], pad: Padding, c_in: usize, c_out: usize) -> Geom {
        let w = Window::new(n, k, s, pad).unwrap();
        Geom::new(&w, n, c_in, c_out)
    }

    /// Direct evaluation of the definition, position by position.
    fn naive(g: &Geom, w: &[f64], b: &[f64], h: MatRef<'_, f64>, mults: (f64, f64)) -> Mat<f64> {
        let mut z = Mat::zeros(h.nrows(), g.p_out * g.c_out);
        for r in 0..h.nrows() {
            for (oj, tap) in g.taps.iter().enumerate() {
                let (o, j) = (oj / g.k, oj % g.k);
                if let Some(i) = *tap {
                    for co in 0..g.c_out {
                        for ci in 0..g.c_in {
                            z[(r, o * g.c_out + co)] +=
                                mults.0 * w[(co * g.c_in + ci) * g.k + j] * h[(r, i * g.c_in + ci)];
                        }
                    }
                }
            }
            for o in 0..g.p_out {
                for co in 0..g.c_out {
                    z[(r, o * g.c_out + co)] += mults.1 * b[co];
                }
            }
        }
        z
    }

    /// The largest absolute difference; infinite where either side is NaN (an entry a pass never wrote, in
    /// outputs the tests fill with NaN first: `f64::max` would drop it).
    fn max_diff(a: &Mat<f64>, b: &Mat<f64>) -> f64 {
        let mut m = 0.0f64;
        for i in 0..a.nrows() {
            for j in 0..a.ncols() {
                let d = (a[(i, j)] - b[(i, j)]).abs();
                m = if d.is_nan() { f64::INFINITY } else { m.max(d) };
            }
        }
        m
    }

    /// The forward windowed pass of `g` over `m` (H) with weights `w` (C_out x C_in x K).
    fn forward_pass<'a, T>(
        g: &'a Geom,
        m: MatRef<'a, T>,
        w: &'a [T],
        scale: f64,
        bias: Option<&'a [T]>,
    ) -> Windowed<'a, T> {
        Windowed { m, c_src: g.c_in, c_dst: g.c_out, sel: &g.taps, k: g.k, w, transposed: false, scale, bias }
    }

    /// The transposed pass of `g` over `m` (Delta) with weights `w` (C_out x C_in x K).
    fn transpose_pass<'a, T>(g: &'a Geom, m: MatRef<'a, T>, w: &'a [T], scale: f64) -> Windowed<'a, T> {
        Windowed { m, c_src: g.c_out, c_dst: g.c_in, sel: &g.inv, k: g.k, w, transposed: true, scale, bias: None }
    }

    /// The transposed convolution by its definition: dH[:, i_j(o)] += w_mult delta[:, o] W_j.
    fn naive_transpose(g: &Geom, w: &[f64], delta: MatRef<'_, f64>, w_mult: f64) -> Mat<f64> {
        let mut dh = Mat::zeros(delta.nrows(), g.p_in * g.c_in);
        for r in 0..delta.nrows() {
            for (oj, tap) in g.taps.iter().enumerate() {
                let (o, j) = (oj / g.k, oj % g.k);
                if let Some(i) = *tap {
                    for co in 0..g.c_out {
                        for ci in 0..g.c_in {
                            dh[(r, i * g.c_in + ci)] +=
                                w_mult * w[(co * g.c_in + ci) * g.k + j] * delta[(r, o * g.c_out + co)];
                        }
                    }
                }
            }
        }
        dh
    }

    /// Random inputs of one windowed-pass case and what the definitions give for them.
    struct Refs {
        h: Mat<f64>,
        delta: Mat<f64>,
        z: Mat<f64>,
        dh: Mat<f64>,
        h32: Mat<f32>,
        delta32: Mat<f32>,
    }

    /// H and Delta of `rows` examples for `g` (also in f32), and the definitions' Z and dH.
    fn refs(g: &Geom, w: &[f64], b: &[f64], rows: usize, mults: (f64, f64)) -> Refs {
        let h = gaussian(rows, g.p_in * g.c_in, 1);
        let delta = gaussian(rows, g.p_out * g.c_out, 3);
        let (z, dh) = (naive(g, w, b, h.as_ref(), mults), naive_transpose(g, w, delta.as_ref(), mults.0));
        let (h32, delta32) = (crate::net::cast::<f64, f32>(h.as_ref()), crate::net::cast::<f64, f32>(delta.as_ref()));
        Refs { h, delta, z, dh, h32, delta32 }
    }

    #[test]
    fn windowed_passes_agree_with_the_definition_on_every_simd_build() {
        // Examples are vector lanes (2 to 16 per block) and tiles are R positions x 4 channels: N = 1, 3, 35
        // and 70 leave partial blocks (and split one block's positions between threads), 5 and 3 channels
        // partial tiles, 5 x 4 and 7 positions partial position tiles. f64 to rounding; f32 to its rounding over
        // at most 45 terms of size ~1.
        for (n, k, s, pad) in [
            (vec![5, 4], vec![3, 3], vec![1, 1], Padding::Same),
            (vec![6, 5], vec![2, 3], vec![2, 1], Padding::Valid),
            (vec![7], vec![3], vec![2], Padding::Circular),
        ] {
            let (c_in, c_out) = (3, 5);
            let g = geom(&n, &k, &s, pad, c_in, c_out);
            let w: Vec<f64> = gaussian(1, c_out * c_in * g.k, 2).row(0).iter().copied().collect();
            let b = vec![0.3, -0.2, 0.7, 0.1, -0.5];
            let mults = (0.8, 1.3);
            let w32: Vec<f32> = w.iter().map(|&v| v as f32).collect();
            for rows in [1, 3, 35, 70] {
                let Refs { h, delta, z: z_ref, dh: dh_ref, h32, delta32 } = refs(&g, &w, &b, rows, mults);
                for simd in crate::kernel::compute::simd_builds() {
                    let bias: Vec<f64> = b.iter().map(|v| mults.1 * v).collect();
                    let fwd = forward_pass(&g, h.as_ref(), &w, mults.0, Some(&bias));
                    let mut z = Mat::from_fn(rows, g.p_out * c_out, |_, _| f64::NAN);
                    windowed(&mut z, Accum::Replace, &fwd, simd);
                    assert!(max_diff(&z, &z_ref) < 1e-12, "{simd:?} forward, N = {rows}, {n:?}");
                    // Accum::Add adds onto what is there.
                    windowed(&mut z, Accum::Add, &fwd, simd);
                    assert!(max_diff(&z, &(&z_ref * faer::Scale(2.0))) < 1e-12, "{simd:?} add, N = {rows}");
                    let tr = transpose_pass(&g, delta.as_ref(), &w, mults.0);
                    let mut dh = Mat::from_fn(rows, g.p_in * c_in, |_, _| f64::NAN);
                    windowed(&mut dh, Accum::Replace, &tr, simd);
                    assert!(max_diff(&dh, &dh_ref) < 1e-12, "{simd:?} transpose, N = {rows}, {n:?}");
                    let bias32: Vec<f32> = bias.iter().map(|&v| v as f32).collect();
                    let fwd32 = forward_pass(&g, h32.as_ref(), &w32, mults.0, Some(&bias32));
                    let mut z32 = Mat::<f32>::zeros(rows, g.p_out * c_out);
                    windowed(&mut z32, Accum::Replace, &fwd32, simd);
                    let z32: Mat<f64> = crate::net::cast(z32.as_ref());
                    assert!(max_diff(&z32, &z_ref) < 1e-4, "{simd:?} f32 forward, N = {rows}");
                    let tr32 = transpose_pass(&g, delta32.as_ref(), &w32, mults.0);
                    let mut dh32 = Mat::<f32>::zeros(rows, g.p_in * c_in);
                    windowed(&mut dh32, Accum::Replace, &tr32, simd);
                    let dh32: Mat<f64> = crate::net::cast(dh32.as_ref());
                    assert!(max_diff(&dh32, &dh_ref) < 1e-4, "{simd:?} f32 transpose, N = {rows}");
                }
            }
        }
    }

    /// Sources of many channels: every build reads them in groups of channels (see WINDOW_BYTES), forward (80
    /// source channels) and transposed (72), with the accumulators carried from group to group.
    #[test]
    fn windowed_passes_over_many_source_channels_agree_with_the_definition() {
        let (c_in, c_out) = (80, 72);
        let g = geom(&[4, 5], &[3, 3], &[1, 1], Padding::Same, c_in, c_out);
        let w: Vec<f64> = gaussian(1, c_out * c_in * g.k, 2).row(0).iter().copied().collect();
        let bias: Vec<f64> = (0..c_out).map(|c| 0.01 * c as f64 - 0.3).collect();
        let h = gaussian(35, g.p_in * c_in, 1);
        let delta = gaussian(35, g.p_out * c_out, 3);
        let mults = (0.1, 1.0);
        let (z_ref, dh_ref) =
            (naive(&g, &w, &bias, h.as_ref(), mults), naive_transpose(&g, &w, delta.as_ref(), mults.0));
        for simd in crate::kernel::compute::simd_builds() {
            let lanes = match simd {
                Simd::Generic => 2,
                _ => 4,
            };
            assert!(g.k * 4 * c_out.min(c_in) * lanes * 8 > WINDOW_BYTES, "groups on {simd:?}");
            let fwd = forward_pass(&g, h.as_ref(), &w, mults.0, Some(&bias));
            let mut z = Mat::from_fn(35, g.p_out * c_out, |_, _| f64::NAN);
            windowed(&mut z, Accum::Replace, &fwd, simd);
            assert!(max_diff(&z, &z_ref) < 1e-12, "{simd:?} forward");
            let tr = transpose_pass(&g, delta.as_ref(), &w, mults.0);
            let mut dh = Mat::from_fn(35, g.p_in * c_in, |_, _| f64::NAN);
            windowed(&mut dh, Accum::Replace, &tr, simd);
            assert!(max_diff(&dh, &dh_ref) < 1e-12, "{simd:?} transpose");
        }
    }

    /// Winograd's passes against the definitions: odd extents leave partial tiles (outputs past the image are
    /// computed and dropped), `valid` padding shifts the patches, 40 -> 36 channels split the tiles into several
    /// groups (the last one partial), and N = 1, 13, 35 leave partial blocks of examples. f64 within 1e-12 of
    /// the direct sums of ~100 terms of size ~1 (the transforms add at most 4 x 4 terms per product, and the
    /// kernel transform halves exactly); f32 within 2e-4.
    #[test]
    fn winograd_passes_agree_with_the_definition_on_every_simd_build() {
        for (n, pad, c_in, c_out) in [
            ([5, 4], Padding::Same, 3, 5),
            ([6, 5], Padding::Valid, 3, 5),
            ([3, 7], Padding::Same, 2, 1),
            ([9, 10], Padding::Same, 40, 36),
            // Destination channels in blocks of 8, which f32 with AVX-512 runs by its own kernel (`x16`), two
            // tiles at a time: [5, 5] has 9 tiles both ways (an odd count leaves a lone tile); [6, 9] `valid` has
            // 8 forward and 15 transposed.
            ([5, 5], Padding::Same, 8, 16),
            ([6, 9], Padding::Valid, 16, 24),
        ] {
            let g = geom(&n, &[3, 3], &[1, 1], pad, c_in, c_out);
            let wg = g.wino.expect("a 3 x 3 stride-1 convolution");
            let w: Vec<f64> =
                gaussian(1, c_out * c_in * g.k, 2).row(0).iter().map(|v| v / (c_in as f64).sqrt()).collect();
            let b: Vec<f64> = (0..c_out).map(|c| 0.1 * c as f64 - 0.2).collect();
            let mults = (0.8, 1.3);
            let bias: Vec<f64> = b.iter().map(|v| mults.1 * v).collect();
            let (w32, bias32): (Vec<f32>, Vec<f32>) =
                (w.iter().map(|&v| v as f32).collect(), bias.iter().map(|&v| v as f32).collect());
            // 2 to 16 rows: one block of each lane width, which the passes read in place.
            for rows in [1, 2, 4, 8, 13, 16, 35] {
                let Refs { h, delta, z: z_ref, dh: dh_ref, h32, delta32 } = refs(&g, &w, &b, rows, mults);
                for simd in crate::kernel::compute::simd_builds() {
                    let what = format!("{simd:?}, {n:?} {pad:?}, N = {rows}");
                    let fwd = wg.forward_pass(h.as_ref(), (c_in, c_out), &w, mults.0, Some(&bias));
                    let mut z = Mat::from_fn(rows, g.p_out * c_out, |_, _| f64::NAN);
                    winograd::run(&mut z, Accum::Replace, &fwd, simd);
                    assert!(max_diff(&z, &z_ref) < 1e-12, "forward, {what}: {}", max_diff(&z, &z_ref));
                    winograd::run(&mut z, Accum::Add, &fwd, simd);
                    assert!(max_diff(&z, &(&z_ref * faer::Scale(2.0))) < 1e-12, "add, {what}");
                    let tr = wg.transpose_pass(delta.as_ref(), (c_in, c_out), &w, mults.0);
                    let mut dh = Mat::from_fn(rows, g.p_in * c_in, |_, _| f64::NAN);
                    winograd::run(&mut dh, Accum::Replace, &tr, simd);
                    assert!(max_diff(&dh, &dh_ref) < 1e-12, "transpose, {what}: {}", max_diff(&dh, &dh_ref));
                    let fwd32 = wg.forward_pass(h32.as_ref(), (c_in, c_out), &w32, mults.0, Some(&bias32));
                    let mut z32 = Mat::<f32>::from_fn(rows, g.p_out * c_out, |_, _| f32::NAN);
                    winograd::run(&mut z32, Accum::Replace, &fwd32, simd);
                    let z32a: Mat<f64> = crate::net::cast(z32.as_ref());
                    assert!(max_diff(&z32a, &z_ref) < 2e-4, "f32 forward, {what}");
                    winograd::run(&mut z32, Accum::Add, &fwd32, simd);
                    let z32b: Mat<f64> = crate::net::cast(z32.as_ref());
                    assert!(max_diff(&z32b, &(&z_ref * faer::Scale(2.0))) < 4e-4, "f32 add, {what}");
                    let tr32 = wg.transpose_pass(delta32.as_ref(), (c_in, c_out), &w32, mults.0);
                    let mut dh32 = Mat::<f32>::from_fn(rows, g.p_in * c_in, |_, _| f32::NAN);
                    winograd::run(&mut dh32, Accum::Replace, &tr32, simd);
                    let dh32a: Mat<f64> = crate::net::cast(dh32.as_ref());
                    assert!(max_diff(&dh32a, &dh_ref) < 2e-4, "f32 transpose, {what}");
                    winograd::run(&mut dh32, Accum::Add, &tr32, simd);
                    let dh32b: Mat<f64> = crate::net::cast(dh32.as_ref());
                    assert!(max_diff(&dh32b, &(&dh_ref * faer::Scale(2.0))) < 4e-4, "f32 transpose add, {what}");
                }
            }
        }
        // Strides, circular padding, other windows and 1-d or 3-d images keep the direct passes.
        for (n, k, s, pad) in [
            (vec![6, 6], vec![3, 3], vec![2, 2], Padding::Same),
            (vec![6, 6], vec![3, 3], vec![1, 1], Padding::Circular),
            (vec![6, 6], vec![2, 3], vec![1, 1], Padding::Same),
            (vec![7], vec![3], vec![1], Padding::Same),
            (vec![4, 4, 4], vec![3, 3, 1], vec![1, 1, 1], Padding::Same),
        ] {
            assert!(geom(&n, &k, &s, pad, 2, 2).wino.is_none(), "{n:?} {k:?} {s:?} {pad:?}");
        }
    }

    /// The passes' epilogues (ReLU with its slope on the forward pass, a product by a matrix on the transposed
    /// one) equal the plain pass followed by the activation node's own rule, bit for bit, on every SIMD build
    /// (f32 with AVX-512 applies them in `x16`'s stores, the others after the pass), in f32 and f64, with full
    /// and partial blocks of examples; NaN-filled outputs show any entry left unwritten.
    #[test]
    fn winograd_epilogues_equal_the_separate_passes() {
        fn check<T: Float>(wg: &Wino, (c_in, c_out): (usize, usize), rows: usize, simd: Simd, what: &str) {
            let (p_in, p_out) = (wg.src.0 * wg.src.1, wg.dst.0 * wg.dst.1);
            let cast = |m: Mat<f64>| Mat::<T>::from_fn(m.nrows(), m.ncols(), |i, j| T::of(m[(i, j)]));
            let w: Vec<T> = gaussian(1, c_out * c_in * 9, 5).row(0).iter().map(|&v| T::of(v / 3.0)).collect();
            let bias: Vec<T> = (0..c_out).map(|c| T::of(0.1 * c as f64 - 0.3)).collect();
            let h = cast(gaussian(rows, p_in * c_in, 6));
            let delta = cast(gaussian(rows, p_out * c_out, 7));
            // A scaling with zeros, ones and other values (a slope of any activation).
            let by = cast(Mat::from_fn(rows, p_in * c_in, |i, j| [0.0, 1.0, 0.37, -2.5][(3 * i + j) % 4]));
            let fwd = wg.forward_pass(h.as_ref(), (c_in, c_out), &w, 0.8, Some(&bias));
            let mut plain = Mat::<T>::zeros(rows, p_out * c_out);
            winograd::run(&mut plain, Accum::Replace, &fwd, simd);
            let nan = |r, c| Mat::<T>::from_fn(r, c, |_, _| T::of(f64::NAN));
            let (mut z, mut slope) = (nan(rows, p_out * c_out), nan(rows, p_out * c_out));
            winograd::run(
                &mut z,
                Accum::Replace,
                &fwd.with_epilogue(Epilogue::Relu(Some(RawMat::of(&mut slope)))),
                simd,
            );
            for i in 0..rows {
                for j in 0..p_out * c_out {
                    let t = plain[(i, j)];
                    let (v, d) = if t > T::ZERO { (t, T::ONE) } else { (T::ZERO, T::ZERO) };
                    assert!(z[(i, j)].wide().to_bits() == v.wide().to_bits(), "relu, {what} ({i}, {j})");
                    assert!(slope[(i, j)].wide().to_bits() == d.wide().to_bits(), "slope, {what} ({i}, {j})");
                }
            }
            let mut z2 = nan(rows, p_out * c_out);
            winograd::run(&mut z2, Accum::Replace, &fwd.with_epilogue(Epilogue::Relu(None)), simd);
            assert!(z2 == z, "relu without its slope, {what}");
            let tr = wg.transpose_pass(delta.as_ref(), (c_in, c_out), &w, 0.8);
            let mut plain = Mat::<T>::zeros(rows, p_in * c_in);
            winograd::run(&mut plain, Accum::Replace, &tr, simd);
            let mut dh = nan(rows, p_in * c_in);
            winograd::run(&mut dh, Accum::Replace, &tr.with_epilogue(Epilogue::Scale(by.as_ref())), simd);
            for i in 0..rows {
                for j in 0..p_in * c_in {
                    let want = plain[(i, j)] * by[(i, j)];
                    assert!(dh[(i, j)].wide().to_bits() == want.wide().to_bits(), "scale, {what} ({i}, {j})");
                }
            }
        }
        for (n, pad, c_in, c_out) in
            [([5, 5], Padding::Same, 8, 16), ([6, 9], Padding::Valid, 16, 24), ([5, 4], Padding::Same, 3, 5)]
        {
            let g = geom(&n, &[3, 3], &[1, 1], pad, c_in, c_out);
            let wg = g.wino.expect("a 3 x 3 stride-1 convolution");
            for rows in [3, 16, 35] {
                for simd in crate::kernel::compute::simd_builds() {
                    let what = format!("{simd:?}, {n:?} {pad:?} {c_in} -> {c_out}, N = {rows}");
                    check::<f32>(&wg, (c_in, c_out), rows, simd, &what);
                    check::<f64>(&wg, (c_in, c_out), rows, simd, &what);
                }
            }
        }
    }

    /// Winograd's Jacobian rows against the direct products, on every SIMD build and at every channel count
    /// (networks use them only from 16 channels on in f32, 24 in f64: `winograd::jacobian_fits`): partial tiles
    /// (odd extents), `valid` padding, channels that are not multiples of the register tiles, partial blocks of
    /// examples and single blocks of each lane width (read in place), and with and without a bias. f64 to rounding over sums of ~100 terms; f32 within 1e-4 of the f64 values.
    #[test]
    fn winograd_jacobian_rows_equal_the_direct_products_on_every_simd_build() {
        for (n, pad, c_in, c_out, bias) in [
            ([5, 4], Padding::Same, 3, 5, true),
            ([6, 5], Padding::Valid, 2, 1, false),
            ([9, 10], Padding::Same, 17, 16, true),
            // Channels in blocks of 16, which f32 with AVX-512 runs by its own kernel (`jac16`): partial tiles, one
            // and two blocks on either side, `valid` padding.
            ([7, 5], Padding::Same, 16, 16, true),
            ([6, 9], Padding::Valid, 16, 32, false),
            ([5, 6], Padding::Same, 32, 16, true),
            ([5, 6], Padding::Same, 32, 32, false),
            ([6, 5], Padding::Valid, 16, 64, true),
        ] {
            let g = geom(&n, &[3, 3], &[1, 1], pad, c_in, c_out);
            let wg = g.wino.expect("a 3 x 3 stride-1 convolution");
            let cols = c_out * c_in * g.k + if bias { c_out } else { 0 };
            let (wm, bm) = (0.8, bias.then_some(1.3));
            for rows in [1, 2, 4, 8, 13, 16, 35] {
                let (h, d) = (gaussian(rows, g.p_in * c_in, 1), gaussian(rows, g.p_out * c_out, 3));
                let mut want = Mat::from_fn(rows, cols, |_, _| f64::NAN);
                direct_jacobian_rows(&g, h.as_ref(), d.as_ref(), (wm, bm), Simd::Generic, want.as_mut());
                let scale = want.norm_max();
                let (h32, d32) = (crate::net::cast::<f64, f32>(h.as_ref()), crate::net::cast::<f64, f32>(d.as_ref()));
                for simd in crate::kernel::compute::simd_builds() {
                    let what = format!("{simd:?}, {n:?} {pad:?}, {c_in} -> {c_out}, N = {rows}");
                    let mut ja = Mat::from_fn(rows, cols, |_, _| f64::NAN);
                    winograd::jacobian_rows(&wg, (c_in, c_out), h.as_ref(), d.as_ref(), (wm, bm), simd, ja.as_mut());
                    assert!(max_diff(&ja, &want) < 1e-12 * scale, "f64, {what}: {}", max_diff(&ja, &want));
                    let mut ja32 = Mat::<f32>::from_fn(rows, cols, |_, _| f32::NAN);
                    let mults32 = (wm as f32, bm.map(|b| b as f32));
                    winograd::jacobian_rows(
                        &wg,
                        (c_in, c_out),
                        h32.as_ref(),
                        d32.as_ref(),
                        mults32,
                        simd,
                        ja32.as_mut(),
                    );
                    let ja32: Mat<f64> = crate::net::cast(ja32.as_ref());
                    assert!(max_diff(&ja32, &want) < 1e-4 * scale, "f32, {what}");
                }
            }
        }
    }

    #[test]
    fn forward_vjp_and_jvp_match_the_definition_and_finite_differences() {
        for (n, k, s, pad) in [
            (vec![5, 4], vec![3, 3], vec![1, 1], Padding::Same),
            (vec![6, 5], vec![2, 3], vec![2, 1], Padding::Valid),
            (vec![7], vec![3], vec![2], Padding::Circular),
        ] {
            let (c_in, c_out) = (2, 3);
            let g = geom(&n, &k, &s, pad, c_in, c_out);
            let h = gaussian(4, g.p_in * c_in, 1);
            let w: Vec<f64> = gaussian(1, c_out * c_in * g.k, 2).row(0).iter().copied().collect();
            let b = vec![0.3, -0.2, 0.7];
            let mults = (0.8, 1.3);
            let z = forward(&g, &w, Some(&b), mults, h.as_ref(), &mut Pool::default());
            assert!(max_diff(&z, &naive(&g, &w, &b, h.as_ref(), mults)) < 1e-12);
            // VJP: <delta, dZ> for perturbations of W, b and H equals <grads, perturbation> (the map is linear
            // in each, so central differences are exact up to rounding).
            let delta = gaussian(4, g.p_out * c_out, 3);
            let mut gw = vec![0.0; w.len()];
            let mut gb = vec![0.0; 3];
            param_grad(&g, h.as_ref(), delta.as_ref(), mults, &mut gw, Some(&mut gb), &mut Pool::default());
            let dh = input_cotangent(&g, &w, mults.0, delta.as_ref(), &mut Pool::default());
            let ip = |a: &Mat<f64>| -> f64 {
                (0..a.nrows())
                    .flat_map(|i| (0..a.ncols()).map(move |j| (i, j)))
                    .map(|(i, j)| a[(i, j)] * delta[(i, j)])
                    .sum()
            };
            let e = 1e-6;
            for idx in [0, 5, w.len() - 1] {
                let (mut wp, mut wm) = (w.clone(), w.clone());
                wp[idx] += e;
                wm[idx] -= e;
                let fd = (ip(&forward(&g, &wp, Some(&b), mults, h.as_ref(), &mut Pool::default()))
                    - ip(&forward(&g, &wm, Some(&b), mults, h.as_ref(), &mut Pool::default())))
                    / (2.0 * e);
                assert!((fd - gw[idx]).abs() < 1e-7 * (1.0 + fd.abs()), "dW[{idx}] {fd} vs {}", gw[idx]);
            }
            let (mut bp, mut bm) = (b.clone(), b.clone());
            bp[1] += e;
            bm[1] -= e;
            let fd = (ip(&forward(&g, &w, Some(&bp), mults, h.as_ref(), &mut Pool::default()))
                - ip(&forward(&g, &w, Some(&bm), mults, h.as_ref(), &mut Pool::default())))
                / (2.0 * e);
            assert!((fd - gb[1]).abs() < 1e-7 * (1.0 + fd.abs()));
            for (r, col) in [(0, 0), (3, g.p_in * c_in - 1), (2, 5)] {
                let (mut hp, mut hm) = (h.clone(), h.clone());
                hp[(r, col)] += e;
                hm[(r, col)] -= e;
                let fd = (ip(&forward(&g, &w, Some(&b), mults, hp.as_ref(), &mut Pool::default()))
                    - ip(&forward(&g, &w, Some(&b), mults, hm.as_ref(), &mut Pool::default())))
                    / (2.0 * e);
                assert!((fd - dh[(r, col)]).abs() < 1e-7 * (1.0 + fd.abs()), "dH[{r},{col}]");
            }
            // JVP: the directional derivative along (dH, dW, db).
            let hd = gaussian(4, g.p_in * c_in, 4);
            let wd: Vec<f64> = gaussian(1, w.len(), 5).row(0).iter().copied().collect();
            let bd = vec![0.1, 0.2, -0.3];
            let jv = tangent(&g, &w, h.as_ref(), Some(hd.as_ref()), &wd, Some(&bd), mults, &mut Pool::default());
            let at = |t: f64| {
                let hh = Mat::from_fn(4, g.p_in * c_in, |i, j| h[(i, j)] + t * hd[(i, j)]);
                let ww: Vec<f64> = w.iter().zip(&wd).map(|(a, d)| a + t * d).collect();
                let bb: Vec<f64> = b.iter().zip(&bd).map(|(a, d)| a + t * d).collect();
                forward(&g, &ww, Some(&bb), mults, hh.as_ref(), &mut Pool::default())
            };
            let (zp, zm) = (at(e), at(-e));
            let fd = Mat::from_fn(4, g.p_out * c_out, |i, j| (zp[(i, j)] - zm[(i, j)]) / (2.0 * e));
            assert!(max_diff(&fd, &jv) < 1e-6, "JVP");
        }
    }

    #[test]
    fn the_r_operator_is_the_derivative_of_the_reverse_pass() {
        // Along t -> (H + t Hd, W + t Vw, b + t Vb) with the output cotangent delta + t Rd, the reverse pass's
        // outputs (gW, gb, dH) move at the rates rop returns (central differences, exact up to rounding since
        // the passes are bilinear).
        let g = geom(&[5, 4], &[3, 2], &[1, 2], Padding::Same, 2, 3);
        let h = gaussian(3, g.p_in * 2, 11);
        let hd = gaussian(3, g.p_in * 2, 12);
        let w: Vec<f64> = gaussian(1, 3 * 2 * g.k, 13).row(0).iter().copied().collect();
        let vw: Vec<f64> = gaussian(1, w.len(), 14).row(0).iter().copied().collect();
        let delta = gaussian(3, g.p_out * 3, 15);
        let rd = gaussian(3, g.p_out * 3, 16);
        let mults = (0.7, 1.1);
        let reverse = |t: f64| {
            let hh = Mat::from_fn(3, h.ncols(), |i, j| h[(i, j)] + t * hd[(i, j)]);
            let ww: Vec<f64> = w.iter().zip(&vw).map(|(a, b)| a + t * b).collect();
            let dd = Mat::from_fn(3, delta.ncols(), |i, j| delta[(i, j)] + t * rd[(i, j)]);
            let mut gw = vec![0.0; w.len()];
            let mut gb = vec![0.0; 3];
            param_grad(&g, hh.as_ref(), dd.as_ref(), mults, &mut gw, Some(&mut gb), &mut Pool::default());
            (gw, gb, input_cotangent(&g, &ww, mults.0, dd.as_ref(), &mut Pool::default()))
        };
        let e = 1e-5;
        let ((gwp, gbp, dhp), (gwm, gbm, dhm)) = (reverse(e), reverse(-e));
        let mut rgw = vec![0.0; w.len()];
        let mut rgb = vec![0.0; 3];
        let rdh = rop(
            &g,
            &w,
            &vw,
            h.as_ref(),
            Some(hd.as_ref()),
            delta.as_ref(),
            rd.as_ref(),
            mults,
            &mut rgw,
            Some(&mut rgb),
        );
        for (k, r) in rgw.iter().enumerate() {
            let fd = (gwp[k] - gwm[k]) / (2.0 * e);
            assert!((fd - r).abs() < 1e-7 * (1.0 + fd.abs()), "R gW[{k}]");
        }
        for (k, r) in rgb.iter().enumerate() {
            assert!(((gbp[k] - gbm[k]) / (2.0 * e) - r).abs() < 1e-7, "R gb[{k}]");
        }
        let fd = Mat::from_fn(3, h.ncols(), |i, j| (dhp[(i, j)] - dhm[(i, j)]) / (2.0 * e));
        assert!(max_diff(&fd, &rdh) < 1e-7, "R dH");
    }

    #[test]
    fn pooling_and_its_transpose() {
        let g = geom(&[4, 4], &[2, 2], &[2, 2], Padding::Valid, 3, 3);
        let h = gaussian(2, 16 * 3, 7);
        let z = avg_pool(&g, h.as_ref());
        // Output (1, 0) channel 2 of example 1 averages rows 2..4, columns 0..2.
        let want = [8, 9, 12, 13].iter().map(|&p| h[(1, p * 3 + 2)]).sum::<f64>() / 4.0;
        assert!((z[(1, 2 * 3 + 2)] - want).abs() < 1e-14);
        let d = gaussian(2, z.ncols(), 8);
        let dt = avg_pool_transpose(&g, d.as_ref());
        let lhs: f64 =
            (0..2).flat_map(|r| (0..z.ncols()).map(move |c| (r, c))).map(|(r, c)| z[(r, c)] * d[(r, c)]).sum();
        let rhs: f64 =
            (0..2).flat_map(|r| (0..h.ncols()).map(move |c| (r, c))).map(|(r, c)| h[(r, c)] * dt[(r, c)]).sum();
        assert!((lhs - rhs).abs() < 1e-12, "adjoint");
        let gp = global_avg_pool(h.as_ref(), 16, 3);
        let gd = gaussian(2, 3, 9);
        let gt = global_avg_pool_transpose(gd.as_ref(), 16, 3, &mut Pool::default());
        let lhs: f64 = (0..2).flat_map(|r| (0..3).map(move |c| (r, c))).map(|(r, c)| gp[(r, c)] * gd[(r, c)]).sum();
        let rhs: f64 = (0..2).flat_map(|r| (0..48).map(move |c| (r, c))).map(|(r, c)| h[(r, c)] * gt[(r, c)]).sum();
        assert!((lhs - rhs).abs() < 1e-12, "adjoint of the global pool");
    }
}
