//! Forward mode: Jacobian-vector products J v by tangent propagation, two GEMMs per layer.
//!
//! For a tangent v = (V_l, v_b,l) of the raw variables: dZ_l = w_mult (H_{l-1} V_l^T + dH_{l-1} W_l^T) + b_mult 1 v_b,l^T,
//! dH_l = phi_l'(Z_l) ⊙ dZ_l (dH_0 = 0), and J v = dF = alpha dH_L.

use faer::{Accum, Mat, MatRef};

use super::mlp::Mlp;
use super::ops::{for_each_col, gemm, hadamard_into, scale_in_place, Pool};
use super::tape::Tape;
use crate::{Error, Result};

/// Tangents of one forward-mode pass.
#[derive(Debug, Clone)]
pub(crate) struct Tangent {
    /// `hdot[l]` = dH_{l-1}, the tangent of Dense layer l's input (None for l = 0, or when not kept).
    pub hdot: Vec<Option<Mat<f64>>>,
    /// `zdot[l]` = dZ_l where the tape has curvature for layer l (and tangents were kept), else None.
    pub zdot: Vec<Option<Mat<f64>>>,
    /// dF = J v, N x k.
    pub fdot: Mat<f64>,
}

impl Mlp {
    /// Checks a parameter-space vector: length P and finite.
    pub(crate) fn check_param_vec(&self, v: &[f64], what: &str) -> Result<()> {
        if v.len() != self.num_params() {
            return Err(Error::Shape(format!("{what} has {} entries, the network has {} parameters", v.len(), self.num_params())));
        }
        if let Some(i) = v.iter().position(|x| !x.is_finite()) {
            return Err(Error::InvalidInput(format!("{what} has a non-finite value at index {i}")));
        }
        Ok(())
    }

    /// Tangent propagation of v (length P, unchecked); with `keep`, the intermediate tangents R-op needs.
    pub(crate) fn tangent(&self, tape: &Tape, v: &[f64], keep: bool, pool: &mut Pool) -> Tangent {
        let n = tape.batch_size();
        let offs = self.param_offsets();
        let mut hdot_in: Option<Mat<f64>> = None;
        let mut hdots = Vec::new();
        let mut zdots = Vec::new();
        for (l, d) in self.dense.iter().enumerate() {
            let (n_in, n_out) = (d.n_in(), d.n_out());
            let (wo, bo) = offs[l];
            // The row-major n_out x n_in block of v is V_l^T in column-major n_in x n_out.
            let vwt = MatRef::from_column_major_slice(&v[wo..wo + n_in * n_out], n_in, n_out);
            let mut zd = pool.take(n, n_out);
            gemm(zd.as_mut(), Accum::Replace, tape.inputs[l].as_ref(), vwt, d.w_mult);
            if let Some(hd) = &hdot_in {
                gemm(zd.as_mut(), Accum::Add, hd.as_ref(), d.weight.transpose(), d.w_mult);
            }
            if let Some(bo) = bo {
                let vb = &v[bo..bo + n_out];
                let bm = d.b_mult;
                for_each_col(&mut zd, |j, c| {
                    let add = bm * vb[j];
                    c.iter_mut().for_each(|x| *x += add);
                });
            }
            let hd_out = match &tape.slope[l] {
                Some(s) => {
                    let mut h = pool.take(n, n_out);
                    hadamard_into(&mut h, &zd, s);
                    if keep && tape.curvature[l].is_some() {
                        zdots.push(Some(zd));
                    } else {
                        zdots.push(None);
                        pool.give(zd);
                    }
                    h
                }
                None => {
                    zdots.push(None);
                    zd
                }
            };
            let prev = hdot_in.replace(hd_out);
            if keep {
                hdots.push(prev);
            } else if let Some(p) = prev {
                pool.give(p);
            }
        }
        let mut fdot = hdot_in.expect("at least one dense layer");
        scale_in_place(&mut fdot, self.alpha);
        Tangent { hdot: hdots, zdot: zdots, fdot }
    }

    /// Jacobian-vector product J(X) v = dF/dtheta . v (N x k) at a taped batch; v has length P.
    pub fn jvp_at(&self, tape: &Tape, v: &[f64]) -> Result<Mat<f64>> {
        self.check_param_vec(v, "tangent v")?;
        Ok(self.tangent(tape, v, false, &mut Pool::default()).fdot)
    }

    /// Jacobian-vector product J(X) v = dF/dtheta . v (N x k) for X (N x d), v of length P.
    pub fn jvp(&self, x: MatRef<'_, f64>, v: &[f64]) -> Result<Mat<f64>> {
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
            ("dense(6,w_std=1.3,b_std=0.4),tanh,dense(5,b_std=0.2),relu,dense(3,b_std=0.5)", Parameterization::Ntk, 1.0),
            ("dense(5,b_std=0.3),gelu,dense(4),dense(4),erf,dense(2,b_std=1)", Parameterization::Standard, 3.0),
            ("dense(7,b_std=0.3),softplus,dense(6,b_std=0.1),relu,dense(1)", Parameterization::MeanField, 0.5),
            ("dense(6,b_std=0.3),sin,dense(6,b_std=0.1),abs,dense(3,b_std=0.7)", Parameterization::Mup, 2.0),
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
