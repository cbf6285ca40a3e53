//! Exact second derivatives of a loss through the network: Hessian-vector products by Pearlmutter's (1994)
//! R-operator, and Gauss–Newton products J^T H_L J v.
//!
//! R{.} is the directional derivative along v = (V_l, v_b,l) (raw variables). Forward: the tangent pass of
//! `jvp` gives R{H_v} for every node and R{F}. Backward over the graph, from R{Gamma_out} = alpha
//! (d^2L/dF^2)[R{F}] (zero for the output Hessian, whose cotangent is fixed):
//! * Activation (input u): R{Gamma_u} += R{Gamma_v} ⊙ phi'(Z) + Gamma_v ⊙ phi''(Z) ⊙ R{H_u}
//! * Dense l (input u): R{dW_l} = w_mult (R{Delta}^T H_u + Delta^T R{H_u}), R{db_l} = b_mult R{Delta}^T 1,
//!   R{Gamma_u} += w_mult (R{Delta} W_l + Delta V_l)
//! * Sum / Concat: R{Gamma} is handed to the inputs as Gamma is.
//!
//! so Hv = R{dL/dtheta}. [`LossCurvature`] runs the forward pass and the gradient's backward pass once, then
//! each product costs about three times a gradient (six GEMMs per hidden layer). [`OutputCurvature`] does
//! the same for the output Hessian d^2(u.F)/dtheta^2 in one R-op pass per product.

use std::sync::Mutex;

use faer::{Mat, MatRef};

use super::backward::{accumulate, loss_parts, Backprop};
use super::jvp::Tangent;
use super::network::Network;
use super::ops::{cast, scale_in_place, with_pool, Float, Pool};
use super::tape::Tape;
use crate::kernel::Op;
use crate::layers;
use crate::spectrum::{FnOp, SymOp};
use crate::train::loss::Loss;
use crate::{Error, Result};

/// The loss L(theta) = loss(F(X; theta), Y) at fixed data with its caches (forward tape with phi'', and
/// Delta_l, Gamma_l ⊙ phi'' from the gradient's backward pass): value, gradient, and matrix-free Hessian and
/// Gauss–Newton products, all w.r.t. the raw parameters in [`Network::params`] order.
#[derive(Debug)]
pub struct LossCurvature<'a, T: Float = f64> {
    net: &'a Network<T>,
    loss: Loss,
    targets: Mat<f64>,
    /// Outputs in f64 (the loss is evaluated in f64 whatever T is).
    out64: Mat<f64>,
    tape: Tape<T>,
    value: f64,
    gradient: Vec<T>,
    back: Backprop<T>,
    /// Scratch matrices reused across products (a busy pool makes a concurrent caller use its own).
    pool: Mutex<Pool<T>>,
}

impl<T: Float> Clone for LossCurvature<'_, T> {
    fn clone(&self) -> Self {
        LossCurvature {
            net: self.net,
            loss: self.loss,
            targets: self.targets.clone(),
            out64: self.out64.clone(),
            tape: self.tape.clone(),
            value: self.value,
            gradient: self.gradient.clone(),
            back: self.back.clone(),
            pool: Mutex::new(Pool::default()),
        }
    }
}

/// Checks a top-`k` Hessian eigenvalue job (Lanczos on [`LossCurvature::hessian_op`] with at most `max_iter`
/// steps, on `n` examples) before anything is allocated: `k` between 1 and P, `max_iter` at least `k`, a softmax
/// loss on at least 2 outputs, and the Lanczos basis and the curvature caches within the memory available.
/// `names` are the caller's names for `k` and `max_iter` (`--top`/`--max-iter`, `k`/`max_iter`).
pub fn check_hessian_job<T: Float>(
    net: &Network<T>,
    n: usize,
    loss: Loss,
    (k, max_iter): (usize, usize),
    (k_name, iter_name): (&str, &str),
) -> Result<()> {
    let (outputs, p) = (net.output_dim(), net.num_params());
    if loss == Loss::SoftmaxCrossEntropy && outputs < 2 {
        return Err(Error::InvalidInput(format!(
            "loss {loss} needs a network with at least 2 outputs; this one has {outputs} (use logistic for one output)"
        )));
    }
    if k == 0 || k > p {
        return Err(Error::InvalidInput(format!(
            "{k_name} {k} is out of range: it must be between 1 and the number of parameters ({p})"
        )));
    }
    if max_iter < k {
        return Err(Error::InvalidInput(format!("{iter_name} {max_iter} is smaller than {k_name} {k}")));
    }
    // Peak: the Lanczos basis (one P-vector per step, plus a few work vectors) and the curvature caches (values,
    // slopes and curvatures of every node, and the kept cotangents: about 4 N x width matrices per node).
    let widths: usize = net.graph.nodes.iter().map(|nd| nd.width).sum();
    let basis = (max_iter.min(p) + 8).saturating_mul(p);
    let caches = n.saturating_mul(widths).saturating_mul(4);
    crate::data::memory::check_alloc(
        basis.saturating_add(caches).saturating_mul(8),
        &format!(
            "the Lanczos basis ({} vectors of {p} parameters) and the curvature caches (lower {iter_name})",
            max_iter.min(p) + 8
        ),
    )
}

impl<'a, T: Float> LossCurvature<'a, T> {
    /// Forward and backward pass at (X: N x d, Y: N x k): caches everything products need.
    pub fn new(net: &'a Network<T>, x: MatRef<'_, T>, y: MatRef<'_, f64>, loss: Loss) -> Result<LossCurvature<'a, T>> {
        let tape = net.tape_with_curvature(x)?;
        let (value, gf) = loss_parts(&tape.output, y, loss)?;
        let out64: Mat<f64> = cast(tape.output.as_ref());
        let mut gradient = vec![T::ZERO; net.num_params()];
        let back =
            net.backprop_into(&tape, gf.as_ref(), &mut gradient, true, &mut Pool::default()).expect("kept caches");
        Ok(LossCurvature {
            net,
            loss,
            targets: y.to_owned(),
            out64,
            tape,
            value,
            gradient,
            back,
            pool: Mutex::new(Pool::default()),
        })
    }

    /// Number of parameters P (the dimension of the Hessian).
    pub fn dim(&self) -> usize {
        self.gradient.len()
    }

    /// The loss value L.
    pub fn value(&self) -> f64 {
        self.value
    }

    /// The gradient dL/dtheta (length P).
    pub fn gradient(&self) -> &[T] {
        &self.gradient
    }

    /// Network outputs F (N x k) at the batch.
    pub fn outputs(&self) -> MatRef<'_, T> {
        self.tape.output.as_ref()
    }

    /// The forward caches.
    pub fn tape(&self) -> &Tape<T> {
        &self.tape
    }

    /// Runs `f` with the shared scratch pool, or a fresh one if another thread holds it.
    fn with_pool<R>(&self, f: impl FnOnce(&mut Pool<T>) -> R) -> R {
        with_pool(&self.pool, f)
    }

    fn check_io(&self, v: &[T], out: &[T]) -> Result<()> {
        check_io(self.net, v, out)
    }

    /// Hessian-vector product H v = d^2L/dtheta^2 v (exact, R-operator), written into `out` (length P).
    pub fn hvp_into(&self, v: &[T], out: &mut [T]) -> Result<()> {
        self.check_io(v, out)?;
        self.with_pool(|pool| self.hvp_with(v, out, pool));
        Ok(())
    }

    fn hvp_with(&self, v: &[T], out: &mut [T], pool: &mut Pool<T>) {
        let net = self.net;
        let t = net.tangent(&self.tape, v, true, pool);
        let fdot64: Mat<f64> = cast(t.fdot.as_ref());
        let mut rgamma: Mat<T> =
            cast(self.loss.hessian_vp_unchecked(self.out64.as_ref(), self.targets.as_ref(), fdot64.as_ref()).as_ref());
        scale_in_place(&mut rgamma, net.alpha);
        rop_backward(net, &self.tape, &self.back, t, Some(rgamma), v, out, pool);
    }

    /// Hessian-vector product H v = d^2L/dtheta^2 v (exact, R-operator; Pearlmutter 1994).
    pub fn hvp(&self, v: &[T]) -> Result<Vec<T>> {
        let mut out = vec![T::ZERO; self.dim()];
        self.hvp_into(v, &mut out)?;
        Ok(out)
    }

    /// Gauss–Newton product G v = J^T (d^2L/dF^2) J v, written into `out` (length P).
    pub fn gnvp_into(&self, v: &[T], out: &mut [T]) -> Result<()> {
        self.check_io(v, out)?;
        self.with_pool(|pool| {
            let t = self.net.tangent(&self.tape, v, false, pool);
            let u: Mat<T> = cast(
                self.loss
                    .hessian_vp_unchecked(
                        self.out64.as_ref(),
                        self.targets.as_ref(),
                        cast::<T, f64>(t.fdot.as_ref()).as_ref(),
                    )
                    .as_ref(),
            );
            self.net.backprop_into(&self.tape, u.as_ref(), out, false, pool);
        });
        Ok(())
    }

    /// Gauss–Newton product G v = J^T (d^2L/dF^2) J v (positive semi-definite for convex losses).
    pub fn gnvp(&self, v: &[T]) -> Result<Vec<T>> {
        let mut out = vec![T::ZERO; self.dim()];
        self.gnvp_into(v, &mut out)?;
        Ok(out)
    }

    /// The Hessian as a matrix-free symmetric operator v -> H v (for `spectrum::lanczos`).
    pub fn hessian_op(&self) -> impl SymOp + '_ {
        FnOp::new(self.dim(), move |v: &[f64], out: &mut [f64]| {
            in_precision(v, out, |v, o| self.hvp_into(v, o))
                .expect("SymOp::apply receives finite vectors of length dim()")
        })
    }

    /// The Gauss–Newton matrix J^T H_L J as a matrix-free symmetric operator.
    pub fn gauss_newton_op(&self) -> impl SymOp + '_ {
        FnOp::new(self.dim(), move |v: &[f64], out: &mut [f64]| {
            in_precision(v, out, |v, o| self.gnvp_into(v, o))
                .expect("SymOp::apply receives finite vectors of length dim()")
        })
    }
}

/// Checks a product's input (length P, finite) and output buffer (same length).
fn check_io<T: Float>(net: &Network<T>, v: &[T], out: &[T]) -> Result<()> {
    net.check_param_vec(v, "vector v")?;
    if out.len() != v.len() {
        return Err(Error::Shape(format!("output buffer has {} entries, expected {}", out.len(), v.len())));
    }
    Ok(())
}

/// Runs `f` on f64 vectors directly when T is f64, else on copies converted to T and back (the spectrum
/// module's operators are f64).
fn in_precision<T: Float>(v: &[f64], out: &mut [f64], f: impl FnOnce(&[T], &mut [T]) -> Result<()>) -> Result<()> {
    match (T::from_f64_slice(v), T::from_f64_slice_mut(out)) {
        (Some(v), Some(o)) => f(v, o),
        _ => {
            let vt: Vec<T> = v.iter().map(|&x| T::of(x)).collect();
            let mut ot = vec![T::ZERO; out.len()];
            f(&vt, &mut ot)?;
            for (o, x) in out.iter_mut().zip(&ot) {
                *o = x.wide();
            }
            Ok(())
        }
    }
}

impl<T: Float> Network<T> {
    /// Hessian-vector product of the loss at (X, Y), d^2L/dtheta^2 v (one-shot; reuse [`LossCurvature`] for many).
    pub fn hvp(&self, x: MatRef<'_, T>, y: MatRef<'_, f64>, loss: Loss, v: &[T]) -> Result<Vec<T>> {
        LossCurvature::new(self, x, y, loss)?.hvp(v)
    }

    /// Gauss–Newton product J^T (d^2L/dF^2) J v at (X, Y) (one-shot; reuse [`LossCurvature`] for many).
    pub fn gnvp(&self, x: MatRef<'_, T>, y: MatRef<'_, f64>, loss: Loss, v: &[T]) -> Result<Vec<T>> {
        LossCurvature::new(self, x, y, loss)?.gnvp(v)
    }
}

/// The R-op backward pass (see the module docs): writes R{dL/dtheta} into `out` from the kept gradient caches
/// `back`, the kept tangents `t` and R{Gamma_out} (None: zero).
#[allow(clippy::too_many_arguments)]
fn rop_backward<T: Float>(
    net: &Network<T>,
    tape: &Tape<T>,
    back: &Backprop<T>,
    t: Tangent<T>,
    rg_out: Option<Mat<T>>,
    v: &[T],
    out: &mut [T],
    pool: &mut Pool<T>,
) {
    let g = &net.graph;
    let nn = g.nodes.len();
    let mut rg: Vec<Option<Mat<T>>> = vec![None; nn];
    rg[g.output()] = rg_out;
    for w in (1..nn).rev() {
        let node = &g.nodes[w];
        let rgw = rg[w].take();
        match &node.op {
            Op::Input => unreachable!("node 0 is the only input"),
            Op::AvgPool { .. } | Op::GlobalAvgPool | Op::Flatten => {
                let u = node.inputs[0];
                if let Some(r) = rgw {
                    if u != 0 {
                        accumulate(&mut rg, u, layers::conv::linear_transpose(net, w, r, pool), pool);
                    } else {
                        pool.give(r);
                    }
                }
            }
            Op::Dense { .. } | Op::Conv { .. } => {
                let l = net.dense_of[w].expect("parameter node");
                let u = node.inputs[0];
                let delta = back.cot[w].as_ref().expect("kept Delta");
                let h = tape.values[u].as_ref();
                let next = if net.dense[l].filter.is_some() {
                    layers::conv::rop_node(net, l, h, t.dot[u].as_ref(), delta, rgw.as_ref(), v, out, u != 0, pool)
                } else {
                    layers::dense::rop(net, l, h, t.dot[u].as_ref(), delta, rgw.as_ref(), v, out, u != 0, pool)
                };
                if let Some(next) = next {
                    accumulate(&mut rg, u, next, pool);
                }
                if let Some(rd) = rgw {
                    pool.give(rd);
                }
            }
            Op::Activation(_) => {
                let u = node.inputs[0];
                let r =
                    layers::activation::rop(rgw, tape.slope[w].as_ref(), back.cot[w].as_ref(), t.dot[u].as_ref(), pool);
                if let Some(r) = r {
                    if u != 0 {
                        accumulate(&mut rg, u, r, pool);
                    } else {
                        pool.give(r);
                    }
                }
            }
            Op::Sum | Op::Concat => {
                if let Some(r) = rgw {
                    layers::fan_in::backward(net, w, r, &mut rg, pool);
                }
            }
        }
    }
    for m in t.dot.into_iter().flatten() {
        pool.give(m);
    }
    pool.give(t.fdot);
}

/// The output Hessian d^2 (U . F(X; theta)) / dtheta^2 at fixed data X (N x d) and cotangent U (N x k), as
/// matrix-free products by one R-op pass each (for a single input and U = 1: the Hessian of f(x)).
#[derive(Debug)]
pub struct OutputCurvature<'a, T: Float = f64> {
    net: &'a Network<T>,
    tape: Tape<T>,
    back: Backprop<T>,
    pool: Mutex<Pool<T>>,
}

impl<'a, T: Float> OutputCurvature<'a, T> {
    /// Forward pass with curvature caches and the backward pass of U.
    pub fn new(net: &'a Network<T>, x: MatRef<'_, T>, u: MatRef<'_, T>) -> Result<OutputCurvature<'a, T>> {
        let tape = net.tape_with_curvature(x)?;
        net.check_cotangent(&tape, u, "output cotangent U")?;
        let mut scratch = vec![T::ZERO; net.num_params()];
        let back = net.backprop_into(&tape, u, &mut scratch, true, &mut Pool::default()).expect("kept caches");
        Ok(OutputCurvature { net, tape, back, pool: Mutex::new(Pool::default()) })
    }

    /// Number of parameters P.
    pub fn dim(&self) -> usize {
        self.net.num_params()
    }

    /// H v with H = d^2 (U . F) / dtheta^2, written into `out` (length P).
    pub fn hvp_into(&self, v: &[T], out: &mut [T]) -> Result<()> {
        check_io(self.net, v, out)?;
        with_pool(&self.pool, |pool| {
            let t = self.net.tangent(&self.tape, v, true, pool);
            rop_backward(self.net, &self.tape, &self.back, t, None, v, out, pool);
        });
        Ok(())
    }

    /// H v (see [`OutputCurvature::hvp_into`]).
    pub fn hvp(&self, v: &[T]) -> Result<Vec<T>> {
        let mut out = vec![T::ZERO; self.dim()];
        self.hvp_into(v, &mut out)?;
        Ok(out)
    }

    /// The output Hessian as a matrix-free symmetric operator.
    pub fn op(&self) -> impl SymOp + '_ {
        FnOp::new(self.dim(), move |v: &[f64], out: &mut [f64]| {
            in_precision(v, out, |v, o| self.hvp_into(v, o))
                .expect("SymOp::apply receives finite vectors of length dim()")
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::*;
    use crate::kernel::Parameterization;
    use crate::net::Mlp;

    fn smooth_cases() -> Vec<(&'static str, Parameterization, f64, Loss)> {
        vec![
            (
                "dense(6,w_std=1.3,b_std=0.4),tanh,dense(5,b_std=0.2),erf,dense(3,b_std=0.5)",
                Parameterization::Ntk,
                1.0,
                Loss::Mse,
            ),
            (
                "dense(5,b_std=0.3),gelu,dense(4),dense(4,b_std=0.2),softplus,dense(2,b_std=1)",
                Parameterization::Standard,
                2.5,
                Loss::Logistic,
            ),
            (
                "dense(7,b_std=0.3),softplus,dense(6,b_std=0.1),tanh,dense(3)",
                Parameterization::MeanField,
                0.7,
                Loss::SoftmaxCrossEntropy,
            ),
            (
                "dense(6,b_std=0.3),silu,dense(6,b_std=0.1),sin,dense(3,b_std=0.7)",
                Parameterization::Mup,
                1.3,
                Loss::Mse,
            ),
            (RESIDUAL, Parameterization::Ntk, 1.1, Loss::Mse),
            (DAG, Parameterization::Standard, 0.9, Loss::SoftmaxCrossEntropy),
        ]
    }

    #[test]
    fn output_hessian_matches_differences_of_the_vjp() {
        // d/dt J(theta + t v)^T U at t = 0 is the output Hessian of U.F along v: central differences of the
        // VJP (h = 1e-5, error ~1e-10) against one R-op pass.
        for (s, p, alpha, _) in smooth_cases() {
            let net = net(s, p, 4, alpha, 3);
            let x = crate::data::synthetic::gaussian(3, 4, 2);
            let u = crate::data::synthetic::gaussian(3, net.output_dim(), 7);
            let oc = OutputCurvature::new(&net, x.as_ref(), u.as_ref()).unwrap();
            let v = random_vec(net.num_params(), 8);
            let hv = oc.hvp(&v).unwrap();
            let fd = fd_directional(&net, &v, 1e-5, |m| m.vjp(x.as_ref(), u.as_ref()).unwrap());
            let e = rel_err(&hv, &fd);
            assert!(e < 1e-6, "{s}: output Hessian relative error {e:e}");
        }
        // With MSE at zero residual, L = |F - Y|^2 / 2N has Hessian J^T J / N + sum_i r_i H_fi / N: shifting Y
        // by c along U adds -c/N times the output Hessian of U.F.
        let net = net(RESIDUAL, Parameterization::Ntk, 4, 1.0, 5);
        let x = crate::data::synthetic::gaussian(4, 4, 1);
        let f = net.forward(x.as_ref()).unwrap();
        let u = crate::data::synthetic::gaussian(4, 3, 2);
        let c = 0.7;
        let y = &f - &u * faer::Scale(c);
        let v = random_vec(net.num_params(), 3);
        let h_shift = LossCurvature::new(&net, x.as_ref(), y.as_ref(), Loss::Mse).unwrap().hvp(&v).unwrap();
        let h_zero = LossCurvature::new(&net, x.as_ref(), f.as_ref(), Loss::Mse).unwrap().hvp(&v).unwrap();
        let ho = OutputCurvature::new(&net, x.as_ref(), u.as_ref()).unwrap().hvp(&v).unwrap();
        let want: Vec<f64> = h_zero.iter().zip(&ho).map(|(a, b)| a + c / 4.0 * b).collect();
        assert!(rel_err(&h_shift, &want) < 1e-10, "{:e}", rel_err(&h_shift, &want));
    }

    #[test]
    fn hvp_matches_central_differences_of_the_gradient() {
        // (grad L(theta + h v) - grad L(theta - h v)) / 2h with h = 1e-5: truncation ~h^2 |L''''| ~ 1e-10,
        // rounding ~1e-16 |grad| / h ~ 1e-11; the R-op result must agree to 1e-6 relative.
        for (s, p, alpha, loss) in smooth_cases() {
            let net = net(s, p, 4, alpha, 31);
            let x = crate::data::synthetic::gaussian(6, 4, 9);
            let y = targets(loss, 6, net.output_dim(), 10);
            let lc = LossCurvature::new(&net, x.as_ref(), y.as_ref(), loss).unwrap();
            for seed in 0..2 {
                let v = random_vec(net.num_params(), 40 + seed);
                let hv = lc.hvp(&v).unwrap();
                let grad = |m: &Mlp| m.loss_and_gradient(x.as_ref(), y.as_ref(), loss).unwrap().1;
                let fd = fd_directional(&net, &v, 1e-5, grad);
                let e = rel_err(&hv, &fd);
                assert!(e < 1e-6, "{s} {p} {loss}: hvp relative error {e:e}");
            }
        }
    }

    #[test]
    fn hvp_with_relu_matches_differences_at_generic_points() {
        // With ReLU the Hessian is piecewise constant in the curvature term but the cross-layer terms remain.
        let net =
            net("dense(6,b_std=0.3),relu,dense(5,b_std=0.2),relu,dense(2,b_std=0.5)", Parameterization::Ntk, 3, 1.0, 4);
        let x = crate::data::synthetic::gaussian(5, 3, 2);
        let y = targets(Loss::Mse, 5, 2, 3);
        let v = random_vec(net.num_params(), 9);
        let hv = net.hvp(x.as_ref(), y.as_ref(), Loss::Mse, &v).unwrap();
        let fd = fd_directional(&net, &v, 1e-6, |m| m.loss_and_gradient(x.as_ref(), y.as_ref(), Loss::Mse).unwrap().1);
        assert!(rel_err(&hv, &fd) < 1e-6);
    }

    #[test]
    fn hvp_is_symmetric() {
        // u.Hv = v.Hu to rounding (a wrong cross term breaks this even when each product looks plausible).
        for (s, p, alpha, loss) in smooth_cases() {
            let net = net(s, p, 4, alpha, 7);
            let x = crate::data::synthetic::gaussian(8, 4, 1);
            let y = targets(loss, 8, net.output_dim(), 2);
            let lc = LossCurvature::new(&net, x.as_ref(), y.as_ref(), loss).unwrap();
            let u = random_vec(net.num_params(), 1);
            let v = random_vec(net.num_params(), 2);
            let (a, b) = (dot(&u, &lc.hvp(&v).unwrap()), dot(&v, &lc.hvp(&u).unwrap()));
            assert!((a - b).abs() < 1e-11 * a.abs().max(b.abs()).max(1e-3), "{s}: {a} vs {b}");
        }
    }

    #[test]
    fn gauss_newton_matches_explicit_jacobian_product() {
        // Reference: the explicit Jacobian J (N k x P, from N k unit-cotangent VJPs) and the explicit output
        // Hessian H_L (N k x N k, from unit-vector products): G v = J^T (H_L (J v)).
        for (s, p, alpha, loss) in smooth_cases() {
            let net = net(s, p, 3, alpha, 13);
            let (n, k) = (4, net.output_dim());
            let x = crate::data::synthetic::gaussian(n, 3, 5);
            let y = targets(loss, n, k, 6);
            let lc = LossCurvature::new(&net, x.as_ref(), y.as_ref(), loss).unwrap();
            let j = jacobian_by_vjp(&net, x.as_ref());
            let f = net.forward(x.as_ref()).unwrap();
            let hl = Mat::<f64>::from_fn(n * k, n * k, |r, c| {
                let mut e = Mat::<f64>::zeros(n, k);
                e[(c / k, c % k)] = 1.0;
                loss.hessian_vp(f.as_ref(), y.as_ref(), e.as_ref()).unwrap()[(r / k, r % k)]
            });
            let v = random_vec(net.num_params(), 3);
            let vm = faer::ColRef::from_slice(&v).as_mat();
            let expect = j.transpose() * (&hl * (&j * vm));
            let got = lc.gnvp(&v).unwrap();
            let e = rel_err(&got, &(0..got.len()).map(|i| expect[(i, 0)]).collect::<Vec<_>>());
            assert!(e < 1e-10, "{s}: GN relative error {e:e}");
        }
    }

    #[test]
    fn mse_gauss_newton_and_hessian_agree_at_zero_residual() {
        // With Y = F the MSE residual term vanishes: H = G = J^T J / N.
        let net = net("dense(6,b_std=0.3),tanh,dense(5),gelu,dense(2,b_std=0.5)", Parameterization::Ntk, 3, 1.0, 8);
        let x = crate::data::synthetic::gaussian(5, 3, 4);
        let y = net.forward(x.as_ref()).unwrap();
        let lc = LossCurvature::new(&net, x.as_ref(), y.as_ref(), Loss::Mse).unwrap();
        let v = random_vec(net.num_params(), 5);
        assert!(rel_err(&lc.hvp(&v).unwrap(), &lc.gnvp(&v).unwrap()) < 1e-12);
        assert!(lc.value().abs() < 1e-30 && lc.gradient().iter().all(|g| g.abs() < 1e-15));
        let op = lc.hessian_op();
        let mut out = vec![0.0; op.dim()];
        op.apply(&v, &mut out);
        assert!(rel_err(&out, &lc.hvp(&v).unwrap()) == 0.0);
        assert!(lc.hvp(&v[1..]).is_err());
    }
}
