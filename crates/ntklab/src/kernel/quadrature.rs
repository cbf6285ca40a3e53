//! Gauss–Hermite quadrature for the standard normal weight, and the 2-D Gaussian expectations built on it.

use super::activation::Activation;

/// Probabilists' Gauss–Hermite rule: `E[f(z)] ~= sum_i w_i f(x_i)` for z ~ N(0, 1), exact for
/// polynomials of degree < 2 deg. Nodes and weights by Golub–Welsch (eigenpairs of the Jacobi matrix
/// with zero diagonal and off-diagonal sqrt(k)).
#[derive(Debug, Clone)]
pub struct GaussHermite {
    /// Nodes x_i, ascending.
    pub nodes: Vec<f64>,
    /// Weights w_i, summing to 1.
    pub weights: Vec<f64>,
}

impl GaussHermite {
    /// The rule with `deg` nodes.
    pub fn new(deg: usize) -> GaussHermite {
        assert!(deg >= 1, "Gauss–Hermite degree must be at least 1");
        let jac = faer::Mat::<f64>::from_fn(deg, deg, |i, j| {
            if i + 1 == j {
                (j as f64).sqrt()
            } else if j + 1 == i {
                (i as f64).sqrt()
            } else {
                0.0
            }
        });
        let evd = jac.self_adjoint_eigen(faer::Side::Lower).expect("symmetric tridiagonal eigenproblem converges");
        let s = evd.S();
        let u = evd.U();
        let mut nodes = Vec::with_capacity(deg);
        let mut weights = Vec::with_capacity(deg);
        for i in 0..deg {
            nodes.push(s[i]);
            weights.push(u[(0, i)] * u[(0, i)]);
        }
        // Symmetrize to remove rounding asymmetry (the exact rule is symmetric about 0).
        for i in 0..deg / 2 {
            let j = deg - 1 - i;
            let x = 0.5 * (nodes[j] - nodes[i]);
            let w = 0.5 * (weights[i] + weights[j]);
            nodes[i] = -x;
            nodes[j] = x;
            weights[i] = w;
            weights[j] = w;
        }
        if deg % 2 == 1 {
            nodes[deg / 2] = 0.0;
        }
        let total: f64 = weights.iter().sum();
        for w in &mut weights {
            *w /= total;
        }
        GaussHermite { nodes, weights }
    }

    /// E[f(z)], z ~ N(0, 1).
    pub fn expect(&self, f: impl Fn(f64) -> f64) -> f64 {
        self.nodes.iter().zip(&self.weights).map(|(&x, &w)| w * f(x)).sum()
    }

    /// (E[phi(u)phi(v)], E[phi'(u)phi'(v)]) for (u,v) ~ N(0, [[s11,s12],[s12,s22]]), by the product rule
    /// over u = sqrt(s11) z1, v = (s12/sqrt(s11)) z1 + sqrt(s22 - s12^2/s11) z2. Node pairs whose weight
    /// product is below 1e-20 are skipped (their contribution is below rounding for bounded growth).
    pub fn dual(&self, act: &Activation, s11: f64, s12: f64, s22: f64) -> (f64, f64) {
        let s11 = s11.max(0.0);
        let s22 = s22.max(0.0);
        let (a, b, c) = if s11 > 0.0 {
            let r = s11.sqrt();
            let b = s12 / r;
            (r, b, (s22 - b * b).max(0.0).sqrt())
        } else {
            (0.0, 0.0, s22.sqrt())
        };
        let n = self.nodes.len();
        let wmax = self.weights.iter().cloned().fold(0.0, f64::max);
        let mut t = 0.0;
        let mut td = 0.0;
        for i in 0..n {
            let wi = self.weights[i];
            if wi * wmax < 1e-20 {
                continue;
            }
            let zi = self.nodes[i];
            let u = a * zi;
            let pu = act.apply(u);
            let du = act.derivative(u);
            let base = b * zi;
            let mut st = 0.0;
            let mut std = 0.0;
            if c == 0.0 {
                st = act.apply(base);
                std = act.derivative(base);
            } else {
                for j in 0..n {
                    let wj = self.weights[j];
                    if wi * wj < 1e-20 {
                        continue;
                    }
                    let v = base + c * self.nodes[j];
                    st += wj * act.apply(v);
                    std += wj * act.derivative(v);
                }
            }
            t += wi * pu * st;
            td += wi * du * std;
        }
        (t, td)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn moments_of_standard_normal_exact() {
        // The rule with n nodes is exact for polynomials of degree < 2n: E[z^2k] = (2k-1)!!.
        let gh = GaussHermite::new(10);
        let dfact = |k: u32| (1..=k).map(|i| (2 * i - 1) as f64).product::<f64>();
        for k in 0..10u32 {
            let m = gh.expect(|z| z.powi(2 * k as i32));
            assert!((m - dfact(k)).abs() < 1e-10 * dfact(k).max(1.0), "E z^{} = {m}", 2 * k);
            let odd = gh.expect(|z| z.powi(2 * k as i32 + 1));
            assert!(odd.abs() < 1e-9 * dfact(k).max(1.0));
        }
    }

    #[test]
    fn gaussian_characteristic_function() {
        // E[cos(t z)] = exp(-t^2/2); smooth entire integrand, so 40 nodes converge to rounding.
        let gh = GaussHermite::new(40);
        for &t in &[0.3, 1.0, 2.5] {
            assert!((gh.expect(|z| (t * z).cos()) - (-t * t / 2.0).exp()).abs() < 1e-13);
        }
    }
}
