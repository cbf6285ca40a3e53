//! Reference routes shared by the derivative tests: central finite differences and Jacobians from unit VJPs.

use faer::{Mat, MatRef};

use super::network::Mlp;
use crate::data::synthetic::gaussian;
use crate::kernel::{Architecture, Parameterization};
use crate::train::loss::Loss;

/// A seeded network from an architecture string.
pub(crate) fn net(spec: &str, p: Parameterization, d: usize, alpha: f64, seed: u64) -> Mlp {
    Mlp::init(&Architecture::parse(spec, p).unwrap(), d, alpha, seed).unwrap()
}

/// Valid targets for `loss`: Gaussian, +-1 labels (with a few soft ones), or probability rows.
pub(crate) fn targets(loss: Loss, n: usize, k: usize, seed: u64) -> Mat<f64> {
    let g = gaussian(n, k, seed);
    match loss {
        Loss::Mse => g,
        Loss::Logistic => Mat::from_fn(n, k, |i, a| {
            if g[(i, a)] > 0.0 {
                1.0
            } else if (i + a) % 4 == 0 {
                -0.5
            } else {
                -1.0
            }
        }),
        Loss::SoftmaxCrossEntropy => {
            let mut y = Mat::from_fn(n, k, |i, a| {
                if i % 2 == 0 {
                    g[(i, a)].exp()
                } else if a == i % k {
                    1.0
                } else {
                    0.0
                }
            });
            for i in 0..n {
                let s: f64 = (0..k).map(|a| y[(i, a)]).sum();
                for a in 0..k {
                    y[(i, a)] /= s;
                }
            }
            y
        }
    }
}

/// A standard Gaussian vector of length p.
pub(crate) fn random_vec(p: usize, seed: u64) -> Vec<f64> {
    let g = gaussian(p, 1, 1000 + seed);
    (0..p).map(|i| g[(i, 0)]).collect()
}

pub(crate) fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// ||a - b|| / ||b||.
pub(crate) fn rel_err(a: &[f64], b: &[f64]) -> f64 {
    let num: f64 = a.iter().zip(b).map(|(x, y)| (x - y).powi(2)).sum::<f64>().sqrt();
    let den: f64 = b.iter().map(|y| y * y).sum::<f64>().sqrt();
    num / den.max(f64::MIN_POSITIVE)
}

/// The network with parameters theta + t v.
pub(crate) fn shifted(net: &Mlp, v: &[f64], t: f64) -> Mlp {
    let mut m = net.clone();
    let p: Vec<f64> = net.params().iter().zip(v).map(|(a, b)| a + t * b).collect();
    m.set_params(&p).unwrap();
    m
}

/// Central differences of a vector-valued function of the parameters along v.
pub(crate) fn fd_directional(net: &Mlp, v: &[f64], h: f64, f: impl Fn(&Mlp) -> Vec<f64>) -> Vec<f64> {
    let (a, b) = (f(&shifted(net, v, h)), f(&shifted(net, v, -h)));
    a.iter().zip(&b).map(|(x, y)| (x - y) / (2.0 * h)).collect()
}

/// Central-difference gradient of a scalar function of the parameters, coordinate by coordinate.
pub(crate) fn fd_gradient(net: &Mlp, f: impl Fn(&Mlp) -> f64, h: f64) -> Vec<f64> {
    let p = net.num_params();
    (0..p)
        .map(|i| {
            let mut e = vec![0.0; p];
            e[i] = 1.0;
            (f(&shifted(net, &e, h)) - f(&shifted(net, &e, -h))) / (2.0 * h)
        })
        .collect()
}

/// Central differences of the outputs along v: (F(theta + h v) - F(theta - h v)) / 2h, N x k.
pub(crate) fn fd_jvp(net: &Mlp, x: MatRef<'_, f64>, v: &[f64], h: f64) -> Mat<f64> {
    let fp = shifted(net, v, h).forward(x).unwrap();
    let fm = shifted(net, v, -h).forward(x).unwrap();
    (&fp - &fm) / (2.0 * h)
}

/// Explicit Jacobian (N k x P, row i k + a) from N k unit-cotangent VJPs.
pub(crate) fn jacobian_by_vjp(net: &Mlp, x: MatRef<'_, f64>) -> Mat<f64> {
    let (n, k, p) = (x.nrows(), net.output_dim(), net.num_params());
    let mut j = Mat::<f64>::zeros(n * k, p);
    for i in 0..n {
        for a in 0..k {
            let mut u = Mat::<f64>::zeros(n, k);
            u[(i, a)] = 1.0;
            let row = net.vjp(x, u.as_ref()).unwrap();
            for (c, r) in row.iter().enumerate() {
                j[(i * k + a, c)] = *r;
            }
        }
    }
    j
}

/// A residual network with smooth activations (two residual blocks, one of them deeper).
pub(crate) const RESIDUAL: &str =
    "dense(5,w_std=1.2,b_std=0.3),residual(tanh,dense(5,b_std=0.2)),residual(gelu,dense(7),erf,dense(5)),softplus,dense(3,b_std=0.5)";

/// A DAG with a skip connection from the input, a node read twice, a concatenation and smooth activations.
pub(crate) const DAG: &str = "node(h1,dense(6,b_std=0.2),input),node(a1,tanh,h1),node(h2,dense(6),a1),\
node(skip,dense(6,b_std=0.1),input),node(s,sum,h2,skip),node(a2,gelu,s),node(c,concat,a1,a2),node(a3,sin,c),\
node(out,dense(3,b_std=0.3),a3)";
