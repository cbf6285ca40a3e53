//! Quadrature for the standard normal weight: Gauss–Hermite rules, and a trapezoidal rule whose step follows
//! the integrand's scale; the 2-D Gaussian expectations (activation duals) built on them.

use super::activation::Activation;
use super::compute::{simd_level, Simd};
use super::fastmath;

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
        let (mut nodes, mut weights) = golub_welsch(deg, |k| k.sqrt());
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

    /// (E[phi(u)phi(v)], E[phi'(u)phi'(v)]) for (u,v) ~ N(0, `[[s11, s12], [s12, s22]]`), by the product rule
    /// over u = sqrt(s11) z1, v = (s12/sqrt(s11)) z1 + sqrt(s22 - s12^2/s11) z2. Node pairs whose weight
    /// product is below 1e-20 are skipped (their contribution is below rounding for bounded growth).
    pub fn dual(&self, act: &Activation, s11: f64, s12: f64, s22: f64) -> (f64, f64) {
        let (a, b, c) = cholesky_2x2(s11, s12, s22);
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

/// One uniform grid of the trapezoidal rule for z ~ N(0, 1): nodes k h on |z| <= 9, weights h phi(k h),
/// normalized to sum to 1 (the discrepancy is of order exp(-2 pi^2 / h^2), nil for the steps used here).
#[derive(Debug, Clone)]
struct Grid {
    h: f64,
    nodes: Vec<f64>,
    weights: Vec<f64>,
}

impl Grid {
    fn new(h: f64) -> Grid {
        let k = (9.0 / h).floor() as i64;
        let nodes: Vec<f64> = (-k..=k).map(|i| i as f64 * h).collect();
        let mut weights: Vec<f64> = nodes.iter().map(|z| (-0.5 * z * z).exp()).collect();
        let total: f64 = weights.iter().sum();
        weights.iter_mut().for_each(|w| *w /= total);
        Grid { h, nodes, weights }
    }
}

/// Trapezoidal rule for Gaussian expectations whose step follows the scale of the integrand, for
/// activations analytic in a strip |Im x| < tau0 (tanh: pi/2; softplus, SiLU: pi).
///
/// For such an integrand of z, the rule with step h errs by about exp(-2 pi tau / h), where tau = tau0 / scale and
/// scale is the standard deviation multiplying z (Trefethen & Weideman, "The exponentially convergent trapezoidal
/// rule", SIAM Review 2014). Gauss–Hermite with n nodes reaches only about exp(-tau sqrt(4 n)). Grid points
/// per axis therefore grow like sqrt(q) here, but Gauss–Hermite needs n ~ q for the same accuracy, which matters
/// at the large pre-activation variances of deep or large-W_std networks. Steps come from a fixed ladder
/// h_j = 0.5 * 2^(-j/4) down to 0.05, chosen so that exp(-2 pi (0.7 tau) / h) <= e^-27 (about 2e-12). Scales
/// beyond the ladder (sqrt(q) > about 9 for tanh) use the finest grid, with correspondingly less accuracy.
#[derive(Debug, Clone)]
pub struct StripTrapezoid {
    tau0: f64,
    ladder: Vec<Grid>,
    simd: Simd,
}

impl StripTrapezoid {
    /// The rule for an integrand analytic in |Im x| < `tau0` (in units of the pre-activation).
    pub fn new(tau0: f64) -> StripTrapezoid {
        assert!(tau0 > 0.0, "strip half-width must be positive");
        let mut ladder = Vec::new();
        let mut j = 0;
        loop {
            let h = 0.5 * 2f64.powf(-(j as f64) / 4.0);
            if h < 0.05 {
                break;
            }
            ladder.push(Grid::new(h));
            j += 1;
        }
        StripTrapezoid { tau0, ladder, simd: simd_level() }
    }

    /// The coarsest grid accurate for an integrand phi(scale * z).
    fn grid(&self, scale: f64) -> &Grid {
        let want = 2.0 * std::f64::consts::PI * 0.7 * self.tau0 / (27.0 * scale.max(1e-300));
        self.ladder.iter().find(|g| g.h <= want).unwrap_or_else(|| self.ladder.last().expect("non-empty ladder"))
    }

    /// (E[phi(u)phi(v)], E[phi'(u)phi'(v)]) for (u,v) ~ N(0, `[[s11, s12], [s12, s22]]`), by the product rule over
    /// u = sqrt(s11) z1, v = (s12/sqrt(s11)) z1 + sqrt(s22 - s12^2/s11) z2, with each axis's step chosen from
    /// the largest coefficient on it.
    pub fn dual(&self, act: &Activation, s11: f64, s12: f64, s22: f64) -> (f64, f64) {
        let pd = |x: f64| (act.apply(x), act.derivative(x));
        let (a, b, c) = cholesky_2x2(s11, s12, s22);
        let outer = self.grid(a.max(b.abs()));
        let inner = self.grid(c);
        // For odd phi both integrands are even under (z1, z2) -> (-z1, -z2), and the grids are symmetric, so
        // the half z1 > 0 counts twice and the row z1 = 0 once.
        let kind = match act {
            Activation::Tanh => Some(Kind::Tanh),
            Activation::Silu => Some(Kind::Silu),
            Activation::Softplus => Some(Kind::Softplus),
            _ => None,
        };
        let odd = kind == Some(Kind::Tanh);
        let mid = outer.nodes.len() / 2; // the node z1 = 0
        let mut t = 0.0;
        let mut td = 0.0;
        for (i, (&zi, &wi)) in outer.nodes.iter().zip(&outer.weights).enumerate() {
            let fold = if !odd {
                1.0
            } else if i > mid {
                2.0
            } else if i == mid {
                1.0
            } else {
                continue;
            };
            let (pu, du) = pd(a * zi);
            let base = b * zi;
            let (st, std) = if c == 0.0 {
                pd(base)
            } else if let Some(kind) = kind {
                // Inner nodes with wi * wj >= 1e-21 form a centred run (weights fall off symmetrically).
                let cut = 1e-21 / wi;
                let skip = inner.weights.iter().take_while(|&&w| w < cut).count();
                let end = inner.weights.len() - skip;
                if skip >= end {
                    (0.0, 0.0)
                } else {
                    strip_sums(self.simd, kind, base, c, &inner.nodes[skip..end], &inner.weights[skip..end])
                }
            } else {
                let (mut st, mut std) = (0.0, 0.0);
                for (&zj, &wj) in inner.nodes.iter().zip(&inner.weights) {
                    if wi * wj < 1e-21 {
                        continue;
                    }
                    let (p, d) = pd(base + c * zj);
                    st += wj * p;
                    std += wj * d;
                }
                (st, std)
            };
            t += fold * wi * pu * st;
            td += fold * wi * du * std;
        }
        (t, td)
    }
}

/// Gauss–Legendre rule on [0, 1] (Golub–Welsch: Jacobi matrix with zero diagonal and off-diagonal
/// k / sqrt(4k^2 - 1)), as (nodes, weights) summing to 1.
pub(crate) fn gauss_legendre_unit(n: usize) -> (Vec<f64>, Vec<f64>) {
    let (x, w) = golub_welsch(n, |k| k / (4.0 * k * k - 1.0).sqrt());
    (x.iter().map(|x| 0.5 * (x + 1.0)).collect(), w)
}

/// Nodes (eigenvalues, ascending) and weights (squared first components of the unit eigenvectors) of the
/// symmetric tridiagonal Jacobi matrix with zero diagonal and off-diagonal `beta(k)` between rows k-1 and k
/// (Golub & Welsch 1969); for a normalized weight function the weights sum to 1.
fn golub_welsch(n: usize, beta: impl Fn(f64) -> f64) -> (Vec<f64>, Vec<f64>) {
    let jac =
        faer::Mat::<f64>::from_fn(n, n, |i, j| if i + 1 == j || j + 1 == i { beta(i.max(j) as f64) } else { 0.0 });
    let evd = jac.self_adjoint_eigen(faer::Side::Lower).expect("symmetric tridiagonal eigenproblem converges");
    let (s, u) = (evd.S(), evd.U());
    ((0..n).map(|i| s[i]).collect(), (0..n).map(|i| u[(0, i)] * u[(0, i)]).collect())
}

/// The ELU(alpha) dual, semi-analytically: the inner Gaussian expectation over z2 in closed form, the outer one
/// over z1 by Gauss–Legendre on each side of the kink at z1 = 0.
///
/// With y ~ N(m, c^2), t = m / c, Phi/phi the standard normal CDF/density:
/// * E[elu(y)] = m Phi(t) + c phi(t) + alpha (e^(m + c^2/2) Phi(-t - c) - Phi(-t)),
/// * E[elu'(y)] = Phi(t) + alpha e^(m + c^2/2) Phi(-t - c).
///
/// Then T = E[elu(a z1) G(b z1)] and Tdot = E[elu'(a z1) G'(b z1)], where (a, b, c) is the Cholesky factor of the
/// covariance. Both integrands are analytic on each half-line, so Gauss–Legendre on [0, 9] and [-9, 0] converges
/// exponentially. Gauss–Hermite converges only algebraically across the kink: at 48 nodes its Tdot errs by about
/// 1 %.
#[derive(Debug, Clone)]
pub struct EluDual {
    alpha: f64,
    nodes: Vec<f64>,
    weights: Vec<f64>,
}

impl EluDual {
    /// Half-line extent and Gauss–Legendre nodes per side.
    const L: f64 = 9.0;
    const N: usize = 64;

    /// The dual of elu(alpha).
    pub fn new(alpha: f64) -> EluDual {
        let (x, w) = gauss_legendre_unit(Self::N);
        // Fold in the Gaussian density on [0, L]: E over z1 > 0 of f(z1) = sum_k w'_k f(z_k).
        let nodes: Vec<f64> = x.iter().map(|t| t * Self::L).collect();
        let weights = nodes
            .iter()
            .zip(&w)
            .map(|(z, w)| w * Self::L * (-0.5 * z * z).exp() / (2.0 * std::f64::consts::PI).sqrt())
            .collect();
        EluDual { alpha, nodes, weights }
    }

    fn elu(&self, x: f64) -> (f64, f64) {
        if x > 0.0 {
            (x, 1.0)
        } else {
            (self.alpha * x.exp_m1(), self.alpha * x.exp())
        }
    }

    /// (E[elu(y)], E[elu'(y)]) for y ~ N(m, c^2), c >= 0.
    fn smoothed(&self, m: f64, c: f64) -> (f64, f64) {
        if c == 0.0 {
            return self.elu(m);
        }
        let t = m / c;
        let cdf = |x: f64| 0.5 * libm::erfc(-x / std::f64::consts::SQRT_2);
        let pdf = (-0.5 * t * t).exp() / (2.0 * std::f64::consts::PI).sqrt();
        let tail = cdf(-t - c);
        // e^(m + c^2/2) Phi(-t - c) through logs, so a large m meets a tiny tail without overflow.
        let e = if tail > 0.0 { (m + 0.5 * c * c + tail.ln()).exp() } else { 0.0 };
        let (pt, pmt) = (cdf(t), cdf(-t));
        (m * pt + c * pdf + self.alpha * (e - pmt), pt + self.alpha * e)
    }

    /// (E[elu(u) elu(v)], E[elu'(u) elu'(v)]) for (u,v) ~ N(0, `[[s11, s12], [s12, s22]]`).
    pub fn dual(&self, s11: f64, s12: f64, s22: f64) -> (f64, f64) {
        let (a, b, c) = cholesky_2x2(s11, s12, s22);
        let (mut t, mut td) = (0.0, 0.0);
        for sign in [1.0, -1.0] {
            for (&z, &w) in self.nodes.iter().zip(&self.weights) {
                let z = sign * z;
                let (pu, du) = self.elu(a * z);
                let (g, gd) = self.smoothed(b * z, c);
                t += w * pu * g;
                td += w * du * gd;
            }
        }
        (t, td)
    }
}

/// Activations with a vectorized inner loop in [`StripTrapezoid::dual`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Tanh,
    Silu,
    Softplus,
}

/// (phi(x), phi'(x)) branch-free, from the vectorizable exp/tanh of [`fastmath`].
#[inline(always)]
fn phi_dphi<const FMA: bool>(kind: Kind, x: f64) -> (f64, f64) {
    match kind {
        Kind::Tanh => {
            let t = fastmath::tanh::<FMA>(x);
            (t, 1.0 - t * t)
        }
        Kind::Silu | Kind::Softplus => {
            // e = e^-|x| in (0, 1]; sigmoid(x) = 1/(1+e) for x >= 0, e/(1+e) for x < 0.
            let ax = x.abs().min(700.0);
            let e = 1.0 / fastmath::exp_nonneg::<FMA>(ax);
            let inv = 1.0 / (1.0 + e);
            let sig = if x >= 0.0 { inv } else { e * inv };
            if kind == Kind::Silu {
                (x * sig, sig + x * sig * (1.0 - sig))
            } else {
                // softplus(x) = max(x, 0) + log1p(e^-|x|).
                (x.max(0.0) + fastmath::log1p_unit::<FMA>(e), sig)
            }
        }
    }
}

/// (sum_j w_j phi(base + c z_j), sum_j w_j phi'(base + c z_j)), vectorized, eight lanes of partial sums at a
/// time (a fixed order, so the result does not depend on the thread count).
fn strip_sums(simd: Simd, kind: Kind, base: f64, c: f64, zs: &[f64], ws: &[f64]) -> (f64, f64) {
    match simd {
        // SAFETY: each arm is only taken when the CPU reports the features it was built for.
        #[cfg(target_arch = "x86_64")]
        Simd::Avx512 => unsafe { strip_sums_avx512(kind, base, c, zs, ws) },
        #[cfg(target_arch = "x86_64")]
        Simd::Avx2 => unsafe { strip_sums_avx2(kind, base, c, zs, ws) },
        Simd::Generic => strip_sums_generic::<false>(kind, base, c, zs, ws),
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512vl,avx2,fma")]
unsafe fn strip_sums_avx512(kind: Kind, base: f64, c: f64, zs: &[f64], ws: &[f64]) -> (f64, f64) {
    strip_sums_generic::<true>(kind, base, c, zs, ws)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn strip_sums_avx2(kind: Kind, base: f64, c: f64, zs: &[f64], ws: &[f64]) -> (f64, f64) {
    strip_sums_generic::<true>(kind, base, c, zs, ws)
}

#[inline(always)]
fn strip_sums_generic<const FMA: bool>(kind: Kind, base: f64, c: f64, zs: &[f64], ws: &[f64]) -> (f64, f64) {
    match kind {
        Kind::Tanh => strip_sums_kind::<FMA>(Kind::Tanh, base, c, zs, ws),
        Kind::Silu => strip_sums_kind::<FMA>(Kind::Silu, base, c, zs, ws),
        Kind::Softplus => strip_sums_kind::<FMA>(Kind::Softplus, base, c, zs, ws),
    }
}

#[inline(always)]
fn strip_sums_kind<const FMA: bool>(kind: Kind, base: f64, c: f64, zs: &[f64], ws: &[f64]) -> (f64, f64) {
    // A vectorizable map into block buffers, then eight fixed partial sums.
    let mut acc_p = [0.0f64; 8];
    let mut acc_d = [0.0f64; 8];
    let (mut pb, mut db) = ([0.0f64; 64], [0.0f64; 64]);
    for (zb, wb) in zs.chunks(64).zip(ws.chunks(64)) {
        let (pb, db) = (&mut pb[..zb.len()], &mut db[..zb.len()]);
        for ((p, d), &z) in pb.iter_mut().zip(db.iter_mut()).zip(zb) {
            (*p, *d) = phi_dphi::<FMA>(kind, base + c * z);
        }
        for (k, ((&p, &d), &w)) in pb.iter().zip(db.iter()).zip(wb).enumerate() {
            acc_p[k % 8] += w * p;
            acc_d[k % 8] += w * d;
        }
    }
    (acc_p.iter().sum(), acc_d.iter().sum())
}

/// (a, b, c) with u = a z1, v = b z1 + c z2 distributed as N(0, [[s11, s12], [s12, s22]]).
fn cholesky_2x2(s11: f64, s12: f64, s22: f64) -> (f64, f64, f64) {
    let s11 = s11.max(0.0);
    let s22 = s22.max(0.0);
    if s11 > 0.0 {
        let r = s11.sqrt();
        let b = s12 / r;
        (r, b, (s22 - b * b).max(0.0).sqrt())
    } else {
        (0.0, 0.0, s22.sqrt())
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
    fn strip_trapezoid_matches_a_fine_gauss_hermite_rule_at_every_variance() {
        // Reference: Gauss–Hermite with 600 nodes, whose error for these integrands is below about 1e-12 up to
        // variance 5. The default Gauss–Hermite rule (48 nodes) is shown beside it, to record what the
        // trapezoidal rule buys: at variance 5 the 48-node Tdot is off by ~1e-3.
        let fine = GaussHermite::new(600);
        let gh48 = GaussHermite::new(48);
        let cases = [
            (0.3, 0.1, 0.5),
            (1.0, 0.6, 1.2),
            (1.7, 0.3, 1.9),
            (0.8, 0.1, 3.0),
            (5.0, 4.0, 5.0),
            (4.0, -3.9, 4.0),
            (2.0, 0.0, 2.0),
        ];
        let mut worst48: f64 = 0.0;
        for (act, tau0) in [
            (Activation::Tanh, std::f64::consts::FRAC_PI_2),
            (Activation::Softplus, std::f64::consts::PI),
            (Activation::Silu, std::f64::consts::PI),
        ] {
            let strip = StripTrapezoid::new(tau0);
            for &(s11, s12, s22) in &cases {
                let r = fine.dual(&act, s11, s12, s22);
                let x = strip.dual(&act, s11, s12, s22);
                let y = strip.dual(&act, s22, s12, s11);
                for (got, want) in [(x.0, r.0), (x.1, r.1), (y.0, r.0), (y.1, r.1)] {
                    assert!(
                        (got - want).abs() <= 1e-10 * want.abs().max(1e-3),
                        "{act} at {s11},{s12},{s22}: {got} vs {want}"
                    );
                }
                let g = gh48.dual(&act, s11, s12, s22);
                worst48 = worst48.max((g.1 - r.1).abs() / r.1.abs());
            }
        }
        assert!(worst48 > 1e-5, "the 48-node rule was expected to be visibly off at large variance ({worst48:e})");
    }

    /// E[f(z1, z2)] over the standard normal plane, with f smooth inside each wedge between the given rays
    /// (angles in (-pi, pi]): polar coordinates, Gauss–Legendre in the angle per wedge and in r on [0, 9].
    fn polar_wedges(f: impl Fn(f64, f64) -> f64, mut cuts: Vec<f64>) -> f64 {
        use std::f64::consts::PI;
        cuts.sort_by(|a, b| a.partial_cmp(b).unwrap());
        let first = cuts[0];
        cuts.push(first + 2.0 * PI);
        let (xr, wr) = gauss_legendre_unit(80);
        let (xt, wt) = gauss_legendre_unit(80);
        let mut total = 0.0;
        for k in 0..cuts.len() - 1 {
            let (t0, t1) = (cuts[k], cuts[k + 1]);
            for (&u, &wu) in xt.iter().zip(&wt) {
                let th = t0 + (t1 - t0) * u;
                let (co, si) = (th.cos(), th.sin());
                for (&v, &wv) in xr.iter().zip(&wr) {
                    let r = 9.0 * v;
                    total += wu * (t1 - t0) * wv * 9.0 * r * (-0.5 * r * r).exp() / (2.0 * PI) * f(r * co, r * si);
                }
            }
        }
        total
    }

    #[test]
    fn elu_dual_matches_a_polar_wedge_integration_and_beats_gauss_hermite() {
        // Reference: the plane split into the four wedges between the kink lines z1 = 0 and b z1 + c z2 = 0,
        // each integrated in polar coordinates, where the integrand is analytic along every ray.
        let gh48 = GaussHermite::new(48);
        let mut worst48: f64 = 0.0;
        for alpha in [1.0, 0.5, 2.0] {
            let act = Activation::Elu { alpha };
            let dual = EluDual::new(alpha);
            for &(s11, s12, s22) in
                &[(1.0, 0.5, 1.0), (1.7, 0.3, 1.9), (0.5, 0.45, 0.5), (3.0, -2.0, 2.5), (0.8, 0.0, 1.1)]
            {
                let (a, b, c) = cholesky_2x2(s11, s12, s22);
                let cuts = vec![std::f64::consts::FRAC_PI_2, -std::f64::consts::FRAC_PI_2, (-b).atan2(c), b.atan2(-c)];
                let t_ref = polar_wedges(|z1, z2| act.apply(a * z1) * act.apply(b * z1 + c * z2), cuts.clone());
                let td_ref = polar_wedges(|z1, z2| act.derivative(a * z1) * act.derivative(b * z1 + c * z2), cuts);
                let (t, td) = dual.dual(s11, s12, s22);
                assert!(
                    (t - t_ref).abs() <= 1e-11 * t_ref.abs().max(1e-2),
                    "elu({alpha}) T at {s11},{s12},{s22}: {t} vs {t_ref}"
                );
                assert!(
                    (td - td_ref).abs() <= 1e-11 * td_ref.abs(),
                    "elu({alpha}) Tdot at {s11},{s12},{s22}: {td} vs {td_ref}"
                );
                let g = gh48.dual(&act, s11, s12, s22);
                worst48 = worst48.max((g.1 - td_ref).abs() / td_ref.abs());
            }
            // Degenerate covariances: a zero variance, and perfectly correlated inputs.
            let d = dual.dual(0.0, 0.0, 1.3);
            assert!(d.0.abs() < 1e-15 && (d.1 - alpha * dual.smoothed(0.0, 1.3f64.sqrt()).1).abs() < 1e-14);
            let same = dual.dual(1.2, 1.2, 1.2);
            let one = polar_wedges(
                |z1, _| act.apply(1.2f64.sqrt() * z1).powi(2),
                vec![std::f64::consts::FRAC_PI_2, -std::f64::consts::FRAC_PI_2],
            );
            assert!((same.0 - one).abs() < 1e-11 * one, "{} vs {one}", same.0);
        }
        assert!(worst48 > 1e-4, "48-node Gauss-Hermite was expected to be visibly off for elu ({worst48:e})");
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
