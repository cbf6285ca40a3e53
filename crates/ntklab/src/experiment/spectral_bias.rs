//! Spectral bias (Basri, Jacobs, Kasten & Kritchman 2019; Rahaman et al. 2019): in the kernel regime gradient
//! descent fits the frequency-k component of a target in about 1/(eta lambda_k) steps, lambda_k the NTK's
//! eigenvalue of that frequency, and lambda_k falls with k.
//!
//! Inputs on a uniform grid of n points of the unit circle, x = (cos theta, sin theta); targets sin(k theta)
//! scaled to unit mean square; the network f(x) = (1/sqrt m) sum_j a_j relu(w_j.x + b_j) with a_j = +-1 fixed
//! (m/2 neurons duplicated with opposite a_j, so f = 0 at init), w_j ~ N(0, I_2), b_j ~ N(0, 1) (or no b: the
//! case "without bias"); only W and b are trained, by full-batch GD on L = 1/(2n) sum (f - y)^2 at one step size
//! (a fraction of the stability edge 2n / lambda_max(K_0)) until L <= `threshold` L_0.
//!
//! The kernel of that model at infinite width is Theta(x, x') = (x.x' + 1) (pi - phi~) / (2 pi), cos phi~ =
//! (x.x' + 1)/2 (with bias; arc-cosine kernel of order 0 on (x, 1)), or x.x' (pi - phi) / (2 pi) without bias.
//! On the grid it is circulant, so its eigenvectors are exactly the Fourier modes and its eigenvalues
//! lambda_k = (1/n) sum_j Theta(phi_j) cos(k phi_j); GD on the linearized model takes
//! t_k = ln(threshold) / (2 ln(1 - eta lambda_k)) ~ ln(1/threshold) / (2 eta lambda_k) steps. Without bias the odd
//! k >= 3 have lambda_k = 0: those frequencies are never learned in the kernel regime. Basri et al.'s closed forms
//! (with bias: (k^2+1)/(k^2-1)^2 for even k, 1/k^2 for odd k) are compared by their ratio to lambda_k.
//!
//! On the sphere S^(d-1) the same kernel (with bias) is zonal; by Funk–Hecke its eigenvalue of degree k is
//! proportional to int_0^pi Theta(cos phi) P_k(cos phi) sin^(d-2)(phi) dphi with P_k the Gegenbauer polynomial
//! C_k^((d-2)/2) normalized to P_k(1) = 1 (Chebyshev T_k for d = 2); it decays like k^-d (Bietti & Mairal 2019).

use faer::Mat;
use serde::{Deserialize, Serialize};

use super::{fit_power_law, Context, Reproduction};
use crate::data::synthetic::{derive_seed, rng};
use crate::kernel::{Architecture, Parameterization};
use crate::net::{Mlp, Workspace};
use crate::report::Report;
use crate::spectrum::max_eigenvalue;
use crate::train::Loss;
use crate::{Error, Result};
use rand_distr::{Distribution, StandardNormal};

/// What to run; see the module docs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SpectralBiasConfig {
    /// Width m (even).
    pub width: usize,
    /// Grid points on the circle.
    pub n: usize,
    /// Frequencies 1..=max_k.
    pub max_k: usize,
    /// Step size as a fraction of 2n / lambda_max(K_0).
    #[serde(with = "crate::data::json_f64")]
    pub lr_factor: f64,
    /// Train until L <= threshold L_0.
    #[serde(with = "crate::data::json_f64")]
    pub threshold: f64,
    /// Give up after this many steps.
    pub max_steps: u64,
    /// Kernel-regime check: the frequency trained at several widths.
    pub check_k: usize,
    /// Kernel-regime check: the widths (with bias).
    pub check_widths: Vec<usize>,
    /// Sphere spectra: dimensions d.
    pub dims: Vec<usize>,
    /// Sphere spectra: degrees fitted, from..=to.
    pub fit_from: usize,
    /// See `fit_from`.
    pub fit_to: usize,
    /// Master seed.
    #[serde(with = "crate::data::seed")]
    pub seed: u64,
}

impl SpectralBiasConfig {
    /// The full run: m = 4000, n = 64 points, k = 1..6 (at this width k = 8 takes ~70 times the kernel's steps,
    /// and without bias not even 200000).
    pub fn full() -> SpectralBiasConfig {
        SpectralBiasConfig {
            width: 4000,
            n: 64,
            max_k: 6,
            lr_factor: 0.5,
            threshold: 0.01,
            max_steps: 50_000,
            check_k: 4,
            check_widths: vec![1000, 4000, 16_000, 64_000],
            dims: vec![2, 3, 4],
            fit_from: 8,
            fit_to: 40,
            seed: 0,
        }
    }

    /// A small instance for tests and CI.
    pub fn quick() -> SpectralBiasConfig {
        SpectralBiasConfig { n: 32, max_k: 4, max_steps: 5000, check_widths: vec![1000, 4000, 16_000], ..Self::full() }
    }

    /// Checks every value, naming the key.
    pub fn validate(&self) -> Result<()> {
        if self.width < 2 || !self.width.is_multiple_of(2) || self.width > 1 << 18 {
            return Err(Error::Config("width must be even and in 2..=262144".into()));
        }
        if !(8..=4096).contains(&self.n) || self.max_k == 0 || 2 * self.max_k >= self.n {
            return Err(Error::Config("n must be in 8..=4096 and max_k in 1..n/2".into()));
        }
        if !(self.lr_factor > 0.0 && self.lr_factor < 1.0 && self.threshold > 0.0 && self.threshold < 1.0) {
            return Err(Error::Config("lr_factor and threshold must be in (0, 1)".into()));
        }
        if self.max_steps == 0 || self.max_steps > 100_000_000 {
            return Err(Error::Config("max_steps must be in 1..=10^8".into()));
        }
        if self.check_k == 0
            || 2 * self.check_k >= self.n
            || self.check_widths.iter().any(|m| *m < 2 || !m.is_multiple_of(2) || *m > 1 << 18)
        {
            return Err(Error::Config("check_k must be in 1..n/2 and check_widths even, in 2..=262144".into()));
        }
        if self.dims.is_empty() || self.dims.iter().any(|d| !(2..=6).contains(d)) {
            return Err(Error::Config("dims: at least one, each in 2..=6 (beyond, the eigenvalues of degree 40 fall below the quadrature's rounding)".into()));
        }
        if !(1..=100).contains(&self.fit_from) || self.fit_to < self.fit_from + 2 || self.fit_to > 100 {
            return Err(Error::Config("need 1 <= fit_from and fit_from + 2 <= fit_to <= 100".into()));
        }
        let widest = self.check_widths.iter().copied().chain([self.width]).max().unwrap_or(self.width);
        crate::data::memory::check_alloc(8 * self.n * 4 * widest * 2, "the explicit Jacobian of the widest network")?;
        Ok(())
    }
}

/// The infinite-width kernel of the model as a function of t = x.x' on the unit sphere.
pub fn theta(t: f64, bias: bool) -> f64 {
    let t = t.clamp(-1.0, 1.0);
    if bias {
        let c = ((t + 1.0) / 2.0).clamp(-1.0, 1.0);
        (t + 1.0) * (std::f64::consts::PI - c.acos()) / (2.0 * std::f64::consts::PI)
    } else {
        t * (std::f64::consts::PI - t.acos()) / (2.0 * std::f64::consts::PI)
    }
}

/// lambda_k = (1/n) sum_j Theta(cos phi_j) cos(k phi_j) on the n-point grid, k = 0..=max_k.
pub fn circle_eigenvalues(n: usize, max_k: usize, bias: bool) -> Vec<f64> {
    (0..=max_k)
        .map(|k| {
            (0..n)
                .map(|j| {
                    let phi = std::f64::consts::TAU * j as f64 / n as f64;
                    theta(phi.cos(), bias) * (k as f64 * phi).cos()
                })
                .sum::<f64>()
                / n as f64
        })
        .collect()
}

/// Funk–Hecke eigenvalues (up to a constant) of the kernel with bias on S^(d-1), degrees 0..=max_k, by the
/// midpoint rule in phi on `points` points.
pub fn sphere_eigenvalues(d: usize, max_k: usize, points: usize) -> Vec<f64> {
    let alpha = (d as f64 - 2.0) / 2.0;
    let mut out = vec![0.0; max_k + 1];
    // P_k(1) for the normalization: C_k^alpha(1) = binom(k + 2 alpha - 1, k) (alpha > 0).
    let gegen = |t: f64| -> Vec<f64> {
        let mut c = vec![0.0; max_k + 1];
        if alpha == 0.0 {
            // Chebyshev T_k.
            c[0] = 1.0;
            if max_k >= 1 {
                c[1] = t;
            }
            for k in 2..=max_k {
                c[k] = 2.0 * t * c[k - 1] - c[k - 2];
            }
        } else {
            c[0] = 1.0;
            if max_k >= 1 {
                c[1] = 2.0 * alpha * t;
            }
            for k in 2..=max_k {
                let kf = k as f64;
                c[k] = (2.0 * t * (kf + alpha - 1.0) * c[k - 1] - (kf + 2.0 * alpha - 2.0) * c[k - 2]) / kf;
            }
        }
        c
    };
    let at_one = gegen(1.0);
    let h = std::f64::consts::PI / points as f64;
    for j in 0..points {
        let phi = (j as f64 + 0.5) * h;
        let t = phi.cos();
        let w = theta(t, true) * phi.sin().powi(d as i32 - 2) * h;
        for (k, ck) in gegen(t).iter().enumerate() {
            out[k] += w * ck / at_one[k];
        }
    }
    out
}

/// One variant's (with or without bias) measurements.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Variant {
    /// Whether the neurons have a bias.
    pub bias: bool,
    /// The step size.
    #[serde(with = "crate::data::json_f64")]
    pub lr: f64,
    /// GD steps to reach the threshold, per k (None: not within max_steps).
    pub iterations: Vec<Option<u64>>,
    /// The linearized model's steps from the analytic lambda_k (None where lambda_k is 0).
    pub predicted: Vec<Option<f64>>,
    /// 1/(eta lambda_k) with the analytic lambda_k.
    #[serde(with = "crate::data::json_f64::vec")]
    pub inverse_eta_lambda: Vec<f64>,
    /// The analytic lambda_k on the grid, k = 1..=max_k.
    #[serde(with = "crate::data::json_f64::vec")]
    pub ntk_eigenvalues: Vec<f64>,
    /// The finite network's lambda_k: Rayleigh quotients of its tangent kernel (W and b) / n.
    #[serde(with = "crate::data::json_f64::vec")]
    pub empirical_eigenvalues: Vec<f64>,
    /// Log-log slope of iterations against k (over the k reached; with bias about 2).
    #[serde(with = "crate::data::json_f64")]
    pub slope_iterations: f64,
}

/// The record of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SpectralBiasResult {
    /// The configuration.
    pub config: SpectralBiasConfig,
    /// Frequencies.
    pub k: Vec<usize>,
    /// With bias (the keys `iterations`, `ntk_eigenvalues` and `slope_iterations` refer to it).
    pub with_bias: Variant,
    /// Without bias.
    pub without_bias: Variant,
    /// Steps per k with bias (copy of `with_bias.iterations`).
    pub iterations: Vec<Option<u64>>,
    /// lambda_k with bias (copy of `with_bias.ntk_eigenvalues`).
    #[serde(with = "crate::data::json_f64::vec")]
    pub ntk_eigenvalues: Vec<f64>,
    /// Slope of iterations against k with bias.
    #[serde(with = "crate::data::json_f64")]
    pub slope_iterations: f64,
    /// Log-log slope of 1/(eta lambda_k) against k with bias (the kernel's prediction for `slope_iterations`).
    #[serde(with = "crate::data::json_f64")]
    pub slope_inverse_eigenvalue: f64,
    /// Kernel-regime check: (width, steps, linearized prediction) for k = check_k with bias.
    pub width_check: Vec<(usize, Option<u64>, f64)>,
    /// lambda_k / closed form (with bias), k = 2..=max_k.
    #[serde(with = "crate::data::json_f64::vec")]
    pub closed_form_ratio: Vec<f64>,
    /// Sphere spectra: eigenvalues by dimension, degrees 0..=fit_to.
    pub sphere_eigenvalues: Vec<Vec<f64>>,
    /// Fitted slope of log lambda_k against log k per dimension (expected -d).
    #[serde(with = "crate::data::json_f64::vec")]
    pub slope_eigenvalues_by_dim: Vec<f64>,
}

/// Steps of GD on the linearized model for the residual of a mode with eta lambda = x to fall to sqrt(threshold)
/// of its start: ln(threshold) / (2 ln|1 - x|); None when the mode does not contract (x <= 0, or x >= 2).
fn linearized_steps(threshold: f64, x: f64) -> Option<f64> {
    (x > 1e-12 && x < 2.0).then(|| (threshold.ln() / (2.0 * (1.0 - x).abs().ln())).ceil())
}

/// The n-point grid on the unit circle.
fn grid(n: usize) -> Mat<f64> {
    Mat::from_fn(n, 2, |i, j| {
        let a = std::f64::consts::TAU * i as f64 / n as f64;
        if j == 0 {
            a.cos()
        } else {
            a.sin()
        }
    })
}

/// The tangent kernel of the trained parameters (the first `trained`: W and b), J_t J_t^T.
fn trained_kernel(net: &Mlp, x: &Mat<f64>, trained: usize) -> Result<Mat<f64>> {
    let j = net.jacobian(x.as_ref())?;
    let jt = j.as_ref().subcols(0, trained);
    Ok(jt * jt.transpose())
}

/// The step size lr_factor 2n / lambda_max of the trained kernel.
fn edge_step(cfg: &SpectralBiasConfig, net: &Mlp, x: &Mat<f64>, trained: usize) -> Result<f64> {
    Ok(cfg.lr_factor * 2.0 * x.nrows() as f64 / max_eigenvalue(trained_kernel(net, x, trained)?.as_ref())?)
}

fn target(n: usize, k: usize) -> Mat<f64> {
    // sin(k theta) has mean square 1/2 on the grid (k < n/2): scale by sqrt 2.
    Mat::from_fn(n, 1, |i, _| (k as f64 * std::f64::consts::TAU * i as f64 / n as f64).sin() * std::f64::consts::SQRT_2)
}

fn student(m: usize, bias: bool, seed: u64) -> Result<Mlp> {
    let text = if bias {
        format!("dense({m},w_std=1.4142135623730951,b_std=1),relu,dense(1)")
    } else {
        format!("dense({m},w_std=1.4142135623730951),relu,dense(1)")
    };
    let mut net = Mlp::zeros(&Architecture::parse(&text, Parameterization::Ntk)?, 2, 1.0)?;
    let mut r = rng(seed);
    let half = m / 2;
    let per = if bias { 3 } else { 2 };
    let first: Vec<f64> = (0..half * per).map(|_| StandardNormal.sample(&mut r)).collect();
    let p = net.params_mut();
    // Layer 1: weight (m x 2) row-major, then the bias (m); readout (1 x m).
    for j in 0..m {
        let src = j % half;
        p[2 * j] = first[per * src];
        p[2 * j + 1] = first[per * src + 1];
        if bias {
            p[2 * m + j] = first[per * src + 2];
        }
        p[per * m + j] = if j < half { 1.0 } else { -1.0 };
    }
    Ok(net)
}

/// GD on W, b only until L <= threshold L_0: the steps taken, or None.
fn fit(
    cfg: &SpectralBiasConfig,
    net0: &Mlp,
    x: &Mat<f64>,
    y: &Mat<f64>,
    lr: f64,
    trained: usize,
) -> Result<Option<u64>> {
    let mut net = net0.clone();
    // One forward and one reverse pass per step, every buffer from the workspace (no allocation per step).
    let mut ws = Workspace::default();
    let mut g = vec![0.0; net.num_params()];
    let mut l0 = f64::NAN;
    for t in 0..=cfg.max_steps {
        let (loss, _) = net.loss_gradient_into(x.as_ref(), y.as_ref(), Loss::Mse, &mut g, &mut ws)?;
        if t == 0 {
            l0 = loss;
        }
        if !loss.is_finite() || loss > 1e6 * l0 {
            return Err(Error::Numerical(format!("spectral-bias: GD diverged at step {t}: lower lr_factor")));
        }
        if loss <= cfg.threshold * l0 {
            return Ok(Some(t));
        }
        for (p, gi) in net.params_mut()[..trained].iter_mut().zip(&g[..trained]) {
            *p -= lr * gi;
        }
    }
    Ok(None)
}

fn variant(cfg: &SpectralBiasConfig, bias: bool, ctx: &mut Context, done: &mut usize, total: usize) -> Result<Variant> {
    let n = cfg.n;
    let x = grid(n);
    let net0 = student(cfg.width, bias, derive_seed(cfg.seed, u64::from(bias)))?;
    let trained = if bias { 3 * cfg.width } else { 2 * cfg.width };
    let k = trained_kernel(&net0, &x, trained)?;
    let lr = cfg.lr_factor * 2.0 * n as f64 / max_eigenvalue(k.as_ref())?;
    let lam = circle_eigenvalues(n, cfg.max_k, bias);
    let (mut iterations, mut predicted, mut inv, mut emp) = (vec![], vec![], vec![], vec![]);
    for kk in 1..=cfg.max_k {
        let y = target(n, kk);
        let it: Option<u64> = ctx.step(&format!("bias={bias},k={kk}"), || fit(cfg, &net0, &x, &y, lr, trained))?;
        *done += 1;
        ctx.progress(*done, total);
        iterations.push(it);
        let l = lam[kk];
        let zero = l.abs() < 1e-12 * lam[1].abs();
        predicted.push(linearized_steps(cfg.threshold, lr * l));
        inv.push(if zero { f64::INFINITY } else { 1.0 / (lr * l) });
        emp.push((y.transpose() * &k * &y)[(0, 0)] / (y.squared_norm_l2() * n as f64));
    }
    let reached: Vec<(f64, f64)> =
        iterations.iter().enumerate().filter_map(|(i, t)| t.map(|t| ((i + 1) as f64, t.max(1) as f64))).collect();
    let slope = fit_power_law(
        &reached.iter().map(|p| p.0).collect::<Vec<_>>(),
        &reached.iter().map(|p| p.1).collect::<Vec<_>>(),
    )
    .map_or(f64::NAN, |f| f.exponent);
    Ok(Variant {
        bias,
        lr,
        iterations,
        predicted,
        inverse_eta_lambda: inv,
        ntk_eigenvalues: lam[1..].to_vec(),
        empirical_eigenvalues: emp,
        slope_iterations: slope,
    })
}

/// Runs both variants (one checkpointed step per k) and the sphere spectra.
pub fn run(cfg: &SpectralBiasConfig, ctx: &mut Context) -> Result<SpectralBiasResult> {
    cfg.validate()?;
    let total = 2 * cfg.max_k + cfg.check_widths.len();
    let mut done = 0;
    ctx.progress(0, total);
    let with_bias = variant(cfg, true, ctx, &mut done, total)?;
    let without_bias = variant(cfg, false, ctx, &mut done, total)?;
    let n = cfg.n;
    let x = grid(n);
    let y = target(n, cfg.check_k);
    let lam = circle_eigenvalues(n, cfg.check_k, true)[cfg.check_k];
    let mut width_check = Vec::new();
    for &m in &cfg.check_widths {
        let row: (usize, Option<u64>, f64) = ctx.step(&format!("check,width={m}"), || {
            let net0 = student(m, true, derive_seed(cfg.seed, 2 + m as u64))?;
            let lr = edge_step(cfg, &net0, &x, 3 * m)?;
            let it = fit(cfg, &net0, &x, &y, lr, 3 * m)?;
            Ok((m, it, linearized_steps(cfg.threshold, lr * lam).unwrap_or(f64::NAN)))
        })?;
        width_check.push(row);
        done += 1;
        ctx.progress(done, total);
    }
    let slope_inverse_eigenvalue =
        fit_power_law(&(1..=cfg.max_k).map(|k| k as f64).collect::<Vec<_>>(), &with_bias.inverse_eta_lambda)
            .map_or(f64::NAN, |f| f.exponent);
    let closed = |k: usize| {
        let k2 = (k * k) as f64;
        if k.is_multiple_of(2) {
            (k2 + 1.0) / ((k2 - 1.0) * (k2 - 1.0))
        } else {
            1.0 / k2
        }
    };
    let closed_form_ratio = (2..=cfg.max_k).map(|k| with_bias.ntk_eigenvalues[k - 1] / closed(k)).collect();
    let sphere: Vec<Vec<f64>> = cfg.dims.iter().map(|&d| sphere_eigenvalues(d, cfg.fit_to, 200_000)).collect();
    let slopes = sphere
        .iter()
        .map(|ev| {
            let ks: Vec<f64> = (cfg.fit_from..=cfg.fit_to).map(|k| k as f64).collect();
            let vs: Vec<f64> = (cfg.fit_from..=cfg.fit_to).map(|k| ev[k].abs()).collect();
            fit_power_law(&ks, &vs).map_or(f64::NAN, |f| f.exponent)
        })
        .collect();
    Ok(SpectralBiasResult {
        config: cfg.clone(),
        k: (1..=cfg.max_k).collect(),
        iterations: with_bias.iterations.clone(),
        ntk_eigenvalues: with_bias.ntk_eigenvalues.clone(),
        slope_iterations: with_bias.slope_iterations,
        slope_inverse_eigenvalue,
        width_check,
        with_bias,
        without_bias,
        closed_form_ratio,
        sphere_eigenvalues: sphere,
        slope_eigenvalues_by_dim: slopes,
    })
}

/// `ntklab run spectral-bias`.
pub struct SpectralBias;

impl Reproduction for SpectralBias {
    const NAME: &'static str = "spectral-bias";
    const DESCRIPTION: &'static str =
        "Spectral bias (Basri et al. 2019): GD learns frequency k in ~1/(eta lambda_k) steps; NTK spectra on spheres";
    type Config = SpectralBiasConfig;
    type Summary = SpectralBiasResult;

    fn full() -> SpectralBiasConfig {
        SpectralBiasConfig::full()
    }
    fn quick() -> SpectralBiasConfig {
        SpectralBiasConfig::quick()
    }
    fn seed(cfg: &SpectralBiasConfig) -> u64 {
        cfg.seed
    }
    fn set_seed(cfg: &mut SpectralBiasConfig, seed: u64) {
        cfg.seed = seed;
    }
    fn validate(cfg: &SpectralBiasConfig) -> Result<()> {
        cfg.validate()
    }
    fn run(cfg: &SpectralBiasConfig, ctx: &mut Context) -> Result<SpectralBiasResult> {
        run(cfg, ctx)
    }
    fn report(res: &SpectralBiasResult) -> Report {
        super::spectral_bias_report::report(res)
    }
    fn console(res: &SpectralBiasResult) -> String {
        let show = |t: &Option<u64>| t.map_or("-".to_string(), |v| v.to_string());
        let mut s = format!(
            "spectral bias: m = {}, n = {}\n{:>3} {:>10} {:>10} {:>12} {:>12}\n",
            res.config.width, res.config.n, "k", "bias: it", "predicted", "no bias: it", "lambda_k"
        );
        for i in 0..res.k.len() {
            s += &format!(
                "{:>3} {:>10} {:>10} {:>12} {:>12.3e}\n",
                res.k[i],
                show(&res.with_bias.iterations[i]),
                res.with_bias.predicted[i].map_or("-".into(), |v| format!("{v:.0}")),
                show(&res.without_bias.iterations[i]),
                res.ntk_eigenvalues[i]
            );
        }
        s += &format!(
            "slope of iterations vs k (bias) {:.2}; eigenvalue decay on S^(d-1) for d = {:?}: {:?}",
            res.slope_iterations,
            res.config.dims,
            res.slope_eigenvalues_by_dim.iter().map(|v| format!("{v:.2}")).collect::<Vec<_>>()
        );
        s
    }
}
