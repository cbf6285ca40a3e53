//! Winograd's Jacobian rows ([`super::jacobian_rows`]) in f32 with AVX-512 when both channel counts are
//! multiples of 16 (and U at most [`U_FLOATS`]), one example at a time with its channels in the vector lanes.
//!
//! Why not the generic `jac_block`, which keeps 16 examples per vector: there one position of 16 channels is
//! 1 KB, a tile's 16 transformed points 16 KB per side, and U (16 points x C_in x C_out per lane) 256 KB for a
//! 16 -> 16 layer, so the transforms wrote their planes through L2 and U went through L2 at every chunk of
//! tiles; the products took a third of the time. Here one example's zero-padded input and cotangents are 20 KB
//! and 16 KB, in L1, and each point of the 4 x 4 transformed tiles is computed from them where the products need
//! it (4 loads and 3 additions for the input, 1 to 4 terms for the cotangents, as the generic transforms, term by
//! term), for every tile in turn, with that point's U in 16 registers: U is stored once per point, and the
//! point's transformed inputs (64 bytes per tile) in between.
//!
//! U's register vector k holds input channel k and the 16 output channels in its lanes. A tile's point then
//! takes 16 FMAs of the cotangents' vector by each input channel, broadcast from memory as the FMA's operand:
//! the transformed input point is stored for every tile first, then read back by the products. Blocks of 4 x 4
//! channel pairs per register (8 operands per 16 FMAs, but 4 permutations and 4 shuffles of the operands, on
//! the same port as half the FMAs) took about 12 % longer; so did these broadcasts when the point was stored
//! and read back in the same iteration, where the compiler turned them into shuffles.
//!
//! The block's inputs and cotangents are transposed into the per-example layout first and the rows transposed
//! back at the end (16 x 16 transposes in registers).

use std::arch::x86_64::{
    __m512, _mm512_add_ps, _mm512_castpd_ps, _mm512_castps_pd, _mm512_fmadd_ps, _mm512_loadu_ps, _mm512_mask_storeu_ps,
    _mm512_mul_ps, _mm512_set1_ps, _mm512_setzero_ps, _mm512_shuffle_f32x4, _mm512_storeu_ps, _mm512_sub_ps,
    _mm512_unpackhi_pd, _mm512_unpackhi_ps, _mm512_unpacklo_pd, _mm512_unpacklo_ps,
};

use faer::prelude::ReborrowMut;
use faer::{MatMut, MatRef};

use super::super::{for_each_block, with_scratch};
use super::{in_lanes, whole, Wino};

/// Lanes: examples per vector in the block layout, channels per vector here.
const L: usize = 16;
/// The most floats of one example's U (16 points x C_in x C_out): 16 KB for 16 -> 16, 64 KB for 32 -> 32.
const U_FLOATS: usize = 16 * 32 * 32;

/// Whether [`jacobian_rows`] serves a layer of `c_in` -> `c_out` channels (f32, AVX-512 available).
pub(super) fn serves(c_in: usize, c_out: usize) -> bool {
    c_in > 0 && c_out > 0 && c_in.is_multiple_of(L) && c_out.is_multiple_of(L) && 16 * c_in * c_out <= U_FLOATS
}

/// The per-example layouts: tiles (th x tw), the zero-padded input (ph x pw positions of c_in values; source
/// (y, x) at (y + top, x + left), so tile (ty, tx) reads rows 2 ty .. 2 ty + 4 and columns 2 tx .. 2 tx + 4)
/// and the cotangents (2 th x 2 tw positions of c_out values, zero past the output).
#[derive(Clone, Copy)]
struct Geo {
    wg: Wino,
    c_in: usize,
    c_out: usize,
    th: usize,
    tw: usize,
    ph: usize,
    pw: usize,
    wm: f32,
    bm: Option<f32>,
}

impl Geo {
    fn input_len(&self) -> usize {
        self.ph * self.pw * self.c_in
    }
    fn cotangent_len(&self) -> usize {
        4 * self.th * self.tw * self.c_out
    }
    /// Values of one example's results: 9 C_in C_out weight gradients (the bias sums go to J straight from the
    /// block layout).
    fn result_len(&self) -> usize {
        9 * self.c_in * self.c_out
    }
}

/// [`super::jacobian_rows`] for f32 with AVX-512 and `serves(c_in, c_out)`.
///
/// # Safety
/// The CPU must support AVX-512F, AVX-512VL, AVX2 and FMA (as `Simd::Avx512` promises).
pub(super) unsafe fn jacobian_rows(
    wg: &Wino,
    (c_in, c_out): (usize, usize),
    h: MatRef<'_, f32>,
    d: MatRef<'_, f32>,
    (wm, bm): (f32, Option<f32>),
    ja: MatMut<'_, f32>,
) {
    assert!(serves(c_in, c_out), "channels in blocks of 16");
    let (p_in, p_out) = (wg.src.0 * wg.src.1, wg.dst.0 * wg.dst.1);
    let kc = 9 * c_in;
    assert!(
        h.ncols() == p_in * c_in
            && d.ncols() == p_out * c_out
            && ja.ncols() == (kc + usize::from(bm.is_some())) * c_out,
        "shapes of H, D and J"
    );
    let (th, tw) = (wg.dst.0.div_ceil(2), wg.dst.1.div_ceil(2));
    let geo = Geo { wg: *wg, c_in, c_out, th, tw, ph: 2 * th + 2, pw: 2 * tw + 2, wm, bm };
    let sizes = [L * geo.input_len(), L * geo.cotangent_len(), 16 * c_in * c_out, L * geo.result_len(), L * th * tw];
    let (hw, dw) = (whole::<f32, L>(h), whole::<f32, L>(d));
    for_each_block::<f32, L>(ja, |bi, rows| {
        let (i0, m) = (bi * L, rows.nrows());
        in_lanes::<f32, L, _>(h, hw, (i0, m), c_in, |hp| {
            in_lanes::<f32, L, _>(d, dw, (i0, m), c_out, |dp| {
                // SAFETY (scratch): f32 values, valid for any bits; `block` writes every entry of the padded
                // copies (zeros where no source position lands), writes U and the results before reading them, and
                // reads results of examples past m only into lanes it does not store. SAFETY (block): the caller's
                // promise (the CPU features).
                unsafe { with_scratch::<f32, _>(sizes.iter().sum(), |buf| block(&geo, (hp, dp), buf, sizes, rows)) }
            })
        })
    });
}

/// One example's operands for [`point`]: its padded input and cotangents, and the register tile (input channels
/// 16 ta.., output channels 16 tb..).
struct Pt<'a> {
    geo: &'a Geo,
    hx: &'a [f32],
    dx: &'a [f32],
    ta: usize,
    tb: usize,
}

/// One point XI = 4 r + s of every tile's transformed input (B^T d B) and cotangents (A D A^T), multiplied and
/// summed over the tiles in order: U of that point for the register tile, vector k for input channel 16 ta + k
/// (lanes: output channels 16 tb ..); `xbuf` holds the tiles' transformed input points in between.
///
/// # Safety
/// The CPU features of `block`; `pt.ta < C_in / 16` and `pt.tb < C_out / 16` (the register tile's channels lie
/// within each position's values).
#[target_feature(enable = "avx512f,avx512vl,avx2,fma")]
unsafe fn point<const XI: usize>(pt: &Pt<'_>, xbuf: &mut [f32]) -> [__m512; 16] {
    let g = pt.geo;
    let (r, s) = (XI / 4, XI % 4);
    let (c_in, c_out, pw, dw) = (g.c_in, g.c_out, g.pw, 2 * g.tw);
    assert!(pt.hx.len() >= g.input_len() && pt.dx.len() >= g.cotangent_len(), "the example's operands");
    assert!(xbuf.len() >= g.th * g.tw * L, "a transformed input per tile");
    debug_assert!(pt.ta < c_in / L && pt.tb < c_out / L, "the register tile's channels");
    let z = _mm512_setzero_ps();
    // The point of every tile's transformed input, stored so that the products below take its channels as
    // broadcasts from memory (operands of the FMAs, not shuffles).
    for ty in 0..g.th {
        for tx in 0..g.tw {
            // SAFETY (loads): rows 2 ty + k < 2 th + 2 = ph and columns 2 tx + l < pw of the padded input, c_in
            // values each, channels 16 ta + 16 <= c_in (asserted lengths).
            let xb = unsafe { pt.hx.as_ptr().add(((2 * ty) * pw + 2 * tx) * c_in + pt.ta * L) };
            let d = |k: usize, l: usize| unsafe { _mm512_loadu_ps(xb.add((k * pw + l) * c_in)) };
            // B^T d along the rows, then along the columns (as `input_transform`).
            let row = |l: usize| match r {
                0 => _mm512_sub_ps(d(0, l), d(2, l)),
                1 => _mm512_add_ps(d(1, l), d(2, l)),
                2 => _mm512_sub_ps(d(2, l), d(1, l)),
                _ => _mm512_sub_ps(d(1, l), d(3, l)),
            };
            let x = match s {
                0 => _mm512_sub_ps(row(0), row(2)),
                1 => _mm512_add_ps(row(1), row(2)),
                2 => _mm512_sub_ps(row(2), row(1)),
                _ => _mm512_sub_ps(row(1), row(3)),
            };
            // SAFETY: tile ty tw + tx < th tw: 16 values within xbuf (asserted).
            unsafe { _mm512_storeu_ps(xbuf.as_mut_ptr().add((ty * g.tw + tx) * L), x) };
        }
    }
    let mut acc = [_mm512_setzero_ps(); 16];
    let xp = xbuf.as_ptr();
    for ty in 0..g.th {
        for tx in 0..g.tw {
            // SAFETY (loads): rows 2 ty + a < 2 th and columns 2 tx + b < 2 tw of the cotangents, channels
            // 16 tb + 16 <= c_out (asserted lengths).
            let db = unsafe { pt.dx.as_ptr().add(((2 * ty) * dw + 2 * tx) * c_out + pt.tb * L) };
            let dd = |a: usize, b: usize| unsafe { _mm512_loadu_ps(db.add((a * dw + b) * c_out)) };
            // A D along the rows, then along the columns (as `cotangent_transform`).
            let crow = |b: usize| match r {
                0 => dd(0, b),
                1 => _mm512_add_ps(dd(0, b), dd(1, b)),
                2 => _mm512_sub_ps(dd(0, b), dd(1, b)),
                _ => _mm512_sub_ps(z, dd(1, b)),
            };
            let dv = match s {
                0 => crow(0),
                1 => _mm512_add_ps(crow(0), crow(1)),
                2 => _mm512_sub_ps(crow(0), crow(1)),
                _ => _mm512_sub_ps(z, crow(1)),
            };
            // SAFETY: the tile's 16 values within xbuf (asserted).
            let xt = unsafe { xp.add((ty * g.tw + tx) * L) };
            for (k, a) in acc.iter_mut().enumerate() {
                // SAFETY: k < 16.
                *a = _mm512_fmadd_ps(_mm512_set1_ps(unsafe { *xt.add(k) }), dv, *a);
            }
        }
    }
    acc
}

/// A [`point`] function: U of one point for a register tile.
type PointFn = unsafe fn(&Pt<'_>, &mut [f32]) -> [__m512; 16];

/// [`point`] for every point, by index.
const POINTS: [PointFn; 16] = [
    point::<0>,
    point::<1>,
    point::<2>,
    point::<3>,
    point::<4>,
    point::<5>,
    point::<6>,
    point::<7>,
    point::<8>,
    point::<9>,
    point::<10>,
    point::<11>,
    point::<12>,
    point::<13>,
    point::<14>,
    point::<15>,
];

/// One block of up to 16 examples: `hp` and `dp` in the block layout (position-major, a vector of 16 examples per
/// channel); `buf` split by `sizes` into the examples' padded inputs and cotangents ([`Geo`]), one example's U
/// (16 points x C_in C_out / 16 vectors in U's lane order), the examples' results (per example the 9 C_in C_out
/// / 16 vectors of dW, kernel offset j major, then U's order) and one point's transformed inputs per tile.
#[target_feature(enable = "avx512f,avx512vl,avx2,fma")]
fn block(geo: &Geo, (hp, dp): (&[f32], &[f32]), buf: &mut [f32], sizes: [usize; 5], mut rows: MatMut<'_, f32>) {
    let g = *geo;
    let (c_in, c_out, wg) = (g.c_in, g.c_out, g.wg);
    let (p_in, p_out) = (wg.src.0 * wg.src.1, wg.dst.0 * wg.dst.1);
    let (kc, m) = (9 * c_in, rows.nrows());
    let (nci, nco) = (c_in / L, c_out / L);
    assert!(hp.len() >= L * p_in * c_in && dp.len() >= L * p_out * c_out && m <= L, "the block's operands");
    assert!(rows.ncols() == (kc + usize::from(g.bm.is_some())) * c_out, "the block's columns of J");
    let (hx, rest) = buf.split_at_mut(sizes[0]);
    let (dx, rest) = rest.split_at_mut(sizes[1]);
    let (u, rest) = rest.split_at_mut(sizes[2]);
    let (res, xbuf) = rest.split_at_mut(sizes[3]);
    let (xin, xout, per) = (g.input_len(), g.cotangent_len(), g.result_len());
    assert!(hx.len() == L * xin && dx.len() == L * xout && res.len() >= L * per, "scratch sizes");
    // Zeros where no source position lands: the padding around the input, the cotangents past the output.
    for py in 0..g.ph {
        for px in 0..g.pw {
            let (y, x) = (py.wrapping_sub(wg.pad.0), px.wrapping_sub(wg.pad.1));
            if y >= wg.src.0 || x >= wg.src.1 {
                for e in 0..L {
                    hx[e * xin + (py * g.pw + px) * c_in..][..c_in].fill(0.0);
                }
            }
        }
    }
    for y in 0..2 * g.th {
        for x in 0..2 * g.tw {
            if y >= wg.dst.0 || x >= wg.dst.1 {
                for e in 0..L {
                    dx[e * xout + (y * 2 * g.tw + x) * c_out..][..c_out].fill(0.0);
                }
            }
        }
    }
    // Each example's padded input: source (y, x) at ((y + top) pw + x + left) c_in, where tiles read it.
    for y in 0..wg.src.0 {
        for x in 0..wg.src.1 {
            let (py, px) = (y + wg.pad.0, x + wg.pad.1);
            if py < g.ph && px < g.pw {
                to_examples(&hp[(y * wg.src.1 + x) * c_in * L..][..c_in * L], (hx, xin), (py * g.pw + px) * c_in);
            }
        }
    }
    for y in 0..wg.dst.0 {
        for x in 0..wg.dst.1 {
            to_examples(&dp[(y * wg.dst.1 + x) * c_out * L..][..c_out * L], (dx, xout), (y * 2 * g.tw + x) * c_out);
        }
    }
    let nv = nci * nco * L;
    assert!(u.len() >= 16 * nv * L, "U's size");
    for e in 0..m {
        let (hxe, dxe) = (&hx[e * xin..][..xin], &dx[e * xout..][..xout]);
        for ta in 0..nci {
            for tb in 0..nco {
                let pt = Pt { geo: &g, hx: hxe, dx: dxe, ta, tb };
                for (xi, f) in POINTS.iter().enumerate() {
                    // SAFETY: this function's CPU features; the example's padded operands; ta < nci, tb < nco.
                    let acc = unsafe { f(&pt, xbuf) };
                    for (k, a) in acc.iter().enumerate() {
                        // SAFETY: vector xi nv + (ta nco + tb) 16 + k < 16 nv of u (asserted).
                        unsafe { _mm512_storeu_ps(u.as_mut_ptr().add((xi * nv + (ta * nco + tb) * L + k) * L), *a) };
                    }
                }
            }
        }
        // dW = G^T U G per vector of U, into the example's results in the same lane order.
        let re = res[e * per..][..per].as_mut_ptr();
        for v in 0..nv {
            let mut pts = [_mm512_setzero_ps(); 16];
            for (xi, p) in pts.iter_mut().enumerate() {
                // SAFETY: (xi nv + v) 16 + 16 <= 16 nv 16 = u's size (asserted).
                *p = unsafe { _mm512_loadu_ps(u.as_ptr().add((xi * nv + v) * L)) };
            }
            for (j, w) in kernel_gradient(pts).into_iter().enumerate() {
                // SAFETY: (j nv + v) 16 + 16 <= 9 nv 16 = kc c_out = per.
                unsafe { _mm512_storeu_ps(re.add((j * nv + v) * L), w) };
            }
        }
    }
    // Back to the block layout: J's column co kc + j c_in + ci (weights) and kc c_out + co (bias).
    assert!(m <= 1 || rows.row_stride() == 1, "rows of J, column-major");
    let (out, col_stride) = (rows.rb_mut().as_ptr_mut(), rows.col_stride());
    let mask: u16 = if m == L { u16::MAX } else { (1u16 << m) - 1 };
    if let Some(bm) = g.bm {
        // The bias columns straight from the block layout, a vector of the 16 examples per output channel: each
        // sum over the positions in order (16 channels' sums at a time, independent additions).
        let scale = _mm512_set1_ps(bm);
        for ob in 0..nco {
            let mut sums = [_mm512_setzero_ps(); 16];
            for p in 0..p_out {
                for (k, s) in sums.iter_mut().enumerate() {
                    // SAFETY: (p c_out + 16 ob + k) 16 + 16 <= 16 p_out c_out <= dp's length (asserted).
                    *s = _mm512_add_ps(*s, unsafe { _mm512_loadu_ps(dp.as_ptr().add((p * c_out + ob * L + k) * L)) });
                }
            }
            for (k, s) in sums.into_iter().enumerate() {
                let q = kc * c_out + ob * L + k;
                // SAFETY: q < the block's columns (asserted above), each holding m contiguous entries (row_stride
                // 1, asserted); lanes past m are masked off.
                unsafe { _mm512_mask_storeu_ps(out.offset(q as isize * col_stride), mask, _mm512_mul_ps(scale, s)) };
            }
        }
    }
    for r in 0..9 * nv {
        let scale = _mm512_set1_ps(g.wm);
        let mut v = [_mm512_setzero_ps(); 16];
        for (e, x) in v.iter_mut().enumerate() {
            // SAFETY: e per + r 16 + 16 <= 16 per = res's size (asserted). Rows of examples e >= m hold what the
            // scratch held and are not stored.
            *x = unsafe { _mm512_loadu_ps(res.as_ptr().add(e * per + r * L)) };
        }
        for (l, col) in transpose16(v).into_iter().enumerate() {
            // Vector r = j nv + (ta nco + tb) 16 + k: input channel 16 ta + k, lane l output channel 16 tb + l.
            let (j, t) = (r / nv, r % nv);
            let (ta, tb, k) = (t / L / nco, t / L % nco, t % L);
            let q = (tb * L + l) * kc + j * c_in + ta * L + k;
            // SAFETY: q < the block's columns (asserted above), each holding m contiguous entries (row_stride 1,
            // asserted); lanes past m are masked off.
            unsafe { _mm512_mask_storeu_ps(out.offset(q as isize * col_stride), mask, _mm512_mul_ps(scale, col)) };
        }
    }
}

/// One position's channels in the block layout (`src`: C / 16 groups of 16 vectors of 16 examples) into every
/// example's copy (`dst`: 16 runs of `len` values), at value `at` of each.
#[target_feature(enable = "avx512f,avx512vl,avx2,fma")]
fn to_examples(src: &[f32], (dst, len): (&mut [f32], usize), at: usize) {
    let groups = src.len() / (L * L);
    assert!(dst.len() >= L * len && at + groups * L <= len, "transpose sizes");
    for gi in 0..groups {
        // SAFETY: vectors gi 16 + i < groups 16 of src.
        let v: [__m512; 16] =
            std::array::from_fn(|i| unsafe { _mm512_loadu_ps(src[(gi * L + i) * L..][..L].as_ptr()) });
        for (e, x) in transpose16(v).into_iter().enumerate() {
            // SAFETY: e len + at + gi 16 + 16 <= 16 len (asserted).
            unsafe { _mm512_storeu_ps(dst.as_mut_ptr().add(e * len + at + gi * L), x) };
        }
    }
}

/// The transpose of a 16 x 16 matrix given by rows: out[j] lane i = v[i] lane j (unpacks of pairs of floats and
/// of pairs of pairs within 128-bit lanes, then two rounds of 128-bit lane shuffles).
#[target_feature(enable = "avx512f,avx512vl,avx2,fma")]
fn transpose16(v: [__m512; 16]) -> [__m512; 16] {
    let mut t = [_mm512_setzero_ps(); 16];
    for p in 0..8 {
        t[2 * p] = _mm512_unpacklo_ps(v[2 * p], v[2 * p + 1]);
        t[2 * p + 1] = _mm512_unpackhi_ps(v[2 * p], v[2 * p + 1]);
    }
    // u[4 q + c], 128-bit lane k: column 4 k + c of rows 4 q .. 4 q + 3.
    let mut u = [_mm512_setzero_ps(); 16];
    for q in 0..4 {
        let pd = |x: __m512| _mm512_castps_pd(x);
        u[4 * q] = _mm512_castpd_ps(_mm512_unpacklo_pd(pd(t[4 * q]), pd(t[4 * q + 2])));
        u[4 * q + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(pd(t[4 * q]), pd(t[4 * q + 2])));
        u[4 * q + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(pd(t[4 * q + 1]), pd(t[4 * q + 3])));
        u[4 * q + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(pd(t[4 * q + 1]), pd(t[4 * q + 3])));
    }
    let mut out = [_mm512_setzero_ps(); 16];
    for c in 0..4 {
        let v0 = _mm512_shuffle_f32x4::<0x88>(u[c], u[4 + c]);
        let v1 = _mm512_shuffle_f32x4::<0xDD>(u[c], u[4 + c]);
        let v2 = _mm512_shuffle_f32x4::<0x88>(u[8 + c], u[12 + c]);
        let v3 = _mm512_shuffle_f32x4::<0xDD>(u[8 + c], u[12 + c]);
        out[c] = _mm512_shuffle_f32x4::<0x88>(v0, v2);
        out[4 + c] = _mm512_shuffle_f32x4::<0x88>(v1, v3);
        out[8 + c] = _mm512_shuffle_f32x4::<0xDD>(v0, v2);
        out[12 + c] = _mm512_shuffle_f32x4::<0xDD>(v1, v3);
    }
    out
}

/// G^T U G of one channel pair's 16 points (row-major 4 x 4), as the generic `gt4` passes: each column of four
/// to three, then each row of four to three; the 3 x 3 kernel gradient, row-major.
#[target_feature(enable = "avx512f,avx512vl,avx2,fma")]
fn kernel_gradient(u: [__m512; 16]) -> [__m512; 9] {
    let half = _mm512_set1_ps(0.5);
    let gt = |v: [__m512; 4]| {
        let p = _mm512_mul_ps(_mm512_add_ps(v[1], v[2]), half);
        [_mm512_add_ps(v[0], p), _mm512_mul_ps(_mm512_sub_ps(v[1], v[2]), half), _mm512_add_ps(p, v[3])]
    };
    let mut g = [[_mm512_setzero_ps(); 4]; 3];
    for col in 0..4 {
        let [a, b, c] = gt([u[col], u[4 + col], u[8 + col], u[12 + col]]);
        (g[0][col], g[1][col], g[2][col]) = (a, b, c);
    }
    let mut w = [_mm512_setzero_ps(); 9];
    for row in 0..3 {
        let [a, b, c] = gt(g[row]);
        (w[3 * row], w[3 * row + 1], w[3 * row + 2]) = (a, b, c);
    }
    w
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The CPU features the kernels are built with.
    fn avx512() -> bool {
        std::is_x86_feature_detected!("avx512f")
            && std::is_x86_feature_detected!("avx512vl")
            && std::is_x86_feature_detected!("avx2")
            && std::is_x86_feature_detected!("fma")
    }

    #[test]
    fn kernel_gradient_is_the_generic_g_transpose_u_g() {
        if !avx512() {
            return;
        }
        // 16 points of 16 lanes: G^T U G here against the generic kernel's two gt4 passes, lane by lane, exactly.
        let u: Vec<f32> = (0..256).map(|i| ((i * 37 % 101) as f32 - 50.0) / 7.0).collect();
        // SAFETY: the CPU features checked above; 16 values per load and store.
        let w = unsafe {
            let pts: [__m512; 16] = std::array::from_fn(|xi| _mm512_loadu_ps(u[16 * xi..].as_ptr()));
            let mut w = vec![0.0f32; 9 * 16];
            for (j, v) in kernel_gradient(pts).iter().enumerate() {
                _mm512_storeu_ps(w[16 * j..].as_mut_ptr(), *v);
            }
            w
        };
        let pt = |xi: usize| &u[16 * xi..16 * xi + 16];
        let mut gu = vec![vec![0.0f32; 16]; 12];
        for col in 0..4 {
            let [g0, g1, g2] = gu.get_disjoint_mut([col, 4 + col, 8 + col]).expect("three");
            super::super::gt4([pt(col), pt(4 + col), pt(8 + col), pt(12 + col)], [g0, g1, g2]);
        }
        for row in 0..3 {
            let mut o = vec![vec![0.0f32; 16]; 3];
            let [o0, o1, o2] = o.get_disjoint_mut([0, 1, 2]).expect("three");
            let g = |c: usize| &gu[4 * row + c][..];
            super::super::gt4([g(0), g(1), g(2), g(3)], [o0, o1, o2]);
            for (c, oc) in o.iter().enumerate() {
                assert_eq!(&w[16 * (3 * row + c)..][..16], &oc[..], "offset ({row}, {c})");
            }
        }
    }

    #[test]
    fn transpose16_is_the_transpose() {
        if !avx512() {
            return;
        }
        let m: Vec<f32> = (0..256).map(|i| i as f32).collect();
        // SAFETY: the CPU features checked above.
        let t = unsafe {
            let v: [__m512; 16] = std::array::from_fn(|i| _mm512_loadu_ps(m[16 * i..].as_ptr()));
            transpose16(v)
        };
        let mut out = vec![0.0f32; 256];
        for (j, x) in t.iter().enumerate() {
            // SAFETY: as above; 16 values.
            unsafe { _mm512_storeu_ps(out[16 * j..].as_mut_ptr(), *x) };
        }
        for i in 0..16 {
            for j in 0..16 {
                assert_eq!(out[16 * j + i], m[16 * i + j], "({i}, {j})");
            }
        }
    }
}
