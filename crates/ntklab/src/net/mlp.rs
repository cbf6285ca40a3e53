//! The finite fully-connected network: typed layers, parameterization multipliers, seeded initialization,
//! flat parameter vectors and the forward pass.
//!
//! Every Dense layer computes `z = h W_eff^T + b_eff` with `W_eff = w_mult * W`, `b_eff = b_mult * b`, where
//! `W` (n_out x n_in, PyTorch `nn.Linear` layout) and `b` are the trainable variables, initialized
//! `W ~ N(0, w_init^2)`, `b ~ N(0, b_init^2)`. The network output is `alpha * z_L`. The parameterization
//! decides (w_mult, w_init, b_mult, b_init) for each layer (sigma = w_std, beta = b_std, n_in fan-in):
//!
//! | parameterization | layer | w_mult | w_init | b_mult | b_init |
//! |---|---|---|---|---|---|
//! | ntk (Jacot et al. 2018; neural-tangents) | all | sigma/sqrt(n_in) | 1 | beta | 1 |
//! | standard | all | 1 | sigma/sqrt(n_in) | 1 | beta |
//! | mean-field (Mei et al. 2018) | hidden | sigma/sqrt(n_in) | 1 | beta | 1 |
//! | mean-field | readout | sigma/n_in | 1 | beta | 1 |
//! | mup (Yang & Hu 2021, Table 3, abc form with c = 0) | input (n = n_out) | sigma sqrt(n)/sqrt(d) | 1/sqrt(n) | beta sqrt(n) | 1/sqrt(n) |
//! | mup | hidden | sigma | 1/sqrt(n_in) | beta sqrt(n_out) | 1/sqrt(n_out) |
//! | mup | readout | sigma/sqrt(n_in) | 1/sqrt(n_in) | beta | 1 |
//!
//! (For muP the input dimension d is treated as O(1): the 1/sqrt(d) only normalizes the inputs as in the
//! other parameterizations, so a muP net at init has the same forward statistics as an 'ntk' one.)

use faer::{Mat, MatRef};
use rand_distr::{Distribution, StandardNormal};

use crate::data::synthetic::{derive_seed, rng};
use crate::kernel::{Activation, Architecture, Layer, Parameterization};
use crate::{Error, Result};

/// One Dense layer's trainable variables and multipliers.
#[derive(Debug, Clone, PartialEq)]
pub struct DenseParams {
    /// Raw trainable weight, n_out x n_in.
    pub weight: Mat<f64>,
    /// Raw trainable bias (n_out), if the layer has one.
    pub bias: Option<Vec<f64>>,
    /// Effective weight = w_mult * weight.
    pub w_mult: f64,
    /// Effective bias = b_mult * bias.
    pub b_mult: f64,
    /// Standard deviation of the raw weight at initialization.
    pub w_init: f64,
    /// Standard deviation of the raw bias at initialization.
    pub b_init: f64,
    /// Position of this layer in `arch.layers` (= its `nn.Sequential` index).
    pub layer_index: usize,
    /// The activation applied right after this layer (None for the readout or consecutive Dense layers).
    pub activation: Option<Activation>,
}

impl DenseParams {
    /// Fan-in.
    pub fn n_in(&self) -> usize {
        self.weight.ncols()
    }
    /// Fan-out.
    pub fn n_out(&self) -> usize {
        self.weight.nrows()
    }
    /// Number of trainable scalars (weights + bias).
    pub fn num_params(&self) -> usize {
        self.weight.nrows() * self.weight.ncols() + self.bias.as_ref().map_or(0, |b| b.len())
    }
}

/// A multilayer perceptron `f(x) = alpha * z_L(x)`: Dense layers, each optionally followed by one activation.
#[derive(Debug, Clone, PartialEq)]
pub struct Mlp {
    /// The architecture it was built from.
    pub arch: Architecture,
    /// Input dimension d.
    pub input_dim: usize,
    /// Output scale alpha (Chizat, Oyallon & Bach 2019, lazy training).
    pub alpha: f64,
    /// Dense layers in order.
    pub dense: Vec<DenseParams>,
}

/// (w_mult, w_init, b_mult, b_init) for Dense layer `idx` of `count` with fan-in `n_in`, fan-out `n_out`.
pub fn multipliers(
    p: Parameterization,
    idx: usize,
    count: usize,
    n_in: usize,
    n_out: usize,
    w_std: f64,
    b_std: f64,
) -> (f64, f64, f64, f64) {
    let nin = n_in as f64;
    let nout = n_out as f64;
    let last = idx + 1 == count;
    match p {
        Parameterization::Ntk => (w_std / nin.sqrt(), 1.0, b_std, 1.0),
        Parameterization::Standard => (1.0, w_std / nin.sqrt(), 1.0, b_std),
        Parameterization::MeanField => {
            if last && count > 1 {
                (w_std / nin, 1.0, b_std, 1.0)
            } else {
                (w_std / nin.sqrt(), 1.0, b_std, 1.0)
            }
        }
        Parameterization::Mup => {
            if last && count > 1 {
                (w_std / nin.sqrt(), 1.0 / nin.sqrt(), b_std, 1.0)
            } else if idx == 0 {
                (w_std * nout.sqrt() / nin.sqrt(), 1.0 / nout.sqrt(), b_std * nout.sqrt(), 1.0 / nout.sqrt())
            } else {
                (w_std, 1.0 / nin.sqrt(), b_std * nout.sqrt(), 1.0 / nout.sqrt())
            }
        }
    }
}

impl Mlp {
    /// Shapes and multipliers without weights (all zero); used by `init` and by loaders.
    pub fn zeros(arch: &Architecture, input_dim: usize, alpha: f64) -> Result<Mlp> {
        arch.validate()?;
        if input_dim == 0 {
            return Err(Error::Config("input dimension must be positive".into()));
        }
        if !alpha.is_finite() || alpha == 0.0 {
            return Err(Error::Config(format!("output scale alpha must be finite and non-zero, got {alpha}")));
        }
        let count = arch.layers.iter().filter(|l| matches!(l, Layer::Dense { .. })).count();
        if count == 0 {
            return Err(Error::Config("a finite network needs at least one dense layer".into()));
        }
        if !matches!(arch.layers.last(), Some(Layer::Dense { .. })) {
            return Err(Error::Config("the last layer of a finite network must be dense (the readout)".into()));
        }
        let mut dense: Vec<DenseParams> = Vec::with_capacity(count);
        let mut n_in = input_dim;
        for (pos, layer) in arch.layers.iter().enumerate() {
            match layer {
                Layer::Dense { width, w_std, b_std } => {
                    let (w_mult, w_init, b_mult, b_init) =
                        multipliers(arch.parameterization, dense.len(), count, n_in, *width, *w_std, b_std.unwrap_or(0.0));
                    dense.push(DenseParams {
                        weight: Mat::zeros(*width, n_in),
                        bias: b_std.map(|_| vec![0.0; *width]),
                        w_mult,
                        b_mult,
                        w_init,
                        b_init,
                        layer_index: pos,
                        activation: None,
                    });
                    n_in = *width;
                }
                Layer::Activation(a) => match dense.last_mut() {
                    Some(d) if d.activation.is_none() => d.activation = Some(a.clone()),
                    Some(_) => {
                        return Err(Error::Config(format!(
                            "layer {} (`{a}`): two activations in a row are not supported in finite networks",
                            pos + 1
                        )))
                    }
                    None => {
                        return Err(Error::Config(format!(
                            "layer {} (`{a}`): a finite network must start with a dense layer",
                            pos + 1
                        )))
                    }
                },
            }
        }
        Ok(Mlp { arch: arch.clone(), input_dim, alpha, dense })
    }

    /// Seeded initialization: layer l draws from its own stream `derive_seed(seed, l)`, so weights do not
    /// depend on thread count or on other layers' sizes.
    pub fn init(arch: &Architecture, input_dim: usize, alpha: f64, seed: u64) -> Result<Mlp> {
        let mut net = Mlp::zeros(arch, input_dim, alpha)?;
        for (l, d) in net.dense.iter_mut().enumerate() {
            let mut r = rng(derive_seed(seed, l as u64));
            let (rows, cols) = (d.weight.nrows(), d.weight.ncols());
            // Row-major draw order (PyTorch layout), independent of faer's storage order.
            for i in 0..rows {
                for j in 0..cols {
                    let z: f64 = StandardNormal.sample(&mut r);
                    d.weight[(i, j)] = d.w_init * z;
                }
            }
            if let Some(b) = d.bias.as_mut() {
                for v in b.iter_mut() {
                    let z: f64 = StandardNormal.sample(&mut r);
                    *v = d.b_init * z;
                }
            }
        }
        Ok(net)
    }

    /// Output dimension k.
    pub fn output_dim(&self) -> usize {
        self.dense.last().map_or(0, |d| d.n_out())
    }

    /// Total number of trainable scalars P.
    pub fn num_params(&self) -> usize {
        self.dense.iter().map(|d| d.num_params()).sum()
    }

    /// Flat parameter vector: for each Dense layer, the weight row-major (PyTorch order), then the bias.
    pub fn params(&self) -> Vec<f64> {
        let mut out = Vec::with_capacity(self.num_params());
        for d in &self.dense {
            for i in 0..d.weight.nrows() {
                for j in 0..d.weight.ncols() {
                    out.push(d.weight[(i, j)]);
                }
            }
            if let Some(b) = &d.bias {
                out.extend_from_slice(b);
            }
        }
        out
    }

    /// Overwrite all parameters from a flat vector in [`Mlp::params`] order.
    pub fn set_params(&mut self, p: &[f64]) -> Result<()> {
        if p.len() != self.num_params() {
            return Err(Error::Shape(format!("parameter vector has {} entries, the network has {}", p.len(), self.num_params())));
        }
        let mut k = 0;
        for d in &mut self.dense {
            for i in 0..d.weight.nrows() {
                for j in 0..d.weight.ncols() {
                    d.weight[(i, j)] = p[k];
                    k += 1;
                }
            }
            if let Some(b) = d.bias.as_mut() {
                let n = b.len();
                b.copy_from_slice(&p[k..k + n]);
                k += n;
            }
        }
        Ok(())
    }

    /// Offsets of each Dense layer's block in the flat vector: (weight start, bias start or None).
    pub fn param_offsets(&self) -> Vec<(usize, Option<usize>)> {
        let mut k = 0;
        self.dense
            .iter()
            .map(|d| {
                let w = k;
                k += d.weight.nrows() * d.weight.ncols();
                let b = d.bias.as_ref().map(|b| {
                    let s = k;
                    k += b.len();
                    s
                });
                (w, b)
            })
            .collect()
    }

    /// Check an input batch: N x d with finite entries.
    pub fn check_input(&self, x: MatRef<'_, f64>) -> Result<()> {
        if x.ncols() != self.input_dim {
            return Err(Error::Shape(format!(
                "inputs have {} features per row but the network expects {}",
                x.ncols(),
                self.input_dim
            )));
        }
        if x.nrows() == 0 {
            return Err(Error::Shape("input batch has no rows".into()));
        }
        for j in 0..x.ncols() {
            for i in 0..x.nrows() {
                if !x[(i, j)].is_finite() {
                    return Err(Error::InvalidInput(format!("input has a non-finite value at row {i}, column {j}")));
                }
            }
        }
        Ok(())
    }

    /// Network outputs f(X) = alpha z_L(X), N x k.
    pub fn forward(&self, x: MatRef<'_, f64>) -> Result<Mat<f64>> {
        self.check_input(x)?;
        let mut h = x.to_owned();
        let last = self.dense.len() - 1;
        for (l, d) in self.dense.iter().enumerate() {
            let mut z = dense_forward(d, h.as_ref());
            if let Some(a) = &d.activation {
                z = Mat::from_fn(z.nrows(), z.ncols(), |i, j| a.apply(z[(i, j)]));
            }
            if l == last {
                z = Mat::from_fn(z.nrows(), z.ncols(), |i, j| self.alpha * z[(i, j)]);
            }
            h = z;
        }
        Ok(h)
    }
}

/// Pre-activation of one Dense layer: `Z = w_mult * H W^T + b_mult * 1 b^T` (N x n_out), by GEMM.
pub fn dense_forward(d: &DenseParams, h: MatRef<'_, f64>) -> Mat<f64> {
    let mut z = Mat::<f64>::zeros(h.nrows(), d.n_out());
    faer::linalg::matmul::matmul(z.as_mut(), faer::Accum::Replace, h, d.weight.transpose(), d.w_mult, faer::Par::rayon(0));
    if let Some(b) = &d.bias {
        super::ops::for_each_col(&mut z, |j, c| {
            let bj = d.b_mult * b[j];
            c.iter_mut().for_each(|v| *v += bj);
        });
    }
    z
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arch(s: &str, p: Parameterization) -> Architecture {
        Architecture::parse(s, p).unwrap()
    }

    #[test]
    fn seeded_init_and_param_roundtrip() {
        let a = arch("dense(5,b_std=0.5),tanh,dense(3),relu,dense(2,b_std=1)", Parameterization::Ntk);
        let n1 = Mlp::init(&a, 4, 1.0, 7).unwrap();
        let n2 = Mlp::init(&a, 4, 1.0, 7).unwrap();
        assert_eq!(n1, n2);
        assert_ne!(n1, Mlp::init(&a, 4, 1.0, 8).unwrap());
        assert_eq!(n1.num_params(), 5 * 4 + 5 + 3 * 5 + 2 * 3 + 2);
        let p = n1.params();
        let mut n3 = Mlp::zeros(&a, 4, 1.0).unwrap();
        n3.set_params(&p).unwrap();
        assert_eq!(n3, n1);
        assert!(n3.set_params(&p[1..]).is_err());
        assert_eq!(n1.dense[0].layer_index, 0);
        assert_eq!(n1.dense[2].layer_index, 4);
    }

    #[test]
    fn forward_matches_explicit_loop() {
        let a = arch("dense(6,w_std=1.3,b_std=0.2),erf,dense(1,b_std=0.1)", Parameterization::Standard);
        let net = Mlp::init(&a, 3, 2.0, 1).unwrap();
        let x = crate::data::synthetic::gaussian(4, 3, 9);
        let f = net.forward(x.as_ref()).unwrap();
        for n in 0..4 {
            let mut out = net.dense[1].b_mult * net.dense[1].bias.as_ref().unwrap()[0];
            for i in 0..6 {
                let mut z = net.dense[0].b_mult * net.dense[0].bias.as_ref().unwrap()[i];
                for j in 0..3 {
                    z += net.dense[0].w_mult * net.dense[0].weight[(i, j)] * x[(n, j)];
                }
                out += net.dense[1].w_mult * net.dense[1].weight[(0, i)] * libm::erf(z);
            }
            assert!((f[(n, 0)] - 2.0 * out).abs() < 1e-12);
        }
    }

    #[test]
    fn parameterizations_agree_at_init_in_function_space() {
        // ntk and standard use the same effective weight distribution: same seed gives the same function.
        let s = "dense(8,w_std=1.4,b_std=0.3),relu,dense(1,b_std=0.3)";
        let x = crate::data::synthetic::gaussian(3, 5, 2);
        let fa = Mlp::init(&arch(s, Parameterization::Ntk), 5, 1.0, 3).unwrap().forward(x.as_ref()).unwrap();
        let fb = Mlp::init(&arch(s, Parameterization::Standard), 5, 1.0, 3).unwrap().forward(x.as_ref()).unwrap();
        for i in 0..3 {
            assert!((fa[(i, 0)] - fb[(i, 0)]).abs() < 1e-12);
        }
    }

    #[test]
    fn bad_configs_are_errors() {
        let p = Parameterization::Ntk;
        assert!(Mlp::init(&arch("relu,dense(1)", p), 3, 1.0, 0).is_err());
        assert!(Mlp::init(&arch("dense(3),relu", p), 3, 1.0, 0).is_err());
        assert!(Mlp::init(&arch("dense(3),relu,tanh,dense(1)", p), 3, 1.0, 0).is_err());
        assert!(Mlp::init(&arch("dense(3),relu,dense(1)", p), 0, 1.0, 0).is_err());
        let net = Mlp::init(&arch("dense(3),relu,dense(1)", p), 2, 1.0, 0).unwrap();
        assert!(net.forward(Mat::<f64>::zeros(2, 3).as_ref()).is_err());
        let mut x = Mat::<f64>::zeros(2, 2);
        x[(1, 1)] = f64::NAN;
        assert!(net.forward(x.as_ref()).is_err());
    }
}
