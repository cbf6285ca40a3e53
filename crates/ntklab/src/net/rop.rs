//! Exact second derivatives of a loss through the network: Hessian-vector products by Pearlmutter's (1994)
//! R-operator, and Gauss–Newton products J^T H_L J v.
//!
//! R{.} is the directional derivative along v = (V_l, v_b,l) (raw variables). Forward: the tangent pass of
//! `jvp` gives R{Z_l}, R{H_l} and R{F}. Backward, from R{Gamma_L} = alpha (d^2L/dF^2)[R{F}]:
//! * R{Delta_l} = R{Gamma_l} ⊙ phi'(Z_l) + Gamma_l ⊙ phi''(Z_l) ⊙ R{Z_l}
//! * R{dW_l} = w_mult (R{Delta_l}^T H_{l-1} + Delta_l^T R{H_{l-1}}),  R{db_l} = b_mult R{Delta_l}^T 1
//! * R{Gamma_{l-1}} = w_mult (R{Delta_l} W_l + Delta_l V_l)
//!
//! so Hv = R{dL/dtheta}. [`LossCurvature`] runs the forward pass and the gradient's backward pass once, then
//! each product costs about three times a gradient (six GEMMs per hidden layer).

use std::sync::Mutex;

use faer::prelude::ReborrowMut;
use faer::{Accum, Mat, MatMut, MatRef};

use super::backward::Backprop;
use super::mlp::Mlp;
use super::ops::{col, col_sums_into, for_each_col, gemm, hadamard_into, scale_in_place, Pool};
use super::tape::Tape;
use crate::spectrum::{FnOp, SymOp};
use crate::train::loss::Loss;
use crate::{Error, Result};

/// The loss L(theta) = loss(F(X; theta), Y) at fixed data with its caches (forward tape with phi'', and
/// Delta_l, Gamma_l ⊙ phi'' from the gradient's backward pass): value, gradient, and matrix-free Hessian and
/// Gauss–Newton products, all w.r.t. the raw parameters in [`Mlp::params`] order.
#[derive(Debug)]
pub struct LossCurvature<'a> {
    net: &'a Mlp,
    loss: Loss,
    targets: Mat<f64>,
    tape: Tape,
    value: f64,
    gradient: Vec<f64>,
    back: Backprop,
    /// Scratch matrices reused across products (a busy pool makes a concurrent caller use its own).
    pool: Mutex<Pool>,
}

impl Clone for LossCurvature<'_> {
    fn clone(&self) -> Self {
        LossCurvature {
            net: self.net,
            loss: self.loss,
            targets: self.targets.clone(),
            tape: self.tape.clone(),
            value: self.value,
            gradient: self.gradient.clone(),
            back: self.back.clone(),
            pool: Mutex::new(Pool::default()),
        }
    }
}

impl<'a> LossCurvature<'a> {
    /// Forward and backward pass at (X: N x d, Y: N x k): caches everything products need.
    pub fn new(net: &'a Mlp, x: MatRef<'_, f64>, y: MatRef<'_, f64>, loss: Loss) -> Result<LossCurvature<'a>> {
        let tape = net.tape_with_curvature(x)?;
        loss.check(tape.output.as_ref(), y)?;
        let value = loss.value_unchecked(tape.output.as_ref(), y);
        let gf = loss.gradient_unchecked(tape.output.as_ref(), y);
        let mut gradient = vec![0.0; net.num_params()];
        let back = net.backprop_into(&tape, gf.as_ref(), &mut gradient, true, &mut Pool::default()).expect("kept caches");
        Ok(LossCurvature { net, loss, targets: y.to_owned(), tape, value, gradient, back, pool: Mutex::new(Pool::default()) })
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
    pub fn gradient(&self) -> &[f64] {
        &self.gradient
    }

    /// Network outputs F (N x k) at the batch.
    pub fn outputs(&self) -> MatRef<'_, f64> {
        self.tape.output.as_ref()
    }

    /// The forward caches.
    pub fn tape(&self) -> &Tape {
        &self.tape
    }

    /// Runs `f` with the shared scratch pool, or a fresh one if another thread holds it.
    fn with_pool<R>(&self, f: impl FnOnce(&mut Pool) -> R) -> R {
        match self.pool.try_lock() {
            Ok(mut p) => f(&mut p),
            Err(_) => f(&mut Pool::default()),
        }
    }

    fn check_io(&self, v: &[f64], out: &[f64]) -> Result<()> {
        self.net.check_param_vec(v, "vector v")?;
        if out.len() != v.len() {
            return Err(Error::Shape(format!("output buffer has {} entries, expected {}", out.len(), v.len())));
        }
        Ok(())
    }

    /// Hessian-vector product H v = d^2L/dtheta^2 v (exact, R-operator), written into `out` (length P).
    pub fn hvp_into(&self, v: &[f64], out: &mut [f64]) -> Result<()> {
        self.check_io(v, out)?;
        self.with_pool(|pool| self.hvp_with(v, out, pool));
        Ok(())
    }

    fn hvp_with(&self, v: &[f64], out: &mut [f64], pool: &mut Pool) {
        let net = self.net;
        let tape = &self.tape;
        let n = tape.batch_size();
        let offs = net.param_offsets();
        let t = net.tangent(tape, v, true, pool);
        let mut rgamma = self.loss.hessian_vp_unchecked(tape.output.as_ref(), self.targets.as_ref(), t.fdot.as_ref());
        scale_in_place(&mut rgamma, net.alpha);
        for l in (0..net.dense.len()).rev() {
            let d = &net.dense[l];
            let (n_in, n_out) = (d.n_in(), d.n_out());
            let (wo, bo) = offs[l];
            let delta = &self.back.delta[l];
            let rdelta = match &tape.slope[l] {
                Some(s) => match (&self.back.gamma_curv[l], &t.zdot[l]) {
                    (Some(gc), Some(zd)) => {
                        let mut r = pool.take(n, n_out);
                        for_each_col(&mut r, |j, o| {
                            let (rg, s, gc, zd) = (col(&rgamma, j), col(s, j), col(gc, j), col(zd, j));
                            for i in 0..o.len() {
                                o[i] = rg[i] * s[i] + gc[i] * zd[i];
                            }
                        });
                        r
                    }
                    _ => {
                        let mut r = pool.take(n, n_out);
                        hadamard_into(&mut r, &rgamma, s);
                        r
                    }
                },
                None => std::mem::replace(&mut rgamma, Mat::zeros(0, 0)),
            };
            pool.give(std::mem::replace(&mut rgamma, Mat::zeros(0, 0)));
            {
                let mut ow = MatMut::from_column_major_slice_mut(&mut out[wo..wo + n_in * n_out], n_in, n_out);
                gemm(ow.rb_mut(), Accum::Replace, tape.inputs[l].transpose(), rdelta.as_ref(), d.w_mult);
                if let Some(hd) = &t.hdot[l] {
                    gemm(ow, Accum::Add, hd.transpose(), delta.as_ref(), d.w_mult);
                }
            }
            if let Some(bo) = bo {
                col_sums_into(&rdelta, d.b_mult, &mut out[bo..bo + n_out]);
            }
            rgamma = if l > 0 {
                let vwt = MatRef::from_column_major_slice(&v[wo..wo + n_in * n_out], n_in, n_out);
                let mut next = pool.take(n, n_in);
                gemm(next.as_mut(), Accum::Replace, rdelta.as_ref(), d.weight.as_ref(), d.w_mult);
                gemm(next.as_mut(), Accum::Add, delta.as_ref(), vwt.transpose(), d.w_mult);
                next
            } else {
                Mat::zeros(0, 0)
            };
            pool.give(rdelta);
        }
        for m in t.hdot.into_iter().chain(t.zdot).flatten() {
            pool.give(m);
        }
        pool.give(t.fdot);
    }

    /// Hessian-vector product H v = d^2L/dtheta^2 v (exact, R-operator; Pearlmutter 1994).
    pub fn hvp(&self, v: &[f64]) -> Result<Vec<f64>> {
        let mut out = vec![0.0; self.dim()];
        self.hvp_into(v, &mut out)?;
        Ok(out)
    }

    /// Gauss–Newton product G v = J^T (d^2L/dF^2) J v, written into `out` (length P).
    pub fn gnvp_into(&self, v: &[f64], out: &mut [f64]) -> Result<()> {
        self.check_io(v, out)?;
        self.with_pool(|pool| {
            let t = self.net.tangent(&self.tape, v, false, pool);
            let u = self.loss.hessian_vp_unchecked(self.tape.output.as_ref(), self.targets.as_ref(), t.fdot.as_ref());
            self.net.backprop_into(&self.tape, u.as_ref(), out, false, pool);
        });
        Ok(())
    }

    /// Gauss–Newton product G v = J^T (d^2L/dF^2) J v (positive semi-definite for convex losses).
    pub fn gnvp(&self, v: &[f64]) -> Result<Vec<f64>> {
        let mut out = vec![0.0; self.dim()];
        self.gnvp_into(v, &mut out)?;
        Ok(out)
    }

    /// The Hessian as a matrix-free symmetric operator v -> H v (for `spectrum::lanczos`).
    pub fn hessian_op(&self) -> impl SymOp + '_ {
        FnOp::new(self.dim(), move |v: &[f64], out: &mut [f64]| {
            self.hvp_into(v, out).expect("SymOp::apply receives finite vectors of length dim()")
        })
    }

    /// The Gauss–Newton matrix J^T H_L J as a matrix-free symmetric operator.
    pub fn gauss_newton_op(&self) -> impl SymOp + '_ {
        FnOp::new(self.dim(), move |v: &[f64], out: &mut [f64]| {
            self.gnvp_into(v, out).expect("SymOp::apply receives finite vectors of length dim()")
        })
    }
}

impl Mlp {
    /// Hessian-vector product of the loss at (X, Y), d^2L/dtheta^2 v (one-shot; reuse [`LossCurvature`] for many).
    pub fn hvp(&self, x: MatRef<'_, f64>, y: MatRef<'_, f64>, loss: Loss, v: &[f64]) -> Result<Vec<f64>> {
        LossCurvature::new(self, x, y, loss)?.hvp(v)
    }

    /// Gauss–Newton product J^T (d^2L/dF^2) J v at (X, Y) (one-shot; reuse [`LossCurvature`] for many).
    pub fn gnvp(&self, x: MatRef<'_, f64>, y: MatRef<'_, f64>, loss: Loss, v: &[f64]) -> Result<Vec<f64>> {
        LossCurvature::new(self, x, y, loss)?.gnvp(v)
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::*;
    use crate::kernel::Parameterization;

    fn smooth_cases() -> Vec<(&'static str, Parameterization, f64, Loss)> {
        vec![
            ("dense(6,w_std=1.3,b_std=0.4),tanh,dense(5,b_std=0.2),erf,dense(3,b_std=0.5)", Parameterization::Ntk, 1.0, Loss::Mse),
            ("dense(5,b_std=0.3),gelu,dense(4),dense(4,b_std=0.2),softplus,dense(2,b_std=1)", Parameterization::Standard, 2.5, Loss::Logistic),
            ("dense(7,b_std=0.3),softplus,dense(6,b_std=0.1),tanh,dense(3)", Parameterization::MeanField, 0.7, Loss::SoftmaxCrossEntropy),
            ("dense(6,b_std=0.3),silu,dense(6,b_std=0.1),sin,dense(3,b_std=0.7)", Parameterization::Mup, 1.3, Loss::Mse),
        ]
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
        let net = net("dense(6,b_std=0.3),relu,dense(5,b_std=0.2),relu,dense(2,b_std=0.5)", Parameterization::Ntk, 3, 1.0, 4);
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
