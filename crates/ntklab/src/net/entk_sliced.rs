//! The empirical NTK of networks with Conv nodes, a slice of examples at a time.
//!
//! The tape route ([`Network::empirical_ntk_at`]) runs each pass over the whole batch: every activation of a
//! conv net is an N x (P C) matrix (4 MB for 256 examples of 16 x 16 x 16 in f32), copied into the conv kernels'
//! lane layout and back at every conv node, swept again by every activation pass, and each pass splits its work
//! over the threads anew. Here each thread takes its own slices of L examples, L the lane width of the conv
//! kernels (a slice stored column-major then already is their lane layout), through the forward pass, the
//! reverse pass and the Jacobian blocks, on that thread and in cache. The slices leave
//!
//! * J (N x k P_c): every Conv node's explicit Jacobian (`layers::conv::jacobian_rows`), and that of each Dense
//!   node small enough to go this way ([`explicit`]), column block a for output a, nodes in order within a block;
//! * for each other Dense node, its input H (N x n_in) and cotangents D (N x k n_out, column block a for output
//!   a);
//!
//! and then Theta = J1 J2^T (Trace: one product, since sum_a J1_a J2_a^T is the product of the side-by-side
//! blocks, split over pieces of J's columns when symmetric (`ops::syrk_lower`); Full: one GEMM per pair of output
//! blocks) plus each Dense node's Gram-trick share (`DenseShare`).
//! Per example the arithmetic is the tape route's; slices are fixed by the lane width, never by the thread
//! count, so results do not depend on it.

use faer::prelude::ReborrowMut;
use faer::{Accum, Mat, MatMut, MatRef};
use rayon::prelude::*;

use super::entk::{finish, readout_stack, DenseShare, NtkOutputs};
use super::network::Network;
use super::ops::{gemm, serially, syrk_lower, threads, Float, Pool};
use super::tape::Caches;
use crate::kernel::compute::{simd_level, Simd};
use crate::layers::conv;
use crate::Result;

/// What the slices of one input leave (module docs).
struct Side<T: Float> {
    j: Mat<T>,
    h: Vec<Mat<T>>,
    d: Vec<Mat<T>>,
}

/// One slice: its inputs and its rows of every matrix of its [`Side`].
struct Slice<'a, T: Float> {
    x: MatRef<'a, T>,
    j: MatMut<'a, T>,
    h: Vec<MatMut<'a, T>>,
    d: Vec<MatMut<'a, T>>,
}

/// Where each parameter node's share goes: its column offset within J's output blocks (Conv nodes, and Dense
/// nodes with few parameters: [`explicit`]), or a Dense node's index among those that go by the Gram trick.
#[derive(Clone, Copy)]
enum Share {
    Columns(usize),
    Dense(usize),
}

/// Whether a Dense node's Jacobian goes into J as explicit columns rather than by the Gram trick, for a network
/// of k outputs: when its k blocks of columns (k (n_in n_out + n_out) values per example) are at most twice what
/// the trick keeps (H and the k blocks of D: n_in + k n_out), as for a readout to one output, or to two from two
/// features. J J^T then takes its columns in the same product, where the trick's own products, one per factor and
/// each at least N1 x N2, plus the Hadamard pass cost a fixed 80-140 us at N = 256 (the small CNN's 16 -> 1
/// readout: 2.5-4 % of its f32 empirical NTK); wider nodes, or more outputs, would multiply J's width.
pub(super) fn explicit(dl: &super::DenseParams, k: usize) -> bool {
    dl.filter.is_none() && k.saturating_mul(dl.num_params()) <= 2 * (dl.n_in + k.saturating_mul(dl.n_out))
}

/// Consecutive row blocks of `rows` rows (the last one possibly shorter).
fn split_rows<T>(mut m: MatMut<'_, T>, rows: usize) -> Vec<MatMut<'_, T>> {
    let mut out = Vec::with_capacity(m.nrows().div_ceil(rows));
    while m.nrows() > rows {
        let (top, rest) = m.split_at_row_mut(rows);
        out.push(top);
        m = rest;
    }
    out.push(m);
    out
}

/// The k column blocks of `n` columns of `m`.
fn blocks<T>(m: MatRef<'_, T>, k: usize, n: usize) -> Vec<MatRef<'_, T>> {
    (0..k).map(|a| m.subcols(a * n, n)).collect()
}

impl<T: Float> Network<T> {
    /// Whether any parameter node is a convolution (then [`Network::empirical_ntk`] goes by slices).
    pub(super) fn has_conv(&self) -> bool {
        self.dense.iter().any(|d| d.filter.is_some())
    }

    /// Entries of the matrices [`Network::empirical_ntk_sliced`] keeps for an input of `n` rows, plus what each
    /// thread holds for its slices: a slice's tape and cotangents (about three matrices of every node's width)
    /// and the lane kernels' packed copies (two of the widest node).
    pub(super) fn sliced_cells(&self, n: usize) -> usize {
        let k = self.output_dim();
        let kept = self
            .dense
            .iter()
            .map(|d| {
                if d.filter.is_some() || explicit(d, k) {
                    k.saturating_mul(d.num_params())
                } else {
                    d.n_in + k * d.n_out
                }
            })
            .fold(0usize, |s, c| s.saturating_add(c.saturating_mul(n)));
        let widths = self.graph.nodes.iter().map(|v| v.width).fold(0usize, usize::saturating_add);
        let widest = self.graph.nodes.iter().map(|v| v.width).max().unwrap_or(0);
        let rows = conv::lane_width::<T>(simd_level()).saturating_mul(k.max(1));
        let per_thread = rows.saturating_mul(widths.saturating_mul(3).saturating_add(widest.saturating_mul(2)));
        kept.saturating_add(per_thread.saturating_mul(threads()))
    }

    /// [`Network::empirical_ntk`] by slices of examples (module docs); inputs already checked.
    pub(super) fn empirical_ntk_sliced(
        &self,
        x1: MatRef<'_, T>,
        x2: Option<MatRef<'_, T>>,
        outputs: NtkOutputs,
        on: crate::runs::OnProgress<'_>,
        pool: &mut Pool<T>,
    ) -> Result<Mat<T>> {
        let simd = simd_level();
        let k = self.output_dim();
        let mut shares = Vec::with_capacity(self.dense.len());
        let (mut pc, mut dense) = (0, Vec::new());
        for (l, dl) in self.dense.iter().enumerate() {
            if dl.filter.is_some() || explicit(dl, k) {
                shares.push(Share::Columns(pc));
                pc += dl.num_params();
            } else {
                shares.push(Share::Dense(dense.len()));
                dense.push(l);
            }
        }
        let side = |n: usize, pool: &mut Pool<T>| Side {
            // Every entry is written by the slices.
            j: pool.take(n, k * pc),
            h: dense.iter().map(|&l| pool.take(n, self.dense[l].n_in)).collect(),
            d: dense.iter().map(|&l| pool.take(n, k * self.dense[l].n_out)).collect(),
        };
        let mut s1 = side(x1.nrows(), pool);
        let mut s2 = x2.map(|x| side(x.nrows(), pool));
        let rows = conv::lane_width::<T>(simd);
        let mut slices = Vec::new();
        for (x, s) in std::iter::once((x1, &mut s1)).chain(x2.zip(s2.as_mut())) {
            let js = split_rows(s.j.as_mut(), rows);
            let mut hs: Vec<_> = s.h.iter_mut().map(|m| split_rows(m.as_mut(), rows).into_iter()).collect();
            let mut ds: Vec<_> = s.d.iter_mut().map(|m| split_rows(m.as_mut(), rows).into_iter()).collect();
            for (i, j) in js.into_iter().enumerate() {
                let x = x.subrows(i * rows, j.nrows());
                let h = hs.iter_mut().map(|it| it.next().expect("one block per slice")).collect();
                let d = ds.iter_mut().map(|it| it.next().expect("one block per slice")).collect();
                slices.push(Slice { x, j, h, d });
            }
        }
        // One slice per task, so that a thread slowed by another process leaves its share to the others; each
        // thread works with its own pool (a lock that only its own tasks take, unless rayon runs this in a pool
        // larger than `threads()` says).
        let subs: Vec<std::sync::Mutex<Pool<T>>> = pool.split(threads()).into_iter().map(Into::into).collect();
        let (count, passed) = (slices.len(), std::sync::atomic::AtomicUsize::new(0));
        let done = slices.par_iter_mut().try_for_each(|s| {
            on(passed.fetch_add(1, std::sync::atomic::Ordering::Relaxed), count)?;
            let at = rayon::current_thread_index().unwrap_or(0) % subs.len();
            // A slice this thread stole while it holds its pool (nothing in a slice pass lets it today) works
            // with a fresh one.
            match subs[at].try_lock() {
                Ok(mut sp) => serially(|| self.slice_pass(s, &shares, simd, &mut sp)),
                Err(_) => serially(|| self.slice_pass(s, &shares, simd, &mut Pool::default())),
            }
        });
        pool.join(subs.into_iter().map(|m| m.into_inner().unwrap_or_else(|e| e.into_inner())).collect());
        drop(slices);
        done?;

        let (n1, n2) = (x1.nrows(), x2.map_or(x1.nrows(), |x| x.nrows()));
        let full = outputs == NtkOutputs::Full;
        let lower = x2.is_none() && !full;
        let (r, c) = if full { (k * n1, k * n2) } else { (n1, n2) };
        let mut acc = Mat::<T>::zeros(r, c);
        let s2r = s2.as_ref().unwrap_or(&s1);
        if pc > 0 {
            let (j1, j2) = (s1.j.as_ref(), s2r.j.as_ref());
            if full {
                for a in 0..k {
                    for b in 0..k {
                        on(a * k + b, k * k)?;
                        let dst = acc.as_mut().submatrix_mut(a * n1, b * n2, n1, n2);
                        gemm(dst, Accum::Add, j1.subcols(a * pc, pc), j2.subcols(b * pc, pc).transpose(), 1.0);
                    }
                }
            } else if lower {
                syrk_lower(acc.as_mut(), Accum::Add, j1, 1.0, pool);
            } else {
                gemm(acc.as_mut(), Accum::Add, j1, j2.transpose(), 1.0);
            }
        }
        if !dense.is_empty() {
            // Both are overwritten (Accum::Replace) before they are read.
            let (mut dd, mut gram) = (pool.take(r, c), pool.take(n1, n2));
            for (i, &l) in dense.iter().enumerate() {
                let n_out = self.dense[l].n_out;
                let (d1, d2) = (blocks(s1.d[i].as_ref(), k, n_out), blocks(s2r.d[i].as_ref(), k, n_out));
                let share = DenseShare { dl: &self.dense[l], h: (s1.h[i].as_ref(), s2r.h[i].as_ref()), d: (&d1, &d2) };
                let added = on(i, dense.len())
                    .and_then(|()| share.add_to(&mut acc, (&mut dd, &mut gram), (full, lower), on, pool));
                if let Err(e) = added {
                    pool.give(dd);
                    pool.give(gram);
                    return Err(e);
                }
            }
            pool.give(dd);
            pool.give(gram);
        }
        for s in std::iter::once(s1).chain(s2) {
            for m in std::iter::once(s.j).chain(s.h).chain(s.d) {
                pool.give(m);
            }
        }
        Ok(finish(acc, lower, full, (k, n1, n2)))
    }

    /// One slice through the forward and reverse passes, writing its rows of J, H and D.
    fn slice_pass(&self, s: &mut Slice<'_, T>, shares: &[Share], simd: Simd, pool: &mut Pool<T>) -> Result<()> {
        let (m, k) = (s.x.nrows(), self.output_dim());
        let pc = s.j.ncols() / k.max(1);
        let tape = self.build_tape_checked(s.x, Caches::First, pool)?;
        self.reverse(&tape, readout_stack(self, &tape), false, pool, |l, d, _| {
            let dl = &self.dense[l];
            let h = tape.values[self.graph.nodes[dl.node].inputs[0]].as_ref();
            match shares[l] {
                Share::Columns(off) => {
                    for a in 0..k {
                        let ja = s.j.rb_mut().submatrix_mut(0, a * pc + off, m, dl.num_params());
                        let da = d.as_ref().subrows(a * m, m);
                        if dl.filter.is_some() {
                            conv::jacobian_rows(self, l, h, da, simd, ja);
                        } else {
                            dense_jacobian_rows(dl, h, da, ja);
                        }
                    }
                }
                Share::Dense(i) => {
                    s.h[i].copy_from(h);
                    for a in 0..k {
                        s.d[i].rb_mut().subcols_mut(a * dl.n_out, dl.n_out).copy_from(d.as_ref().subrows(a * m, m));
                    }
                }
            }
        });
        tape.recycle(pool);
        Ok(())
    }
}

/// A Dense node's Jacobian rows for one output: `ja` (m x (n_in n_out + n_out)) gets column o n_in + i =
/// w_mult D[:, o] H[:, i], then the bias columns b_mult D[:, o] (columns of J may come in any order: Theta
/// sums over them).
fn dense_jacobian_rows<T: Float>(dl: &super::DenseParams, h: MatRef<'_, T>, d: MatRef<'_, T>, mut ja: MatMut<'_, T>) {
    let (wm, bm) = (T::of(dl.w_mult), T::of(dl.b_mult));
    for o in 0..dl.n_out {
        let dc = d.col(o);
        for i in 0..dl.n_in {
            let hc = h.col(i);
            ja.rb_mut().col_mut(o * dl.n_in + i).iter_mut().enumerate().for_each(|(r, v)| *v = wm * dc[r] * hc[r]);
        }
        if dl.has_bias() {
            ja.rb_mut().col_mut(dl.n_in * dl.n_out + o).iter_mut().enumerate().for_each(|(r, v)| *v = bm * dc[r]);
        }
    }
}
