//! Double descent: the test error of minimum-norm interpolators peaks where the number of parameters crosses the
//! number of samples and falls again beyond it.
//!
//! **Least squares** (Hastie, Montanari, Rosset & Tibshirani 2019; Belkin, Hsu & Xu 2019). Rows x_i ~ N(0, I_p),
//! y = x.beta + eps, eps ~ N(0, sigma^2), ||beta||^2 = r^2 (beta uniform on that sphere), n samples; the
//! minimum-norm least-squares fit beta_hat = X^+ y. For this design the excess test risk E||beta_hat - beta||^2 is
//! known exactly at finite n and p: sigma^2 p / (n - p - 1) for p < n - 1 (the mean of an inverse Wishart), and
//! r^2 (1 - n/p) + sigma^2 n / (p - n - 1) for p > n + 1 (the part of beta outside the row space of X, plus the
//! noise through the minimum-norm inverse). The average over trials is set beside it for each gamma = p/n.
//!
//! **Random ReLU features** (Mei & Montanari 2019). Features phi_j(x) = relu(w_j.x / sqrt(d)) / sqrt(N), w_j ~
//! N(0, I_d), j < N; the coefficients minimize 1/n ||F a - y||^2 + lambda ||a||^2 (lambda = 0: the minimum-norm
//! interpolator, from the primal normal equations for N <= n and the dual ones for N > n). Test error against
//! N/n, ridgeless (peak at N = n) and with a ridge (peak suppressed), on the `teacher` synthetic set and on the
//! bundled digits (inputs centered and put on the sphere of radius sqrt(64), one-hot targets; the error is the
//! mean over test points of ||f(x) - y||^2).

use faer::Mat;
use serde::{Deserialize, Serialize};

use super::{mean_std, Context, Reproduction};
use crate::data::bundled::{load, Bundled};
use crate::data::datasets::{synthetic, Builtin, SyntheticSpec};
use crate::data::synthetic::{derive_seed, gaussian};
use crate::data::Dataset;
use crate::report::Report;
use crate::{Error, Result};

/// What to run; see the module docs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DoubleDescentConfig {
    /// Least squares: samples n.
    pub n: usize,
    /// Least squares: noise variance sigma^2.
    #[serde(with = "crate::data::json_f64")]
    pub noise_variance: f64,
    /// Least squares: ||beta||^2.
    #[serde(with = "crate::data::json_f64")]
    pub signal_r2: f64,
    /// Least squares: gamma = p/n (p rounded; p within 3 of n moves to n - 4 or n + 4: the risk is infinite at
    /// p = n - 1, n, n + 1 and its estimate has infinite variance within 3 of n).
    #[serde(with = "crate::data::json_f64::vec")]
    pub gammas: Vec<f64>,
    /// Least squares: trials per gamma.
    pub trials: usize,
    /// Random features: training points (synthetic set and digits).
    pub rf_n: usize,
    /// Random features: test points.
    pub rf_n_test: usize,
    /// Random features: input dimension of the synthetic set.
    pub rf_input_dim: usize,
    /// Random features: noise standard deviation of the synthetic set.
    #[serde(with = "crate::data::json_f64")]
    pub rf_noise: f64,
    /// Random features: N/n values.
    #[serde(with = "crate::data::json_f64::vec")]
    pub rf_ratios: Vec<f64>,
    /// Random features: the ridge lambda of the regularized curve.
    #[serde(with = "crate::data::json_f64")]
    pub rf_ridge: f64,
    /// Random features: feature draws averaged per ratio.
    pub rf_trials: usize,
    /// Master seed.
    #[serde(with = "crate::data::seed")]
    pub seed: u64,
}

impl DoubleDescentConfig {
    /// The full run: n = 100 (200 trials), random features with n = 300.
    pub fn full() -> DoubleDescentConfig {
        DoubleDescentConfig {
            n: 100,
            noise_variance: 0.25,
            signal_r2: 1.0,
            gammas: vec![0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.05, 1.1, 1.2, 1.5, 2.0, 3.0, 5.0, 10.0],
            trials: 200,
            rf_n: 300,
            rf_n_test: 800,
            rf_input_dim: 20,
            rf_noise: 0.2,
            rf_ratios: vec![0.1, 0.2, 0.4, 0.6, 0.8, 0.9, 1.0, 1.1, 1.25, 1.5, 2.0, 3.0, 5.0, 10.0],
            rf_ridge: 1e-2,
            rf_trials: 5,
            seed: 0,
        }
    }

    /// A small instance for tests and CI.
    pub fn quick() -> DoubleDescentConfig {
        DoubleDescentConfig {
            n: 50,
            gammas: vec![0.2, 0.5, 0.8, 1.2, 2.0, 4.0],
            trials: 100,
            rf_n: 100,
            rf_n_test: 400,
            rf_ratios: vec![0.2, 0.5, 0.9, 1.0, 1.1, 2.0, 5.0],
            rf_trials: 3,
            ..Self::full()
        }
    }

    /// Checks every value, naming the key.
    pub fn validate(&self) -> Result<()> {
        if !(4..=5000).contains(&self.n) {
            return Err(Error::Config("n must be in 4..=5000".into()));
        }
        for (k, v) in [("noise_variance", self.noise_variance), ("signal_r2", self.signal_r2)] {
            if !(v >= 0.0 && v.is_finite()) {
                return Err(Error::Config(format!("{k} must be finite and >= 0, got {v}")));
            }
        }
        if self.gammas.is_empty()
            || self.gammas.iter().any(|g| g.is_nan() || *g <= 0.0 || *g * self.n as f64 > 20_000.0)
        {
            return Err(Error::Config("gammas: at least one, each > 0 with p = gamma n <= 20000".into()));
        }
        if !(2..=100_000).contains(&self.trials) || !(1..=1000).contains(&self.rf_trials) {
            return Err(Error::Config("trials must be in 2..=100000 and rf_trials in 1..=1000".into()));
        }
        if self.rf_n < 4 || self.rf_n_test == 0 || self.rf_n + self.rf_n_test > Bundled::Digits.rows() {
            return Err(Error::Config(format!(
                "rf_n >= 4 and rf_n_test >= 1 must fit together in the digits' {} rows",
                Bundled::Digits.rows()
            )));
        }
        if !((1..=4096).contains(&self.rf_input_dim) && self.rf_noise >= 0.0 && self.rf_noise.is_finite()) {
            return Err(Error::Config("rf_input_dim in 1..=4096 and rf_noise finite and >= 0".into()));
        }
        if self.rf_ratios.is_empty()
            || self.rf_ratios.iter().any(|r| r.is_nan() || *r <= 0.0 || *r * self.rf_n as f64 > 20_000.0)
        {
            return Err(Error::Config("rf_ratios: at least one, each > 0 with N = ratio rf_n <= 20000".into()));
        }
        if !(self.rf_ridge > 0.0 && self.rf_ridge.is_finite()) {
            return Err(Error::Config("rf_ridge must be finite and > 0".into()));
        }
        Ok(())
    }

    /// The p of each gamma (rounded, moved off n - 1, n, n + 1).
    pub fn ps(&self) -> Vec<usize> {
        self.gammas
            .iter()
            .map(|g| {
                let p = ((g * self.n as f64).round() as usize).max(1);
                match p {
                    p if p + 3 >= self.n && p <= self.n => self.n.saturating_sub(4).max(1),
                    p if p > self.n && p <= self.n + 3 => self.n + 4,
                    p => p,
                }
            })
            .collect()
    }
}

/// The exact excess risk of the minimum-norm fit (module docs); None at p in n-1..=n+1.
pub fn theory(n: usize, p: usize, sigma2: f64, r2: f64) -> Option<f64> {
    let (n, p) = (n as f64, p as f64);
    if p < n - 1.0 {
        Some(sigma2 * p / (n - p - 1.0))
    } else if p > n + 1.0 {
        Some(r2 * (1.0 - n / p) + sigma2 * n / (p - n - 1.0))
    } else {
        None
    }
}

/// Minimizer of 1/n ||F a - Y||^2 + lambda ||a||^2 for F (n x N), Y (n x k). lambda = 0: the minimum-norm
/// least-squares solution F^+ Y (the limit lambda -> 0+), from the eigendecomposition of the smaller Gram matrix
/// with eigenvalues below 1e-13 of the largest (times its size) treated as 0, so rank-deficient F (e.g. features
/// that vanish on every training point) are handled.
pub fn ridge_fit(f: &Mat<f64>, y: &Mat<f64>, lambda: f64) -> Result<Mat<f64>> {
    let (n, p) = (f.nrows(), f.ncols());
    let primal = p <= n;
    let g = if primal { f.transpose() * f } else { f * f.transpose() };
    let rhs = if primal { f.transpose() * y } else { y.clone() };
    let evd = g.self_adjoint_eigen(faer::Side::Lower).map_err(|e| Error::Numerical(format!("eigen: {e:?}")))?;
    let (s, u) = (evd.S(), evd.U());
    let m = g.nrows();
    let top = (0..m).map(|i| s[i]).fold(0.0, f64::max);
    let cut = top * 1e-13 * m as f64;
    let reg = lambda * n as f64;
    // (G + reg I)^+ rhs = U diag(1/(s + reg)) U^T rhs over the kept eigenvalues.
    let coef = u.transpose() * &rhs;
    let scaled = Mat::from_fn(m, rhs.ncols(), |i, j| if s[i] > cut { coef[(i, j)] / (s[i] + reg) } else { 0.0 });
    let sol = u * scaled;
    Ok(if primal { sol } else { f.transpose() * sol })
}

/// One trial of least squares: ||beta_hat - beta||^2.
fn ls_trial(cfg: &DoubleDescentConfig, p: usize, seed: u64) -> Result<f64> {
    let n = cfg.n;
    let b = gaussian(p, 1, derive_seed(seed, 0));
    let scale = (cfg.signal_r2 / b.squared_norm_l2()).sqrt();
    let beta = Mat::from_fn(p, 1, |i, _| b[(i, 0)] * scale);
    let x = gaussian(n, p, derive_seed(seed, 1));
    let eps = gaussian(n, 1, derive_seed(seed, 2));
    let y = Mat::from_fn(n, 1, |i, _| eps[(i, 0)] * cfg.noise_variance.sqrt()) + &x * &beta;
    let bh = ridge_fit(&x, &y, 0.0)?;
    Ok((&bh - &beta).squared_norm_l2())
}

fn relu_features(x: &Mat<f64>, w: &Mat<f64>) -> Mat<f64> {
    let (d, nf) = (x.ncols() as f64, w.nrows() as f64);
    let z = x * w.transpose();
    Mat::from_fn(z.nrows(), z.ncols(), |i, j| (z[(i, j)] / d.sqrt()).max(0.0) / nf.sqrt())
}

/// Random-features test errors (ridgeless, ridge) on `data` with N features, averaged over draws.
fn rf_point(cfg: &DoubleDescentConfig, data: &Dataset, nf: usize, seed: u64) -> Result<(f64, f64)> {
    let (xt, yt) = data.test.as_ref().ok_or_else(|| Error::Config("double-descent: no test split".into()))?;
    let err = |a: &Mat<f64>, ft: &Mat<f64>| (ft * a - yt).squared_norm_l2() / yt.nrows() as f64;
    let (mut e0, mut e1) = (Vec::new(), Vec::new());
    for t in 0..cfg.rf_trials {
        let w = gaussian(nf, data.input_dim(), derive_seed(seed, t as u64));
        let (f, ft) = (relu_features(&data.x, &w), relu_features(xt, &w));
        e0.push(err(&ridge_fit(&f, &data.y, 0.0)?, &ft));
        e1.push(err(&ridge_fit(&f, &data.y, cfg.rf_ridge)?, &ft));
    }
    Ok((mean_std(&e0).0, mean_std(&e1).0))
}

/// The record of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DoubleDescentResult {
    /// The configuration.
    pub config: DoubleDescentConfig,
    /// Least squares: n.
    pub n: usize,
    /// sigma^2.
    #[serde(with = "crate::data::json_f64")]
    pub noise_variance: f64,
    /// r^2.
    #[serde(with = "crate::data::json_f64")]
    pub signal_r2: f64,
    /// gamma = p/n as run.
    #[serde(with = "crate::data::json_f64::vec")]
    pub gamma: Vec<f64>,
    /// Mean ||beta_hat - beta||^2 over trials.
    #[serde(with = "crate::data::json_f64::vec")]
    pub test_error: Vec<f64>,
    /// Its standard error.
    #[serde(with = "crate::data::json_f64::vec")]
    pub test_error_se: Vec<f64>,
    /// The exact finite-sample risk.
    #[serde(with = "crate::data::json_f64::vec")]
    pub theory: Vec<f64>,
    /// N/n as run.
    #[serde(with = "crate::data::json_f64::vec")]
    pub rf_ratio: Vec<f64>,
    /// Synthetic set: ridgeless test error.
    #[serde(with = "crate::data::json_f64::vec")]
    pub rf_test_error_ridgeless: Vec<f64>,
    /// Synthetic set: ridge test error.
    #[serde(with = "crate::data::json_f64::vec")]
    pub rf_test_error_ridge: Vec<f64>,
    /// Digits: ridgeless test error.
    #[serde(with = "crate::data::json_f64::vec")]
    pub rf_digits_test_error_ridgeless: Vec<f64>,
    /// Digits: ridge test error.
    #[serde(with = "crate::data::json_f64::vec")]
    pub rf_digits_test_error_ridge: Vec<f64>,
}

/// Inputs centered by the training mean and scaled to norm sqrt(d), train and test alike (the random-features
/// theory's inputs live on that sphere; raw pixels are all >= 0, so many features would vanish on every image).
fn on_sphere(data: Dataset) -> Result<Dataset> {
    let (n, d) = (data.n_train(), data.input_dim());
    let mean: Vec<f64> = (0..d).map(|j| (0..n).map(|i| data.x[(i, j)]).sum::<f64>() / n as f64).collect();
    let fix = |x: &Mat<f64>| {
        let c = Mat::from_fn(x.nrows(), d, |i, j| x[(i, j)] - mean[j]);
        Mat::from_fn(x.nrows(), d, |i, j| {
            let norm = (0..d).map(|k| c[(i, k)] * c[(i, k)]).sum::<f64>().sqrt().max(f64::MIN_POSITIVE);
            c[(i, j)] * (d as f64).sqrt() / norm
        })
    };
    let (xt, yt) = data.test.as_ref().ok_or_else(|| Error::Config("double-descent: no test split".into()))?;
    Dataset::new(fix(&data.x), data.y.clone())?.with_test(fix(xt), yt.clone())
}

const LS_STREAM: u64 = 0;
const RF_STREAM: u64 = 1;

/// Runs both parts; each gamma and each random-features curve is one checkpointed step.
pub fn run(cfg: &DoubleDescentConfig, ctx: &mut Context) -> Result<DoubleDescentResult> {
    cfg.validate()?;
    let ps = cfg.ps();
    let total = ps.len() + 2;
    ctx.progress(0, total);
    let (mut mean, mut se, mut th) = (Vec::new(), Vec::new(), Vec::new());
    for (k, &p) in ps.iter().enumerate() {
        let (m, s): (f64, f64) = ctx.step(&format!("p={p}"), || {
            let seed = derive_seed(derive_seed(cfg.seed, LS_STREAM), p as u64);
            let v: Vec<f64> =
                (0..cfg.trials).map(|t| ls_trial(cfg, p, derive_seed(seed, t as u64))).collect::<Result<_>>()?;
            let (m, sd) = mean_std(&v);
            Ok((m, sd / (v.len() as f64).sqrt()))
        })?;
        mean.push(m);
        se.push(s);
        th.push(theory(cfg.n, p, cfg.noise_variance, cfg.signal_r2).unwrap_or(f64::NAN));
        ctx.progress(k + 1, total);
    }
    let nfs: Vec<usize> = cfg.rf_ratios.iter().map(|r| ((r * cfg.rf_n as f64).round() as usize).max(1)).collect();
    let rf_seed = derive_seed(cfg.seed, RF_STREAM);
    let curve = |data: &Dataset, tag: u64| -> Result<(Vec<f64>, Vec<f64>)> {
        let pts: Vec<(f64, f64)> = nfs
            .iter()
            .map(|&nf| rf_point(cfg, data, nf, derive_seed(derive_seed(rf_seed, tag), nf as u64)))
            .collect::<Result<_>>()?;
        Ok((pts.iter().map(|p| p.0).collect(), pts.iter().map(|p| p.1).collect()))
    };
    let (syn0, syn1) = ctx.step("rf=teacher", || {
        let mut spec = SyntheticSpec::new(Builtin::Teacher, cfg.rf_n, cfg.rf_input_dim, derive_seed(rf_seed, 100));
        spec.n_test = cfg.rf_n_test;
        spec.noise = Some(cfg.rf_noise);
        curve(&synthetic(&spec)?, 0)
    })?;
    ctx.progress(ps.len() + 1, total);
    let (dig0, dig1) = ctx.step("rf=digits", || {
        curve(&on_sphere(load(Bundled::Digits, Some(cfg.rf_n), cfg.rf_n_test, derive_seed(rf_seed, 101))?)?, 1)
    })?;
    ctx.progress(total, total);
    Ok(DoubleDescentResult {
        config: cfg.clone(),
        n: cfg.n,
        noise_variance: cfg.noise_variance,
        signal_r2: cfg.signal_r2,
        gamma: ps.iter().map(|&p| p as f64 / cfg.n as f64).collect(),
        test_error: mean,
        test_error_se: se,
        theory: th,
        rf_ratio: nfs.iter().map(|&nf| nf as f64 / cfg.rf_n as f64).collect(),
        rf_test_error_ridgeless: syn0,
        rf_test_error_ridge: syn1,
        rf_digits_test_error_ridgeless: dig0,
        rf_digits_test_error_ridge: dig1,
    })
}

/// `ntklab run double-descent`.
pub struct DoubleDescent;

impl Reproduction for DoubleDescent {
    const NAME: &'static str = "double-descent";
    const DESCRIPTION: &'static str =
        "Double descent: min-norm least squares against its exact finite-sample risk, random ReLU features with and without ridge";
    type Config = DoubleDescentConfig;
    type Summary = DoubleDescentResult;

    fn full() -> DoubleDescentConfig {
        DoubleDescentConfig::full()
    }
    fn quick() -> DoubleDescentConfig {
        DoubleDescentConfig::quick()
    }
    fn seed(cfg: &DoubleDescentConfig) -> u64 {
        cfg.seed
    }
    fn set_seed(cfg: &mut DoubleDescentConfig, seed: u64) {
        cfg.seed = seed;
    }
    fn validate(cfg: &DoubleDescentConfig) -> Result<()> {
        cfg.validate()
    }
    fn run(cfg: &DoubleDescentConfig, ctx: &mut Context) -> Result<DoubleDescentResult> {
        run(cfg, ctx)
    }
    fn report(res: &DoubleDescentResult) -> Report {
        super::double_descent_report::report(res)
    }
    fn console(res: &DoubleDescentResult) -> String {
        let mut s = format!(
            "double descent, least squares with n = {}:\n{:>7} {:>12} {:>12}\n",
            res.n, "gamma", "measured", "theory"
        );
        for i in 0..res.gamma.len() {
            s += &format!("{:>7.3} {:>12.4} {:>12.4}\n", res.gamma[i], res.test_error[i], res.theory[i]);
        }
        s += &format!(
            "random features (n = {}):\n{:>7} {:>12} {:>12} {:>12} {:>12}\n",
            res.config.rf_n, "N/n", "ridgeless", "ridge", "digits 0", "digits ridge"
        );
        for i in 0..res.rf_ratio.len() {
            s += &format!(
                "{:>7.3} {:>12.4} {:>12.4} {:>12.4} {:>12.4}\n",
                res.rf_ratio[i],
                res.rf_test_error_ridgeless[i],
                res.rf_test_error_ridge[i],
                res.rf_digits_test_error_ridgeless[i],
                res.rf_digits_test_error_ridge[i]
            );
        }
        s.trim_end().to_string()
    }
}
