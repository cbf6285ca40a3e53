//! Infinite-width NNGP and NTK of convolutional networks (CNN-GP and CNTK: Novak et al. 2019, Arora et al.
//! 2019) in neural-tangents' conventions, on inputs with spatial axes (N x H x W x C, or N x W x C, stored as
//! N rows of H W C values, channels fastest).
//!
//! Per pair of inputs (x, x') each node carries the covariance of its pre-activations between positions,
//! `K[p, q] = lim E[z_c(x)_p z_c(x')_q]` (the same for every channel), and the NTK `Theta[p, q]`:
//! * input: `K[p, q] = (1/C) sum_c x_{p,c} x'_{q,c}`, `Theta = 0`;
//! * conv, 'ntk' parameterization: `K'[p, q] = W^2/|F| sum_j K[p_j, q_j] + b^2` over the window offsets j (p_j
//!   the input position read at offset j: zero outside the image for `same`, wrapped for `circular`), and
//!   `Theta' = W^2/|F| sum_j Theta[p_j, q_j] + K'`; 'standard': `Theta' = C |F| (1/|F|) sum_j K[p_j, q_j]
//!   + [bias] 1 + W^2/|F| sum_j Theta[p_j, q_j]`;
//! * activation: `K' = T(q_x[p], K[p, q], q_x'[q])`, `Theta' = Theta Tdot(...)`, with q_x the variances of the
//!   same node for x with itself;
//! * avg_pool: the mean of K (and Theta) over both windows, divided by the window size squared (padding counts,
//!   as neural-tangents' default `normalize_edges=False`); global_avg_pool: the mean over all (p, q);
//!   flatten: the mean of the diagonal; dense and fan-ins as in [`super::compute`].
//!
//! Only what the architecture needs is kept: without pooling every node needs just the diagonal K[p, p] (P
//! values per pair instead of P^2). Work is one pair at a time per thread, so memory is the N1 x N2 outputs
//! plus a few P x P buffers per thread, whatever N.

use faer::{Mat, MatRef};
use rayon::prelude::*;

use super::activation::Dual;
use super::arch::{Architecture, Parameterization};
use super::compute::{Kernel, KernelScalar};
use super::fastmath::Real;
use super::graph::{Graph, Op};
use super::spatial::{Shape, Window};
use crate::runs::OnProgress;
use crate::{Error, Result};

/// How a node acts on a pair's (K, Theta), precomputed from the graph.
enum Rule {
    Input,
    /// Window taps (per output position, `size` offsets) and the affine coefficients.
    Conv {
        win: Window,
        /// The window as one pass per spatial axis (full covariances; see [`axis_passes`]).
        passes: Vec<AxisPass>,
        n_in: usize,
        w2: f64,
        b2: f64,
        bias: bool,
        fan_in: f64,
    },
    Pool {
        win: Window,
        n_in: usize,
    },
    GlobalAvgPool,
    Flatten,
    Dense {
        w2: f64,
        b2: f64,
        bias: bool,
        n_in: f64,
    },
    Act(Dual),
    Fan(Vec<f64>),
}

/// Covariances of one node for one pair: P x P (full) or P (diagonal) values, row-major.
#[derive(Clone)]
struct Cov<R> {
    k: Vec<R>,
    t: Vec<R>,
    /// Positions (1 for feature vectors).
    p: usize,
}

struct Plan {
    graph: Graph,
    rules: Vec<Rule>,
    /// Keep P x P covariances (pooling present) instead of the diagonal.
    full: bool,
    ntk_param: bool,
    /// For each node, the last node that reads it (to free buffers).
    last_use: Vec<usize>,
    /// Nodes whose self-variances activations need (the inputs of activation nodes).
    var_nodes: Vec<usize>,
    /// Build of the vectorized duals.
    simd: super::compute::Simd,
}

/// What a network that ends on an image gives per pair of inputs: every pair of output positions' covariance, or
/// only each position's own. `None`: such a network is refused (one kernel value per pair is wanted).
type SpatialOut = Option<Spatial>;

/// The covariances a network that ends on an image gives per pair of inputs (neural-tangents'
/// `diagonal_spatial`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Spatial {
    /// Every pair of output positions (p of x, q of x').
    Full,
    /// Each output position with itself.
    Diagonal,
}

fn build(arch: &Architecture, input: &Shape, spatial: SpatialOut) -> Result<Plan> {
    let graph = arch.graph_for(input)?;
    let out = graph.output();
    let out_spatial = graph.nodes[out].shape.is_spatial();
    if out_spatial && spatial.is_none() {
        return Err(Error::Config(format!(
            "the network ends in `{}` of shape {}: end it with flatten or global_avg_pool (then dense) to get one \
             kernel value per pair of inputs (`ntklab kernel` and Python's ntklab.stax kernel_fn give the \
             covariances between output positions)",
            graph.nodes[out].name, graph.nodes[out].shape
        )));
    }
    let full = graph.nodes.iter().any(|n| matches!(n.op, Op::AvgPool { .. } | Op::GlobalAvgPool))
        || (out_spatial && spatial == Some(Spatial::Full));
    let ntk_param = arch.parameterization == Parameterization::Ntk;
    let mut gaussian = vec![true; graph.nodes.len()];
    let mut rules = Vec::with_capacity(graph.nodes.len());
    let mut var_nodes = Vec::new();
    for (v, node) in graph.nodes.iter().enumerate() {
        let u0 = node.inputs.first().copied().unwrap_or(0);
        let ins = &graph.nodes[u0];
        let rule = match &node.op {
            Op::Input => Rule::Input,
            Op::Conv { filter, stride, padding, w_std, b_std, .. } => {
                let win = Window::new(&ins.shape.spatial, filter, stride, *padding)?;
                let passes = axis_passes(&ins.shape.spatial, filter, stride, *padding)?;
                Rule::Conv {
                    win,
                    passes,
                    n_in: ins.shape.positions(),
                    w2: w_std * w_std,
                    b2: b_std.map_or(0.0, |b| b * b),
                    bias: b_std.is_some(),
                    fan_in: (ins.shape.channels * filter.iter().product::<usize>()) as f64,
                }
            }
            Op::AvgPool { window, stride, padding } => Rule::Pool {
                win: Window::new(&ins.shape.spatial, window, stride, *padding)?,
                n_in: ins.shape.positions(),
            },
            Op::GlobalAvgPool => Rule::GlobalAvgPool,
            Op::Flatten => {
                gaussian[v] = !ins.shape.is_spatial() && gaussian[u0];
                Rule::Flatten
            }
            Op::Dense { w_std, b_std, .. } => Rule::Dense {
                w2: w_std * w_std,
                b2: b_std.map_or(0.0, |b| b * b),
                bias: b_std.is_some(),
                n_in: ins.width as f64,
            },
            Op::Activation(a) => {
                if !gaussian[u0] {
                    return Err(Error::Config(format!(
                        "node `{}` (`{a}`) reads `{}`, which is not Gaussian in the infinite-width limit (an \
                         activation, a flatten or a concatenation): no kernel rule applies, as in neural-tangents; \
                         put a conv or dense layer before it",
                        node.name, ins.name
                    )));
                }
                var_nodes.push(u0);
                Rule::Act(a.dual())
            }
            Op::Sum | Op::Concat => {
                // Channel concatenation weights its blocks' kernels by width whatever their laws; a sum needs
                // independent mean-zero Gaussian inputs (as in neural-tangents).
                let sum = matches!(node.op, Op::Sum);
                if let Some(&bad) = node.inputs.iter().find(|&&u| sum && !gaussian[u]) {
                    return Err(Error::Config(format!(
                        "node `{}` sums `{}`, which is not Gaussian: a sum needs Gaussian (pre-activation) inputs, \
                         as in neural-tangents; end each branch with a conv or dense layer, or concatenate them",
                        node.name, graph.nodes[bad].name
                    )));
                }
                let widths: Vec<usize> = node.inputs.iter().map(|&u| graph.nodes[u].width).collect();
                Rule::Fan(crate::layers::fan_in::kernel_weights(&node.op, &widths))
            }
        };
        if matches!(node.op, Op::Activation(_) | Op::Concat) {
            gaussian[v] = false;
        }
        if matches!(node.op, Op::AvgPool { .. } | Op::GlobalAvgPool) {
            gaussian[v] = gaussian[u0];
        }
        rules.push(rule);
    }
    let mut last_use: Vec<usize> = (0..graph.nodes.len()).collect();
    for (v, n) in graph.nodes.iter().enumerate() {
        for &u in &n.inputs {
            last_use[u] = last_use[u].max(v);
        }
    }
    last_use[out] = usize::MAX;
    var_nodes.sort_unstable();
    var_nodes.dedup();
    Ok(Plan { graph, rules, full, ntk_param, last_use, var_nodes, simd: super::compute::simd_level() })
}

/// Self-variances of one input at the nodes activations read: `vars[k][p]` for `plan.var_nodes[k]`.
type Vars<R> = Vec<Vec<R>>;

/// Sum of a buffer accumulated in f64 in 8 interleaved partial sums (the global mean over P^2 entries: one
/// dependent chain of P^2 additions would cost more than the convolutions).
#[inline(always)]
fn wide_sum_slice<R: Real>(v: &[R]) -> f64 {
    wide_sum_by(v.len(), |i| v[i])
}

/// [`wide_sum_slice`] of the values `at(0..n)`, in the same order (so a strided column of the diagonal mode
/// sums to the same bits as the pair recursion's contiguous buffer).
#[inline(always)]
fn wide_sum_by<R: Real>(n: usize, at: impl Fn(usize) -> R) -> f64 {
    let mut acc = [0.0f64; 8];
    let full = n / 8 * 8;
    for c in (0..full).step_by(8) {
        for (l, a) in acc.iter_mut().enumerate() {
            *a += at(c + l).wide();
        }
    }
    let s = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    (full..n).fold(s, |a, i| a + at(i).wide())
}

impl Plan {
    fn positions(&self, v: usize) -> usize {
        self.graph.nodes[v].shape.positions()
    }

    /// Runs the recursion for one pair: the output node's covariances (one value for a feature vector, else P x P
    /// or the P diagonal values) and, with `record`, the variances at `var_nodes` (a self pair).
    /// Dispatches to a build for the CPU's vector width (the bits are the same: no build fuses operations
    /// that the portable one does not).
    fn pair<R: Real>(
        &self,
        x1: &[R],
        x2: &[R],
        v1: Option<&Vars<R>>,
        v2: Option<&Vars<R>>,
        record: bool,
    ) -> (Cov<R>, Vars<R>) {
        use super::compute::Simd;
        match self.simd {
            // SAFETY: each arm is only taken when the CPU reports the features it was built for.
            #[cfg(target_arch = "x86_64")]
            Simd::Avx512 => unsafe { self.pair_avx512(x1, x2, v1, v2, record) },
            #[cfg(target_arch = "x86_64")]
            Simd::Avx2 => unsafe { self.pair_avx2(x1, x2, v1, v2, record) },
            Simd::Generic => self.pair_body(x1, x2, v1, v2, record),
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx512vl,avx2,fma")]
    unsafe fn pair_avx512<R: Real>(
        &self,
        x1: &[R],
        x2: &[R],
        v1: Option<&Vars<R>>,
        v2: Option<&Vars<R>>,
        record: bool,
    ) -> (Cov<R>, Vars<R>) {
        self.pair_body(x1, x2, v1, v2, record)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn pair_avx2<R: Real>(
        &self,
        x1: &[R],
        x2: &[R],
        v1: Option<&Vars<R>>,
        v2: Option<&Vars<R>>,
        record: bool,
    ) -> (Cov<R>, Vars<R>) {
        self.pair_body(x1, x2, v1, v2, record)
    }

    #[inline(always)]
    fn pair_body<R: Real>(
        &self,
        x1: &[R],
        x2: &[R],
        v1: Option<&Vars<R>>,
        v2: Option<&Vars<R>>,
        record: bool,
    ) -> (Cov<R>, Vars<R>) {
        let n = self.graph.nodes.len();
        let mut vals: Vec<Option<Cov<R>>> = vec![None; n];
        let mut rec: Vars<R> = Vec::new();
        for v in 0..n {
            let node = &self.graph.nodes[v];
            let p = self.positions(v);
            let get = |u: usize| vals[u].as_ref().expect("inputs are computed before their readers");
            let cov = match &self.rules[v] {
                Rule::Input => input_cov(x1, x2, &node.shape, self.full),
                Rule::Conv { win, passes, n_in, w2, b2, bias, fan_in } => {
                    let c = get(node.inputs[0]);
                    let (mut k, mut t) = if self.full {
                        let mut kt = conv_full(&c.k, &c.t, &passes[0].lists, passes[0].n_in, passes[0].n_out);
                        for ps in &passes[1..] {
                            kt = conv_full(&kt.0, &kt.1, &ps.lists, ps.n_in, ps.n_out);
                        }
                        kt
                    } else {
                        (window_sum(&c.k, win, *n_in, false), window_sum(&c.t, win, *n_in, false))
                    };
                    self.conv_affine(&mut k, &mut t, win.size, (*w2, *b2, *bias, *fan_in));
                    Cov { k, t, p }
                }
                Rule::Pool { win, n_in } => {
                    let c = get(node.inputs[0]);
                    let inv = R::of(1.0 / (win.size * win.size) as f64);
                    let mut k = window_sum(&c.k, win, *n_in, true);
                    let mut t = window_sum(&c.t, win, *n_in, true);
                    k.iter_mut().chain(t.iter_mut()).for_each(|x| *x = *x * inv);
                    Cov { k, t, p }
                }
                Rule::GlobalAvgPool => {
                    let c = get(node.inputs[0]);
                    let m = (c.p * c.p) as f64;
                    let (k, t) = (wide_sum_slice(&c.k) / m, wide_sum_slice(&c.t) / m);
                    Cov { k: vec![R::of(k)], t: vec![R::of(t)], p: 1 }
                }
                Rule::Flatten => {
                    let c = get(node.inputs[0]);
                    let (k, t) = if self.full && c.p > 1 {
                        let d = wide_sum_by(c.p, |i| c.k[i * c.p + i]);
                        let e = wide_sum_by(c.p, |i| c.t[i * c.p + i]);
                        (d, e)
                    } else {
                        (wide_sum_slice(&c.k), wide_sum_slice(&c.t))
                    };
                    Cov { k: vec![R::of(k / c.p as f64)], t: vec![R::of(t / c.p as f64)], p: 1 }
                }
                Rule::Dense { w2, b2, bias, n_in } => {
                    let c = get(node.inputs[0]);
                    let (k, t) = self.dense_affine(c.k[0], c.t[0], (*w2, *b2, *bias, *n_in));
                    Cov { k: vec![k], t: vec![t], p: 1 }
                }
                Rule::Act(dual) => {
                    let u = node.inputs[0];
                    let c = get(u);
                    let slot = self.var_nodes.binary_search(&u).expect("activation inputs are recorded");
                    let (q1, q2): (Vec<R>, Vec<R>) = match (v1, v2) {
                        (Some(a), Some(b)) => (a[slot].clone(), b[slot].clone()),
                        _ => {
                            // A self pair: the variances are this pair's own diagonal.
                            let d = diag(c, self.full);
                            (d.clone(), d)
                        }
                    };
                    if record {
                        rec.push(q1.clone());
                    }
                    let mut k = c.k.clone();
                    let mut t = c.t.clone();
                    if self.full && c.p > 1 {
                        // Row i (positions of x) is contiguous over j (positions of x'): the vectorized duals
                        // run on it with x' variances along the row. The spatial diagonal (theta = 0 when x = x',
                        // where the block formulas lose digits) is redone with the exact scalar dual: P of P^2.
                        let diag_k: Vec<R> = (0..c.p).map(|i| c.k[i * c.p + i]).collect();
                        super::compute::dual_columns(self.simd, dual, &q2, &q1, &mut k, &mut t);
                        for (i, &kd) in diag_k.iter().enumerate() {
                            let (tv, td) = dual.eval(q1[i].wide(), kd.wide(), q2[i].wide());
                            k[i * c.p + i] = R::of(tv);
                            t[i * c.p + i] = c.t[i * c.p + i] * R::of(td);
                        }
                    } else {
                        for i in 0..c.p {
                            let (tv, td) = dual.eval(q1[i].wide(), k[i].wide(), q2[i].wide());
                            k[i] = R::of(tv);
                            t[i] = t[i] * R::of(td);
                        }
                    }
                    Cov { k, t, p: c.p }
                }
                Rule::Fan(weights) => {
                    let first = get(node.inputs[0]);
                    let mut k = vec![R::ZERO; first.k.len()];
                    let mut t = vec![R::ZERO; first.t.len()];
                    for (&u, &w) in node.inputs.iter().zip(weights) {
                        let (c, w) = (get(u), R::of(w));
                        for (a, &b) in k.iter_mut().zip(&c.k) {
                            *a = *a + w * b;
                        }
                        for (a, &b) in t.iter_mut().zip(&c.t) {
                            *a = *a + w * b;
                        }
                    }
                    Cov { k, t, p }
                }
            };
            vals[v] = Some(cov);
            for &u in &node.inputs {
                if self.last_use[u] == v {
                    vals[u] = None;
                }
            }
        }
        let outv = vals[self.graph.output()].take().expect("the output is computed");
        // Variances recorded in activation order; reorder to var_nodes order.
        let rec = if record { self.order_vars(rec) } else { rec };
        (outv, rec)
    }

    /// Diagonal mode (no pooling), one input x against many x'_j at once: every node holds a P x m array stored
    /// position-major (`[p * m + jj]`), so the duals run as vectorized columns over jj. `xs[jj]` are the x'
    /// rows, `vars[jj]` their self-variances, `v1` those of x. Entry by entry the arithmetic is that of one pair,
    /// whatever m (elementwise operations only), so any subset of columns gives the same bits.
    /// `xt` holds the x' inputs transposed (value (p, c) of x'_j at `[(p C + c) n2 + j]`) and `vt[slot]` their
    /// variances (`[p n2 + j]`); the columns are j0..j1.
    #[allow(clippy::too_many_arguments)]
    fn diag_row<R: Real>(
        &self,
        x1: &[R],
        v1: &Vars<R>,
        xt: &[R],
        vt: &[Vec<R>],
        n2: usize,
        j0: usize,
        j1: usize,
    ) -> Vec<(R, R)> {
        let m = j1 - j0;
        let n = self.graph.nodes.len();
        let mut vals: Vec<Option<(Vec<R>, Vec<R>)>> = vec![None; n];
        for v in 0..n {
            let node = &self.graph.nodes[v];
            let pv = self.positions(v);
            let get = |u: usize| vals[u].as_ref().expect("inputs are computed before their readers");
            let (k, t) = match &self.rules[v] {
                Rule::Input => {
                    let c = node.shape.channels;
                    let inv = R::of(1.0 / c as f64);
                    let mut k = vec![R::ZERO; pv * m];
                    for p in 0..pv {
                        let kp = &mut k[p * m..(p + 1) * m];
                        for q in 0..c {
                            let a = x1[p * c + q];
                            let col = &xt[(p * c + q) * n2 + j0..(p * c + q) * n2 + j1];
                            for (o, &b) in kp.iter_mut().zip(col) {
                                *o = *o + a * b;
                            }
                        }
                        kp.iter_mut().for_each(|o| *o = *o * inv);
                    }
                    (k, vec![R::ZERO; pv * m])
                }
                Rule::Conv { win, w2, b2, bias, fan_in, .. } => {
                    let (ck, ct) = get(node.inputs[0]);
                    let mut k = vec![R::ZERO; pv * m];
                    let mut t = vec![R::ZERO; pv * m];
                    for o in 0..pv {
                        let (ko, to) = (&mut k[o * m..(o + 1) * m], &mut t[o * m..(o + 1) * m]);
                        for &i in win.taps[o * win.size..(o + 1) * win.size].iter().flatten() {
                            for (a, &b) in ko.iter_mut().zip(&ck[i * m..(i + 1) * m]) {
                                *a = *a + b;
                            }
                            for (a, &b) in to.iter_mut().zip(&ct[i * m..(i + 1) * m]) {
                                *a = *a + b;
                            }
                        }
                    }
                    self.conv_affine(&mut k, &mut t, win.size, (*w2, *b2, *bias, *fan_in));
                    (k, t)
                }
                Rule::Flatten => {
                    let (ck, ct) = get(node.inputs[0]);
                    let pu = self.positions(node.inputs[0]);
                    // The same sums, in the same order and precision, as the pair recursion's Flatten: the
                    // self-variances that later activations compare against come from there.
                    let pf = pu as f64;
                    let k = (0..m).map(|jj| R::of(wide_sum_by(pu, |p| ck[p * m + jj]) / pf)).collect();
                    let t = (0..m).map(|jj| R::of(wide_sum_by(pu, |p| ct[p * m + jj]) / pf)).collect();
                    (k, t)
                }
                Rule::Dense { w2, b2, bias, n_in } => {
                    let (ck, ct) = get(node.inputs[0]);
                    ck.iter().zip(ct).map(|(&k0, &t0)| self.dense_affine(k0, t0, (*w2, *b2, *bias, *n_in))).unzip()
                }
                Rule::Act(dual) => {
                    let u = node.inputs[0];
                    let (ck, ct) = get(u);
                    let slot = self.var_nodes.binary_search(&u).expect("activation inputs are recorded");
                    let (mut k, mut t) = (ck.clone(), ct.clone());
                    for p in 0..pv {
                        let qcol = &vt[slot][p * n2 + j0..p * n2 + j1];
                        let (ks, ts) = (&mut k[p * m..(p + 1) * m], &mut t[p * m..(p + 1) * m]);
                        let qi = v1[slot][p];
                        super::compute::dual_columns(self.simd, dual, qcol, &[qi], ks, ts);
                        // Identical inputs (x' = x, entry by entry the same variance and covariance): theta = 0,
                        // where the block formulas lose digits; the exact scalar dual instead.
                        for jj in 0..m {
                            let kk = ck[p * m + jj];
                            if kk == qi && kk == qcol[jj] {
                                let (tv, td) = dual.eval(qi.wide(), kk.wide(), qi.wide());
                                ks[jj] = R::of(tv);
                                ts[jj] = ct[p * m + jj] * R::of(td);
                            }
                        }
                    }
                    (k, t)
                }
                Rule::Fan(weights) => {
                    let mut k = vec![R::ZERO; pv * m];
                    let mut t = vec![R::ZERO; pv * m];
                    for (&u, &w) in node.inputs.iter().zip(weights) {
                        let ((ck, ct), w) = (get(u), R::of(w));
                        for (a, &b) in k.iter_mut().zip(ck) {
                            *a = *a + w * b;
                        }
                        for (a, &b) in t.iter_mut().zip(ct) {
                            *a = *a + w * b;
                        }
                    }
                    (k, t)
                }
                Rule::Pool { .. } | Rule::GlobalAvgPool => unreachable!("pooling selects the full mode"),
            };
            vals[v] = Some((k, t));
            for &u in &node.inputs {
                if self.last_use[u] == v {
                    vals[u] = None;
                }
            }
        }
        let (k, t) = vals[self.graph.output()].take().expect("the output is computed");
        k.into_iter().zip(t).collect()
    }

    /// A dense layer on one (K, Theta) entry (the rules of `kernel::compute`'s Affine stage).
    #[inline(always)]
    fn dense_affine<R: Real>(&self, k0: R, t0: R, (w2, b2, bias, n_in): (f64, f64, bool, f64)) -> (R, R) {
        let (w2, b2, n_in) = (R::of(w2), R::of(b2), R::of(n_in));
        let k = w2 * k0 + b2;
        let t = if self.ntk_param { w2 * t0 + k } else { n_in * k0 + if bias { R::ONE } else { R::ZERO } + w2 * t0 };
        (k, t)
    }

    /// A convolution's scaling of its window sums (K, Theta), in place: 'ntk' K' = W^2 K/|F| + b^2,
    /// Theta' = W^2 Theta/|F| + K'; otherwise Theta' = C_in |F| K/|F| + [bias] 1 + W^2 Theta/|F|.
    #[inline(always)]
    fn conv_affine<R: Real>(
        &self,
        k: &mut [R],
        t: &mut [R],
        size: usize,
        (w2, b2, bias, fan_in): (f64, f64, bool, f64),
    ) {
        let (w2, b2, fan_in, inv) = (R::of(w2), R::of(b2), R::of(fan_in), R::of(1.0 / size as f64));
        if self.ntk_param {
            for (kk, tt) in k.iter_mut().zip(t.iter_mut()) {
                *kk = w2 * *kk * inv + b2;
                *tt = w2 * *tt * inv + *kk;
            }
        } else {
            let one = if bias { R::ONE } else { R::ZERO };
            for (kk, tt) in k.iter_mut().zip(t.iter_mut()) {
                let ku = *kk * inv;
                *tt = fan_in * ku + one + w2 * *tt * inv;
                *kk = w2 * ku + b2;
            }
        }
    }

    /// Activation nodes appear in graph order; several may read one node. Map to `var_nodes` slots.
    fn order_vars<R: Real>(&self, rec: Vars<R>) -> Vars<R> {
        let mut out: Vars<R> = vec![Vec::new(); self.var_nodes.len()];
        let mut it = rec.into_iter();
        for (v, r) in self.rules.iter().enumerate() {
            if let Rule::Act(_) = r {
                let u = self.graph.nodes[v].inputs[0];
                let slot = self.var_nodes.binary_search(&u).expect("recorded");
                let q = it.next().expect("one record per activation");
                out[slot] = q;
            }
        }
        out
    }
}

#[inline(always)]
fn diag<R: Real>(c: &Cov<R>, full: bool) -> Vec<R> {
    if full && c.p > 1 {
        (0..c.p).map(|i| c.k[i * c.p + i]).collect()
    } else {
        c.k.clone()
    }
}

/// The input covariance between positions: (1/C) sum_c x[p, c] x'[q, c] (full) or its diagonal.
#[inline(always)]
fn input_cov<R: Real>(x1: &[R], x2: &[R], shape: &Shape, full: bool) -> Cov<R> {
    let (p, c) = (shape.positions(), shape.channels);
    let inv = R::of(1.0 / c as f64);
    let k: Vec<R> = if full && p > 1 {
        // Row i of the P x P block is sum_c x1[i, c] x2[:, c]: x2's channels are transposed to contiguous rows
        // so the inner loop runs over positions (same sums, same order as the per-entry dot products).
        let mut x2t = vec![R::ZERO; c * p];
        for j in 0..p {
            for q in 0..c {
                x2t[q * p + j] = x2[j * c + q];
            }
        }
        let mut k = vec![R::ZERO; p * p];
        for (i, row) in k.chunks_exact_mut(p).enumerate() {
            for q in 0..c {
                let a = x1[i * c + q];
                for (o, &b) in row.iter_mut().zip(&x2t[q * p..(q + 1) * p]) {
                    *o = *o + a * b;
                }
            }
            row.iter_mut().for_each(|o| *o = *o * inv);
        }
        k
    } else {
        (0..p).map(|i| (0..c).fold(R::ZERO, |a, q| a + x1[i * c + q] * x2[i * c + q]) * inv).collect()
    };
    let t = vec![R::ZERO; k.len()];
    Cov { k, t, p }
}

/// One window offset: the (output position, input position) pairs it connects (padding dropped) and the same
/// as runs (first output, first input, length) of consecutive outputs reading consecutive inputs.
struct Offset {
    pairs: Vec<(usize, usize)>,
    runs: Vec<(usize, usize, usize)>,
}

/// For each window offset j, its [`Offset`], from `taps[o * size + j]` (the input read by output o at offset j)
/// over `n_out` outputs.
fn offset_lists(taps: &[Option<usize>], size: usize, n_out: usize) -> Vec<Offset> {
    (0..size)
        .map(|j| {
            let pairs: Vec<(usize, usize)> = (0..n_out).filter_map(|o| taps[o * size + j].map(|i| (o, i))).collect();
            let runs = runs(&pairs);
            Offset { pairs, runs }
        })
        .collect()
}

/// One axis of a separable window on full covariances: flat positions `n_in` -> `n_out` and the offsets' lists.
struct AxisPass {
    n_in: usize,
    n_out: usize,
    lists: Vec<Offset>,
}

/// A convolution's window sum on a full covariance, out[a, b] = sum_j K[a_j, b_j] over the offsets j = (j_1, ..,
/// j_d) valid at both a and b, as d passes of one axis each: offsets and padding are products over the axes, so
/// the sum over j is the sum over j_1 of the sum over j_2 ... . Pass `ax` maps extents (out_1.., out_(ax-1),
/// n_ax, .., n_d) to the same with out_ax. A 3x3 window costs 3 + 3 additions per entry instead of 9. Axes
/// with a 1-wide, stride-1 window are identities and are left out (at least one pass is kept).
fn axis_passes(n: &[usize], k: &[usize], s: &[usize], padding: super::spatial::Padding) -> Result<Vec<AxisPass>> {
    let mut cur = n.to_vec();
    let mut passes = Vec::new();
    for ax in 0..n.len() {
        let axis = super::spatial::Axis1::new(n[ax], k[ax], s[ax], padding)?;
        let identity = axis.k == 1 && axis.n_out == axis.n_in;
        if identity && (ax + 1 < n.len() || !passes.is_empty()) {
            continue;
        }
        let mut next = cur.clone();
        next[ax] = axis.n_out;
        let inner: usize = cur[ax + 1..].iter().product();
        let (n_in, n_out): (usize, usize) = (cur.iter().product(), next.iter().product());
        let mut taps = Vec::with_capacity(n_out * axis.k);
        for o in 0..n_out {
            let (outer, rem) = (o / (next[ax] * inner), o % (next[ax] * inner));
            let (oa, r) = (rem / inner, rem % inner);
            for j in 0..axis.k {
                taps.push(axis.index[oa * axis.k + j].map(|i| (outer * cur[ax] + i) * inner + r));
            }
        }
        passes.push(AxisPass { n_in, n_out, lists: offset_lists(&taps, axis.k, n_out) });
        cur = next;
    }
    Ok(passes)
}

/// Runs of an offset list: (first output, first input, length) with outputs and inputs both consecutive, so the
/// inner loop of [`conv_full`] adds contiguous slices (one run per image row for stride-1 windows).
fn runs(l: &[(usize, usize)]) -> Vec<(usize, usize, usize)> {
    let mut out: Vec<(usize, usize, usize)> = Vec::new();
    for &(b, i) in l {
        match out.last_mut() {
            Some((b0, i0, len)) if *b0 + *len == b && *i0 + *len == i => *len += 1,
            _ => out.push((b, i, 1)),
        }
    }
    out
}

/// The convolution of a full covariance and its NTK together: out[a, b] = sum_j K[a_j, b_j] over the offsets j
/// valid at both a and b (the inner loop adds contiguous slices).
#[inline(always)]
fn conv_full<R: Real>(k: &[R], t: &[R], lists: &[Offset], n_in: usize, n_out: usize) -> (Vec<R>, Vec<R>) {
    let mut ok = vec![R::ZERO; n_out * n_out];
    let mut ot = vec![R::ZERO; n_out * n_out];
    for l in lists {
        for &(a, i) in &l.pairs {
            let (krow, trow) = (&k[i * n_in..(i + 1) * n_in], &t[i * n_in..(i + 1) * n_in]);
            let (okr, otr) = (&mut ok[a * n_out..(a + 1) * n_out], &mut ot[a * n_out..(a + 1) * n_out]);
            for &(b0, i0, len) in &l.runs {
                for (o, &s) in okr[b0..b0 + len].iter_mut().zip(&krow[i0..i0 + len]) {
                    *o = *o + s;
                }
                for (o, &s) in otr[b0..b0 + len].iter_mut().zip(&trow[i0..i0 + len]) {
                    *o = *o + s;
                }
            }
        }
    }
    (ok, ot)
}

/// Sum in the buffer's own precision, left to right.
#[inline(always)]
fn fsum<R: Real>(it: impl Iterator<Item = R>) -> R {
    it.fold(R::ZERO, |a, x| a + x)
}

/// Window sums of a covariance for pooling and diagonal convolutions: with `full`, sum K[p_j, q_j'] over both
/// windows (P_in x P_in -> P_out x P_out, separably: rows first, then columns); otherwise the diagonal
/// K[p_j] summed over the window (P_in -> P_out).
#[inline(always)]
fn window_sum<R: Real>(src: &[R], win: &Window, n_in: usize, full: bool) -> Vec<R> {
    let n_out: usize = win.out.iter().product();
    let s = win.size;
    if !full {
        return (0..n_out).map(|o| fsum(win.taps[o * s..(o + 1) * s].iter().flatten().map(|&i| src[i]))).collect();
    }
    let mut half = vec![R::ZERO; n_out * n_in];
    for a in 0..n_out {
        for &i in win.taps[a * s..(a + 1) * s].iter().flatten() {
            let row = &src[i * n_in..(i + 1) * n_in];
            for (h, &r) in half[a * n_in..(a + 1) * n_in].iter_mut().zip(row) {
                *h = *h + r;
            }
        }
    }
    let mut out = vec![R::ZERO; n_out * n_out];
    for a in 0..n_out {
        for b in 0..n_out {
            out[a * n_out + b] = fsum(win.taps[b * s..(b + 1) * s].iter().flatten().map(|&j| half[a * n_in + j]));
        }
    }
    out
}

/// A convolutional kernel job: the compiled plan, the inputs and their self-variances. [`CnnKernel::full`] computes
/// the whole N1 x N2 kernel; [`CnnKernel::rows`] any block of its rows, bit-identical to the same rows of `full`
/// (every entry is computed from its pair in the same order), so a kernel larger than memory can be written in
/// slices.
pub struct CnnKernel<'a, R: KernelScalar = f64> {
    plan: Plan,
    /// Set by [`CnnKernel::new_spatial`].
    spatial: SpatialOut,
    x1: MatRef<'a, f64>,
    x2: Option<MatRef<'a, f64>>,
    size: usize,
    /// Per input of x1 (and x2): variances at the activation inputs, and the self NNGP and NTK.
    s1: Vec<(Vars<R>, R, R)>,
    s2: Option<Vec<(Vars<R>, R, R)>>,
    /// Diagonal mode: the column-side inputs and their variances transposed (see `Plan::diag_row`).
    xt: Vec<R>,
    vt: Vec<Vec<R>>,
}

impl<'a, R: KernelScalar> CnnKernel<'a, R> {
    /// Checks the inputs (rows of `input.size()` finite values) and the architecture, and runs every input
    /// through the network with itself (the variances the nonlinearities need).
    pub fn new(
        arch: &Architecture,
        input: &Shape,
        x1: MatRef<'a, f64>,
        x2: Option<MatRef<'a, f64>>,
    ) -> Result<CnnKernel<'a, R>> {
        Self::with_output(arch, input, x1, x2, None)
    }

    /// [`CnnKernel::new`] for a network that may end on an image, whose covariances between output positions
    /// [`CnnKernel::spatial`] returns (`what`: all pairs of positions or each with itself).
    pub fn new_spatial(
        arch: &Architecture,
        input: &Shape,
        x1: MatRef<'a, f64>,
        x2: Option<MatRef<'a, f64>>,
        what: Spatial,
    ) -> Result<CnnKernel<'a, R>> {
        Self::with_output(arch, input, x1, x2, Some(what))
    }

    fn with_output(
        arch: &Architecture,
        input: &Shape,
        x1: MatRef<'a, f64>,
        x2: Option<MatRef<'a, f64>>,
        spatial: SpatialOut,
    ) -> Result<CnnKernel<'a, R>> {
        let size = input.size();
        for (m, what) in [(Some(x1), "x1"), (x2, "x2")] {
            if let Some(m) = m {
                if m.ncols() != size || m.nrows() == 0 {
                    return Err(Error::Shape(format!(
                        "{what} is {} x {} but inputs of shape {input} need {size} values per row",
                        m.nrows(),
                        m.ncols()
                    )));
                }
                for i in 0..m.nrows() {
                    for j in 0..size {
                        let v = m[(i, j)];
                        if !v.is_finite() {
                            return Err(Error::InvalidInput(format!("{what}[{i}, {j}] is {v}")));
                        }
                        if !R::of(v).wide().is_finite() {
                            return Err(Error::InvalidInput(format!(
                                "{what}[{i}, {j}] = {v:e} is beyond the range of f32: compute this kernel in f64"
                            )));
                        }
                    }
                }
            }
        }
        let plan = build(arch, input, spatial)?;
        let pmax = plan.graph.nodes.iter().map(|n| n.shape.positions()).max().unwrap_or(1);
        let n_all = x1.nrows() + x2.map_or(0, |m| m.nrows());
        crate::data::memory::check_alloc(
            n_all.saturating_mul(pmax).saturating_mul(std::mem::size_of::<R>() * plan.var_nodes.len().max(1)),
            "the inputs' per-position variances",
        )?;
        let mut me =
            CnnKernel { plan, spatial, x1, x2, size, s1: Vec::new(), s2: None, xt: Vec::new(), vt: Vec::new() };
        me.s1 = me.self_pass(x1);
        me.s2 = x2.map(|m| me.self_pass(m));
        // The vectorized diagonal rows serve one value per pair; a network that ends on an image goes pair by pair.
        if !me.plan.full && me.output_extents().is_empty() {
            let xr = x2.unwrap_or(x1);
            let n2 = xr.nrows();
            me.xt = vec![R::ZERO; size * n2];
            for j in 0..n2 {
                for f in 0..size {
                    me.xt[f * n2 + j] = R::of(xr[(j, f)]);
                }
            }
            let side = me.s2.as_ref().unwrap_or(&me.s1);
            me.vt = (0..me.plan.var_nodes.len())
                .map(|slot| {
                    let p = me.plan.positions(me.plan.var_nodes[slot]);
                    let mut t = vec![R::ZERO; p * n2];
                    for (j, (vars, _, _)) in side.iter().enumerate() {
                        for q in 0..p {
                            t[q * n2 + j] = vars[slot][q];
                        }
                    }
                    t
                })
                .collect();
        }
        Ok(me)
    }

    /// Row i of an input matrix, rounded to the kernel's precision.
    fn row(&self, m: MatRef<'_, f64>, i: usize) -> Vec<R> {
        (0..self.size).map(|j| R::of(m[(i, j)])).collect()
    }

    fn self_pass(&self, m: MatRef<'_, f64>) -> Vec<(Vars<R>, R, R)> {
        (0..m.nrows())
            .into_par_iter()
            .map(|i| {
                let r = self.row(m, i);
                let (c, v) = self.plan.pair(&r, &r, None, None, true);
                (v, c.k[0], c.t[0])
            })
            .collect()
    }

    /// Bytes needed for an output block of `rows` rows (the outputs plus a few P x P buffers per thread).
    pub fn bytes_for_rows(&self, rows: usize) -> usize {
        let n2 = self.x2.map_or(self.x1.nrows(), |m| m.nrows());
        let pmax = self.plan.graph.nodes.iter().map(|n| n.shape.positions()).max().unwrap_or(1);
        let per_pair = if self.plan.full { pmax.saturating_mul(pmax) } else { pmax };
        let b = std::mem::size_of::<R>();
        rows.saturating_mul(n2)
            .saturating_mul(2 * b)
            .saturating_add(rayon::current_num_threads().saturating_mul(per_pair).saturating_mul(16 * b))
    }

    /// The entry (i, j): the symmetric kernel takes each pair in one canonical order (larger index first).
    fn entry(&self, i: usize, j: usize) -> (R, R) {
        if self.x2.is_none() && i == j {
            return (self.s1[i].1, self.s1[i].2);
        }
        let c = self.pair_cov(i, j);
        (c.k[0], c.t[0])
    }

    /// The output node's covariances for the pair (i, j): the symmetric kernel takes each pair in one canonical
    /// order (larger index first), and an input with itself from its own diagonal.
    fn pair_cov(&self, i: usize, j: usize) -> Cov<R> {
        match self.x2 {
            None if i == j => {
                let r = self.row(self.x1, i);
                self.plan.pair(&r, &r, None, None, false).0
            }
            None => {
                let (a, b) = if i > j { (i, j) } else { (j, i) };
                let (ra, rb) = (self.row(self.x1, a), self.row(self.x1, b));
                self.plan.pair(&ra, &rb, Some(&self.s1[a].0), Some(&self.s1[b].0), false).0
            }
            Some(x2) => {
                let s2 = self.s2.as_ref().expect("set with x2");
                let (ra, rb) = (self.row(self.x1, i), self.row(x2, j));
                self.plan.pair(&ra, &rb, Some(&self.s1[i].0), Some(&s2[j].0), false).0
            }
        }
    }

    /// Row i against the columns `js` in diagonal mode (one vectorized pass), the symmetric kernel's own
    /// diagonal taken from the self pass.
    fn diag_entries(&self, i: usize, j0: usize, j1: usize) -> Vec<(R, R)> {
        let n2 = self.x2.map_or(self.x1.nrows(), |m| m.nrows());
        let a = self.row(self.x1, i);
        let mut out = self.plan.diag_row(&a, &self.s1[i].0, &self.xt, &self.vt, n2, j0, j1);
        if self.x2.is_none() && (j0..j1).contains(&i) {
            out[i - j0] = (self.s1[i].1, self.s1[i].2);
        }
        out
    }

    /// One output row: columns `0..n2` (or `0..=i` for the symmetric kernel's lower triangle with `lower`),
    /// each entry computed in its canonical pair order.
    fn row_entries(&self, i: usize, lower: bool) -> Vec<(R, R)> {
        let n2 = self.x2.map_or(self.x1.nrows(), |m| m.nrows());
        let end = if lower { i + 1 } else { n2 };
        if self.plan.full {
            return (0..end).map(|j| self.entry(i, j)).collect();
        }
        if self.x2.is_some() || lower {
            return self.diag_entries(i, 0, end);
        }
        // Symmetric, whole row: j <= i from this row, j > i as column i of row j (its canonical order).
        let mut out = self.diag_entries(i, 0, i + 1);
        for j in i + 1..n2 {
            out.push(self.diag_entries(j, i, i + 1)[0]);
        }
        out
    }

    /// Rows `r0..r1` of the kernel (all columns); `progress(done, total)` counts rows.
    pub fn rows(&self, r0: usize, r1: usize, progress: OnProgress) -> Result<Kernel<R>> {
        self.one_value_per_pair()?;
        let (n1, n2) = (self.x1.nrows(), self.x2.map_or(self.x1.nrows(), |m| m.nrows()));
        if r0 > r1 || r1 > n1 {
            return Err(Error::Shape(format!("rows {r0}..{r1} of a kernel with {n1} rows")));
        }
        crate::data::memory::check_alloc(
            self.bytes_for_rows(r1 - r0),
            &format!("the convolutional NNGP and NTK rows {r0}..{r1} ({} x {n2})", r1 - r0),
        )?;
        let done = std::sync::atomic::AtomicUsize::new(0);
        let out: Vec<Vec<(R, R)>> = (r0..r1)
            .into_par_iter()
            .map(|i| {
                let row = self.row_entries(i, false);
                progress(done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1, r1 - r0)?;
                Ok(row)
            })
            .collect::<Result<_>>()?;
        let nngp = Mat::from_fn(r1 - r0, n2, |i, j| out[i][j].0);
        let ntk = Mat::from_fn(r1 - r0, n2, |i, j| out[i][j].1);
        Ok(Kernel { nngp, ntk })
    }

    /// The output node's spatial extents (empty for a feature vector).
    pub fn output_extents(&self) -> &[usize] {
        &self.plan.graph.nodes[self.plan.graph.output()].shape.spatial
    }

    /// An error when the network ends on an image: its kernel comes from [`CnnKernel::spatial`].
    fn one_value_per_pair(&self) -> Result<()> {
        if self.output_extents().is_empty() {
            return Ok(());
        }
        Err(Error::Config("the network ends on an image: its covariances come from CnnKernel::spatial".into()))
    }

    /// The covariances between output positions of a network that ends on an image ([`CnnKernel::new_spatial`]),
    /// in neural-tangents' layout: N1 x N2 x H x H' x W x W' (each spatial axis of x then of x', `Spatial::Full`)
    /// or N1 x N2 x H x W (`Spatial::Diagonal`), row-major. The symmetric kernel computes each pair once, larger
    /// index first (as [`CnnKernel::full`]), and gives its mirror by swapping the two positions, so entry
    /// (i, j, .., a, b, ..) equals entry (j, i, .., b, a, ..) exactly. `progress(done, total)` counts rows of
    /// inputs. Values are not checked for finiteness: [`SpatialKernel::finite`] does that.
    pub fn spatial(&self, progress: OnProgress) -> Result<SpatialKernel<R>> {
        let what = self
            .spatial
            .ok_or_else(|| Error::Config("CnnKernel::spatial needs a kernel made by CnnKernel::new_spatial".into()))?;
        let ext = self.output_extents().to_vec();
        if ext.is_empty() {
            return Err(Error::Config(
                "the network ends on a feature vector: its kernel has one value per pair (CnnKernel::full)".into(),
            ));
        }
        let p: usize = ext.iter().product();
        let (n1, n2) = (self.x1.nrows(), self.x2.map_or(self.x1.nrows(), |m| m.nrows()));
        let per = if what == Spatial::Full { p.saturating_mul(p) } else { p };
        // The NNGP and NTK, one copy of them (Python's bytearrays), and a few P x P buffers per thread.
        let work = rayon::current_num_threads().saturating_mul(p.saturating_mul(p)).saturating_mul(16);
        crate::data::memory::check_alloc(
            n1.saturating_mul(n2)
                .saturating_mul(per)
                .saturating_mul(4)
                .saturating_add(work)
                .saturating_mul(std::mem::size_of::<R>()),
            &format!("the covariances between output positions ({n1} x {n2} pairs of {per} values)"),
        )?;
        // Where the value for positions (a of x, b of x') goes within a pair's block: axes interleaved.
        let place: Vec<usize> = match what {
            Spatial::Diagonal => (0..p).collect(),
            Spatial::Full => (0..p * p).map(|ab| interleaved(&ext, ab / p, ab % p)).collect(),
        };
        // One pair's block from its covariance (P x P, or the P diagonal values when the plan keeps only those).
        let block = |m: &[R], out: &mut [R]| match what {
            Spatial::Diagonal if m.len() == p * p => {
                for (a, o) in out.iter_mut().enumerate() {
                    *o = m[a * p + a];
                }
            }
            Spatial::Diagonal => out.copy_from_slice(m),
            Spatial::Full => {
                assert_eq!(m.len(), p * p, "full mode keeps every pair of positions");
                for (ab, &v) in m.iter().enumerate() {
                    out[place[ab]] = v;
                }
            }
        };
        let done = std::sync::atomic::AtomicUsize::new(0);
        progress(0, n1)?;
        let (mut nngp, mut ntk) = (vec![R::ZERO; n1 * n2 * per], vec![R::ZERO; n1 * n2 * per]);
        // Row i in place: its pairs (i, j), and for the symmetric kernel only j <= i (mirrored below).
        let row_len = (n2 * per).max(1);
        nngp.par_chunks_mut(row_len).zip(ntk.par_chunks_mut(row_len)).enumerate().try_for_each(|(i, (k, t))| {
            let end = if self.x2.is_none() { i + 1 } else { n2 };
            for j in 0..end {
                let c = self.pair_cov(i, j);
                for (m, out) in [(&c.k, &mut *k), (&c.t, &mut *t)] {
                    let out = &mut out[j * per..(j + 1) * per];
                    block(m, out);
                    if self.x2.is_none() && j == i && what == Spatial::Full {
                        // An input with itself: the upper triangle of positions mirrors the lower one, so every
                        // block of the symmetric kernel is exactly symmetric too.
                        for a in 0..p {
                            for b in a + 1..p {
                                out[place[a * p + b]] = out[place[b * p + a]];
                            }
                        }
                    }
                }
            }
            progress(done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1, n1)
        })?;
        if self.x2.is_none() {
            // The mirrors (j, i) of the pairs (i, j), i > j: the same block with the two inputs' positions swapped
            // (the entry at place[a p + b], positions (a, b), goes to place[b p + a]).
            let mut blk = vec![R::ZERO; per];
            for m in [&mut nngp, &mut ntk] {
                for i in 0..n1 {
                    for j in 0..i {
                        blk.copy_from_slice(&m[(i * n2 + j) * per..][..per]);
                        let out = &mut m[(j * n2 + i) * per..][..per];
                        match what {
                            Spatial::Diagonal => out.copy_from_slice(&blk),
                            Spatial::Full => {
                                for a in 0..p {
                                    for b in 0..p {
                                        out[place[b * p + a]] = blk[place[a * p + b]];
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        let mut shape = vec![n1, n2];
        for &e in &ext {
            shape.push(e);
            if what == Spatial::Full {
                shape.push(e);
            }
        }
        Ok(SpatialKernel { nngp, ntk, shape })
    }

    /// The whole kernel, each pair computed once (the symmetric case mirrors).
    pub fn full(&self, progress: OnProgress) -> Result<Kernel<R>> {
        self.one_value_per_pair()?;
        let n1 = self.x1.nrows();
        if self.x2.is_some() {
            return self.rows(0, n1, progress);
        }
        crate::data::memory::check_alloc(
            self.bytes_for_rows(n1),
            &format!(
                "the convolutional NNGP and NTK ({n1} x {n1}; computing them in slices of rows and writing each out \
                 needs less: the CLI's --batch, or from Python kernel_fn(x1[i:j], x1) block by block)"
            ),
        )?;
        let done = std::sync::atomic::AtomicUsize::new(0);
        progress(0, n1)?;
        let out: Vec<Vec<(R, R)>> = (0..n1)
            .into_par_iter()
            .map(|i| {
                let row = self.row_entries(i, true);
                progress(done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1, n1)?;
                Ok(row)
            })
            .collect::<Result<_>>()?;
        let mut nngp = Mat::from_fn(n1, n1, |_, _| R::ZERO);
        let mut ntk = Mat::from_fn(n1, n1, |_, _| R::ZERO);
        for (i, row) in out.iter().enumerate() {
            for (j, &(k, t)) in row.iter().enumerate() {
                nngp[(i, j)] = k;
                ntk[(i, j)] = t;
                nngp[(j, i)] = k;
                ntk[(j, i)] = t;
            }
        }
        Ok(Kernel { nngp, ntk })
    }
}

/// The NNGP and NTK between the output positions of a network that ends on an image ([`CnnKernel::spatial`]):
/// values row-major in the order of `shape`.
#[derive(Debug, Clone)]
pub struct SpatialKernel<R = f64> {
    pub nngp: Vec<R>,
    pub ntk: Vec<R>,
    /// N1, N2, then each spatial axis once (`Spatial::Diagonal`) or twice in a row (x's, then x''s: `Full`).
    pub shape: Vec<usize>,
}

impl<R: KernelScalar> SpatialKernel<R> {
    /// Itself, or an error naming the first value of the NNGP or the NTK that is not finite.
    pub fn finite(self) -> Result<Self> {
        for (m, what) in [(&self.nngp, "NNGP"), (&self.ntk, "NTK")] {
            if let Some(at) = m.iter().position(|v| !v.wide().is_finite()) {
                return Err(Error::Numerical(format!(
                    "the {what} between output positions is {} at value {at} (C order, shape {:?})",
                    m[at].wide(),
                    self.shape
                )));
            }
        }
        Ok(self)
    }
}

/// The flat index of positions a (of x) and b (of x') in a block of extents (e_1, e_1, e_2, e_2, ..): each axis's
/// coordinate of a, then of b, row-major.
fn interleaved(ext: &[usize], a: usize, b: usize) -> usize {
    let (mut ra, mut rb, mut idx, mut stride) = (a, b, 0, 1);
    for &e in ext.iter().rev() {
        idx += (rb % e) * stride;
        stride *= e;
        idx += (ra % e) * stride;
        stride *= e;
        ra /= e;
        rb /= e;
    }
    idx
}

/// Infinite-width NNGP and NTK of a convolutional `arch` between the rows of `x1` (N1 x size of `input`) and
/// `x2` (or `x1` with itself, symmetric), in f64. `progress(done, total)` counts rows of the output.
pub fn cnn_kernel(
    arch: &Architecture,
    input: &Shape,
    x1: MatRef<'_, f64>,
    x2: Option<MatRef<'_, f64>>,
    progress: OnProgress,
) -> Result<Kernel<f64>> {
    cnn_kernel_in::<f64>(arch, input, x1, x2, progress)
}

/// [`cnn_kernel`] computed in the lanes of `R` (f32: inputs rounded to f32, every covariance and dual in f32,
/// the pooling and flatten means accumulated in f64; about 1e-6 relative to the f64 kernel, see the tests).
pub fn cnn_kernel_in<R: KernelScalar>(
    arch: &Architecture,
    input: &Shape,
    x1: MatRef<'_, f64>,
    x2: Option<MatRef<'_, f64>>,
    progress: OnProgress,
) -> Result<Kernel<R>> {
    // An entry that overflowed is an error (a scan of N^2 entries against the kernel's O(N^2 P^2)); the CLI,
    // which checks as it writes, calls CnnKernel itself.
    CnnKernel::<R>::new(arch, input, x1, x2)?.full(progress)?.finite(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::synthetic::gaussian;

    #[test]
    fn a_conv_net_on_one_pixel_images_is_the_dense_net() {
        // On 1 x 1 images a 1x1 convolution with C_in channels is a dense layer on C_in features, and
        // flatten / global_avg_pool of one position are the identity.
        let x = gaussian(5, 3, 7);
        for (conv, dense, param) in [
            (
                "conv(8,1x1,w_std=1.3,b_std=0.2),relu,conv(8,1x1,w_std=1.1),erf,flatten,dense(1,w_std=1.2,b_std=0.1)",
                "dense(8,w_std=1.3,b_std=0.2),relu,dense(8,w_std=1.1),erf,dense(1,w_std=1.2,b_std=0.1)",
                Parameterization::Ntk,
            ),
            (
                "conv(8,1x1,w_std=1.3,b_std=0.2),relu,global_avg_pool,dense(1,w_std=1.2,b_std=0.1)",
                "dense(8,w_std=1.3,b_std=0.2),relu,dense(1,w_std=1.2,b_std=0.1)",
                Parameterization::Standard,
            ),
        ] {
            let a = Architecture::parse(conv, param).unwrap();
            let b = Architecture::parse(dense, param).unwrap();
            let kc = cnn_kernel(&a, &Shape::image(&[1, 1], 3), x.as_ref(), None, &crate::runs::no_progress).unwrap();
            let kd = crate::kernel::kernel(&b, x.as_ref(), None).unwrap();
            for i in 0..5 {
                for j in 0..5 {
                    assert!((kc.nngp[(i, j)] - kd.nngp[(i, j)]).abs() < 1e-12 * kd.nngp[(i, i)], "{conv}");
                    assert!((kc.ntk[(i, j)] - kd.ntk[(i, j)]).abs() < 1e-12 * kd.ntk[(i, i)], "{conv}");
                }
            }
        }
    }

    #[test]
    fn row_blocks_are_bit_identical_to_the_whole_kernel() {
        row_blocks_bit_identical::<f64>(1e-14);
        // f32: the vectorized duals against the scalar ones evaluated in f64, through two activations.
        row_blocks_bit_identical::<f32>(1e-5);
    }

    fn row_blocks_bit_identical<R: KernelScalar + PartialEq + std::fmt::Debug>(tol: f64) {
        let s = Shape::image(&[5, 4], 2);
        let x = gaussian(7, 40, 3);
        let arch = Architecture::parse(
            "conv(3,3x3,padding=same,w_std=1.3,b_std=0.2),relu,avg_pool(2x2),conv(2,2x2,padding=circular),relu,global_avg_pool,dense(1)",
            Parameterization::Ntk,
        )
        .unwrap();
        let job = CnnKernel::<R>::new(&arch, &s, x.as_ref(), None).unwrap();
        let whole = job.full(&crate::runs::no_progress).unwrap();
        for (r0, r1) in [(0, 3), (3, 6), (6, 7)] {
            let b = job.rows(r0, r1, &crate::runs::no_progress).unwrap();
            for i in r0..r1 {
                for j in 0..7 {
                    assert_eq!(b.nngp[(i - r0, j)], whole.nngp[(i, j)]);
                    assert_eq!(b.ntk[(i - r0, j)], whole.ntk[(i, j)]);
                }
            }
        }
        assert!(job.rows(6, 8, &crate::runs::no_progress).is_err());
        // The diagonal mode (no pooling) vectorizes over columns: blocks must still give the same bits.
        let arch = Architecture::parse(
            "conv(3,3x3,padding=same,w_std=1.3,b_std=0.2),relu,conv(2,2x2,padding=circular),erf,flatten,dense(1)",
            Parameterization::Ntk,
        )
        .unwrap();
        let job = CnnKernel::<R>::new(&arch, &s, x.as_ref(), None).unwrap();
        let whole = job.full(&crate::runs::no_progress).unwrap();
        let b = job.rows(2, 5, &crate::runs::no_progress).unwrap();
        for i in 2..5 {
            for j in 0..7 {
                assert_eq!(b.ntk[(i - 2, j)], whole.ntk[(i, j)], "({i}, {j})");
            }
        }
        // And the vectorized rows agree with the pair-by-pair recursion (different operation order: a few
        // roundings of R).
        let (xi, xj) = (job.row(x.as_ref(), 4), job.row(x.as_ref(), 1));
        let (c, _) = job.plan.pair(&xi, &xj, Some(&job.s1[4].0), Some(&job.s1[1].0), false);
        let (k, t) = (c.k[0].wide(), c.t[0].wide());
        assert!((k - whole.nngp[(4, 1)].wide()).abs() < tol * k.abs());
        assert!((t - whole.ntk[(4, 1)].wide()).abs() < tol * t.abs());
    }

    /// The window sum of a full covariance straight from the d-dimensional window's taps (the definition).
    fn direct_window_sum(k: &[f64], win: &Window, n_in: usize) -> Vec<f64> {
        let n_out: usize = win.out.iter().product();
        let mut out = vec![0.0; n_out * n_out];
        for a in 0..n_out {
            for b in 0..n_out {
                for j in 0..win.size {
                    if let (Some(p), Some(q)) = (win.taps[a * win.size + j], win.taps[b * win.size + j]) {
                        out[a * n_out + b] += k[p * n_in + q];
                    }
                }
            }
        }
        out
    }

    #[test]
    fn separable_axis_passes_equal_the_window_sum() {
        use crate::kernel::spatial::Padding;
        type Case<'a> = (&'a [usize], &'a [usize], &'a [usize], Padding);
        let cases: [Case; 10] = [
            (&[6, 5], &[3, 3], &[1, 1], Padding::Same),
            (&[6, 5], &[3, 2], &[2, 1], Padding::Valid),
            (&[5, 7], &[3, 3], &[2, 3], Padding::Circular),
            (&[4, 4], &[1, 1], &[1, 1], Padding::Same),
            (&[4, 6], &[1, 3], &[1, 1], Padding::Same),
            (&[9], &[4], &[2], Padding::Same),
            (&[3, 4, 3], &[2, 3, 2], &[1, 2, 1], Padding::Circular),
            (&[5, 4], &[3, 1], &[1, 1], Padding::Same),
            (&[4, 5, 3], &[2, 2, 3], &[2, 1, 1], Padding::Valid),
            (&[3, 2], &[4, 3], &[1, 1], Padding::Circular),
        ];
        for (n, kw, st, pad) in cases {
            let win = Window::new(n, kw, st, pad).unwrap();
            let p: usize = n.iter().product();
            let k: Vec<f64> =
                gaussian(p, p, 11).col_iter().flat_map(|c| c.iter().copied().collect::<Vec<_>>()).collect();
            let want = direct_window_sum(&k, &win, p);
            let passes = axis_passes(n, kw, st, pad).unwrap();
            let mut got = (k.clone(), k.clone());
            for ps in &passes {
                assert_eq!(ps.n_in, got.0.len().isqrt(), "{n:?} {kw:?}");
                got = conv_full(&got.0, &got.1, &ps.lists, ps.n_in, ps.n_out);
            }
            assert_eq!(got.0.len(), want.len(), "{n:?} {kw:?} {st:?}");
            let scale = want.iter().fold(0.0f64, |a, v| a.max(v.abs()));
            for (g, w) in got.0.iter().zip(&want) {
                assert!((g - w).abs() < 1e-13 * scale, "{n:?} {kw:?} {st:?} {pad:?}: {g} vs {w}");
            }
        }
    }

    #[test]
    fn f32_kernels_match_f64_to_single_precision() {
        // The f32 path runs the same recursion on f32 lanes: its error is a few ulps of f32 per operation,
        // growing at most like the depth and the log of the reduction lengths; 2e-5 relative to the largest
        // entry leaves a factor ~100 over f32's 1.2e-7.
        let s = Shape::image(&[6, 5], 3);
        let x = gaussian(6, 90, 5);
        for (a, p) in [
            (
                "conv(4,3x3,padding=same,w_std=1.4,b_std=0.1),relu,conv(4,3x3,padding=same,w_std=1.4,b_std=0.1),relu,global_avg_pool,dense(1,w_std=1.2,b_std=0.1)",
                Parameterization::Ntk,
            ),
            (
                "conv(4,3x3,padding=same,w_std=1.4,b_std=0.1),erf,conv(4,2x2,stride=2,padding=valid),gelu,flatten,dense(1)",
                Parameterization::Standard,
            ),
            (
                "conv(4,3x2,padding=circular,w_std=1.3),tanh,avg_pool(2x2,stride=1),conv(3,2x2),relu,global_avg_pool,dense(2,b_std=0.3)",
                Parameterization::Ntk,
            ),
        ] {
            let arch = Architecture::parse(a, p).unwrap();
            let k64 = cnn_kernel(&arch, &s, x.as_ref(), None, &crate::runs::no_progress).unwrap();
            let k32 = cnn_kernel_in::<f32>(&arch, &s, x.as_ref(), Some(x.as_ref().subrows(1, 4)), &crate::runs::no_progress).unwrap();
            let k64x = cnn_kernel(&arch, &s, x.as_ref(), Some(x.as_ref().subrows(1, 4)), &crate::runs::no_progress).unwrap();
            for (m32, m64, what) in [(&k32.nngp, &k64x.nngp, "nngp"), (&k32.ntk, &k64x.ntk, "ntk")] {
                let scale = m64.norm_max();
                assert!(scale > 0.1, "{a}: degenerate");
                for i in 0..6 {
                    for j in 0..4 {
                        let d = (m32[(i, j)] as f64 - m64[(i, j)]).abs();
                        assert!(d < 2e-5 * scale, "{a} {what} ({i}, {j}): {} vs {}", m32[(i, j)], m64[(i, j)]);
                    }
                }
            }
            // The cross kernel's columns are rows 1..5 of the symmetric one.
            assert!((k64x.ntk.as_ref() - k64.ntk.as_ref().subcols(1, 4)).norm_max() < 1e-13 * k64.ntk.norm_max());
        }
    }

    #[test]
    fn covariances_between_output_positions_pool_and_flatten_to_the_kernel() {
        // Independent routes: a network that ends on an image, then global_avg_pool, has the mean over all pairs
        // of positions as its kernel; then flatten, the mean over the diagonal (neural-tangents' rules, computed
        // by the one-value-per-pair path). The layout: N1 x N2 x H x H' x W x W' (checked entry by entry against
        // neural-tangents by the Python tests), mirrored pairs exact.
        assert_eq!(interleaved(&[3, 4], 4 + 2, 2 * 4 + 3), ((3 + 2) * 4 + 2) * 4 + 3);
        let s = Shape::image(&[3, 4], 2);
        let x = gaussian(4, s.size(), 13);
        for (a, p) in [
            (
                "conv(4,3x3,padding=same,w_std=1.3,b_std=0.2),relu,conv(3,3x3,padding=same,w_std=1.1,b_std=0.1)",
                Parameterization::Ntk,
            ),
            (
                "conv(4,3x3,padding=same,w_std=1.3,b_std=0.2),erf,conv(3,2x2,padding=valid,w_std=1.1)",
                Parameterization::Standard,
            ),
            (
                "conv(4,3x3,padding=same,w_std=1.4),relu,avg_pool(2x2,stride=1),conv(3,2x2,padding=same,b_std=0.3)",
                Parameterization::Ntk,
            ),
        ] {
            let arch = Architecture::parse(a, p).unwrap();
            let with = |tail: &str| {
                let arch = Architecture::parse(&format!("{a},{tail}"), p).unwrap();
                CnnKernel::<f64>::new(&arch, &s, x.as_ref(), None).unwrap().full(&crate::runs::no_progress).unwrap()
            };
            let (gap, flat) = (with("global_avg_pool"), with("flatten"));
            let sp = |x2: Option<MatRef<'_, f64>>, what| {
                CnnKernel::<f64>::new_spatial(&arch, &s, x.as_ref(), x2, what)
                    .unwrap()
                    .spatial(&crate::runs::no_progress)
                    .unwrap()
            };
            let (full, diag) = (sp(None, Spatial::Full), sp(None, Spatial::Diagonal));
            let ext: Vec<usize> = full.shape[2..].iter().step_by(2).copied().collect();
            let q: usize = ext.iter().product();
            assert_eq!(full.shape, [4, 4, ext[0], ext[0], ext[1], ext[1]], "{a}");
            assert_eq!(diag.shape, [4, 4, ext[0], ext[1]], "{a}");
            let scale = gap.ntk.norm_max().max(flat.ntk.norm_max());
            for i in 0..4 {
                for j in 0..4 {
                    let fb = |m: &Vec<f64>| m[(i * 4 + j) * q * q..(i * 4 + j + 1) * q * q].to_vec();
                    let db = |m: &Vec<f64>| m[(i * 4 + j) * q..(i * 4 + j + 1) * q].to_vec();
                    for (f, d, g, fl, what) in [
                        (fb(&full.nngp), db(&diag.nngp), &gap.nngp, &flat.nngp, "nngp"),
                        (fb(&full.ntk), db(&diag.ntk), &gap.ntk, &flat.ntk, "ntk"),
                    ] {
                        let mean = f.iter().sum::<f64>() / (q * q) as f64;
                        assert!((mean - g[(i, j)]).abs() < 1e-13 * scale, "{a} {what} ({i}, {j}): pooled");
                        let on_diag: Vec<f64> = (0..q).map(|b| f[interleaved(&ext, b, b)]).collect();
                        for (u, v) in on_diag.iter().zip(&d) {
                            assert!((u - v).abs() < 1e-13 * scale, "{a} {what} ({i}, {j}): diagonal mode");
                        }
                        let dmean = d.iter().sum::<f64>() / q as f64;
                        assert!((dmean - fl[(i, j)]).abs() < 1e-13 * scale, "{a} {what} ({i}, {j}): flattened");
                        // The mirror pair, positions swapped, bit for bit.
                        let m = if what == "nngp" { &full.nngp } else { &full.ntk };
                        for ab in 0..q * q {
                            let (pa, pb) = (ab / q, ab % q);
                            let here = m[(i * 4 + j) * q * q + interleaved(&ext, pa, pb)];
                            let there = m[(j * 4 + i) * q * q + interleaved(&ext, pb, pa)];
                            assert_eq!(here, there, "{a} {what} ({i}, {j}) positions ({pa}, {pb})");
                        }
                    }
                }
            }
            // A cross kernel against rows 1..3 gives the same values (each pair in its own order: roundings).
            let cross = sp(Some(x.as_ref().subrows(1, 2)), Spatial::Full);
            assert_eq!(cross.shape[..2], [4, 2]);
            for i in 0..4 {
                for j in 0..2 {
                    for c in 0..q * q {
                        let (u, v) = (cross.ntk[(i * 2 + j) * q * q + c], full.ntk[(i * 4 + j + 1) * q * q + c]);
                        assert!((u - v).abs() < 1e-13 * scale, "{a} cross ({i}, {j})");
                    }
                }
            }
            // Asked for one value per pair, such a network is still refused, by name.
            let e = CnnKernel::<f64>::new(&arch, &s, x.as_ref(), None).err().expect("refused").to_string();
            assert!(e.contains("end it with flatten or global_avg_pool"), "{e}");
        }
        // The layout against the definition, entry by entry: a 1x1 convolution without bias on images of 3 x 4
        // has K[i, j, h, h', w, w'] = 1.3^2 (1/C) sum_c x_i[h, w, c] x'_j[h', w', c] (neural-tangents' index
        // order, written out here rather than through `interleaved`), and the diagonal mode K[i, j, h, w] its
        // h = h', w = w' entries.
        let arch = Architecture::parse("conv(3,1x1,w_std=1.3)", Parameterization::Ntk).unwrap();
        let x2 = gaussian(2, s.size(), 14);
        for what in [Spatial::Full, Spatial::Diagonal] {
            let k = CnnKernel::<f64>::new_spatial(&arch, &s, x.as_ref(), Some(x2.as_ref()), what)
                .unwrap()
                .spatial(&crate::runs::no_progress)
                .unwrap();
            let (hh, ww) = (3, 4);
            for i in 0..4 {
                for j in 0..2 {
                    for (ha, wa, hb, wb) in (0..hh * ww * hh * ww).map(|r| (r / 48, r / 12 % 4, r / 4 % 3, r % 4)) {
                        let want = 1.69 / 2.0
                            * (0..2)
                                .map(|ch| x[(i, (ha * ww + wa) * 2 + ch)] * x2[(j, (hb * ww + wb) * 2 + ch)])
                                .sum::<f64>();
                        let got = match what {
                            Spatial::Full => k.nngp[(((i * 2 + j) * hh + ha) * hh + hb) * ww * ww + wa * ww + wb],
                            Spatial::Diagonal if (ha, wa) == (hb, wb) => k.nngp[(i * 2 + j) * hh * ww + ha * ww + wa],
                            Spatial::Diagonal => continue,
                        };
                        assert!((got - want).abs() < 1e-14, "{what:?} ({i}, {j}) ({ha}, {wa}) ({hb}, {wb})");
                    }
                }
            }
        }
        // A network that ends on features has no spatial covariances.
        let arch = Architecture::parse("conv(3,3x3),relu,flatten,dense(1)", Parameterization::Ntk).unwrap();
        let job = CnnKernel::<f64>::new_spatial(&arch, &s, x.as_ref(), None, Spatial::Full).unwrap();
        assert!(job.spatial(&crate::runs::no_progress).unwrap_err().to_string().contains("one value per pair"));
    }

    #[test]
    fn identical_inputs_in_a_cross_kernel_match_the_diagonal() {
        // An activation after flatten and dense compares the cross pair's covariance with the self-variances
        // from the pair recursion: both paths must sum the flatten mean identically, or identical inputs miss
        // the exact scalar dual and lose about half the digits (theta = sqrt(eps)).
        let s = Shape::image(&[5, 4], 2);
        let x = gaussian(4, 40, 9);
        let arch = Architecture::parse(
            "conv(3,3x3,padding=same,w_std=1.4,b_std=0.1),relu,conv(3,3x3,padding=same,w_std=1.3),flatten,\
             dense(3,w_std=1.2,b_std=0.2),relu,dense(1)",
            Parameterization::Ntk,
        )
        .unwrap();
        fn check<R: KernelScalar>(arch: &Architecture, s: &Shape, x: MatRef<'_, f64>, tol: f64) {
            let sym = cnn_kernel_in::<R>(arch, s, x, None, &crate::runs::no_progress).unwrap();
            let cross = cnn_kernel_in::<R>(arch, s, x, Some(x.subrows(1, 2)), &crate::runs::no_progress).unwrap();
            for (a, b) in [(1, 0), (2, 1)] {
                for (m, c) in [(&sym.nngp, &cross.nngp), (&sym.ntk, &cross.ntk)] {
                    let (want, got) = (m[(a, a)].wide(), c[(a, b)].wide());
                    assert!((got - want).abs() <= tol * want.abs(), "({a}, {b}): {got} vs {want}");
                }
            }
        }
        check::<f64>(&arch, &s, x.as_ref(), 1e-13);
        // Inputs that f32 cannot hold are refused by name, not turned into infinities.
        let mut big = x.clone();
        big[(2, 7)] = 1e39;
        let e = CnnKernel::<f32>::new(&arch, &s, big.as_ref(), None).err().expect("refused").to_string();
        assert!(e.contains("x1[2, 7]") && e.contains("range of f32"), "{e}");
        assert!(CnnKernel::<f64>::new(&arch, &s, big.as_ref(), None).is_ok());
        check::<f32>(&arch, &s, x.as_ref(), 4.0 * f32::EPSILON as f64);
    }

    #[test]
    fn dense_on_images_is_a_one_by_one_convolution() {
        // neural-tangents' Dense maps the channel axis at every position: the same kernels (bit for bit, the same
        // rules in the same order) and the same finite network (the same draws) as conv(n, 1x1).
        let s = Shape::image(&[4, 3], 2);
        let x = gaussian(3, s.size(), 4);
        let with = |layer: &str| {
            let a = format!("conv(3,3x3,padding=same,b_std=0.2),relu,{layer},erf,global_avg_pool,dense(1)");
            Architecture::parse(&a, Parameterization::Standard).unwrap()
        };
        let (dense, conv) = (with("dense(2,w_std=1.3,b_std=0.1)"), with("conv(2,1x1,w_std=1.3,b_std=0.1)"));
        let kd = cnn_kernel(&dense, &s, x.as_ref(), None, &crate::runs::no_progress).unwrap();
        let kc = cnn_kernel(&conv, &s, x.as_ref(), None, &crate::runs::no_progress).unwrap();
        assert!(kd.nngp == kc.nngp && kd.ntk == kc.ntk);
        let f = |a: &Architecture| crate::net::Mlp::init_for(a, &s, 1.0, 9).unwrap().forward(x.as_ref()).unwrap();
        assert!(f(&dense) == f(&conv));
    }

    #[test]
    fn impossible_networks_are_named() {
        let s = Shape::image(&[4, 4], 2);
        let x = gaussian(2, 32, 1);
        let err = |a: &str| {
            let arch = Architecture::parse(a, Parameterization::Ntk).unwrap();
            cnn_kernel(&arch, &s, x.as_ref(), None, &crate::runs::no_progress).unwrap_err().to_string()
        };
        assert!(err("conv(3,3x3),relu").contains("end it with flatten or global_avg_pool"));
        // Dense on positions x channels is a 1 x 1 convolution: the output is still spatial.
        let e = err("conv(3,3x3),relu,dense(1)");
        assert!(e.contains("end it with flatten or global_avg_pool"), "{e}");
        let e = err("node(a,conv(3,3x3,padding=same),input),node(r,relu,a),node(s,sum,r,a),node(g,global_avg_pool,s),\
                     node(o,dense(1),g)");
        assert!(e.contains("sums `r`") && e.contains("not Gaussian"), "{e}");
        assert!(err("conv(3,5x5,padding=valid),flatten,dense(1)").contains("does not fit"));
        assert!(err("conv(3,3x3),relu,relu,flatten,dense(1)").contains("not Gaussian"));
        assert!(err("conv(3,3x3),flatten,relu,dense(1)").contains("not Gaussian"));
        let arch = Architecture::parse("conv(3,3x3),flatten,dense(1)", Parameterization::Ntk).unwrap();
        let bad = gaussian(2, 31, 1);
        assert!(cnn_kernel(&arch, &s, bad.as_ref(), None, &crate::runs::no_progress)
            .unwrap_err()
            .to_string()
            .contains("32 values"));
    }
}
