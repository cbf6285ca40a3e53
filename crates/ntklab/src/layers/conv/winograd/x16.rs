//! The Winograd pass ([`super::run`]) in f32 with AVX-512 when the destination channels come in whole blocks of
//! 8, written with intrinsics: two tiles at a time, each point's products for 8 destination channels of both
//! tiles in 16 registers (each weight broadcast once for the two tiles), stored as the tiles' 16 points per
//! channel and transformed back with A^T M A (24 additions per channel and tile).
//!
//! Why not the generic `block`: there the products run at the FMA peak but took only about 40 % of the pass.
//! Its four tiles of 16 transformed points of 16 channels (16 examples per vector) are 64 KB, more than L1
//! holds, so the transforms' stores and the products' loads went to L2 (two tiles here: 32 KB); and each point's
//! products were added with their signs into the outputs (36 loads, additions and stores per channel and tile,
//! against 16 stores, 16 loads and 24 additions here). On a 16 -> 16 layer this pass takes about 30 % less time
//! (bench/RESULTS.md section 7, "Seventh session of 2026-12-07"). One tile by 16 channels was slower (17 loads
//! per 16 FMAs), three tiles by 8 no faster. Written with the generic lane arrays, two tiles by 8 channels were
//! vectorized across the channels with gathers (7x slower), so this kernel names its vector instructions.

use std::arch::x86_64::{
    __m512, _mm512_add_ps, _mm512_cmp_ps_mask, _mm512_fmadd_ps, _mm512_loadu_ps, _mm512_maskz_mov_ps, _mm512_mul_ps,
    _mm512_set1_ps, _mm512_setzero_ps, _mm512_storeu_ps, _mm512_sub_ps, _CMP_GT_OQ,
};

use faer::prelude::ReborrowMut;
use faer::{Accum, Mat, MatMut};

use super::super::{for_each_block, store_lanes, with_scratch, Epilogue};
use super::{in_lanes, transform_group, whole, with_transformed_weights, Pass, Plan};

/// Lanes (examples per vector).
const L: usize = 16;
/// Tiles and destination channels per register tile.
const R: usize = 2;
const B: usize = 8;

/// Whether [`run`] serves a pass to `c_dst` channels (f32 values, AVX-512 available): whole blocks of B.
pub(super) fn serves(c_dst: usize) -> bool {
    c_dst > 0 && c_dst.is_multiple_of(B)
}

/// [`super::run`] for f32 with AVX-512 and `serves(pass.c_dst)`.
///
/// # Safety
/// The CPU must support AVX-512F, AVX-512VL, AVX2 and FMA (as `Simd::Avx512` promises).
pub(super) unsafe fn run(out: &mut Mat<f32>, accum: Accum, pass: &Pass<'_, f32>) {
    assert!(serves(pass.c_dst), "destination channels in blocks of B");
    with_transformed_weights(pass, B, |gh| {
        let (c_src, c_dst) = (pass.c_src, pass.c_dst);
        let nb = c_dst / B;
        let mut bias = vec![0.0; c_dst];
        if let Some(b) = pass.bias {
            bias.copy_from_slice(&b[..c_dst]);
        }
        let tw = pass.dst.1.div_ceil(2);
        let plan = Plan { pass, gh, bias, nb, tw, tiles: pass.dst.0.div_ceil(2) * tw };
        let whole = whole::<f32, L>(pass.m);
        let zeros = vec![[0.0f32; L]; c_src];
        for_each_block::<f32, L>(out.as_mut(), |bi, rows| {
            let (i0, m) = (bi * L, rows.nrows());
            let block = |hp: &[[f32; L]]| {
                // SAFETY (scratch): f32 arrays, valid for any bits; `block` writes every entry before reading it.
                unsafe {
                    with_scratch::<[f32; L], _>(R * 16 * c_src, |xh| {
                        with_scratch::<[f32; L], _>(R * 16 * B, |mb| {
                            // SAFETY: the caller's promise (the CPU features); the epilogue fits `out` (asserted by
                            // `super::run`) and this block's rows i0.. are this call's alone.
                            block(&plan, (hp, &zeros), xh, mb, (rows, i0), accum)
                        })
                    })
                }
            };
            in_lanes::<f32, L, _>(pass.m, whole, (i0, m), c_src, |hp| block(hp.as_chunks::<L>().0))
        });
    });
}

/// One block of examples (up to 16, the rows of `rows`), R tiles at a time: transform their source patches into
/// `xh` (R x 16 points x c_src vectors), then per block of B destination channels the products of each point into
/// `mb` (R x 16 points x B channels) and A^T M A plus the bias into the tiles' 2 x 2 outputs.
#[target_feature(enable = "avx512f,avx512vl,avx2,fma")]
fn block(
    plan: &Plan<'_, f32>,
    (hp, zeros): (&[[f32; L]], &[[f32; L]]),
    xh: &mut [[f32; L]],
    mb: &mut [[f32; L]],
    (mut rows, i0): (MatMut<'_, f32>, usize),
    accum: Accum,
) {
    let pass = plan.pass;
    let epi = &pass.epi;
    let (c_src, c_dst, nb) = (pass.c_src, pass.c_dst, plan.nb);
    let (hd, wd) = pass.dst;
    let full = rows.nrows() == L;
    assert!(rows.ncols() == hd * wd * c_dst && (!full || rows.row_stride() == 1), "the block's columns, column-major");
    assert!(nb * B == c_dst && xh.len() >= R * 16 * c_src && mb.len() >= R * 16 * B, "scratch sizes");
    assert!(plan.gh.len() >= 16 * nb * c_src * B && plan.bias.len() >= c_dst, "weights and bias");
    let (out, col_stride) = (rows.rb_mut().as_ptr_mut(), rows.col_stride());
    let (mp, gp) = (mb.as_mut_ptr().cast::<f32>(), plan.gh.as_ptr());
    for g0 in (0..plan.tiles).step_by(R) {
        let count = transform_group::<f32, L, R>(plan, (hp, zeros), xh, g0);
        // Read only until the next group's transforms write xh again.
        let xp = xh.as_ptr().cast::<f32>();
        for cb in 0..nb {
            for xi in 0..16 {
                let mut acc = [[_mm512_setzero_ps(); B]; R];
                // SAFETY: tile r's point xi, c_src vectors at (r 16 + xi) c_src, lies within xh (R 16 c_src,
                // asserted), and the point's weights for block cb, c_src x B values at ((xi nb + cb) c_src) B,
                // within gh (asserted); M's entries ((r 16 + xi) B + b) L within mb (R 16 B L, asserted).
                unsafe {
                    let mut xr = [xp; R];
                    for (r, p) in xr.iter_mut().enumerate() {
                        *p = p.add((r * 16 + xi) * c_src * L);
                    }
                    let w = gp.add((xi * nb + cb) * c_src * B);
                    for cs in 0..c_src {
                        let mut xv = [_mm512_setzero_ps(); R];
                        for (v, p) in xv.iter_mut().zip(&xr) {
                            *v = _mm512_loadu_ps(p.add(cs * L));
                        }
                        let wc = w.add(cs * B);
                        for b in 0..B {
                            let wb = _mm512_set1_ps(*wc.add(b));
                            for (ar, x) in acc.iter_mut().zip(&xv) {
                                ar[b] = _mm512_fmadd_ps(*x, wb, ar[b]);
                            }
                        }
                    }
                    for (r, ar) in acc.iter().enumerate() {
                        for (b, a) in ar.iter().enumerate() {
                            _mm512_storeu_ps(mp.add(((r * 16 + xi) * B + b) * L), *a);
                        }
                    }
                }
            }
            for tl in 0..count {
                let t = g0 + tl;
                let (y0, x0) = (2 * (t / plan.tw), 2 * (t % plan.tw));
                for b in 0..B {
                    let cd = cb * B + b;
                    // SAFETY: entries ((tl 16 + xi) B + b) L .. + L of mb, xi < 16: within mb (asserted).
                    let y = unsafe { output_transform(mp.add((tl * 16 * B + b) * L), B * L) };
                    let bias = _mm512_set1_ps(plan.bias[cd]);
                    for (ab, v) in y.into_iter().enumerate() {
                        let (yy, xx) = (y0 + ab / 2, x0 + ab % 2);
                        if yy >= hd || xx >= wd {
                            continue;
                        }
                        let v = _mm512_add_ps(v, bias);
                        let q = (yy * wd + xx) * c_dst + cd;
                        if full {
                            // SAFETY: column q < hd wd c_dst = the block's columns (asserted), each holding L
                            // contiguous entries (full block, column-major); the epilogue's matrices have the
                            // output's shape (asserted by `super::run`), column-major, rows i0 .. i0 + L.
                            unsafe {
                                let v = match epi {
                                    Epilogue::None => v,
                                    Epilogue::Relu(slope) => {
                                        let up = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(v, _mm512_setzero_ps());
                                        if let Some(s) = slope {
                                            _mm512_storeu_ps(s.at(i0, q), _mm512_maskz_mov_ps(up, _mm512_set1_ps(1.0)));
                                        }
                                        _mm512_maskz_mov_ps(up, v)
                                    }
                                    Epilogue::Scale(by) => _mm512_mul_ps(
                                        v,
                                        _mm512_loadu_ps(by.as_ptr().offset(i0 as isize + q as isize * by.col_stride())),
                                    ),
                                };
                                let dst = out.offset(q as isize * col_stride);
                                match accum {
                                    Accum::Replace => _mm512_storeu_ps(dst, v),
                                    Accum::Add => _mm512_storeu_ps(dst, _mm512_add_ps(_mm512_loadu_ps(dst), v)),
                                }
                            }
                        } else {
                            let mut lanes = [0.0f32; L];
                            // SAFETY: L values fit `lanes`.
                            unsafe { _mm512_storeu_ps(lanes.as_mut_ptr(), v) };
                            for (r, x) in lanes.iter_mut().enumerate().take(rows.nrows()) {
                                // SAFETY: row i0 + r of the output (r < its block's rows), column q; the rows are
                                // this call's alone.
                                *x = unsafe { epi.apply(i0 + r, q, *x) };
                            }
                            store_lanes(rows.rb_mut().col_mut(q), accum, &lanes);
                        }
                    }
                }
            }
        }
    }
}

/// A^T M A of a tile's 4 x 4 points (m[4 r + s] at `mp` + (4 r + s) `stride`): the 2 x 2 outputs, row-major.
/// Rows of A^T are (1, 1, 1, 0) and (0, 1, -1, -1).
///
/// # Safety
/// The 16 vectors must be readable.
#[target_feature(enable = "avx512f,avx512vl,avx2,fma")]
unsafe fn output_transform(mp: *const f32, stride: usize) -> [__m512; 4] {
    let mut t = [_mm512_setzero_ps(); 8];
    for s in 0..4 {
        let mut m = [_mm512_setzero_ps(); 4];
        for (r, v) in m.iter_mut().enumerate() {
            // SAFETY: the caller's promise.
            *v = unsafe { _mm512_loadu_ps(mp.add((4 * r + s) * stride)) };
        }
        t[s] = _mm512_add_ps(_mm512_add_ps(m[0], m[1]), m[2]);
        t[4 + s] = _mm512_sub_ps(_mm512_sub_ps(m[1], m[2]), m[3]);
    }
    let mut y = [_mm512_setzero_ps(); 4];
    for a in 0..2 {
        let v = &t[4 * a..4 * a + 4];
        y[2 * a] = _mm512_add_ps(_mm512_add_ps(v[0], v[1]), v[2]);
        y[2 * a + 1] = _mm512_sub_ps(_mm512_sub_ps(v[1], v[2]), v[3]);
    }
    y
}
