//! 3 x 3 convolutions with stride 1 on 2-d images by Winograd's minimal filtering F(2 x 2, 3 x 3) (Lavin and
//! Gray, "Fast algorithms for convolutional neural networks", 2016), examples in vector lanes as in the direct
//! kernels of the parent module.
//!
//! In one dimension, two outputs of a 3-tap correlation, y_i = sum_k d_{i+k} g_k (i = 0, 1), are
//! y = A^T [(G g) ⊙ (B^T d)] with
//!
//! ```text
//!        | 1  0 -1  0 |         | 1    0    0  |
//! B^T =  | 0  1  1  0 |    G =  | 1/2  1/2  1/2|    A^T = | 1  1  1  0 |
//!        | 0 -1  1  0 |         | 1/2 -1/2  1/2|          | 0  1 -1 -1 |
//!        | 0  1  0 -1 |         | 0    0    1  |
//! ```
//!
//! and in two, a 2 x 2 tile of outputs is Y = A^T [(G g G^T) ⊙ (B^T d B)] A from the 4 x 4 patch d under it:
//! 16 products per pair of channels where the direct sum takes 36. Between channels the products are sums over
//! channels, one per point of the 4 x 4 transformed tile, so a layer is 16 small products (tiles x source channels
//! times source x destination channels) between cheap transforms (additions only, the 1/2 of G folded into the
//! transformed weights, computed once per call in f64).
//!
//! The same tile serves all three passes:
//! * forward: Z = conv(H, W), source H, destination Z;
//! * input cotangent: dH is the correlation of Delta with the flipped, transposed kernel (the same pass with
//!   source Delta, destination dH);
//! * per-example weight gradient (the empirical NTK's Jacobian rows): the adjoint of Y in g gives
//!   dW = G^T [sum over tiles (B^T d B) ⊙ (A Delta A^T)] G, with Delta the tile's 2 x 2 output cotangents.
//!
//! The points 0, 1, -1 and infinity keep every transform to additions of at most four terms: rounding errors
//! grow by a small constant over the direct sums (tests hold both to the same tolerances).

use faer::prelude::ReborrowMut;
use faer::{Accum, Mat, MatMut, MatRef};

use super::{f32_lanes, fma_lanes, for_each_block, pack_lanes, store_full, store_lanes, with_scratch, Epilogue, Line};
use crate::kernel::compute::Simd;
use crate::kernel::spatial::Window;
use crate::net::ops::Float;

#[cfg(target_arch = "x86_64")]
mod jac16;
#[cfg(target_arch = "x86_64")]
mod x16;

/// A 3 x 3, stride-1 convolution over 2-d images with zero padding (`valid`, `same`, or any fixed offsets),
/// window offsets in row-major order (j = 3 dy + dx): output (y, x) reads input (y + dy - top, x + dx - left).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Wino {
    /// Input extents (rows, columns).
    pub src: (usize, usize),
    /// Output extents.
    pub dst: (usize, usize),
    /// Zero rows above and columns left of the input.
    pub pad: (usize, usize),
}

impl Wino {
    /// The geometry when `win` over an input of extents `spatial` is such a convolution, else None (strides,
    /// dilations, circular padding, other window sizes or dimensions).
    pub fn detect(win: &Window, spatial: &[usize]) -> Option<Wino> {
        if spatial.len() != 2 || win.out.len() != 2 || win.size != 9 || win.out.contains(&0) {
            return None;
        }
        let (src, dst) = ((spatial[0], spatial[1]), (win.out[0], win.out[1]));
        (0..3).flat_map(|t| (0..3).map(move |l| Wino { src, dst, pad: (t, l) })).find(|w| w.taps_match(&win.taps))
    }

    /// Whether `taps` (as [`Window::taps`]) are exactly this geometry's.
    fn taps_match(&self, taps: &[Option<usize>]) -> bool {
        let ((hi, wi), (ho, wo)) = (self.src, self.dst);
        taps.len() == ho * wo * 9
            && taps.iter().enumerate().all(|(q, &tap)| {
                let (o, j) = (q / 9, q % 9);
                let y = (o / wo + j / 3) as isize - self.pad.0 as isize;
                let x = (o % wo + j % 3) as isize - self.pad.1 as isize;
                let inside = (0..hi as isize).contains(&y) && (0..wi as isize).contains(&x);
                tap == inside.then(|| y as usize * wi + x as usize)
            })
    }

    /// The forward pass over H (N x P_in C_in): weights W (C_out x C_in x 9) times `scale`, plus `bias`.
    pub fn forward_pass<'a, T>(
        &self,
        h: MatRef<'a, T>,
        (c_in, c_out): (usize, usize),
        w: &'a [T],
        scale: f64,
        bias: Option<&'a [T]>,
    ) -> Pass<'a, T> {
        let off = (-(self.pad.0 as isize), -(self.pad.1 as isize));
        Pass {
            m: h,
            c_src: c_in,
            c_dst: c_out,
            src: self.src,
            dst: self.dst,
            off,
            w,
            transposed: false,
            scale,
            bias,
            epi: Epilogue::None,
        }
    }

    /// The input cotangent from Delta (N x P_out C_out): dH[(y, x)] = sum over (dy, dx) of
    /// Delta[(y - dy + top, x - dx + left)] W[dy, dx], the correlation of Delta with the flipped kernel, offset
    /// by (top - 2, left - 2).
    pub fn transpose_pass<'a, T>(
        &self,
        delta: MatRef<'a, T>,
        (c_in, c_out): (usize, usize),
        w: &'a [T],
        scale: f64,
    ) -> Pass<'a, T> {
        let off = (self.pad.0 as isize - 2, self.pad.1 as isize - 2);
        Pass {
            m: delta,
            c_src: c_out,
            c_dst: c_in,
            src: self.dst,
            dst: self.src,
            off,
            w,
            transposed: true,
            scale,
            bias: None,
            epi: Epilogue::None,
        }
    }
}

/// One correlation pass: out[(y, x), cd] (+)= sum over (ey, ex) and source channels cs of
/// m[(y + ey + off.0, x + ex + off.1), cs] g(ey, ex, cs, cd) + bias[cd], with source positions outside `src`
/// reading zero.
#[derive(Clone, Copy)]
pub(crate) struct Pass<'a, T> {
    m: MatRef<'a, T>,
    c_src: usize,
    c_dst: usize,
    src: (usize, usize),
    dst: (usize, usize),
    off: (isize, isize),
    /// W (C_out x C_in x 9) before `scale`: g(e, cs, cd) = W[cd, cs, e], or W[cs, cd, 8 - e] when `transposed`.
    w: &'a [T],
    transposed: bool,
    scale: f64,
    bias: Option<&'a [T]>,
    /// What each stored value goes through (Accum::Replace only).
    epi: Epilogue<'a, T>,
}

impl<'a, T: Float> Pass<'a, T> {
    /// The pass with its stores through `epi` (its output's shape; Accum::Replace).
    pub(crate) fn with_epilogue(self, epi: Epilogue<'a, T>) -> Self {
        Pass { epi, ..self }
    }
}

/// Whether [`run`] applies a pass's epilogue in its stores (the AVX-512 f32 kernel, `x16`), rather than in a
/// pass of its own after them.
pub(crate) fn fuses<T>(c_dst: usize, simd: Simd) -> bool {
    #[cfg(target_arch = "x86_64")]
    if matches!(simd, Simd::Avx512) && f32_lanes::<T>() {
        return x16::serves(c_dst);
    }
    let _ = (c_dst, simd);
    false
}

/// Runs `pass` into `out` (N x P_dst c_dst) with `simd`'s build (lanes and tiles as in the direct
/// `windowed`): every entry of `out` is written (Replace) or added to (Add) exactly once, and results do not
/// depend on the thread count.
pub(crate) fn run<T: Float>(out: &mut Mat<T>, accum: Accum, pass: &Pass<'_, T>, simd: Simd) {
    let f32_lanes = f32_lanes::<T>();
    let epilogue = !matches!(pass.epi, Epilogue::None);
    assert!(
        !epilogue || (accum == Accum::Replace && pass.epi.fits(out.nrows(), out.ncols())),
        "an epilogue of the output's shape, stored with Replace"
    );
    if epilogue && !fuses::<T>(pass.c_dst, simd) {
        run(out, accum, &Pass { epi: Epilogue::None, ..*pass }, simd);
        return pass.epi.apply_to(out);
    }
    match simd {
        #[cfg(target_arch = "x86_64")]
        Simd::Avx512 if f32_lanes && x16::serves(pass.c_dst) => {
            // SAFETY: T is f32 or f64 (`Float` is sealed), so 4 bytes wide it is f32: the casts change no type;
            // Simd::Avx512 is only chosen when the CPU reports AVX-512F, AVX-512VL, AVX2 and FMA (the features
            // the kernel is built with).
            unsafe {
                let out = &mut *(out as *mut Mat<T>).cast::<Mat<f32>>();
                let pass = &*(pass as *const Pass<'_, T>).cast::<Pass<'_, f32>>();
                x16::run(out, accum, pass)
            }
        }
        #[cfg(target_arch = "x86_64")]
        Simd::Avx512 if f32_lanes => run_lanes::<T, 16, 4, 4>(out, accum, pass, simd),
        #[cfg(target_arch = "x86_64")]
        Simd::Avx512 => run_lanes::<T, 8, 4, 4>(out, accum, pass, simd),
        #[cfg(target_arch = "x86_64")]
        Simd::Avx2 if f32_lanes => run_lanes::<T, 8, 3, 4>(out, accum, pass, simd),
        #[cfg(target_arch = "x86_64")]
        Simd::Avx2 => run_lanes::<T, 4, 3, 4>(out, accum, pass, simd),
        Simd::Generic if f32_lanes => run_lanes::<T, 4, 2, 4>(out, accum, pass, simd),
        Simd::Generic => run_lanes::<T, 2, 2, 4>(out, accum, pass, simd),
    }
}

/// The shared operands of a pass.
struct Plan<'a, T> {
    pass: &'a Pass<'a, T>,
    /// Transformed weights, [T; B] chunks at ((xi nb + cd / B) c_src + cs) (channels padded with zeros).
    gh: &'a [T],
    /// Bias padded to nb B.
    bias: Vec<T>,
    /// Destination channel blocks of B.
    nb: usize,
    /// Tiles per row of tiles, and in all.
    tw: usize,
    tiles: usize,
}

fn run_lanes<T: Float, const L: usize, const R: usize, const B: usize>(
    out: &mut Mat<T>,
    accum: Accum,
    pass: &Pass<'_, T>,
    simd: Simd,
) {
    with_transformed_weights(pass, B, |gh| run_plan::<T, L, R, B>(out, accum, pass, gh, simd));
}

/// G g G^T of every pair of channels of `pass`'s weights (times its scale), laid out as [`Plan::gh`] with
/// destination blocks of `b` channels.
fn transform_weights<T: Float>(pass: &Pass<'_, T>, b: usize, gh: &mut [T]) {
    let (c_src, c_dst) = (pass.c_src, pass.c_dst);
    let nb = c_dst.div_ceil(b);
    gh.fill(T::ZERO);
    for cd in 0..c_dst {
        for cs in 0..c_src {
            let mut g = [[0.0; 3]; 3];
            for (e, v) in g.as_flattened_mut().iter_mut().enumerate() {
                *v = pass.scale
                    * if pass.transposed {
                        pass.w[(cs * c_dst + cd) * 9 + 8 - e].wide()
                    } else {
                        pass.w[(cd * c_src + cs) * 9 + e].wide()
                    };
            }
            for (xi, v) in kernel_transform(g).into_iter().enumerate() {
                gh[((xi * nb + cd / b) * c_src + cs) * b + cd % b] = T::of(v);
            }
        }
    }
}

/// One thread's transformed weights of a recent pass: what they were computed from (the weights' bytes, and
/// the pass's shape, direction, scale and value type) and the result, in cache lines.
struct Transformed {
    key: (usize, usize, usize, bool, u64, usize),
    weights: Vec<u8>,
    gh: Vec<Line>,
}

thread_local! {
    /// The transformed weights of this thread's latest passes, most recent last.
    static TRANSFORMED: std::cell::RefCell<Vec<Transformed>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// The most bytes of weights and transformed weights each thread keeps (a 64 -> 64 layer's two passes take
/// 0.8 MB in f32; wider layers, whose passes each take far longer than their weights' transform, are not kept).
const TRANSFORMED_KEEP: usize = 4 << 20;

impl Transformed {
    fn bytes(&self) -> usize {
        self.weights.len() + 64 * self.gh.len()
    }
}

/// Runs `f` on `pass`'s transformed weights ([`transform_weights`] with blocks of `b`), reused when this thread
/// transformed the same weights (equal bytes) for the same pass before: the slices of the empirical NTK run
/// each layer's forward and transposed passes once per block of examples, and transforming the weights each
/// time (in f64, 16 x 16 channel pairs for a 16-channel layer) cost 2 % of the call.
fn with_transformed_weights<T: Float, R>(pass: &Pass<'_, T>, b: usize, f: impl FnOnce(&[T]) -> R) -> R {
    let len = 16 * pass.c_dst.div_ceil(b) * pass.c_src * b;
    let key = (pass.c_src, pass.c_dst, b, pass.transposed, pass.scale.to_bits(), std::mem::size_of::<T>());
    // SAFETY: T is f32 or f64 (`Float` is sealed): no padding, so its values are plain bytes.
    let weights = unsafe { std::slice::from_raw_parts(pass.w.as_ptr().cast::<u8>(), std::mem::size_of_val(pass.w)) };
    let hit = TRANSFORMED.with(|t| {
        let mut t = t.borrow_mut();
        let at = t.iter().rposition(|e| e.key == key && e.weights == weights)?;
        Some(t.remove(at))
    });
    let values = |lines: &mut Vec<Line>| {
        // SAFETY: len values of T fit in the lines (sized so below, or by the same key), 64-byte aligned; any
        // bits are a valid T.
        unsafe { std::slice::from_raw_parts_mut(lines.as_mut_ptr().cast::<T>(), len) }
    };
    let mut entry = hit.unwrap_or_else(|| {
        let mut gh = vec![Line([0; 64]); (len * std::mem::size_of::<T>()).div_ceil(64)];
        transform_weights(pass, b, values(&mut gh));
        Transformed { key, weights: weights.to_vec(), gh }
    });
    let r = f(values(&mut entry.gh));
    TRANSFORMED.with(|t| {
        let mut t = t.borrow_mut();
        if entry.bytes() <= TRANSFORMED_KEEP {
            while t.iter().map(Transformed::bytes).sum::<usize>() + entry.bytes() > TRANSFORMED_KEEP {
                t.remove(0);
            }
            t.push(entry);
        }
    });
    r
}

fn run_plan<T: Float, const L: usize, const R: usize, const B: usize>(
    out: &mut Mat<T>,
    accum: Accum,
    pass: &Pass<'_, T>,
    gh: &[T],
    simd: Simd,
) {
    let (c_src, c_dst) = (pass.c_src, pass.c_dst);
    let nb = c_dst.div_ceil(B);
    let mut bias = vec![T::ZERO; nb * B];
    if let Some(b) = pass.bias {
        bias[..c_dst].copy_from_slice(&b[..c_dst]);
    }
    let (th, tw) = (pass.dst.0.div_ceil(2), pass.dst.1.div_ceil(2));
    let tiles = th * tw;
    let plan = Plan { pass, gh, bias, nb, tw, tiles };
    // A block of L rows stored as one run already is the lane layout; otherwise each block is packed.
    let whole = whole::<T, L>(pass.m);
    let zeros = vec![[T::ZERO; L]; c_src];
    for_each_block::<T, L>(out.as_mut(), |bi, rows| {
        let (i0, m) = (bi * L, rows.nrows());
        let block = |hp: &[[T; L]]| {
            // SAFETY (scratch): T is f32 or f64, valid for any bits; every entry is written before it is read.
            unsafe {
                with_scratch::<[T; L], _>(16 * R * c_src, |xh| {
                    with_scratch::<[T; L], _>(4 * R * nb * B, |yb| {
                        let bufs = ((hp, &zeros[..]), xh, yb);
                        // SAFETY: each arm is only taken when the CPU reports the features it was built for.
                        match simd {
                            #[cfg(target_arch = "x86_64")]
                            Simd::Avx512 => block_avx512::<T, L, R, B>(&plan, bufs, rows, accum),
                            #[cfg(target_arch = "x86_64")]
                            Simd::Avx2 => block_avx2::<T, L, R, B>(&plan, bufs, rows, accum),
                            Simd::Generic => block::<T, L, R, B, false>(&plan, bufs, rows, accum),
                        }
                    })
                })
            }
        };
        in_lanes::<T, L, _>(pass.m, whole, (i0, m), c_src, |hp| block(hp.as_chunks::<L>().0))
    });
}

/// A block's packed source and zero vectors (c_src, for positions outside the source), one register tile's
/// transformed source tiles, and its outputs.
type Bufs<'a, T, const L: usize> = ((&'a [[T; L]], &'a [[T; L]]), &'a mut [[T; L]], &'a mut [[T; L]]);

feature_builds!(block_avx512, block_avx2 => block<L, R, B>(
    plan: &Plan<'_, T>, bufs: Bufs<'_, T, L>, rows: MatMut<'_, T>, accum: Accum,
));

/// The tiles' 16 source positions (flat, times the channel count; None: outside the source), row-major over
/// the 4 x 4 patch of tile t.
#[inline(always)]
fn patch_at(t: usize, tw: usize, src: (usize, usize), off: (isize, isize), c: usize) -> [Option<usize>; 16] {
    let (y0, x0) = (2 * (t / tw) as isize + off.0, 2 * (t % tw) as isize + off.1);
    let mut at = [None; 16];
    for (ab, a) in at.iter_mut().enumerate() {
        let (y, x) = (y0 + (ab / 4) as isize, x0 + (ab % 4) as isize);
        if (0..src.0 as isize).contains(&y) && (0..src.1 as isize).contains(&x) {
            *a = Some((y as usize * src.1 + x as usize) * c);
        }
    }
    at
}

/// B^T d B of every channel ch < c_pad of the patch at `at` (source positions of `hp`, as [`patch_at`] gives
/// them, c channels each; channels from c on read zero) into entries xi stride + start + ch of `out`. Positions
/// outside the source read `zeros` (at least c zero vectors), so that every channel reads its 16 values at
/// fixed offsets from 16 pointers set once per tile (choosing per channel and value between the source and a
/// zero had the compiler build the 16 addresses in vector registers and extract them one by one, which took
/// longer than the transform's arithmetic).
#[inline(always)]
fn transform_tile<T: Float, const L: usize>(
    (hp, zeros): (&[[T; L]], &[[T; L]]),
    at: &[Option<usize>; 16],
    (c, c_pad): (usize, usize),
    out: &mut [[T; L]],
    (stride, start): (usize, usize),
) {
    let zero = [T::ZERO; L];
    // Every source position (times c) plus a channel below c lies within hp, and c within zeros (checked once
    // here).
    assert!(zeros.len() >= c && at.iter().flatten().all(|&o| o + c <= hp.len()), "patch within the source");
    let mut base = [zeros.as_ptr(); 16];
    for (b, a) in base.iter_mut().zip(at) {
        if let Some(o) = a {
            *b = hp[*o..].as_ptr();
        }
    }
    for ch in 0..c {
        // SAFETY: each base[k] has at least c > ch vectors after it (asserted above).
        input_transform(|k| unsafe { &*base[k].add(ch) }, out, (stride, start + ch));
    }
    for ch in c..c_pad {
        input_transform(|_| &zero, out, (stride, start + ch));
    }
}

/// The source patches of tiles g0 .. g0 + R (`pass`'s tiles, as many as remain: the count returned) transformed
/// into `xh`, tile tl's 16 points at (tl 16 + xi) c_src; tiles that fill the last group read zeros (and nothing of
/// them is read out).
#[inline(always)]
fn transform_group<T: Float, const L: usize, const R: usize>(
    plan: &Plan<'_, T>,
    (hp, zeros): (&[[T; L]], &[[T; L]]),
    xh: &mut [[T; L]],
    g0: usize,
) -> usize {
    let pass = plan.pass;
    let c_src = pass.c_src;
    let count = R.min(plan.tiles - g0);
    for tl in 0..R {
        if tl >= count {
            xh[tl * 16 * c_src..][..16 * c_src].fill([T::ZERO; L]);
            continue;
        }
        let at = patch_at(g0 + tl, plan.tw, pass.src, pass.off, c_src);
        transform_tile((hp, zeros), &at, (c_src, c_src), xh, (c_src, tl * 16 * c_src));
    }
    count
}

/// A^T (two rows of four): output row a of a tile takes point row r with sign AT[a][r] (and likewise columns).
const AT: [[i8; 4]; 2] = [[1, 1, 1, 0], [0, 1, -1, -1]];

/// One block of examples, R tiles at a time: transform their source patches, and for each of the 16 points take
/// the products over source channels and add them, with A^T A's signs, straight into the tiles' 2 x 2 outputs
/// (a buffer of R x C_dst x 4 vectors that stays in L1; storing the 16 points' products and transforming them
/// back afterwards went through L2 twice).
#[inline(always)]
fn block<T: Float, const L: usize, const R: usize, const B: usize, const FMA: bool>(
    plan: &Plan<'_, T>,
    ((hp, zeros), xh, yb): Bufs<'_, T, L>,
    mut rows: MatMut<'_, T>,
    accum: Accum,
) {
    let pass = plan.pass;
    let (c_src, c_dst, nb) = (pass.c_src, pass.c_dst, plan.nb);
    let cdp = nb * B;
    let zero = [T::ZERO; L];
    let gc = plan.gh.as_chunks::<B>().0;
    let (hd, wd) = pass.dst;
    // A full block of L rows stores each output vector with one write through its column's pointer.
    let full = rows.nrows() == L;
    assert!(rows.ncols() == hd * wd * c_dst && (!full || rows.row_stride() == 1), "the block's columns, column-major");
    let (out, col_stride) = (rows.rb_mut().as_ptr_mut(), rows.col_stride());
    for g0 in (0..plan.tiles).step_by(R) {
        let count = transform_group::<T, L, R>(plan, (hp, zeros), xh, g0);
        // The outputs start from the bias (padded channels from zero).
        for (ys, &b) in yb.chunks_exact_mut(4).zip(plan.bias.iter().cycle()) {
            ys.fill([b; L]);
        }
        for xi in 0..16 {
            let mut xs: [&[[T; L]]; R] = [&[]; R];
            for (r, xr) in xs.iter_mut().enumerate() {
                *xr = &xh[(r * 16 + xi) * c_src..][..c_src];
            }
            for cb in 0..nb {
                let w = &gc[(xi * nb + cb) * c_src..][..c_src];
                let mut acc = [[zero; B]; R];
                for (cs, wc) in w.iter().enumerate() {
                    let wv: [[T; L]; B] = wc.map(|w| [w; L]);
                    for (acc_r, xr) in acc.iter_mut().zip(&xs) {
                        // SAFETY: every xs[r] has c_src > cs entries (sliced above).
                        let xv = unsafe { xr.get_unchecked(cs) };
                        for (acc_rb, wb) in acc_r.iter_mut().zip(&wv) {
                            fma_lanes::<T, L, FMA>(acc_rb, xv, wb);
                        }
                    }
                }
                for (ab, sign) in signs(xi) {
                    for (r, acc_r) in acc.iter().enumerate() {
                        let ys: &mut [[T; L]] = &mut yb[(r * cdp + cb * B) * 4..][..4 * B];
                        for (b, v) in acc_r.iter().enumerate() {
                            let y = &mut ys[4 * b + ab];
                            let prev = *y;
                            if sign > 0 {
                                add_to(y, &prev, v);
                            } else {
                                sub_to(y, &prev, v);
                            }
                        }
                    }
                }
            }
        }
        for tl in 0..count {
            let t = g0 + tl;
            let (y0, x0) = (2 * (t / plan.tw), 2 * (t % plan.tw));
            for ab in 0..4 {
                let (yy, xx) = (y0 + ab / 2, x0 + ab % 2);
                if yy >= hd || xx >= wd {
                    continue;
                }
                let q = (yy * wd + xx) * c_dst;
                if full {
                    for cd in 0..c_dst {
                        let ys = &yb[(tl * cdp + cd) * 4 + ab];
                        // SAFETY: column q + cd < hd wd c_dst = the block's columns (asserted before the loop
                        // over tiles), each holding L contiguous entries (full block, column-major).
                        unsafe { store_full(out, col_stride, q + cd, accum, ys) };
                    }
                } else {
                    for cd in 0..c_dst {
                        store_lanes(rows.rb_mut().col_mut(q + cd), accum, &yb[(tl * cdp + cd) * 4 + ab]);
                    }
                }
            }
        }
    }
}

/// The outputs (a 2 + b) that point xi = 4 r + s of a transformed tile adds into, with their signs
/// AT[a][r] AT[b][s].
#[inline(always)]
fn signs(xi: usize) -> impl Iterator<Item = (usize, i8)> {
    SIGNS[xi].into_iter().enumerate().filter(|&(_, sign)| sign != 0)
}

/// `SIGNS[4 r + s][2 a + b]` = AT[a][r] AT[b][s].
const SIGNS: [[i8; 4]; 16] = {
    let mut t = [[0; 4]; 16];
    let mut xi = 0;
    while xi < 16 {
        let mut ab = 0;
        while ab < 4 {
            t[xi][ab] = AT[ab / 2][xi / 4] * AT[ab % 2][xi % 4];
            ab += 1;
        }
        xi += 1;
    }
    t
};

/// The Jacobian rows of a Winograd node for one output: `ja` (N x P_l) = dF_a(x_i)/d(W, b), column
/// co 9 C_in + j C_in + ci = w_mult sum_o H_i[i_j(o), ci] D_i[o, co] (as the parent's `jacobian_rows`), then the
/// C_out bias columns b_mult sum_o D_i[o, co]. Per block of L examples and per chunk of tiles, the source patches
/// and the cotangent tiles are transformed (B^T d B and A D A^T), their products summed over the chunk's tiles
/// into U (16 points x C_in x C_out, per lane), and at the end each pair of channels' dW = G^T U G. In f32 with
/// AVX-512 and both channel counts in blocks of 16, `jac16` forms the same sums one example at a time.
pub(crate) fn jacobian_rows<T: Float>(
    wg: &Wino,
    (c_in, c_out): (usize, usize),
    h: MatRef<'_, T>,
    d: MatRef<'_, T>,
    (wm, bm): (T, Option<T>),
    simd: Simd,
    ja: MatMut<'_, T>,
) {
    let f32_lanes = f32_lanes::<T>();
    #[cfg(target_arch = "x86_64")]
    if simd == Simd::Avx512 && f32_lanes && jac16::serves(c_in, c_out) {
        // SAFETY: T is f32 or f64 (`Float` is sealed), so 4 bytes wide it is f32: the casts change no type;
        // Simd::Avx512 is only chosen when the CPU reports AVX-512F, AVX-512VL, AVX2 and FMA (the features the
        // kernel is built with).
        unsafe {
            let h = *(&h as *const MatRef<'_, T>).cast::<MatRef<'_, f32>>();
            let d = *(&d as *const MatRef<'_, T>).cast::<MatRef<'_, f32>>();
            let ja = std::ptr::read((&ja as *const MatMut<'_, T>).cast::<MatMut<'_, f32>>());
            let mults = (wm.wide() as f32, bm.map(|b| b.wide() as f32));
            return jac16::jacobian_rows(wg, (c_in, c_out), h, d, mults, ja);
        }
    }
    let args = Jac { wg, c_in, c_out, h, d, wm, bm };
    match simd {
        #[cfg(target_arch = "x86_64")]
        Simd::Avx512 if f32_lanes => jac_lanes::<T, 16, 4, 4>(&args, simd, ja),
        #[cfg(target_arch = "x86_64")]
        Simd::Avx512 => jac_lanes::<T, 8, 4, 4>(&args, simd, ja),
        #[cfg(target_arch = "x86_64")]
        Simd::Avx2 if f32_lanes => jac_lanes::<T, 8, 2, 4>(&args, simd, ja),
        #[cfg(target_arch = "x86_64")]
        Simd::Avx2 => jac_lanes::<T, 4, 2, 4>(&args, simd, ja),
        Simd::Generic if f32_lanes => jac_lanes::<T, 4, 2, 4>(&args, simd, ja),
        Simd::Generic => jac_lanes::<T, 2, 2, 4>(&args, simd, ja),
    }
}

/// The most bytes of U (16 points x C_in x C_out lane vectors, per thread) for which [`jacobian_rows`] is used:
/// wider layers keep the direct Jacobian products, whose accumulators are bounded (a 512 -> 512 layer's U would
/// be 268 MB per thread in f32, and U past L3 is reloaded at every chunk of tiles).
const U_BYTES: usize = 8 << 20;

/// The fewest source and destination channels for which the forward and transposed passes go by [`run`]: the
/// transforms, the signed accumulation into the outputs and the stores cost per tile and channel, the products
/// per pair of channels, so with fewer channels the direct windowed kernels are faster (one block of examples
/// of a 16 x 16 image, AVX-512, f32 and f64: 3 -> 16 channels 0.6x the direct kernels' speed, 8 -> 16 0.9x,
/// 12 -> 12 and 16 -> 8 0.93-1.0x, 16 -> 16 1.15x, 32 -> 32 1.3x; bench/RESULTS.md section 6, "Winograd where
/// it pays").
const PASS_MIN_CHANNELS: usize = 16;

/// Whether [`run`] serves a pass from `c_src` to `c_dst` channels (see [`PASS_MIN_CHANNELS`]).
pub(crate) fn pass_pays(c_src: usize, c_dst: usize) -> bool {
    c_src.min(c_dst) >= PASS_MIN_CHANNELS
}

/// Whether [`jacobian_rows`] serves a layer of `c_in` -> `c_out` channels under `simd`: at least 16 channels on
/// both sides in f32 and 24 in f64 (with half the examples per vector the transforms weigh more: 16 -> 16 runs at
/// 1.07x the direct products' speed in f32 but 0.94x in f64, 24 -> 24 at 1.2x and 1.04x; fewer channels are
/// slower, 3 -> 16 0.6-0.75x), and U within [`U_BYTES`].
pub(crate) fn jacobian_fits<T>(c_in: usize, c_out: usize, simd: Simd) -> bool {
    let least = if f32_lanes::<T>() { 16 } else { 24 };
    let vector = super::lane_width::<T>(simd) * std::mem::size_of::<T>();
    c_in.min(c_out) >= least
        && 16usize.saturating_mul(c_in.div_ceil(4) * 4).saturating_mul(c_out.div_ceil(4) * 4).saturating_mul(vector)
            <= U_BYTES
}

/// The operands of [`jacobian_rows`].
struct Jac<'a, T> {
    wg: &'a Wino,
    c_in: usize,
    c_out: usize,
    h: MatRef<'a, T>,
    d: MatRef<'a, T>,
    wm: T,
    bm: Option<T>,
}

/// Bytes of transformed tiles one chunk of [`jacobian_rows`] keeps (with U, within L2).
const CHUNK_BYTES: usize = 512 << 10;

/// A block's H and D in the lane layout with zero vectors (C_in and C_out of them, for positions outside H
/// and D), the chunk's transformed tiles (planes of points) and U.
type JacBufs<'a, T, const L: usize, const A: usize, const B: usize> =
    ((&'a [[T; L]], &'a [[T; L]], &'a [[T; L]]), &'a mut [[T; L]], &'a mut [[T; L]], &'a mut [[[[T; L]; B]; A]]);

fn jac_lanes<T: Float, const L: usize, const A: usize, const B: usize>(
    jac: &Jac<'_, T>,
    simd: Simd,
    ja: MatMut<'_, T>,
) {
    let (c_in, c_out) = (jac.c_in, jac.c_out);
    let (cip, cop) = (c_in.div_ceil(A) * A, c_out.div_ceil(B) * B);
    let tiles = jac.wg.dst.0.div_ceil(2) * jac.wg.dst.1.div_ceil(2);
    let chunk = (CHUNK_BYTES / (16 * (cip + cop) * std::mem::size_of::<[T; L]>())).clamp(1, tiles);
    let us = 16 * (cip / A) * (cop / B);
    let zeros = vec![[T::ZERO; L]; c_in.max(c_out)];
    for_each_block::<T, L>(ja, |bi, rows| {
        let (i0, m) = (bi * L, rows.nrows());
        // A block of L rows stored as one run already is the lane layout; otherwise it is packed.
        let (hw, dw) = (whole::<T, L>(jac.h), whole::<T, L>(jac.d));
        // SAFETY (scratch): T is f32 or f64, valid for any bits; pack_lanes writes every entry of what it packs,
        // the transforms every entry of the chunk's planes that the products read, and the first chunk every U.
        in_lanes::<T, L, _>(jac.h, hw, (i0, m), c_in, |hp| {
            in_lanes::<T, L, _>(jac.d, dw, (i0, m), c_out, |dp| unsafe {
                with_scratch::<[T; L], _>(16 * (chunk * cip + 1), |xh| {
                    with_scratch::<[T; L], _>(16 * (chunk * cop + 1), |dh| {
                        with_scratch::<[[[T; L]; B]; A], _>(us, |u| {
                            let src = (hp.as_chunks::<L>().0, dp.as_chunks::<L>().0, &zeros[..]);
                            let bufs = (src, xh, dh, u);
                            // SAFETY: each arm is only taken when the CPU reports the features it was built
                            // for.
                            match simd {
                                #[cfg(target_arch = "x86_64")]
                                Simd::Avx512 => jac_block_avx512::<T, L, A, B>(jac, chunk, bufs, rows),
                                #[cfg(target_arch = "x86_64")]
                                Simd::Avx2 => jac_block_avx2::<T, L, A, B>(jac, chunk, bufs, rows),
                                Simd::Generic => jac_block::<T, L, A, B, false>(jac, chunk, bufs, rows),
                            }
                        })
                    })
                })
            })
        })
    });
}

/// `src` as one run of values when it is a block of L rows stored so (then already in the lane layout).
fn whole<T: Float, const L: usize>(src: MatRef<'_, T>) -> Option<&[T]> {
    (src.nrows() == L).then(|| crate::net::ops::flat(src)).flatten()
}

/// Runs `f` on rows i0 .. i0 + m of `src` (c values per position) in the lane layout: `whole` when the block is
/// stored so already ([`whole`]), else a packed copy in scratch.
#[inline(always)]
fn in_lanes<T: Float, const L: usize, R>(
    src: MatRef<'_, T>,
    whole: Option<&[T]>,
    (i0, m): (usize, usize),
    c: usize,
    f: impl FnOnce(&[T]) -> R,
) -> R {
    match whole {
        Some(flat) => f(flat),
        // SAFETY (scratch): T is f32 or f64, valid for any bits; pack_lanes writes every entry.
        None => unsafe {
            with_scratch::<T, _>(src.ncols() * L, |buf| {
                pack_lanes::<T, L>(src, (i0, m), c, (c, c), buf);
                f(buf)
            })
        },
    }
}

feature_builds!(jac_block_avx512, jac_block_avx2 => jac_block<L, A, B>(
    jac: &Jac<'_, T>, chunk: usize, bufs: JacBufs<'_, T, L, A, B>, rows: MatMut<'_, T>,
));

/// One block of examples of [`jacobian_rows`].
#[inline(always)]
fn jac_block<T: Float, const L: usize, const A: usize, const B: usize, const FMA: bool>(
    jac: &Jac<'_, T>,
    chunk: usize,
    ((hp, dp, zeros), xh, dh, u): JacBufs<'_, T, L, A, B>,
    mut rows: MatMut<'_, T>,
) {
    let (c_in, c_out, wg) = (jac.c_in, jac.c_out, jac.wg);
    let (cip, cop) = (c_in.div_ceil(A) * A, c_out.div_ceil(B) * B);
    let (na, nb) = (cip / A, cop / B);
    let tw = wg.dst.1.div_ceil(2);
    let tiles = wg.dst.0.div_ceil(2) * tw;
    let off = (-(wg.pad.0 as isize), -(wg.pad.1 as isize));
    // Planes of points, each one vector longer than its contents (planes a multiple of 4 KiB apart would put a
    // tile's 16 points in the same few L1 sets).
    let (xs, ds) = (chunk * cip + 1, chunk * cop + 1);
    let zero = [T::ZERO; L];
    // Cotangents past the image read c_out vectors of `zeros` (transform_tile checks its own c_in).
    assert!(zeros.len() >= c_out, "zero vectors for every output channel");
    for c0 in (0..tiles).step_by(chunk) {
        let count = chunk.min(tiles - c0);
        for tl in 0..count {
            let t = c0 + tl;
            let at = patch_at(t, tw, wg.src, off, c_in);
            transform_tile((hp, zeros), &at, (c_in, cip), xh, (xs, tl * cip));
            // The tile's 2 x 2 cotangents (zero past the image).
            let (y0, x0) = (2 * (t / tw), 2 * (t % tw));
            // Cotangents past the image read `zeros` (as in transform_tile).
            let mut base = [zeros.as_ptr(); 4];
            for (ab, b) in base.iter_mut().enumerate() {
                let (y, x) = (y0 + ab / 2, x0 + ab % 2);
                if y < wg.dst.0 && x < wg.dst.1 {
                    *b = dp[(y * wg.dst.1 + x) * c_out..][..c_out].as_ptr();
                }
            }
            for co in 0..c_out {
                // SAFETY: each base[ab] has at least c_out > co vectors after it (sliced above; zeros holds
                // c_out).
                cotangent_transform(|ab| unsafe { &*base[ab].add(co) }, dh, (ds, tl * cop + co));
            }
            for co in c_out..cop {
                cotangent_transform(|_| &zero, dh, (ds, tl * cop + co));
            }
        }
        for xi in 0..16 {
            let (xp, dq) = (&xh[xi * xs..][..count * cip], &dh[xi * ds..][..count * cop]);
            for ai in 0..na {
                for bi in 0..nb {
                    let ut = &mut u[(xi * na + ai) * nb + bi];
                    let mut acc = if c0 == 0 { [[zero; B]; A] } else { *ut };
                    // Tile tl's channels ai A.. and bi B.. lie at tl cip + ai A < count cip = xp.len() (and
                    // likewise in dq): checked once by the slicing above.
                    let (xb, yb) = (xp[ai * A..].as_ptr(), dq[bi * B..].as_ptr());
                    for tl in 0..count {
                        // SAFETY: in bounds (above); [[T; L]; n] has T's alignment.
                        let (x, y) = unsafe {
                            (&*xb.add(tl * cip).cast::<[[T; L]; A]>(), &*yb.add(tl * cop).cast::<[[T; L]; B]>())
                        };
                        for (acc_a, xa) in acc.iter_mut().zip(x) {
                            for (acc_ab, yb) in acc_a.iter_mut().zip(y) {
                                fma_lanes::<T, L, FMA>(acc_ab, xa, yb);
                            }
                        }
                    }
                    *ut = acc;
                }
            }
        }
    }
    let kc = 9 * c_in;
    // dW = G^T U G for a whole register tile of channel pairs at a time (A B L values per point).
    let mut gu = [[[[T::ZERO; L]; B]; A]; 12];
    let mut w = [[[[T::ZERO; L]; B]; A]; 9];
    for ai in 0..na {
        for bi in 0..nb {
            let ut = |xi: usize| tile_values(&u[(xi * na + ai) * nb + bi]);
            // G^T U: three rows of four points, column by column.
            for col in 0..4 {
                let [g0, g1, g2] = gu.get_disjoint_mut([col, 4 + col, 8 + col]).expect("three");
                gt4(
                    [ut(col), ut(4 + col), ut(8 + col), ut(12 + col)],
                    [g0, g1, g2].map(|g| g.as_flattened_mut().as_flattened_mut()),
                );
            }
            // (G^T U) G: each row of four to three.
            for row in 0..3 {
                let [w0, w1, w2] = w.get_disjoint_mut([3 * row, 3 * row + 1, 3 * row + 2]).expect("three");
                let g = |c: usize| tile_values(&gu[4 * row + c]);
                gt4([g(0), g(1), g(2), g(3)], [w0, w1, w2].map(|x| x.as_flattened_mut().as_flattened_mut()));
            }
            for (j, wj) in w.iter().enumerate() {
                for (a, wa) in wj.iter().enumerate().take(c_in.saturating_sub(ai * A)) {
                    for (b, lanes) in wa.iter().enumerate().take(c_out.saturating_sub(bi * B)) {
                        let q = (bi * B + b) * kc + j * c_in + ai * A + a;
                        let dst = rows.rb_mut().col_mut(q).try_as_col_major_mut().expect("column").as_slice_mut();
                        for (o, &v) in dst.iter_mut().zip(lanes) {
                            *o = jac.wm * v;
                        }
                    }
                }
            }
        }
    }
    if let Some(bm) = jac.bm {
        let p_out = wg.dst.0 * wg.dst.1;
        for co in 0..c_out {
            let mut s = zero;
            for p in 0..p_out {
                let prev = s;
                add_to(&mut s, &prev, &dp[p * c_out + co]);
            }
            let dst = rows.rb_mut().col_mut(kc * c_out + co).try_as_col_major_mut().expect("column").as_slice_mut();
            for (o, &v) in dst.iter_mut().zip(&s) {
                *o = bm * v;
            }
        }
    }
}

/// Point xi (< 16) of a transformed tile, entry xi stride + at of `out`, for the transforms' one write per call
/// of add_to or sub_to (each reference is used once, before the next is made).
#[inline(always)]
fn points<'b, T, const L: usize>(
    out: &'b mut [[T; L]],
    (stride, at): (usize, usize),
) -> impl Fn(usize) -> &'b mut [T; L] {
    assert!(15 * stride + at < out.len(), "16 points within the buffer");
    let base = out.as_mut_ptr().wrapping_add(at);
    move |xi| {
        debug_assert!(xi < 16);
        // SAFETY: xi < 16 (every caller's indices are constants below 16), so xi stride + at < out.len()
        // (asserted); `out` stays borrowed while the closure lives, and each reference it returns is dropped
        // before the next is made.
        unsafe { &mut *base.add(xi * stride) }
    }
}

/// A D A^T of a tile's 2 x 2 cotangents (value k, row-major, is `d(k)`) into entries xi stride + at of `out`:
/// rows (and then columns) v -> (v0, v0 + v1, v0 - v1, -v1).
#[inline(always)]
fn cotangent_transform<'a, T: Float + 'a, const L: usize>(
    d: impl Fn(usize) -> &'a [T; L],
    out: &mut [[T; L]],
    place: (usize, usize),
) {
    let o = points(out, place);
    let zero = [T::ZERO; L];
    // A D: four rows of two.
    let mut r = [[T::ZERO; L]; 8];
    r[0] = *d(0);
    r[1] = *d(1);
    add_to(&mut r[2], d(0), d(2));
    add_to(&mut r[3], d(1), d(3));
    sub_to(&mut r[4], d(0), d(2));
    sub_to(&mut r[5], d(1), d(3));
    sub_to(&mut r[6], &zero, d(2));
    sub_to(&mut r[7], &zero, d(3));
    for i in 0..4 {
        let (v0, v1) = (&r[2 * i], &r[2 * i + 1]);
        *o(4 * i) = *v0;
        add_to(o(4 * i + 1), v0, v1);
        sub_to(o(4 * i + 2), v0, v1);
        sub_to(o(4 * i + 3), &zero, v1);
    }
}

/// A register tile's values, in one run.
#[inline(always)]
fn tile_values<T, const L: usize, const A: usize, const B: usize>(t: &[[[T; L]; B]; A]) -> &[T] {
    t.as_flattened().as_flattened()
}

/// G^T v of four equal-length runs of values, elementwise: (v0 + (v1 + v2) / 2, (v1 - v2) / 2,
/// (v1 + v2) / 2 + v3).
#[inline(always)]
fn gt4<T: Float>(v: [&[T]; 4], o: [&mut [T]; 3]) {
    let half = T::of(0.5);
    let [o0, o1, o2] = o;
    let n = o0.len();
    assert!(v.iter().all(|x| x.len() == n) && o1.len() == n && o2.len() == n, "equal lengths");
    for i in 0..n {
        let p = (v[1][i] + v[2][i]) * half;
        o0[i] = v[0][i] + p;
        o1[i] = (v[1][i] - v[2][i]) * half;
        o2[i] = p + v[3][i];
    }
}

/// o = a - b, lane by lane.
#[inline(always)]
fn sub_to<T: Float, const L: usize>(o: &mut [T; L], a: &[T; L], b: &[T; L]) {
    for l in 0..L {
        o[l] = a[l] - b[l];
    }
}

/// o = a + b, lane by lane.
#[inline(always)]
fn add_to<T: Float, const L: usize>(o: &mut [T; L], a: &[T; L], b: &[T; L]) {
    for l in 0..L {
        o[l] = a[l] + b[l];
    }
}

/// B^T d B of the 4 x 4 patch whose value k (row-major) is `d(k)` into entries xi stride + at of `out` (point
/// xi; one tile's values channel-major with stride c, or planes of points with stride the plane's length). Each
/// line is one operation on whole lane arrays (so one vector instruction; written with the lanes outermost, the
/// compiler left them scalar).
#[inline(always)]
fn input_transform<'a, T: Float + 'a, const L: usize>(
    d: impl Fn(usize) -> &'a [T; L],
    out: &mut [[T; L]],
    place: (usize, usize),
) {
    let o = points(out, place);
    // B^T d, row by row.
    let mut t = [[T::ZERO; L]; 16];
    for b in 0..4 {
        sub_to(&mut t[b], d(b), d(8 + b));
        add_to(&mut t[4 + b], d(4 + b), d(8 + b));
        sub_to(&mut t[8 + b], d(8 + b), d(4 + b));
        sub_to(&mut t[12 + b], d(4 + b), d(12 + b));
    }
    for r in 0..4 {
        let row = &t[4 * r..4 * r + 4];
        sub_to(o(4 * r), &row[0], &row[2]);
        add_to(o(4 * r + 1), &row[1], &row[2]);
        sub_to(o(4 * r + 2), &row[2], &row[1]);
        sub_to(o(4 * r + 3), &row[1], &row[3]);
    }
}

/// G g G^T of a 3 x 3 kernel (row-major), in f64.
fn kernel_transform(g: [[f64; 3]; 3]) -> [f64; 16] {
    let gv = |v: [f64; 3]| [v[0], 0.5 * (v[0] + v[1] + v[2]), 0.5 * (v[0] - v[1] + v[2]), v[2]];
    let cols: [[f64; 4]; 3] = std::array::from_fn(|b| gv([g[0][b], g[1][b], g[2][b]]));
    let mut out = [0.0; 16];
    for r in 0..4 {
        out[4 * r..4 * r + 4].copy_from_slice(&gv([cols[0][r], cols[1][r], cols[2][r]]));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_tile_is_the_direct_correlation() {
        // 4 x 4 patch, 3 x 3 kernel: Y[i][j] = sum d[i + a][j + b] g[a][b], in exact arithmetic (small integers).
        let d: [[f64; 1]; 16] = std::array::from_fn(|i| [((i * 7) % 11) as f64 - 5.0]);
        let g = [[1.0, -2.0, 3.0], [0.5, 4.0, -1.0], [2.0, 0.0, -3.0]];
        let mut x = [[0.0]; 16];
        input_transform(|i| &d[i], &mut x, (1, 0));
        let gh = kernel_transform(g);
        let mut y = [0.0; 4];
        for (xi, xv) in x.iter().enumerate() {
            for (ab, sign) in signs(xi) {
                y[ab] += f64::from(sign) * xv[0] * gh[xi];
            }
        }
        for i in 0..2 {
            for j in 0..2 {
                let mut want = 0.0;
                for a in 0..3 {
                    for b in 0..3 {
                        want += d[(i + a) * 4 + j + b][0] * g[a][b];
                    }
                }
                assert_eq!(y[2 * i + j], want);
            }
        }
    }

    #[test]
    fn transformed_weights_are_reused_only_for_the_same_weights_and_pass() {
        let wg = Wino { src: (4, 4), dst: (4, 4), pad: (1, 1) };
        let h = Mat::<f64>::zeros(1, 16 * 5);
        let fresh = |pass: &Pass<'_, f64>| {
            let mut gh = vec![f64::NAN; 16 * pass.c_dst.div_ceil(4) * 4 * pass.c_src];
            transform_weights(pass, 4, &mut gh);
            gh
        };
        let cached = |pass: &Pass<'_, f64>| with_transformed_weights(pass, 4, |gh| gh.to_vec());
        for (c_in, c_out) in [(5, 3), (4, 4)] {
            let w: Vec<f64> = (0..c_out * c_in * 9).map(|i| (0.37 * i as f64).sin()).collect();
            let mut w2 = w.clone();
            w2[c_out * c_in * 9 - 1] += 1.0;
            // After the first pass the thread keeps an entry that only equal weights, scale and direction may
            // take: other weights of the same shape, the other direction (of the same shape when c_in = c_out),
            // another scale.
            for (weights, scale, transposed) in [
                (&w, 0.5, false),
                (&w, 0.5, false),
                (&w2, 0.5, false),
                (&w, 0.5, true),
                (&w, 2.0, false),
                (&w, 0.5, false),
            ] {
                let pass = if transposed {
                    wg.transpose_pass(h.as_ref(), (c_in, c_out), weights, scale)
                } else {
                    wg.forward_pass(h.as_ref(), (c_in, c_out), weights, scale, None)
                };
                let what = format!("{c_in} -> {c_out}, scale {scale}, transposed {transposed}");
                assert_eq!(cached(&pass), fresh(&pass), "{what}");
            }
        }
        // A layer too large to keep is transformed and dropped: what the thread keeps is unchanged.
        let keys = || TRANSFORMED.with(|t| t.borrow().iter().map(|e| e.key).collect::<Vec<_>>());
        let before = keys();
        let c = 300;
        let big: Vec<f64> = vec![0.1; c * c * 9];
        let hb = Mat::<f64>::zeros(1, 16 * c);
        let gh = cached(&wg.forward_pass(hb.as_ref(), (c, c), &big, 1.0, None));
        assert_eq!(gh.len(), 16 * c * c);
        assert!(!before.is_empty() && keys() == before, "{:?} -> {:?}", before, keys());
    }

    #[test]
    fn wide_and_narrow_layers_keep_the_direct_jacobian() {
        for simd in crate::kernel::compute::simd_builds() {
            assert!(jacobian_fits::<f32>(16, 16, simd) && jacobian_fits::<f64>(64, 64, simd), "{simd:?}");
            assert!(!jacobian_fits::<f32>(512, 512, simd) && !jacobian_fits::<f64>(256, 256, simd), "{simd:?}");
            // Narrow layers too: there the transforms cost more than the products they save.
            assert!(!jacobian_fits::<f32>(3, 16, simd) && !jacobian_fits::<f64>(16, 16, simd), "{simd:?}");
        }
    }

    #[test]
    fn one_tile_kernel_gradient_is_the_direct_sum() {
        // dW[a][b] = sum over the 2 x 2 outputs (i, j) of d[i + a][j + b] delta[i][j], exactly (small integers,
        // halves).
        let d: [[f64; 1]; 16] = std::array::from_fn(|i| [((i * 5) % 7) as f64 - 3.0]);
        let delta: [[f64; 1]; 4] = [[2.0], [-1.0], [0.5], [3.0]];
        let (mut x, mut dt) = ([[0.0]; 16], [[0.0]; 16]);
        input_transform(|i| &d[i], &mut x, (1, 0));
        cotangent_transform(|i| &delta[i], &mut dt, (1, 0));
        let u: [f64; 16] = std::array::from_fn(|xi| x[xi][0] * dt[xi][0]);
        let mut t = [[0.0; 4]; 3];
        for col in 0..4 {
            let (mut o0, mut o1, mut o2) = ([0.0], [0.0], [0.0]);
            gt4([&[u[col]], &[u[4 + col]], &[u[8 + col]], &[u[12 + col]]], [&mut o0, &mut o1, &mut o2]);
            (t[0][col], t[1][col], t[2][col]) = (o0[0], o1[0], o2[0]);
        }
        for (a, row) in t.iter().enumerate() {
            let mut w = [[0.0]; 3];
            let [w0, w1, w2] = &mut w;
            gt4([&row[0..1], &row[1..2], &row[2..3], &row[3..4]], [w0, w1, w2]);
            for (b, wb) in w.iter().enumerate() {
                let want: f64 = (0..4).map(|ij| d[(ij / 2 + a) * 4 + ij % 2 + b][0] * delta[ij][0]).sum();
                assert_eq!(wb[0], want, "dW[{a}][{b}]");
            }
        }
    }
}
