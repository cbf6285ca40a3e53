//! Reverse mode over the graph: vector-Jacobian products J^T U and loss gradients, two GEMMs per Dense node.
//!
//! Cotangents Gamma_v = dL/dH_v flow from Gamma_out = alpha U back through the nodes in reverse topological
//! order; a node's cotangent is complete once all its readers are done. Per node type:
//! * Dense (input u): Delta = Gamma_v, dW = w_mult Delta^T H_u, db = b_mult Delta^T 1, Gamma_u += w_mult Delta W.
//! * Activation: Gamma_u += Gamma_v ⊙ phi'(Z).
//! * Sum: Gamma_u += Gamma_v for every input; Concat: each input gets its block of columns.
//! * Conv, avg_pool, global_avg_pool, flatten: `layers::conv` (transposed convolution, pooling transposes;
//!   flatten is the identity on the N x (P C) layout).
//!
//! The same pass runs on stacks of b cotangents at once ((b N) x width, block a = rows a N .. (a+1) N), which
//! is how the empirical NTK carries one cotangent per output.

use faer::{Mat, MatRef};

use super::network::Network;
use super::ops::{cast, for_each_col, Float, Pool};
use super::tape::{Caches, Tape};
use crate::kernel::Op;
use crate::layers;
use crate::train::loss::Loss;
use crate::{Error, Result};

/// Reusable buffers for repeated passes at the same shapes (training loops): after the first call the
/// forward and backward passes take every large matrix from here instead of allocating.
#[derive(Debug)]
pub struct Workspace<T: Float = f64> {
    pub(crate) pool: Pool<T>,
}

impl<T: Float> Default for Workspace<T> {
    fn default() -> Self {
        Workspace { pool: Pool::default() }
    }
}

/// What an R-op pass needs from the backward pass of the loss gradient, per node.
#[derive(Debug, Clone)]
pub(crate) struct Backprop<T: Float = f64> {
    /// Dense nodes: Delta_v = dL/dZ_v (N x n_out). Activation nodes with curvature: Gamma_v ⊙ phi''(Z).
    /// Other nodes: None.
    pub cot: Vec<Option<Mat<T>>>,
}

/// acc[u] += m (moving m in when acc[u] is empty).
pub(crate) fn accumulate<T: Float>(acc: &mut [Option<Mat<T>>], u: usize, m: Mat<T>, pool: &mut Pool<T>) {
    match &mut acc[u] {
        None => acc[u] = Some(m),
        Some(a) => {
            for_each_col(a, |j, c| {
                for (o, &s) in c.iter_mut().zip(m.col_as_slice(j)) {
                    *o += s;
                }
            });
            pool.give(m);
        }
    }
}

/// The loss at outputs F (computed in f64 whatever T is): its value and dL/dF in T, after checking the targets.
pub(crate) fn loss_parts<T: Float>(f: &Mat<T>, y: MatRef<'_, f64>, loss: Loss) -> Result<(f64, Mat<T>)> {
    let f64_out: Mat<f64> = cast(f.as_ref());
    // Overflowing outputs are the network's fault, not the targets': say so before the targets are checked.
    if let Some((i, j)) = (0..f64_out.ncols())
        .flat_map(|j| (0..f64_out.nrows()).map(move |i| (i, j)))
        .find(|&(i, j)| !f64_out[(i, j)].is_finite())
    {
        return Err(Error::Numerical(format!(
            "the network's output is not finite ({}) at example {i}, output {j}: the model overflows, as after a \
             diverged run, so it has no loss, gradient or Hessian",
            f64_out[(i, j)]
        )));
    }
    loss.check(f64_out.as_ref(), y)?;
    let value = loss.value_unchecked(f64_out.as_ref(), y);
    let gf = loss.gradient_unchecked(f64_out.as_ref(), y);
    Ok((value, cast(gf.as_ref())))
}

impl<T: Float> Network<T> {
    /// Checks a cotangent U against a tape: N x k and finite.
    pub(crate) fn check_cotangent(&self, tape: &Tape<T>, u: MatRef<'_, T>, what: &str) -> Result<()> {
        let (n, k) = (tape.batch_size(), self.output_dim());
        if u.nrows() != n || u.ncols() != k {
            return Err(Error::Shape(format!("{what} must be N x k = {n} x {k}, got {} x {}", u.nrows(), u.ncols())));
        }
        for j in 0..k {
            for i in 0..n {
                if !u[(i, j)].wide().is_finite() {
                    return Err(Error::InvalidInput(format!("{what} has a non-finite value at row {i}, column {j}")));
                }
            }
        }
        Ok(())
    }

    /// The reverse pass from the output cotangent stack `g_out` ((b N) x k, already scaled by alpha): calls
    /// `visit(l, Delta_l)` at every Dense and Conv node l (parameter order, last first) with its pre-activation
    /// cotangent ((b N) x n_out). With `keep` (b = 1 only) returns the caches an R-op pass needs.
    pub(crate) fn reverse(
        &self,
        tape: &Tape<T>,
        g_out: Mat<T>,
        keep: bool,
        pool: &mut Pool<T>,
        mut visit: impl FnMut(usize, &Mat<T>, &mut Pool<T>),
    ) -> Option<Backprop<T>> {
        let g = &self.graph;
        let nn = g.nodes.len();
        let mut acc: Vec<Option<Mat<T>>> = vec![None; nn];
        let mut kept: Vec<Option<Mat<T>>> = if keep { vec![None; nn] } else { Vec::new() };
        // Activation nodes whose cotangent a convolution already multiplied by their slope.
        let mut scaled = vec![false; nn];
        acc[g.output()] = Some(g_out);
        for v in (1..nn).rev() {
            let Some(mut gv) = acc[v].take() else { continue };
            let node = &g.nodes[v];
            match &node.op {
                Op::Input => unreachable!("node 0 is the only input"),
                Op::AvgPool { .. } | Op::GlobalAvgPool | Op::Flatten => {
                    let u = node.inputs[0];
                    if u != 0 {
                        accumulate(&mut acc, u, layers::conv::linear_transpose(self, v, gv, pool), pool);
                    } else {
                        pool.give(gv);
                    }
                }
                Op::Dense { .. } | Op::Conv { .. } => {
                    let l = self.dense_of[v].expect("parameter node");
                    visit(l, &gv, pool);
                    let u = node.inputs[0];
                    if u != 0 {
                        let next = if self.dense[l].filter.is_some() {
                            match self.slope_before(u, v, tape, keep, gv.nrows()) {
                                Some(s) => {
                                    scaled[u] = true;
                                    layers::conv::input_cotangent_node_scaled(self, l, &gv, s, pool)
                                }
                                None => layers::conv::input_cotangent_node(self, l, &gv, pool),
                            }
                        } else {
                            layers::dense::input_cotangent(self, l, &gv, pool)
                        };
                        accumulate(&mut acc, u, next, pool);
                    }
                    if keep {
                        kept[v] = Some(gv);
                    } else {
                        pool.give(gv);
                    }
                }
                Op::Activation(_) => {
                    let gc = if scaled[v] {
                        None
                    } else {
                        layers::activation::backward(&mut gv, tape.slope[v].as_ref(), tape.curvature[v].as_ref(), keep)
                    };
                    if keep {
                        kept[v] = gc;
                    }
                    let u = node.inputs[0];
                    if u != 0 {
                        accumulate(&mut acc, u, gv, pool);
                    } else {
                        pool.give(gv);
                    }
                }
                Op::Sum | Op::Concat => layers::fan_in::backward(self, v, gv, &mut acc, pool),
            }
        }
        keep.then_some(Backprop { cot: kept })
    }

    /// The slope of activation node u that Conv node v's input cotangent pass multiplies in its own stores
    /// (`conv::input_cotangent_node_scaled`): when u is an activation node with a slope whose sole reader is v
    /// (so that this is the whole of u's cotangent), the cotangents are one block (`rows`, the slope's rows) and
    /// no R-op caches are kept (they need the cotangent before the product).
    fn slope_before<'t>(&self, u: usize, v: usize, tape: &'t Tape<T>, keep: bool, rows: usize) -> Option<&'t Mat<T>> {
        #[cfg(test)]
        if super::tape::FUSION_OFF.load(std::sync::atomic::Ordering::Relaxed) {
            return None;
        }
        let s = tape.slope[u].as_ref()?;
        let l = self.dense_of[v]?;
        let ok = !keep
            && matches!(self.graph.nodes[u].op, Op::Activation(_))
            && s.nrows() == rows
            && self.sole_reader(u) == Some(v)
            && layers::conv::fuses_epilogue(self, l, true);
        ok.then_some(s)
    }

    /// g = J^T U written into `g` (length P, [`Network::params`] order); with `keep`, also the per-node caches
    /// an R-op pass needs. Shapes are the caller's responsibility.
    pub(crate) fn backprop_into(
        &self,
        tape: &Tape<T>,
        u: MatRef<'_, T>,
        g: &mut [T],
        keep: bool,
        pool: &mut Pool<T>,
    ) -> Option<Backprop<T>> {
        let n = tape.batch_size();
        let mut gamma = pool.take(n, u.ncols());
        let alpha = T::of(self.alpha);
        for_each_col(&mut gamma, |j, o| {
            for (i, o) in o.iter_mut().enumerate() {
                *o = alpha * u[(i, j)];
            }
        });
        self.reverse(tape, gamma, keep, pool, |l, delta, pool| {
            let h = tape.values[self.graph.nodes[self.dense[l].node].inputs[0]].as_ref();
            if self.dense[l].filter.is_some() {
                layers::conv::param_grad_node(self, l, h, delta, g, pool);
            } else {
                layers::dense::param_grad(self, l, h, delta, g);
            }
        })
    }

    /// Vector-Jacobian product J(X)^T U = sum_{i,a} U_ia dF_ia/dtheta (length P, [`Network::params`] order)
    /// at a taped batch; U is N x k.
    pub fn vjp_at(&self, tape: &Tape<T>, u: MatRef<'_, T>) -> Result<Vec<T>> {
        self.check_cotangent(tape, u, "cotangent U")?;
        let mut g = vec![T::ZERO; self.num_params()];
        self.backprop_into(tape, u, &mut g, false, &mut Pool::default());
        Ok(g)
    }

    /// Vector-Jacobian product J(X)^T U = sum_{i,a} U_ia dF_ia/dtheta for X (N x d), U (N x k).
    pub fn vjp(&self, x: MatRef<'_, T>, u: MatRef<'_, T>) -> Result<Vec<T>> {
        let tape = self.tape(x)?;
        self.vjp_at(&tape, u)
    }

    /// Loss value and network outputs F (N x k), with the gradient dL/dtheta written into `grad` (length P),
    /// every large buffer taken from `ws` (so a training loop allocates nothing after its first step).
    pub fn loss_gradient_into(
        &self,
        x: MatRef<'_, T>,
        y: MatRef<'_, f64>,
        loss: Loss,
        grad: &mut [T],
        ws: &mut Workspace<T>,
    ) -> Result<(f64, Mat<T>)> {
        self.gradient_into(x, grad, ws, |f| loss_parts(f, y, loss))
    }

    /// Outputs F (N x k) of X, and J(X)^T U written into `grad` (length P) for the cotangent U = `cotangent(F)`
    /// (N x k) computed from the outputs of the same pass: the gradient of any loss of the outputs (an l_p loss,
    /// say) with every large buffer from `ws`, so a training loop allocates nothing large after its first step.
    pub fn vjp_into(
        &self,
        x: MatRef<'_, T>,
        cotangent: impl FnOnce(MatRef<'_, T>) -> Mat<T>,
        grad: &mut [T],
        ws: &mut Workspace<T>,
    ) -> Result<Mat<T>> {
        self.gradient_into(x, grad, ws, |f| Ok(((), cotangent(f.as_ref())))).map(|(_, f)| f)
    }

    /// The pass both of the above make: tape X in `ws`, ask `cotangent` for (its value, U) from the outputs F,
    /// write J^T U into `grad`; returns (the value, F).
    fn gradient_into<R>(
        &self,
        x: MatRef<'_, T>,
        grad: &mut [T],
        ws: &mut Workspace<T>,
        cotangent: impl FnOnce(&Mat<T>) -> Result<(R, Mat<T>)>,
    ) -> Result<(R, Mat<T>)> {
        if grad.len() != self.num_params() {
            return Err(Error::Shape(format!(
                "gradient buffer has {} entries, the network has {}",
                grad.len(),
                self.num_params()
            )));
        }
        let tape = self.build_tape_in(x, Caches::First, &mut ws.pool)?;
        let res = cotangent(&tape.output).and_then(|(value, u)| {
            self.check_cotangent(&tape, u.as_ref(), "cotangent U")?;
            self.backprop_into(&tape, u.as_ref(), grad, false, &mut ws.pool);
            Ok((value, tape.output.clone()))
        });
        tape.recycle(&mut ws.pool);
        res
    }

    /// Loss value and gradient dL/dtheta = J^T (dL/dF) w.r.t. the raw parameters ([`Network::params`] order).
    pub fn loss_and_gradient(&self, x: MatRef<'_, T>, y: MatRef<'_, f64>, loss: Loss) -> Result<(f64, Vec<T>)> {
        let tape = self.tape(x)?;
        let (value, gf) = loss_parts(&tape.output, y, loss)?;
        let mut g = vec![T::ZERO; self.num_params()];
        self.backprop_into(&tape, gf.as_ref(), &mut g, false, &mut Pool::default());
        Ok((value, g))
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::*;
    use crate::kernel::Parameterization;

    #[test]
    fn loss_gradient_matches_central_differences() {
        // Central differences with h = 1e-5 have truncation error ~h^2 |L'''| ~ 1e-10 and rounding ~1e-16/h:
        // a relative error of 1e-6 leaves four orders of margin. ReLU is tested at generic points (no kink
        // lies within h of any pre-activation with probability ~1).
        let cases = [
            (
                "dense(6,w_std=1.3,b_std=0.4),tanh,dense(5,b_std=0.2),relu,dense(3,b_std=0.5)",
                Parameterization::Ntk,
                Loss::Mse,
            ),
            ("dense(5,b_std=0.3),gelu,dense(4),erf,dense(2,b_std=1)", Parameterization::Standard, Loss::Logistic),
            (
                "dense(7,b_std=0.3),softplus,dense(6,b_std=0.1),relu,dense(3)",
                Parameterization::MeanField,
                Loss::SoftmaxCrossEntropy,
            ),
            (
                "dense(6,b_std=0.3),tanh,dense(6,b_std=0.1),leaky_relu(a=0.2),dense(3,b_std=0.7)",
                Parameterization::Mup,
                Loss::Mse,
            ),
            (RESIDUAL, Parameterization::Ntk, Loss::Mse),
            (DAG, Parameterization::Mup, Loss::Logistic),
        ];
        for (s, p, loss) in cases {
            let net = net(s, p, 4, 0.7, 11);
            let x = crate::data::synthetic::gaussian(5, 4, 3);
            let y = targets(loss, 5, net.output_dim(), 4);
            let (_, g) = net.loss_and_gradient(x.as_ref(), y.as_ref(), loss).unwrap();
            let fd = fd_gradient(&net, |m| m.loss_and_gradient(x.as_ref(), y.as_ref(), loss).unwrap().0, 1e-5);
            let e = rel_err(&g, &fd);
            assert!(e < 1e-6, "{s} {p}: gradient relative error {e:e}");
        }
    }

    #[test]
    fn vjp_matches_directional_derivatives() {
        // u.(J v) from central differences of F along v equals (J^T u).v.
        for s in ["dense(6,b_std=0.3),relu,dense(5,b_std=0.2),tanh,dense(3,b_std=0.5)", RESIDUAL, DAG] {
            let net = net(s, Parameterization::Ntk, 4, 1.9, 2);
            let k = net.output_dim();
            let x = crate::data::synthetic::gaussian(7, 4, 5);
            let u = crate::data::synthetic::gaussian(7, k, 6);
            let g = net.vjp(x.as_ref(), u.as_ref()).unwrap();
            for seed in 0..3 {
                let v = random_vec(net.num_params(), 100 + seed);
                let jv = fd_jvp(&net, x.as_ref(), &v, 1e-6);
                let lhs: f64 =
                    (0..7).flat_map(|i| (0..k).map(move |a| (i, a))).map(|(i, a)| u[(i, a)] * jv[(i, a)]).sum();
                let rhs = dot(&g, &v);
                assert!((lhs - rhs).abs() < 1e-6 * rhs.abs().max(1e-3), "{s}: u.Jv {lhs} vs J^T u.v {rhs}");
            }
            assert!(net.vjp(x.as_ref(), Mat::<f64>::zeros(7, k + 1).as_ref()).is_err());
        }
    }
}
