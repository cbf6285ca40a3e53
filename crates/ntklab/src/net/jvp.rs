//! Forward mode over the graph: Jacobian-vector products J v by tangent propagation, two GEMMs per Dense node.
//!
//! For a tangent v = (V_l, v_b,l) of the raw variables, dH_input = 0 and per node:
//! * Dense (input u): dZ = w_mult (H_u V^T + dH_u W^T) + b_mult 1 v_b^T;
//! * Activation (input u): dH = phi'(Z) ⊙ dH_u; Sum: the sum of the inputs' tangents; Concat: their columns;
//!
//! and J v = dF = alpha dH_out. A tangent that is identically zero is carried as None.

use faer::{Mat, MatRef};

use super::network::Network;
use super::ops::{scale_in_place, Float, Pool};
use super::tape::Tape;
use crate::kernel::Op;
use crate::layers;
use crate::{Error, Result};

/// Tangents of one forward-mode pass.
#[derive(Debug, Clone)]
pub(crate) struct Tangent<T: Float = f64> {
    /// `dot[v]` = dH_v for every node (None: zero), when kept; otherwise empty.
    pub dot: Vec<Option<Mat<T>>>,
    /// dF = J v, N x k.
    pub fdot: Mat<T>,
}

impl<T: Float> Network<T> {
    /// Checks a parameter-space vector: length P and finite.
    pub(crate) fn check_param_vec(&self, v: &[T], what: &str) -> Result<()> {
        if v.len() != self.num_params() {
            return Err(Error::Shape(format!(
                "{what} has {} entries, the network has {} parameters",
                v.len(),
                self.num_params()
            )));
        }
        if let Some(i) = v.iter().position(|x| !x.wide().is_finite()) {
            return Err(Error::InvalidInput(format!("{what} has a non-finite value at index {i}")));
        }
        Ok(())
    }

    /// Tangent propagation of v (length P, unchecked); with `keep`, every node's tangent (R-op needs them).
    pub(crate) fn tangent(&self, tape: &Tape<T>, v: &[T], keep: bool, pool: &mut Pool<T>) -> Tangent<T> {
        let g = &self.graph;
        let nn = g.nodes.len();
        let n = tape.batch_size();
        let mut dot: Vec<Option<Mat<T>>> = vec![None; nn];
        for w in 1..nn {
            let node = &g.nodes[w];
            let out = match &node.op {
                Op::Input => unreachable!("node 0 is the only input"),
                Op::Conv { .. } => {
                    let l = self.dense_of[w].expect("conv node");
                    let u = node.inputs[0];
                    Some(layers::conv::tangent_node(self, l, tape.values[u].as_ref(), dot[u].as_ref(), v, pool))
                }
                Op::Flatten => {
                    let u = node.inputs[0];
                    if self.last_use[u] == w && !keep {
                        dot[u].take()
                    } else {
                        dot[u].clone()
                    }
                }
                Op::AvgPool { .. } | Op::GlobalAvgPool => {
                    dot[node.inputs[0]].as_ref().map(|d| layers::conv::linear_forward(self, w, d.as_ref()))
                }
                Op::Dense { .. } => {
                    let l = self.dense_of[w].expect("dense node");
                    let u = node.inputs[0];
                    Some(layers::dense::tangent(self, l, tape.values[u].as_ref(), dot[u].as_ref(), v, pool))
                }
                Op::Activation(_) => {
                    layers::activation::tangent(dot[node.inputs[0]].as_ref(), tape.slope[w].as_ref(), pool)
                }
                Op::Sum | Op::Concat => {
                    let dots: Vec<Option<&Mat<T>>> = node.inputs.iter().map(|&u| dot[u].as_ref()).collect();
                    let widths: Vec<usize> = node.inputs.iter().map(|&u| g.nodes[u].width).collect();
                    layers::fan_in::tangent(&node.op, &dots, &widths, (n, node.shape.positions()), pool)
                }
            };
            dot[w] = out;
            if !keep {
                for &u in &node.inputs {
                    if self.last_use[u] == w {
                        if let Some(m) = dot[u].take() {
                            pool.give(m);
                        }
                    }
                }
            }
        }
        let out = g.output();
        let mut fdot =
            if keep { dot[out].clone() } else { dot[out].take() }.unwrap_or_else(|| Mat::zeros(n, self.output_dim()));
        scale_in_place(&mut fdot, self.alpha);
        Tangent { dot: if keep { dot } else { Vec::new() }, fdot }
    }

    /// Jacobian-vector product J(X) v = dF/dtheta . v (N x k) at a taped batch; v has length P.
    pub fn jvp_at(&self, tape: &Tape<T>, v: &[T]) -> Result<Mat<T>> {
        self.check_param_vec(v, "tangent v")?;
        Ok(self.tangent(tape, v, false, &mut Pool::default()).fdot)
    }

    /// Jacobian-vector product J(X) v = dF/dtheta . v (N x k) for X (N x d), v of length P.
    pub fn jvp(&self, x: MatRef<'_, T>, v: &[T]) -> Result<Mat<T>> {
        self.check_param_vec(v, "tangent v")?;
        let tape = self.tape(x)?;
        Ok(self.tangent(&tape, v, false, &mut Pool::default()).fdot)
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use crate::kernel::Parameterization;

    #[test]
    fn jvp_matches_central_differences() {
        // Central differences along v with h = 1e-6: error ~h^2 |F'''| |v|^3 + 1e-16/h, far below 1e-6 relative.
        let cases = [
            (
                "dense(6,w_std=1.3,b_std=0.4),tanh,dense(5,b_std=0.2),relu,dense(3,b_std=0.5)",
                Parameterization::Ntk,
                1.0,
            ),
            ("dense(5,b_std=0.3),gelu,dense(4),dense(4),erf,dense(2,b_std=1)", Parameterization::Standard, 3.0),
            ("dense(7,b_std=0.3),softplus,dense(6,b_std=0.1),relu,dense(1)", Parameterization::MeanField, 0.5),
            ("dense(6,b_std=0.3),sin,dense(6,b_std=0.1),abs,dense(3,b_std=0.7)", Parameterization::Mup, 2.0),
            (RESIDUAL, Parameterization::Standard, 1.5),
            (DAG, Parameterization::MeanField, 0.8),
        ];
        for (s, p, alpha) in cases {
            let net = net(s, p, 4, alpha, 21);
            let x = crate::data::synthetic::gaussian(6, 4, 8);
            for seed in 0..2 {
                let v = random_vec(net.num_params(), seed);
                let jv = net.jvp(x.as_ref(), &v).unwrap();
                let fd = fd_jvp(&net, x.as_ref(), &v, 1e-6);
                let e = (&jv - &fd).norm_l2() / fd.norm_l2();
                assert!(e < 1e-6, "{s} {p}: jvp relative error {e:e}");
            }
        }
    }

    #[test]
    fn jvp_rejects_bad_vectors() {
        let net = net("dense(3),relu,dense(1)", Parameterization::Ntk, 2, 1.0, 0);
        let x = crate::data::synthetic::gaussian(2, 2, 0);
        assert!(net.jvp(x.as_ref(), &[0.0; 3]).is_err());
        let mut v = vec![0.0; net.num_params()];
        v[1] = f64::NAN;
        assert!(net.jvp(x.as_ref(), &v).is_err());
    }
}
