//! The empirical neural tangent kernel Theta(x1, x2) = J(x1) J(x2)^T of a finite network, without forming the
//! N x P Jacobian: with D_l^a = dF_a/dZ_l per example (N x n_l) at Dense node l and H_u its input,
//!
//! Theta_ab = sum_l (D_l^a(x1) D_l^b(x2)^T) ⊙ (w_mult_l^2 H_u(x1) H_u(x2)^T + b_mult_l^2 [node has bias]),
//!
//! where the D_l come from one reverse pass over the graph (`backward`) started from D_out^a = alpha e_a. The
//! k output blocks are carried stacked ((k N) x n_l, row a N + i), so each Dense node costs one backprop GEMM
//! plus two Gram GEMMs.

use faer::{Accum, Mat, MatRef};

use super::network::Network;
use super::ops::{col, for_each_col, gemm, mirror_lower, syrk_lower, Float, Pool};
use super::tape::{Caches, Tape};
use crate::kernel::compute::{simd_level, Simd};
use crate::runs::{no_progress, OnProgress};
use crate::Result;

/// Which empirical NTK to return for a k-output network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NtkOutputs {
    /// sum_a Theta_aa: N1 x N2 (neural-tangents `trace_axes=(-1,)`; the plain kernel when k = 1).
    #[default]
    Trace,
    /// All blocks: (N1 k) x (N2 k) with entry (i k + a, j k + b) = <dF_a(x1_i)/dtheta, dF_b(x2_j)/dtheta>.
    Full,
}

/// The output cotangent stack: (k N) x k with alpha at (a N + i, a).
pub(super) fn readout_stack<T: Float>(net: &Network<T>, tape: &Tape<T>) -> Mat<T> {
    let (n, k) = (tape.batch_size(), net.output_dim());
    Mat::<T>::from_fn(k * n, k, |r, a| if r / n == a { T::of(net.alpha) } else { T::ZERO })
}

/// Row block a (N rows) of a stacked matrix.
fn block<T: Float>(d: &Mat<T>, a: usize, n: usize) -> MatRef<'_, T> {
    d.as_ref().subrows(a * n, n)
}

impl<T: Float> Network<T> {
    /// Empirical NTK Theta(X1, X2) = J(X1) J(X2)^T (X2 = None: X1 with itself, exploiting symmetry), by the
    /// per-Dense-node formula sum_l (D_l D_l^T) ⊙ (w_mult^2 H_u H_u^T + b_mult^2); N1 x N2 or (N1 k) x (N2 k).
    pub fn empirical_ntk(&self, x1: MatRef<'_, T>, x2: Option<MatRef<'_, T>>, outputs: NtkOutputs) -> Result<Mat<T>> {
        self.empirical_ntk_watched(x1, x2, outputs, &no_progress)
    }

    /// [`Network::empirical_ntk`], calling `on(done, total)` between units of work (slices of examples, then
    /// each Dense node's share and, with all output blocks, each block's products; counts are per phase): an
    /// error from it (normally [`crate::Error::Cancelled`]) stops the work there and is returned.
    pub fn empirical_ntk_watched(
        &self,
        x1: MatRef<'_, T>,
        x2: Option<MatRef<'_, T>>,
        outputs: NtkOutputs,
        on: OnProgress<'_>,
    ) -> Result<Mat<T>> {
        // Peak: the accumulator, the D D^T product and the Gram matrix, plus (cross case) the tapes and stacks.
        let (n1, n2) = (x1.nrows(), x2.map_or(x1.nrows(), |x| x.nrows()));
        let k = if outputs == NtkOutputs::Full { self.output_dim() } else { 1 };
        let mut cells = n1.saturating_mul(n2).saturating_mul(k.saturating_mul(k).saturating_mul(2).saturating_add(1));
        // Conv nets keep every Conv node's Jacobian and every Dense node's H and D, per side.
        if self.has_conv() {
            let second = if x2.is_some() { self.sliced_cells(n2) } else { 0 };
            cells = cells.saturating_add(self.sliced_cells(n1)).saturating_add(second);
        }
        // A symmetric Gram may be summed from four partial ones (`ops::syrk_lower`, N <= 1024).
        if x2.is_none() && n1 <= 1024 {
            cells = cells.saturating_add(4 * n1 * n1);
        }
        crate::data::memory::check_alloc(
            cells.saturating_mul(std::mem::size_of::<T>()),
            &format!(
                "the empirical NTK ({n1} x {n2}{})",
                if k > 1 { format!(", {k} x {k} output blocks") } else { String::new() }
            ),
        )?;
        self.check_input(x1)?;
        if let Some(x2) = x2 {
            self.check_input(x2)?;
        }
        self.scratch.with(|pool| {
            if self.has_conv() {
                return self.empirical_ntk_sliced(x1, x2, outputs, on, pool);
            }
            // Both inputs were checked above.
            let t1 = self.build_tape_checked(x1, Caches::First, pool)?;
            let t2 = x2.map(|x| self.build_tape_checked(x, Caches::First, pool)).transpose()?;
            let k = self.empirical_ntk_in(&t1, t2.as_ref(), outputs, on, pool);
            t1.recycle(pool);
            if let Some(t2) = t2 {
                t2.recycle(pool);
            }
            k
        })
    }

    /// [`Network::empirical_ntk`] from forward tapes (`t2 = None`: the symmetric kernel of `t1`).
    pub fn empirical_ntk_at(&self, t1: &Tape<T>, t2: Option<&Tape<T>>, outputs: NtkOutputs) -> Mat<T> {
        match self.empirical_ntk_in(t1, t2, outputs, &no_progress, &mut Pool::default()) {
            Ok(k) => k,
            Err(_) => unreachable!("no_progress never stops the work"),
        }
    }

    /// [`Network::empirical_ntk_at`] with scratch matrices from `pool`, watched by `on`.
    fn empirical_ntk_in(
        &self,
        t1: &Tape<T>,
        t2: Option<&Tape<T>>,
        outputs: NtkOutputs,
        on: OnProgress<'_>,
        pool: &mut Pool<T>,
    ) -> Result<Mat<T>> {
        let sym = t2.is_none();
        let t2r = t2.unwrap_or(t1);
        let (n1, n2, k) = (t1.batch_size(), t2r.batch_size(), self.output_dim());
        let full = outputs == NtkOutputs::Full;
        // In Full mode the accumulator is in stacked order (a N1 + i, b N2 + j) and permuted at the end.
        let (r, c) = if full { (k * n1, k * n2) } else { (n1, n2) };
        let mut acc = Mat::<T>::zeros(r, c);
        // Both are overwritten (Accum::Replace) before they are read.
        let mut dd = pool.take(r, c);
        let mut gram = pool.take(n1, n2);
        // The triangular trick needs a symmetric accumulator in its own index order, which Trace mode has.
        let lower = sym && !full;
        // The cross kernel needs both sides' D_l at once: the second side's are collected first.
        let mut d2s: Vec<Option<Mat<T>>> = vec![None; self.dense.len()];
        if !sym {
            self.reverse(t2r, readout_stack(self, t2r), false, pool, |l, d, _| d2s[l] = Some(d.clone()));
        }
        // The first error from `on`: the remaining nodes' shares are skipped.
        let (mut stopped, total) = (Ok(()), self.dense.len());
        self.reverse(t1, readout_stack(self, t1), false, pool, |l, d1, pool| {
            if stopped.is_ok() {
                stopped = on(total - l, total);
            }
            if stopped.is_err() {
                return;
            }
            let dl = &self.dense[l];
            let u = self.graph.nodes[dl.node].inputs[0];
            let (h1, h2) = (t1.values[u].as_ref(), t2r.values[u].as_ref());
            let d2r = d2s[l].as_ref().unwrap_or(d1);
            if dl.filter.is_some() {
                conv_contribution(self, l, (h1, d1), (h2, d2r), (k, full, lower), &mut acc, pool);
                return;
            }
            let d1b: Vec<MatRef<'_, T>> = (0..k).map(|a| block(d1, a, n1)).collect();
            let d2b: Vec<MatRef<'_, T>> = (0..k).map(|a| block(d2r, a, n2)).collect();
            let share = DenseShare { dl, h: (h1, h2), d: (&d1b, &d2b) };
            stopped = share.add_to(&mut acc, (&mut dd, &mut gram), (full, lower), on, pool);
        });
        pool.give(dd);
        pool.give(gram);
        stopped?;
        Ok(finish(acc, lower, full, (k, n1, n2)))
    }

    /// The explicit Jacobian dF/dtheta at X: (N k) x P, row i k + a, columns in [`Network::params`] order.
    /// Conv nodes' columns come from `layers::conv::jacobian_block`.
    /// O(N k P) memory: meant for small networks and reference checks.
    pub fn jacobian(&self, x: MatRef<'_, T>) -> Result<Mat<T>> {
        self.jacobian_with(x, simd_level())
    }

    /// [`Network::jacobian`] with conv blocks from the given build of their lane kernel.
    pub(crate) fn jacobian_with(&self, x: MatRef<'_, T>, simd: Simd) -> Result<Mat<T>> {
        let tape = self.tape(x)?;
        let (n, k) = (tape.batch_size(), self.output_dim());
        crate::data::memory::check_alloc(
            n.saturating_mul(k).saturating_mul(self.num_params()).saturating_mul(8),
            "the explicit Jacobian",
        )?;
        let mut j = Mat::<T>::zeros(n * k, self.num_params());
        self.reverse(&tape, readout_stack(self, &tape), false, &mut Pool::default(), |l, d, _| {
            let dl = &self.dense[l];
            let h = &tape.values[self.graph.nodes[dl.node].inputs[0]];
            if dl.filter.is_some() {
                let jb = crate::layers::conv::jacobian_block(self, l, h.as_ref(), d, simd, &mut Pool::default());
                for c in 0..jb.ncols() {
                    let col = dl.w_off + crate::layers::conv::jacobian_row_param(self, l, c);
                    for a in 0..k {
                        for i in 0..n {
                            j[(i * k + a, col)] = jb[(a * n + i, c)];
                        }
                    }
                }
                return;
            }
            for m in 0..dl.n_out {
                for q in 0..dl.n_in {
                    let cidx = dl.w_off + m * dl.n_in + q;
                    for a in 0..k {
                        for i in 0..n {
                            j[(i * k + a, cidx)] = T::of(dl.w_mult) * d[(a * n + i, m)] * h[(i, q)];
                        }
                    }
                }
                if let Some(bo) = dl.b_off {
                    for a in 0..k {
                        for i in 0..n {
                            j[(i * k + a, bo + m)] = T::of(dl.b_mult) * d[(a * n + i, m)];
                        }
                    }
                }
            }
        });
        Ok(j)
    }
}

/// The kernel from an accumulator: the upper triangle mirrored from the lower one (`lower`), Full mode's stacked
/// order (a N1 + i, b N2 + j) permuted to (i k + a, j k + b).
pub(super) fn finish<T: Float>(mut acc: Mat<T>, lower: bool, full: bool, (k, n1, n2): (usize, usize, usize)) -> Mat<T> {
    if lower {
        mirror_lower(&mut acc);
    }
    if full && k > 1 {
        Mat::from_fn(n1 * k, n2 * k, |r, c| acc[((r % k) * n1 + r / k, (c % k) * n2 + c / k)])
    } else {
        acc
    }
}

/// A Dense node's operands for its share of the empirical NTK: its parameters, its input H (N1 x n_in, N2 x n_in)
/// and its output cotangents D, one N x n_out block per network output, for each side.
pub(super) struct DenseShare<'a, T: Float> {
    pub dl: &'a super::DenseParams,
    pub h: (MatRef<'a, T>, MatRef<'a, T>),
    pub d: (&'a [MatRef<'a, T>], &'a [MatRef<'a, T>]),
}

impl<T: Float> DenseShare<'_, T> {
    /// acc += DD ⊙ (w_mult^2 H1 H2^T + b_mult^2), where DD = sum_a D1_a D2_a^T (Trace) or the block matrix of
    /// D1_a D2_b^T (Full, acc in stacked order (a N1 + i, b N2 + j), the Gram factor broadcast over the blocks).
    /// `lower`: only the lower triangle of a symmetric Trace accumulator. `dd` and `gram` are scratch of acc's
    /// shape and N1 x N2.
    pub(super) fn add_to(
        &self,
        acc: &mut Mat<T>,
        (dd, gram): (&mut Mat<T>, &mut Mat<T>),
        (full, lower): (bool, bool),
        on: OnProgress<'_>,
        pool: &mut Pool<T>,
    ) -> Result<()> {
        let dl = self.dl;
        let (h1, h2) = self.h;
        let (d1, d2) = self.d;
        let (n1, n2) = (h1.nrows(), h2.nrows());
        let c2 = dl.w_mult * dl.w_mult;
        let b2 = if dl.has_bias() { dl.b_mult * dl.b_mult } else { 0.0 };
        // gram = w_mult^2 H1 H2^T + b_mult^2
        if lower {
            // Symmetric: H2 = H1.
            syrk_lower(gram.as_mut(), Accum::Replace, h1, c2, pool);
        } else {
            gemm(gram.as_mut(), Accum::Replace, h1, h2.transpose(), c2);
        }
        // dd = D1 D2^T (Full: all blocks; Trace: sum over the k diagonal blocks)
        if full {
            let k = d1.len();
            for (a, p) in d1.iter().enumerate() {
                for (b, q) in d2.iter().enumerate() {
                    // k^2 products of N1 x N2 x n_out: each may take a while, so `on` is asked before each.
                    on(a * k + b, k * k)?;
                    let dst = dd.as_mut().submatrix_mut(a * n1, b * n2, n1, n2);
                    gemm(dst, Accum::Replace, *p, q.transpose(), 1.0);
                }
            }
        } else {
            for (a, (p, q)) in d1.iter().zip(d2).enumerate() {
                let acc_mode = if a == 0 { Accum::Replace } else { Accum::Add };
                if lower {
                    // Symmetric: D2 = D1.
                    syrk_lower(dd.as_mut(), acc_mode, *p, 1.0, pool);
                } else {
                    gemm(dd.as_mut(), acc_mode, *p, q.transpose(), 1.0);
                }
            }
        }
        // acc += dd ⊙ gram (broadcast over output blocks in Full mode)
        let (gram_r, dd_r, b2t) = (&*gram, &*dd, T::of(b2));
        for_each_col(acc, |j, o| {
            let jj = j % n2;
            let g = col(gram_r, jj);
            let p = col(dd_r, j);
            if lower {
                for i in j..n1 {
                    o[i] += p[i] * (g[i] + b2t);
                }
            } else {
                for (ob, pb) in o.chunks_exact_mut(n1).zip(p.chunks_exact(n1)) {
                    for i in 0..n1 {
                        ob[i] += pb[i] * (g[i] + b2t);
                    }
                }
            }
        });
        Ok(())
    }
}

/// A Conv node's share of the empirical NTK, J_l(X1) J_l(X2)^T from its explicit Jacobian blocks (a conv
/// layer has few parameters, C_out C_in |F| + C_out, and its Gram trick would need every pair of positions):
/// added to `acc` in its layout (Trace: N1 x N2, the k diagonal blocks summed; Full: stacked (a N1 + i, b N2 + j)).
#[allow(clippy::too_many_arguments)]
fn conv_contribution<T: Float>(
    net: &Network<T>,
    l: usize,
    (h1, d1): (MatRef<'_, T>, &Mat<T>),
    (h2, d2): (MatRef<'_, T>, &Mat<T>),
    (k, full, lower): (usize, bool, bool),
    acc: &mut Mat<T>,
    pool: &mut Pool<T>,
) {
    let (n1, n2) = (h1.nrows(), h2.nrows());
    let simd = simd_level();
    let j1 = crate::layers::conv::jacobian_block(net, l, h1, d1, simd, pool);
    let j2 = if lower { None } else { Some(crate::layers::conv::jacobian_block(net, l, h2, d2, simd, pool)) };
    let j2r = j2.as_ref().unwrap_or(&j1);
    for a in 0..k {
        let m1 = j1.as_ref().subrows(a * n1, n1);
        let bs = if full { 0..k } else { a..a + 1 };
        for b in bs {
            let m2 = j2r.as_ref().subrows(b * n2, n2).transpose();
            if full {
                gemm(acc.as_mut().submatrix_mut(a * n1, b * n2, n1, n2), Accum::Add, m1, m2, 1.0);
            } else if lower {
                syrk_lower(acc.as_mut(), Accum::Add, m1, 1.0, pool);
            } else {
                gemm(acc.as_mut(), Accum::Add, m1, m2, 1.0);
            }
        }
    }
    pool.give(j1);
    if let Some(j2) = j2 {
        pool.give(j2);
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::*;
    use crate::data::synthetic::{derive_seed, gaussian, sphere};
    use crate::kernel::{kernel, Architecture, Parameterization};
    use crate::net::Mlp;

    #[test]
    fn jacobian_matches_unit_vjps() {
        // Independent route: row (i, a) of J is J^T e_(i,a), from the batched reverse pass (checked against
        // finite differences in `backward`).
        let net = net("dense(5,b_std=0.3),tanh,dense(4),relu,dense(3,b_std=0.5)", Parameterization::Mup, 3, 1.5, 3);
        let x = gaussian(4, 3, 1);
        let j = net.jacobian(x.as_ref()).unwrap();
        let r = jacobian_by_vjp(&net, x.as_ref());
        assert!((&j - &r).norm_max() < 1e-13 * r.norm_max());
    }

    #[test]
    fn empirical_ntk_equals_explicit_jjt() {
        // Reference: J J^T with J from unit-cotangent VJPs. Several parameterizations, biases, alpha != 1,
        // consecutive dense layers, multi-output (trace and full), symmetric and cross kernels.
        let cases = [
            (
                "dense(6,w_std=1.3,b_std=0.4),tanh,dense(5,b_std=0.2),relu,dense(3,b_std=0.5)",
                Parameterization::Ntk,
                1.0,
            ),
            (
                "dense(5,b_std=0.3),gelu,dense(4),dense(4,b_std=0.1),erf,dense(2,b_std=1)",
                Parameterization::Standard,
                2.5,
            ),
            ("dense(7,b_std=0.3),sin,dense(6,b_std=0.1),relu,dense(3)", Parameterization::MeanField, 0.3),
            ("dense(6,b_std=0.3),relu,dense(6,b_std=0.1),abs,dense(3,b_std=0.7)", Parameterization::Mup, 4.0),
            ("dense(8,b_std=0.2),relu,dense(1,b_std=0.1)", Parameterization::Ntk, 1.7),
            (RESIDUAL, Parameterization::Ntk, 1.3),
            (DAG, Parameterization::Mup, 0.6),
        ];
        for (s, p, alpha) in cases {
            let net = net(s, p, 4, alpha, 17);
            let k = net.output_dim();
            let (x1, x2) = (gaussian(5, 4, 1), gaussian(3, 4, 2));
            let (j1, j2) = (jacobian_by_vjp(&net, x1.as_ref()), jacobian_by_vjp(&net, x2.as_ref()));
            for (xb, jb, nb) in [(None, &j1, 5), (Some(x2.as_ref()), &j2, 3)] {
                let full_ref = &j1 * jb.transpose();
                let full = net.empirical_ntk(x1.as_ref(), xb, NtkOutputs::Full).unwrap();
                let scale = full_ref.norm_max();
                assert!(scale > 1e-3, "{s}: degenerate test case (all units dead)");
                assert!((&full - &full_ref).norm_max() < 1e-12 * scale, "{s} {p} full");
                let tr = net.empirical_ntk(x1.as_ref(), xb, NtkOutputs::Trace).unwrap();
                let tr_ref = Mat::<f64>::from_fn(5, nb, |i, j| (0..k).map(|a| full_ref[(i * k + a, j * k + a)]).sum());
                assert!((&tr - &tr_ref).norm_max() < 1e-12 * scale, "{s} {p} trace");
            }
        }
    }

    /// Mean over seeds of max_ij |Theta_emp - Theta_inf| / max_ij |Theta_inf|.
    fn wide_error(arch: &Architecture, x: MatRef<'_, f64>, seeds: u64) -> f64 {
        let inf = kernel(arch, x, None).unwrap().ntk;
        let scale = inf.norm_max();
        (0..seeds)
            .map(|s| {
                let net = Mlp::init(arch, x.ncols(), 1.0, derive_seed(2024, s)).unwrap();
                let emp = net.empirical_ntk(x, None, NtkOutputs::Trace).unwrap();
                (&emp - &inf).norm_max() / scale
            })
            .sum::<f64>()
            / seeds as f64
    }

    #[test]
    fn wide_one_hidden_layer_ntk_approaches_the_infinite_width_limit() {
        // Theta_emp averages m i.i.d. per-unit terms (plus the readout's), so by the CLT its error is
        // ~ s/sqrt(m) with s the per-unit relative standard deviation: the dominant term a_i^2 1{u_i > 0} has
        // mean 1/2 and sd sqrt(5)/2, i.e. s ~ 2.2, and the max over the 78 entries adds a factor ~2.5, so
        // C ~ 5.6; we assert the relative error at m = 4096 is below 8/sqrt(m) and that it shrinks by more
        // than 2x from m = 256 (sqrt(16) = 4 expected; measured ~4).
        let x = sphere(12, 6, 3);
        let spec = |m: usize| format!("dense({m},w_std=1.5,b_std=0.2),relu,dense(1,w_std=1.2,b_std=0.1)");
        let a = |m| Architecture::parse(&spec(m), Parameterization::Ntk).unwrap();
        let e_small = wide_error(&a(256), x.as_ref(), 4);
        let e_big = wide_error(&a(4096), x.as_ref(), 4);
        assert!(e_big < 8.0 / 4096f64.sqrt(), "error {e_big} at width 4096");
        assert!(e_big < e_small / 2.0, "error {e_big} at 4096 vs {e_small} at 256");
    }

    #[test]
    fn wide_two_hidden_layer_ntk_approaches_the_infinite_width_limit() {
        // Same CLT argument and constant; the error must shrink by more than 2x from m = 128 to m = 2048
        // (sqrt(16) = 4 expected).
        let x = sphere(10, 5, 4);
        let spec =
            |m: usize| format!("dense({m},w_std=1.4,b_std=0.1),relu,dense({m},w_std=1.4,b_std=0.1),erf,dense(1)");
        let a = |m| Architecture::parse(&spec(m), Parameterization::Ntk).unwrap();
        let e_small = wide_error(&a(128), x.as_ref(), 3);
        let e_big = wide_error(&a(2048), x.as_ref(), 3);
        assert!(e_big < 8.0 / 2048f64.sqrt(), "error {e_big} at width 2048");
        assert!(e_big < e_small / 2.0, "error {e_big} at 2048 vs {e_small} at 128");
    }
}
