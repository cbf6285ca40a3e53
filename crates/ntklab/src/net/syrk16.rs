//! One piece of [`super::ops::syrk_lower`] in f32 with AVX-512: the lower blocks of A A^T for a column-major A
//! of at most 1024 rows, written with intrinsics.
//!
//! Why not faer's triangular product: on the empirical NTK of a small CNN (J: 256 x 2785, in pieces of about
//! 700 columns) it ran at about 60 % of the FMA peak, 16 % of the whole call. Here A's rows come in panels of
//! 32; each chunk of [`KC`] columns is packed panel by panel (32 values per column, contiguous), and each micro
//! tile of C, 32 rows by 8 columns in 16 registers, takes per column of the chunk two vector loads from the row
//! panel and eight broadcasts from the column panel for 16 FMAs. A row panel's chunk and a column panel's chunk
//! are 16 KB each, so both stay in L1 while the column panel's four micro tiles and every column panel of the
//! row panel go by. Only blocks on or below the diagonal are computed; in a diagonal block, the micro tiles
//! whose columns lie past the block's first 16 rows take only its last 16.

use std::arch::x86_64::{
    __m512, _mm512_add_ps, _mm512_fmadd_ps, _mm512_loadu_ps, _mm512_set1_ps, _mm512_setzero_ps, _mm512_storeu_ps,
};

use faer::MatRef;

/// Rows of a panel (two vectors of 16 lanes).
pub(super) const MR: usize = 32;
/// Columns of a micro tile.
const NR: usize = 8;
/// Columns of A per packed chunk (a panel's chunk: 16 KB).
const KC: usize = 128;

/// The packed chunk's length for `n` rows.
pub(super) fn chunk_len(n: usize) -> usize {
    n.div_ceil(MR) * MR * KC
}

/// Blocks (ip, jp), jp <= ip, of 32 x 32 of C = A A^T (C: n_pad x n_pad with column stride `ldc`, n_pad = n
/// rounded up to 32, `c` its first entry): every entry on or below the diagonal is written (Replace); entries above
/// it within diagonal blocks may be written too, others are left. With no columns, the blocks are zero.
///
/// # Safety
/// The CPU must support AVX-512F, AVX-512VL, AVX2 and FMA (as `Simd::Avx512` promises); `c` must be valid for
/// writes of n_pad columns of `ldc` >= n_pad entries; `a` column-major (row stride 1); `buf` at least
/// [`chunk_len`] entries.
#[target_feature(enable = "avx512f,avx512vl,avx2,fma")]
pub(super) unsafe fn piece(c: *mut f32, ldc: usize, a: MatRef<'_, f32>, buf: &mut [f32]) {
    let (n, p) = (a.nrows(), a.ncols());
    let np = n.div_ceil(MR);
    assert!(a.row_stride() == 1 && ldc >= np * MR && buf.len() >= chunk_len(n), "layouts and sizes");
    if p == 0 {
        for jp in 0..np {
            for col in 0..MR {
                // SAFETY: column MR jp + col < n_pad, rows MR jp .. n_pad within it (the caller's promise).
                unsafe { std::ptr::write_bytes(c.add((jp * MR + col) * ldc + jp * MR), 0, (np - jp) * MR) };
            }
        }
        return;
    }
    for k0 in (0..p).step_by(KC) {
        let kc = KC.min(p - k0);
        pack(a.subcols(k0, kc), buf);
        let bp = buf.as_ptr();
        for ip in 0..np {
            // SAFETY (all below): panel ip's chunk is kc MR entries at ip kc MR, within buf (np KC MR, asserted);
            // the micro tiles' entries of C lie within its n_pad columns (the caller's promise).
            let ap = unsafe { bp.add(ip * kc * MR) };
            for jp in 0..=ip {
                let cp = unsafe { bp.add(jp * kc * MR) };
                for jb in 0..MR / NR {
                    let col = jp * MR + jb * NR;
                    let out = unsafe { c.add(col * ldc + ip * MR) };
                    if jp == ip && jb * NR >= 16 {
                        // Rows 0..16 of the block lie above the diagonal in these columns.
                        unsafe { micro::<1>(ap.add(16), cp.add(jb * NR), kc, out.add(16), ldc, k0 == 0) };
                    } else {
                        unsafe { micro::<2>(ap, cp.add(jb * NR), kc, out, ldc, k0 == 0) };
                    }
                }
            }
        }
    }
}

/// Columns of `a` (at most KC) into `buf`, panel by panel: panel ip's column k at (ip kc + k) MR, 32 values
/// (rows past A's last read zero).
#[inline(always)]
fn pack(a: MatRef<'_, f32>, buf: &mut [f32]) {
    let kc = a.ncols();
    for k in 0..kc {
        let col = a.col(k).try_as_col_major().expect("column-major").as_slice();
        for (ip, rows) in col.chunks(MR).enumerate() {
            let dst = &mut buf[(ip * kc + k) * MR..][..MR];
            dst[..rows.len()].copy_from_slice(rows);
            dst[rows.len()..].fill(0.0);
        }
    }
}

/// One micro tile: RM vectors of rows (16 each) by NR columns, over kc packed columns: C (+)= A_rows B_cols^T,
/// stored at `out` (column j at out + j ldc); Replace when `first`, else Add.
///
/// # Safety
/// `ap` and `bp` readable at k MR + 16 RM and k MR + NR for k < kc; `out` writable as said.
#[inline(always)]
unsafe fn micro<const RM: usize>(ap: *const f32, bp: *const f32, kc: usize, out: *mut f32, ldc: usize, first: bool) {
    let mut acc = [[_mm512_setzero_ps(); NR]; RM];
    for k in 0..kc {
        // SAFETY: the caller's promise.
        unsafe {
            let mut av = [_mm512_setzero_ps(); RM];
            for (r, v) in av.iter_mut().enumerate() {
                *v = _mm512_loadu_ps(ap.add(k * MR + 16 * r));
            }
            for j in 0..NR {
                let b: __m512 = _mm512_set1_ps(*bp.add(k * MR + j));
                for (ar, v) in acc.iter_mut().zip(&av) {
                    ar[j] = _mm512_fmadd_ps(*v, b, ar[j]);
                }
            }
        }
    }
    for j in 0..NR {
        for (r, ar) in acc.iter().enumerate() {
            // SAFETY: the caller's promise.
            unsafe {
                let o = out.add(j * ldc + 16 * r);
                let v = if first { ar[j] } else { _mm512_add_ps(_mm512_loadu_ps(o), ar[j]) };
                _mm512_storeu_ps(o, v);
            }
        }
    }
}
