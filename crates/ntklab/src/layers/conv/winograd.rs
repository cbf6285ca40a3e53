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

use super::{f32_lanes, fma_lanes, for_each_block, pack_lanes, with_scratch};
use crate::kernel::compute::Simd;
use crate::kernel::spatial::Window;
use crate::net::ops::Float;

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
        Pass { m: h, c_src: c_in, c_dst: c_out, src: self.src, dst: self.dst, off, w, transposed: false, scale, bias }
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
        }
    }
}

/// One correlation pass: out[(y, x), cd] (+)= sum over (ey, ex) and source channels cs of
/// m[(y + ey + off.0, x + ex + off.1), cs] g(ey, ex, cs, cd) + bias[cd], with source positions outside `src`
/// reading zero.
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
}

/// Runs `pass` into `out` (N x P_dst c_dst) with `simd`'s build (lanes and tiles as in the direct
/// `windowed`): every entry of `out` is written (Replace) or added to (Add) exactly once, and results do not
/// depend on the thread count.
pub(crate) fn run<T: Float>(out: &mut Mat<T>, accum: Accum, pass: &Pass<'_, T>, simd: Simd) {
    let f32_lanes = f32_lanes::<T>();
    match simd {
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

/// Bytes of transformed tiles (source and products) one group of tiles keeps: they are written and read back
/// within the group, so they stay in L2.
const GROUP_BYTES: usize = 256 << 10;

/// The shared operands of a pass.
struct Plan<'a, T> {
    pass: &'a Pass<'a, T>,
    /// Transformed weights, [T; B] chunks at ((xi nb + cd / B) c_src + cs) (channels padded with zeros).
    gh: Vec<T>,
    /// Bias padded to nb B.
    bias: Vec<T>,
    /// Destination channel blocks of B.
    nb: usize,
    /// Tiles per row of tiles, tiles in all, tiles per group (a multiple of R).
    tw: usize,
    tiles: usize,
    group: usize,
}

fn run_lanes<T: Float, const L: usize, const R: usize, const B: usize>(
    out: &mut Mat<T>,
    accum: Accum,
    pass: &Pass<'_, T>,
    simd: Simd,
) {
    let (c_src, c_dst) = (pass.c_src, pass.c_dst);
    let nb = c_dst.div_ceil(B);
    let mut gh = vec![T::ZERO; 16 * nb * c_src * B];
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
                gh[((xi * nb + cd / B) * c_src + cs) * B + cd % B] = T::of(v);
            }
        }
    }
    let mut bias = vec![T::ZERO; nb * B];
    if let Some(b) = pass.bias {
        bias[..c_dst].copy_from_slice(&b[..c_dst]);
    }
    let (th, tw) = (pass.dst.0.div_ceil(2), pass.dst.1.div_ceil(2));
    let tiles = th * tw;
    let per_tile = 16 * (c_src + nb * B) * std::mem::size_of::<[T; L]>();
    let group = (GROUP_BYTES / per_tile).max(1).min(tiles).div_ceil(R) * R;
    let plan = Plan { pass, gh, bias, nb, tw, tiles, group };
    let p_src = pass.src.0 * pass.src.1;
    for_each_block::<T, L>(out.as_mut(), |bi, rows| {
        let (i0, m) = (bi * L, rows.nrows());
        // A block of L rows stored as one run already is the lane layout; otherwise pack it.
        let whole = (pass.m.nrows() == L).then(|| crate::net::ops::flat(pass.m)).flatten();
        let block = |hp: &[[T; L]]| {
            // SAFETY (scratch): T is f32 or f64, valid for any bits; every entry is written before it is read.
            unsafe {
                with_scratch::<[T; L], _>(16 * group * c_src, |xh| {
                    with_scratch::<[T; L], _>(16 * group * nb * B + 4 * group * c_dst, |mo| {
                        let (mh, ob) = mo.split_at_mut(16 * group * nb * B);
                        let bufs = (hp, xh, mh, ob);
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
        match whole {
            Some(flat) => block(flat.as_chunks::<L>().0),
            // SAFETY: as above; pack_lanes writes every entry.
            None => unsafe {
                with_scratch::<T, _>(p_src * c_src * L, |hp| {
                    pack_lanes::<T, L>(pass.m, (i0, m), c_src, (c_src, c_src), hp);
                    block(hp.as_chunks::<L>().0)
                })
            },
        }
    });
}

/// A block's packed source, transformed source tiles, their products, and the staged outputs.
type Bufs<'a, T, const L: usize> = (&'a [[T; L]], &'a mut [[T; L]], &'a mut [[T; L]], &'a mut [[T; L]]);

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

/// One block of examples: per group of tiles, transform the source patches, take the 16 products, transform
/// back into `rows`.
#[inline(always)]
fn block<T: Float, const L: usize, const R: usize, const B: usize, const FMA: bool>(
    plan: &Plan<'_, T>,
    (hp, xh, mh, ob): Bufs<'_, T, L>,
    mut rows: MatMut<'_, T>,
    accum: Accum,
) {
    let pass = plan.pass;
    let (c_src, c_dst, group, nb) = (pass.c_src, pass.c_dst, plan.group, plan.nb);
    let cdp = nb * B;
    let zero = [T::ZERO; L];
    let m = rows.nrows();
    let gc = plan.gh.as_chunks::<B>().0;
    for g0 in (0..plan.tiles).step_by(group) {
        let count = group.min(plan.tiles - g0);
        for tl in 0..count.div_ceil(R) * R {
            if tl >= count {
                // Tiles that fill the last register tile: zeros in, nothing read out.
                xh[tl * 16 * c_src..][..16 * c_src].fill(zero);
                continue;
            }
            let at = patch_at(g0 + tl, plan.tw, pass.src, pass.off, c_src);
            for cs in 0..c_src {
                let mut d = [&zero; 16];
                for (v, a) in d.iter_mut().zip(&at) {
                    if let Some(a) = a {
                        *v = &hp[a + cs];
                    }
                }
                input_transform(&d, &mut xh[tl * 16 * c_src..][..16 * c_src], cs);
            }
        }
        for xi in 0..16 {
            for cb in 0..nb {
                let w = &gc[(xi * nb + cb) * c_src..][..c_src];
                for r0 in (0..count).step_by(R) {
                    let mut xs: [&[[T; L]]; R] = [&[]; R];
                    for (r, xr) in xs.iter_mut().enumerate() {
                        *xr = &xh[((r0 + r) * 16 + xi) * c_src..][..c_src];
                    }
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
                    for (r, acc_r) in acc.iter().enumerate() {
                        mh[((r0 + r) * 16 + xi) * cdp + cb * B..][..B].copy_from_slice(acc_r);
                    }
                }
            }
        }
        // Back to outputs, staged in `ob` so that the copies below are whole vectors (stored straight into four
        // columns, the compiler scattered them lane by lane).
        for tl in 0..count {
            for cd in 0..c_dst {
                let st: &mut [[T; L]; 4] = (&mut ob[(tl * c_dst + cd) * 4..][..4]).try_into().expect("4");
                output_transform(&mh[tl * 16 * cdp..][..16 * cdp], cd, plan.bias[cd], st);
            }
        }
        let (hd, wd) = pass.dst;
        for tl in 0..count {
            let t = g0 + tl;
            let (y0, x0) = (2 * (t / plan.tw), 2 * (t % plan.tw));
            for ab in 0..4 {
                let (yy, xx) = (y0 + ab / 2, x0 + ab % 2);
                if yy >= hd || xx >= wd {
                    continue;
                }
                for cd in 0..c_dst {
                    let ys = &ob[(tl * c_dst + cd) * 4 + ab];
                    let q = (yy * wd + xx) * c_dst + cd;
                    let dst = rows.rb_mut().col_mut(q).try_as_col_major_mut().expect("column").as_slice_mut();
                    match (accum, <&mut [T; L]>::try_from(&mut *dst)) {
                        (Accum::Replace, Ok(full)) => *full = *ys,
                        (Accum::Replace, Err(_)) => dst.copy_from_slice(&ys[..m]),
                        (Accum::Add, _) => dst.iter_mut().zip(ys).for_each(|(o, &v)| *o += v),
                    }
                }
            }
        }
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

/// B^T d B of the 4 x 4 patch `d` (row-major) into entries xi c + at of `out` (16 c vectors: one tile's
/// transformed values, point xi of channel at). Each line is one operation on whole lane arrays (so one vector
/// instruction; written with the lanes outermost, the compiler left them scalar).
#[inline(always)]
fn input_transform<T: Float, const L: usize>(d: &[&[T; L]; 16], out: &mut [[T; L]], at: usize) {
    let c = out.len() / 16;
    assert!(at < c, "within the tile");
    let base = out.as_mut_ptr().wrapping_add(at);
    // SAFETY: xi < 16 and at < c, so xi c + at < 16 c <= out.len(); the references live only for one call of
    // sub_to or add_to each, one at a time.
    let o = |xi: usize| unsafe { &mut *base.add(xi * c) };
    // B^T d, row by row.
    let mut t = [[T::ZERO; L]; 16];
    for b in 0..4 {
        sub_to(&mut t[b], d[b], d[8 + b]);
        add_to(&mut t[4 + b], d[4 + b], d[8 + b]);
        sub_to(&mut t[8 + b], d[8 + b], d[4 + b]);
        sub_to(&mut t[12 + b], d[4 + b], d[12 + b]);
    }
    for r in 0..4 {
        let row = &t[4 * r..4 * r + 4];
        sub_to(o(4 * r), &row[0], &row[2]);
        add_to(o(4 * r + 1), &row[1], &row[2]);
        sub_to(o(4 * r + 2), &row[2], &row[1]);
        sub_to(o(4 * r + 3), &row[1], &row[3]);
    }
}

/// A^T m A + bias of the 4 x 4 tile at entries xi c + at of `m` (16 c vectors): the 2 x 2 outputs (row-major)
/// into `out`.
#[inline(always)]
fn output_transform<T: Float, const L: usize>(m: &[[T; L]], at: usize, bias: T, out: &mut [[T; L]; 4]) {
    let c = m.len() / 16;
    assert!(at < c, "within the tile");
    // SAFETY: xi < 16 and at < c, so xi c + at < 16 c <= m.len().
    let v = |xi: usize| unsafe { m.get_unchecked(xi * c + at) };
    // A^T m: two rows of four.
    let mut u = [[T::ZERO; L]; 8];
    let mut s = [T::ZERO; L];
    for b in 0..4 {
        add_to(&mut s, v(b), v(4 + b));
        add_to(&mut u[b], &s, v(8 + b));
        sub_to(&mut s, v(4 + b), v(8 + b));
        sub_to(&mut u[4 + b], &s, v(12 + b));
    }
    let bv = [bias; L];
    let mut s2 = [T::ZERO; L];
    for a in 0..2 {
        let row = &u[4 * a..4 * a + 4];
        add_to(&mut s, &row[0], &row[1]);
        add_to(&mut s2, &s, &row[2]);
        add_to(&mut out[2 * a], &s2, &bv);
        sub_to(&mut s, &row[1], &row[2]);
        sub_to(&mut s2, &s, &row[3]);
        add_to(&mut out[2 * a + 1], &s2, &bv);
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
        input_transform(&std::array::from_fn(|i| &d[i]), &mut x, 0);
        let gh = kernel_transform(g);
        let mut y = [[0.0]; 4];
        let prod: [[f64; 1]; 16] = std::array::from_fn(|i| [x[i][0] * gh[i]]);
        output_transform::<f64, 1>(&prod, 0, 0.0, &mut y);
        for i in 0..2 {
            for j in 0..2 {
                let mut want = 0.0;
                for a in 0..3 {
                    for b in 0..3 {
                        want += d[(i + a) * 4 + j + b][0] * g[a][b];
                    }
                }
                assert_eq!(y[2 * i + j][0], want);
            }
        }
    }
}
