//! The forward pass with caches: per Dense layer l the input H_{l-1} (N x n_in), the slope phi'(Z_l) and, on
//! request, the curvature phi''(Z_l) (N x n_out). Backward, JVP, R-op passes and the empirical NTK all start
//! from a [`Tape`], so one forward pass serves any number of derivative products at the same batch.

use faer::{Mat, MatRef};

use super::mlp::{dense_forward, DenseParams, Mlp};
use super::ops::{for_each_col, map, scale_in_place};
use crate::kernel::Activation;
use crate::Result;

/// Forward caches of [`Mlp::forward`] on one batch X (N x d).
#[derive(Debug, Clone)]
pub struct Tape {
    /// `inputs[l]` = H_{l-1}, the input of Dense layer l (N x n_in(l)); `inputs[0]` = X.
    pub inputs: Vec<Mat<f64>>,
    /// `slope[l]` = phi_l'(Z_l) (N x n_out(l)) for layers followed by a (non-identity) activation, else None.
    pub slope: Vec<Option<Mat<f64>>>,
    /// `curvature[l]` = phi_l''(Z_l) (N x n_out(l)) when requested and phi_l is not piecewise linear, else None.
    pub curvature: Vec<Option<Mat<f64>>>,
    /// Network outputs F = alpha z_L (N x k).
    pub output: Mat<f64>,
}

impl Tape {
    /// Batch size N.
    pub fn batch_size(&self) -> usize {
        self.output.nrows()
    }
}

/// The activation that follows a Dense layer, None for none or the identity (which the passes skip).
pub(crate) fn nonlinearity(d: &DenseParams) -> Option<&Activation> {
    fn is_identity(a: &Activation) -> bool {
        match a {
            Activation::Identity => true,
            Activation::Quad { inner, .. } => is_identity(inner),
            _ => false,
        }
    }
    d.activation.as_ref().filter(|a| !is_identity(a))
}

/// z <- phi(z), returning phi'(z) (one pass; ReLU has its own branch-free loop).
fn activate_in_place(z: &mut Mat<f64>, a: &Activation) -> Mat<f64> {
    fn pass(z: &mut Mat<f64>, f: impl Fn(f64) -> (f64, f64) + Sync + Send) -> Mat<f64> {
        let mut slope = Mat::<f64>::zeros(z.nrows(), z.ncols());
        let zr = &*z;
        for_each_col(&mut slope, |j, o| {
            for (o, &t) in o.iter_mut().zip(zr.col_as_slice(j)) {
                *o = f(t).1;
            }
        });
        for_each_col(z, |_, c| {
            for t in c.iter_mut() {
                *t = f(*t).0;
            }
        });
        slope
    }
    match a {
        Activation::Relu => pass(z, |t| if t > 0.0 { (t, 1.0) } else { (0.0, 0.0) }),
        _ => pass(z, |t| (a.apply(t), a.derivative(t))),
    }
}

impl Mlp {
    /// Forward pass keeping the caches for first-order passes: H_{l-1} and phi'(Z_l) per layer; F = alpha z_L.
    pub fn tape(&self, x: MatRef<'_, f64>) -> Result<Tape> {
        self.build_tape(x, false)
    }

    /// As [`Mlp::tape`], also caching phi''(Z_l) for second-order (R-op) passes.
    pub fn tape_with_curvature(&self, x: MatRef<'_, f64>) -> Result<Tape> {
        self.build_tape(x, true)
    }

    fn build_tape(&self, x: MatRef<'_, f64>, curvature: bool) -> Result<Tape> {
        self.check_input(x)?;
        let layers = self.dense.len();
        let mut inputs = Vec::with_capacity(layers);
        let mut slope = Vec::with_capacity(layers);
        let mut curv = Vec::with_capacity(layers);
        let mut h = x.to_owned();
        for d in &self.dense {
            let mut z = dense_forward(d, h.as_ref());
            inputs.push(h);
            match nonlinearity(d) {
                Some(a) => {
                    curv.push(if curvature && !a.is_piecewise_linear() {
                        Some(map(&z, |t| a.second_derivative(t)))
                    } else {
                        None
                    });
                    slope.push(Some(activate_in_place(&mut z, a)));
                }
                None => {
                    slope.push(None);
                    curv.push(None);
                }
            }
            h = z;
        }
        scale_in_place(&mut h, self.alpha);
        Ok(Tape { inputs, slope, curvature: curv, output: h })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::{Architecture, Parameterization};

    #[test]
    fn tape_output_matches_forward() {
        // Same arithmetic in the same order: agreement to rounding.
        let a = Architecture::parse("dense(7,b_std=0.3),tanh,dense(5),dense(4,b_std=1),relu,dense(2)", Parameterization::Ntk)
            .unwrap();
        let net = Mlp::init(&a, 3, 1.7, 5).unwrap();
        let x = crate::data::synthetic::gaussian(6, 3, 1);
        let t = net.tape_with_curvature(x.as_ref()).unwrap();
        let f = net.forward(x.as_ref()).unwrap();
        assert!((&t.output - &f).norm_max() < 1e-14 * f.norm_max());
        assert_eq!(t.inputs.len(), 4);
        assert!(t.slope[0].is_some() && t.slope[1].is_none() && t.slope[2].is_some() && t.slope[3].is_none());
        assert!(t.curvature[0].is_some() && t.curvature[2].is_none());
        assert_eq!(t.inputs[2].ncols(), 5);
    }
}
