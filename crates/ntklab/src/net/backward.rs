//! Reverse mode: vector-Jacobian products J^T U and loss gradients, batched with two GEMMs per layer.
//!
//! With Gamma_L = alpha U (N x k), for l = L..1: Delta_l = Gamma_l ⊙ phi_l'(Z_l),
//! dW_l = w_mult Delta_l^T H_{l-1}, db_l = b_mult Delta_l^T 1, Gamma_{l-1} = w_mult Delta_l W_l.

use faer::{Accum, Mat, MatMut, MatRef};

use super::mlp::Mlp;
use super::ops::{col_sums_into, for_each_col, gemm, hadamard, hadamard_in_place, Pool};
use super::tape::Tape;
use crate::train::loss::Loss;
use crate::{Error, Result};

/// What an R-op pass needs from the backward pass of the loss gradient, per Dense layer l.
#[derive(Debug, Clone)]
pub(crate) struct Backprop {
    /// Delta_l = dL/dZ_l, N x n_out(l).
    pub delta: Vec<Mat<f64>>,
    /// Gamma_l ⊙ phi_l''(Z_l) (Gamma_l = dL/dH_l) where the tape has curvature, else None.
    pub gamma_curv: Vec<Option<Mat<f64>>>,
}

impl Mlp {
    /// Checks a cotangent U against a tape: N x k and finite.
    pub(crate) fn check_cotangent(&self, tape: &Tape, u: MatRef<'_, f64>, what: &str) -> Result<()> {
        let (n, k) = (tape.batch_size(), self.output_dim());
        if u.nrows() != n || u.ncols() != k {
            return Err(Error::Shape(format!("{what} must be N x k = {n} x {k}, got {} x {}", u.nrows(), u.ncols())));
        }
        for j in 0..k {
            for i in 0..n {
                if !u[(i, j)].is_finite() {
                    return Err(Error::InvalidInput(format!("{what} has a non-finite value at row {i}, column {j}")));
                }
            }
        }
        Ok(())
    }

    /// g = J^T U written into `g` (length P, [`Mlp::params`] order); with `keep`, also the per-layer caches
    /// an R-op pass needs. Shapes are the caller's responsibility.
    pub(crate) fn backprop_into(
        &self,
        tape: &Tape,
        u: MatRef<'_, f64>,
        g: &mut [f64],
        keep: bool,
        pool: &mut Pool,
    ) -> Option<Backprop> {
        let layers = self.dense.len();
        let offs = self.param_offsets();
        let n = tape.batch_size();
        let mut gamma = pool.take(n, u.ncols());
        let alpha = self.alpha;
        for_each_col(&mut gamma, |j, o| {
            for (i, o) in o.iter_mut().enumerate() {
                *o = alpha * u[(i, j)];
            }
        });
        let mut delta_keep: Vec<Mat<f64>> = Vec::new();
        let mut gc_keep: Vec<Option<Mat<f64>>> = Vec::new();
        for l in (0..layers).rev() {
            let d = &self.dense[l];
            let (n_in, n_out) = (d.n_in(), d.n_out());
            let gc = if keep { tape.curvature[l].as_ref().map(|c| hadamard(&gamma, c)) } else { None };
            let delta = match &tape.slope[l] {
                Some(s) => {
                    let mut t = gamma;
                    hadamard_in_place(&mut t, s);
                    t
                }
                None => gamma,
            };
            let (wo, bo) = offs[l];
            // dW_l^T = w_mult H_{l-1}^T Delta_l (n_in x n_out, column-major) is dW_l row-major: the flat layout.
            let gw = MatMut::from_column_major_slice_mut(&mut g[wo..wo + n_in * n_out], n_in, n_out);
            gemm(gw, Accum::Replace, tape.inputs[l].transpose(), delta.as_ref(), d.w_mult);
            if let Some(bo) = bo {
                col_sums_into(&delta, d.b_mult, &mut g[bo..bo + n_out]);
            }
            gamma = if l > 0 {
                let mut next = pool.take(n, n_in);
                gemm(next.as_mut(), Accum::Replace, delta.as_ref(), d.weight.as_ref(), d.w_mult);
                next
            } else {
                Mat::zeros(0, 0)
            };
            if keep {
                delta_keep.push(delta);
                gc_keep.push(gc);
            } else {
                pool.give(delta);
            }
        }
        keep.then(|| {
            delta_keep.reverse();
            gc_keep.reverse();
            Backprop { delta: delta_keep, gamma_curv: gc_keep }
        })
    }

    /// Vector-Jacobian product J(X)^T U = sum_{i,a} U_ia dF_ia/dtheta (length P, [`Mlp::params`] order)
    /// at a taped batch; U is N x k.
    pub fn vjp_at(&self, tape: &Tape, u: MatRef<'_, f64>) -> Result<Vec<f64>> {
        self.check_cotangent(tape, u, "cotangent U")?;
        let mut g = vec![0.0; self.num_params()];
        self.backprop_into(tape, u, &mut g, false, &mut Pool::default());
        Ok(g)
    }

    /// Vector-Jacobian product J(X)^T U = sum_{i,a} U_ia dF_ia/dtheta for X (N x d), U (N x k).
    pub fn vjp(&self, x: MatRef<'_, f64>, u: MatRef<'_, f64>) -> Result<Vec<f64>> {
        let tape = self.tape(x)?;
        self.vjp_at(&tape, u)
    }

    /// Loss value and gradient dL/dtheta = J^T (dL/dF) w.r.t. the raw parameters ([`Mlp::params`] order).
    pub fn loss_and_gradient(&self, x: MatRef<'_, f64>, y: MatRef<'_, f64>, loss: Loss) -> Result<(f64, Vec<f64>)> {
        let tape = self.tape(x)?;
        loss.check(tape.output.as_ref(), y)?;
        let value = loss.value_unchecked(tape.output.as_ref(), y);
        let gf = loss.gradient_unchecked(tape.output.as_ref(), y);
        let mut g = vec![0.0; self.num_params()];
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
            ("dense(6,w_std=1.3,b_std=0.4),tanh,dense(5,b_std=0.2),relu,dense(3,b_std=0.5)", Parameterization::Ntk, Loss::Mse),
            ("dense(5,b_std=0.3),gelu,dense(4),erf,dense(2,b_std=1)", Parameterization::Standard, Loss::Logistic),
            ("dense(7,b_std=0.3),softplus,dense(6,b_std=0.1),relu,dense(3)", Parameterization::MeanField, Loss::SoftmaxCrossEntropy),
            ("dense(6,b_std=0.3),tanh,dense(6,b_std=0.1),leaky_relu(a=0.2),dense(3,b_std=0.7)", Parameterization::Mup, Loss::Mse),
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
        let net = net("dense(6,b_std=0.3),relu,dense(5,b_std=0.2),tanh,dense(3,b_std=0.5)", Parameterization::Ntk, 4, 1.9, 2);
        let x = crate::data::synthetic::gaussian(7, 4, 5);
        let u = crate::data::synthetic::gaussian(7, 3, 6);
        let g = net.vjp(x.as_ref(), u.as_ref()).unwrap();
        for seed in 0..3 {
            let v = random_vec(net.num_params(), 100 + seed);
            let jv = fd_jvp(&net, x.as_ref(), &v, 1e-6);
            let lhs: f64 = (0..7).flat_map(|i| (0..3).map(move |a| (i, a))).map(|(i, a)| u[(i, a)] * jv[(i, a)]).sum();
            let rhs = dot(&g, &v);
            assert!((lhs - rhs).abs() < 1e-6 * rhs.abs().max(1e-3), "u.Jv {lhs} vs J^T u.v {rhs}");
        }
        assert!(net.vjp(x.as_ref(), Mat::<f64>::zeros(7, 2).as_ref()).is_err());
    }
}
