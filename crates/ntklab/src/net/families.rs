//! Named special cases of [`Mlp`] that the theory literature studies on their own.

use super::network::Mlp;
use crate::kernel::{Activation, Architecture, Layer, Parameterization};
use crate::{Error, Result};

impl Mlp {
    /// Deep linear network f(x) = c_L W_L ... c_1 W_1 x (Saxe et al. 2014; Arora et al. 2018): `depth` Dense
    /// layers (depth - 1 hidden of `width`, then `output_dim`), no biases, no activations, w_std = 1, alpha = 1;
    /// the multipliers c_l come from `param` (e.g. 'ntk': c_l = 1/sqrt(n_in)).
    pub fn deep_linear(
        input_dim: usize,
        width: usize,
        depth: usize,
        output_dim: usize,
        param: Parameterization,
        seed: u64,
    ) -> Result<Mlp> {
        if depth == 0 {
            return Err(Error::Config("a deep linear network needs depth >= 1".into()));
        }
        let mut layers: Vec<Layer> = (1..depth).map(|_| Layer::Dense { width, w_std: 1.0, b_std: None }).collect();
        layers.push(Layer::Dense { width: output_dim, w_std: 1.0, b_std: None });
        Mlp::init(&Architecture::sequential(layers, param), input_dim, 1.0, seed)
    }

    /// Two-layer network f(x) = alpha c_2 sum_{i<m} a_i phi(c_1 w_i . x) (no biases, w_std = 1), with
    /// (c_1, c_2) from `param`: 'ntk' (1/sqrt(d), 1/sqrt(m)), 'mean-field' (1/sqrt(d), 1/m), 'standard' (1, 1)
    /// with the scales moved into the initialization, 'mup' as in the table of [`crate::net::mlp`].
    pub fn two_layer(
        input_dim: usize,
        m: usize,
        act: Activation,
        param: Parameterization,
        alpha: f64,
        seed: u64,
    ) -> Result<Mlp> {
        let layers = vec![
            Layer::Dense { width: m, w_std: 1.0, b_std: None },
            Layer::Activation(act),
            Layer::Dense { width: 1, w_std: 1.0, b_std: None },
        ];
        Mlp::init(&Architecture::sequential(layers, param), input_dim, alpha, seed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::synthetic::gaussian;

    #[test]
    fn deep_linear_is_the_product_of_its_matrices() {
        // f(x) = (c_3 W_3)(c_2 W_2)(c_1 W_1) x, multiplied out explicitly.
        let net = Mlp::deep_linear(4, 6, 3, 2, Parameterization::Ntk, 5).unwrap();
        assert_eq!(net.dense.len(), 3);
        assert!(net.dense.iter().all(|d| !d.has_bias()));
        assert_eq!(net.graph.nodes.len(), 4, "no activation nodes");
        let mut prod = faer::Mat::<f64>::identity(4, 4);
        for (l, d) in net.dense.iter().enumerate() {
            prod = faer::Scale(d.w_mult) * net.weight(l) * &prod;
        }
        let x = gaussian(3, 4, 1);
        let f = net.forward(x.as_ref()).unwrap();
        let want = &x * prod.transpose();
        assert!((&f - &want).norm_max() < 1e-13);
        assert!(Mlp::deep_linear(4, 6, 0, 2, Parameterization::Ntk, 5).is_err());
    }

    #[test]
    fn two_layer_matches_its_formula() {
        let (d, m) = (3, 50);
        let x = gaussian(4, d, 2);
        for (p, c2) in [(Parameterization::Ntk, 1.0 / (m as f64).sqrt()), (Parameterization::MeanField, 1.0 / m as f64)]
        {
            let net = Mlp::two_layer(d, m, Activation::Tanh, p, 2.0, 9).unwrap();
            let f = net.forward(x.as_ref()).unwrap();
            let (w, a) = (net.weight(0), net.weight(1));
            for n in 0..4 {
                let s: f64 = (0..m)
                    .map(|i| {
                        a[(0, i)] * ((0..d).map(|j| w[(i, j)] * x[(n, j)]).sum::<f64>() / (d as f64).sqrt()).tanh()
                    })
                    .sum();
                assert!((f[(n, 0)] - 2.0 * c2 * s).abs() < 1e-12, "{p}");
            }
        }
    }
}
