//! Lazy training versus the mean-field regime (Chizat, Oyallon & Bach 2019, "On lazy training in differentiable
//! programming"; Chizat & Bach 2018).
//!
//! **Test loss against the scale.** Inputs uniform on the unit sphere of R^d; the teacher is a two-layer ReLU net
//! y(x) = sum_{k<3} s_k relu(t_k.x) with unit-norm t_k and s_k = +-1; the student h(w, x) = (1/sqrt m) sum_j
//! a_j relu(b_j.x) (`dense(m, w_std=sqrt(d)), relu, dense(1)`, 'ntk' parameterization: raw weights N(0, 1) are the
//! a_j, b_j) with a symmetrized initialization (neuron m/2 + j copies b_j with -a_j, so h(w_0) = 0), and the
//! model is tau h. GD minimizes F_tau(w) = L(tau h(w)) / tau^2 (L = 1/(2N) sum (f - y)^2) with step size
//! eta min(1, tau), eta = `lr_factor` 2N / lambda_max(K_0) (K_0 = Dh Dh^T at w_0): on L(tau h) itself the step
//! is eta / tau^2 for tau >= 1, shrinking like 1/tau^2, so that tau h moves in function space at a speed
//! independent of tau; below tau = 1 it is eta / tau, because there the neurons grow to norms ~ tau^(-1/2) and
//! the tangent kernel with them (~ 1/tau), and a step fixed on F_tau diverges. The tangent model
//! tau Dh(w_0)(w - w_0) under F_tau and the step eta (tau >= 1) follows
//! f_t = K_0 K_0^-1 (I - (I - eta K_0 / N)^t) y on any input (independent of tau); its limit is kernel
//! regression with K_0 (`tangent_test_loss`). As tau grows the trained net's test loss meets the tangent
//! model's; for small tau the net learns features and generalizes better.
//!
//! Chizat's relative scale kappa(tau) = (||tau h(w_0) - y|| / ||D(tau h)||) (||D^2(tau h)|| / ||D(tau h)||)
//! = ||y|| ||D^2 h|| / (tau ||Dh||^2), with norms over the empirical measure: ||y||^2 = 1/N sum y_i^2,
//! ||Dh||^2 = lambda_max(K_0)/N, and ||D^2 h|| estimated by the largest Hessian spectral norm ||d^2 h(x_i)/dw^2||
//! over `kappa_inputs` training inputs (Lanczos on exact output-Hessian products).
//!
//! The scaling table and the particle picture are in `experiment/lazy_scaling.rs`.

use faer::Mat;
use serde::{Deserialize, Serialize};

use super::lazy_scaling::{self, Particles, WidthScaling};
use super::{mean_std, Context, Reproduction};
use crate::data::synthetic::{derive_seed, rng, sphere};
use crate::data::Dataset;
use crate::kernel::{Architecture, Parameterization};
use crate::net::{Mlp, NtkOutputs, OutputCurvature};
use crate::report::Report;
use crate::spectrum::{lanczos, max_eigenvalue, LanczosOptions, Which};
use crate::train::probes::symmetrized;
use crate::train::{train, ProbeConfig, Status, TrainConfig};
use crate::{Error, Result};
use rand_distr::{Distribution, StandardNormal};

/// What to run; see the module docs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LazyConfig {
    /// Input dimension d.
    pub input_dim: usize,
    /// Training points N.
    pub n_train: usize,
    /// Test points.
    pub n_test: usize,
    /// Student width m (even: the initialization is symmetrized in pairs).
    pub width: usize,
    /// Teacher neurons (unit norm, output weights alternating +1, -1).
    pub teacher_neurons: usize,
    /// The scales tau.
    #[serde(with = "crate::data::json_f64::vec")]
    pub scales: Vec<f64>,
    /// Initializations per scale (data fixed).
    pub trials: usize,
    /// GD steps.
    pub steps: u64,
    /// Test-loss records every this many steps (for the best test loss along the way).
    pub every: u64,
    /// Step size on F_tau as a fraction of the stability edge 2N / lambda_max(K_0).
    #[serde(with = "crate::data::json_f64")]
    pub lr_factor: f64,
    /// Training inputs whose output Hessians estimate ||D^2 h||.
    pub kappa_inputs: usize,
    /// The scaling table (see `experiment/lazy_scaling.rs`).
    pub scaling: lazy_scaling::ScalingConfig,
    /// The particle picture (see `experiment/lazy_scaling.rs`).
    pub particles: lazy_scaling::ParticleConfig,
    /// Master seed.
    #[serde(with = "crate::data::seed")]
    pub seed: u64,
}

impl LazyConfig {
    /// The full run: d = 100, N = 1000 (+1000 test), m = 50, tau = 10^-2.2 .. 10^1, three trials.
    pub fn full() -> LazyConfig {
        LazyConfig {
            input_dim: 100,
            n_train: 1000,
            n_test: 1000,
            width: 50,
            teacher_neurons: 3,
            scales: (0..9).map(|k| 10f64.powf(-2.2 + 0.4 * k as f64)).collect(),
            trials: 3,
            steps: 10_000,
            every: 100,
            lr_factor: 0.25,
            kappa_inputs: 4,
            scaling: lazy_scaling::ScalingConfig::full(),
            particles: lazy_scaling::ParticleConfig::full(),
            seed: 0,
        }
    }

    /// A small instance for tests and CI.
    pub fn quick() -> LazyConfig {
        LazyConfig {
            input_dim: 20,
            n_train: 200,
            n_test: 500,
            scales: vec![10f64.powf(-2.2), 0.1, 1.0, 10.0],
            trials: 2,
            steps: 3000,
            kappa_inputs: 2,
            scaling: lazy_scaling::ScalingConfig::quick(),
            particles: lazy_scaling::ParticleConfig::quick(),
            ..LazyConfig::full()
        }
    }

    /// Checks every value, naming the key.
    pub fn validate(&self) -> Result<()> {
        if !(1..=4096).contains(&self.input_dim) || !(2..=20_000).contains(&self.n_train) {
            return Err(Error::Config("input_dim must be in 1..=4096 and n_train in 2..=20000".into()));
        }
        if !(1..=100_000).contains(&self.n_test) {
            return Err(Error::Config("n_test must be in 1..=100000".into()));
        }
        if self.width < 2 || !self.width.is_multiple_of(2) || self.width > 1 << 16 {
            return Err(Error::Config(format!("width must be even and in 2..=65536, got {}", self.width)));
        }
        if !(1..=64).contains(&self.teacher_neurons) {
            return Err(Error::Config("teacher_neurons must be in 1..=64".into()));
        }
        if self.scales.is_empty()
            || self.scales.iter().any(|t| !(1e-6..=1e6).contains(t))
            || self.scales.windows(2).any(|w| w[1] <= w[0])
        {
            return Err(Error::Config("scales: at least one, increasing, each in [1e-6, 1e6]".into()));
        }
        if !(1..=100).contains(&self.trials) || self.steps == 0 || self.steps > 10_000_000 || self.every == 0 {
            return Err(Error::Config("trials in 1..=100, steps in 1..=10^7, every >= 1".into()));
        }
        if !(self.lr_factor > 0.0 && self.lr_factor < 1.0) {
            return Err(Error::Config(format!("lr_factor must be in (0, 1), got {}", self.lr_factor)));
        }
        if !(1..=self.n_train).contains(&self.kappa_inputs) {
            return Err(Error::Config("kappa_inputs must be in 1..=n_train".into()));
        }
        crate::data::memory::check_alloc(
            8 * self.n_train.max(self.n_test) * (self.n_train + self.width * 4)
                + 8 * 6 * self.width * (self.input_dim + 1),
            "the empirical NTK, the node values and the parameter copies of the lazy sweep",
        )?;
        self.scaling.validate()?;
        self.particles.validate()
    }
}

/// Everything measured at one scale (means over trials).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScaleResult {
    /// tau.
    #[serde(with = "crate::data::json_f64")]
    pub scale: f64,
    /// Test loss at the end, per trial.
    #[serde(with = "crate::data::json_f64::vec")]
    pub test_loss_final: Vec<f64>,
    /// Best test loss over the records, per trial.
    #[serde(with = "crate::data::json_f64::vec")]
    pub test_loss_best: Vec<f64>,
    /// Training loss at the end, per trial.
    #[serde(with = "crate::data::json_f64::vec")]
    pub train_loss_final: Vec<f64>,
    /// Mean over neurons of ||(a_j, b_j) - (a_j, b_j)(0)||, per trial.
    #[serde(with = "crate::data::json_f64::vec")]
    pub displacement: Vec<f64>,
    /// kappa(tau), per trial.
    #[serde(with = "crate::data::json_f64::vec")]
    pub kappa: Vec<f64>,
    /// Runs that diverged.
    pub diverged: usize,
}

/// Per initialization (trial): the tangent model's numbers, which do not depend on tau.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TangentResult {
    /// Kernel regression with K_0 (the tangent model trained to convergence): test loss.
    #[serde(with = "crate::data::json_f64")]
    pub converged: f64,
    /// The tangent model after the same GD steps: test loss.
    #[serde(with = "crate::data::json_f64")]
    pub same_steps: f64,
    /// The step size eta (on F_tau).
    #[serde(with = "crate::data::json_f64")]
    pub lr: f64,
    /// ||y|| ||D^2 h|| / ||Dh||^2 (kappa = this / tau).
    #[serde(with = "crate::data::json_f64")]
    pub kappa_times_tau: f64,
}

/// The record of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LazyResult {
    /// The configuration.
    pub config: LazyConfig,
    /// The scales tau.
    #[serde(with = "crate::data::json_f64::vec")]
    pub scales: Vec<f64>,
    /// Mean final test loss per scale.
    #[serde(with = "crate::data::json_f64::vec")]
    pub test_loss_final: Vec<f64>,
    /// Mean best test loss per scale.
    #[serde(with = "crate::data::json_f64::vec")]
    pub test_loss_best: Vec<f64>,
    /// Kernel regression with the empirical NTK at w_0, mean over trials, per scale (the same at every scale).
    #[serde(with = "crate::data::json_f64::vec")]
    pub tangent_test_loss: Vec<f64>,
    /// The tangent model after the same number of GD steps, per scale (the same at every scale).
    #[serde(with = "crate::data::json_f64::vec")]
    pub tangent_test_loss_same_steps: Vec<f64>,
    /// Mean kappa per scale.
    #[serde(with = "crate::data::json_f64::vec")]
    pub kappa: Vec<f64>,
    /// The test loss of the zero predictor (the scale of the task).
    #[serde(with = "crate::data::json_f64")]
    pub null_test_loss: f64,
    /// Per scale.
    pub by_scale: Vec<ScaleResult>,
    /// Per trial.
    pub tangent: Vec<TangentResult>,
    /// The scaling table.
    pub scaling: WidthScaling,
    /// Fitted slopes (the keys).
    #[serde(with = "crate::data::json_f64")]
    pub slope_init_meanfield: f64,
    /// See `slope_init_meanfield`.
    #[serde(with = "crate::data::json_f64")]
    pub slope_init_lazy: f64,
    /// See `slope_init_meanfield`.
    #[serde(with = "crate::data::json_f64")]
    pub slope_displacement_meanfield: f64,
    /// See `slope_init_meanfield`.
    #[serde(with = "crate::data::json_f64")]
    pub slope_displacement_lazy: f64,
    /// The particle picture.
    pub particles: Particles,
}

const DATA_STREAM: u64 = 0;
const NET_STREAM: u64 = 1;
const LANCZOS_STREAM: u64 = 2;
pub(crate) const SCALING_STREAM: u64 = 3;
pub(crate) const PARTICLE_STREAM: u64 = 4;

/// The GD step on L(tau h) for the step `eta` on F_tau at scale 1: eta min(1, tau) / tau^2 (see the module docs).
pub(crate) fn step_on_loss(eta: f64, tau: f64) -> f64 {
    eta * tau.min(1.0) / (tau * tau)
}

/// Unit-norm rows.
pub(crate) fn unit_rows(x: Mat<f64>) -> Mat<f64> {
    let s = (x.ncols() as f64).sqrt();
    Mat::from_fn(x.nrows(), x.ncols(), |i, j| x[(i, j)] / s)
}

/// The teacher-student set: inputs on the unit sphere, y = sum_k s_k relu(t_k.x) (s_k = +1, -1, +1, ...).
pub(crate) fn teacher_data(
    n: usize,
    n_test: usize,
    d: usize,
    neurons: usize,
    seed: u64,
) -> Result<(Dataset, Mat<f64>)> {
    let t = unit_rows(sphere(neurons, d, derive_seed(seed, 0)));
    let x = unit_rows(sphere(n + n_test, d, derive_seed(seed, 1)));
    let y = Mat::from_fn(n + n_test, 1, |i, _| {
        (0..neurons)
            .map(|k| {
                let s = if k % 2 == 0 { 1.0 } else { -1.0 };
                s * (0..d).map(|j| t[(k, j)] * x[(i, j)]).sum::<f64>().max(0.0)
            })
            .sum::<f64>()
    });
    let ds = Dataset::new(x.as_ref().subrows(0, n).to_owned(), y.as_ref().subrows(0, n).to_owned())?
        .with_test(x.as_ref().subrows(n, n_test).to_owned(), y.as_ref().subrows(n, n_test).to_owned())?;
    Ok((ds, t))
}

/// The student `dense(m, w_std=sqrt(d)), relu, dense(1)` with raw weights N(0, 1) under `param` (ntk: h =
/// (1/sqrt m) sum a_j relu(b_j.x); mean-field: (1/m) sum), symmetrized when asked (h(w_0) = 0).
pub(crate) fn student(d: usize, m: usize, param: Parameterization, symmetric: bool, seed: u64) -> Result<Mlp> {
    let arch = Architecture::parse(&format!("dense({m},w_std={}),relu,dense(1)", (d as f64).sqrt()), param)?;
    let mut net = Mlp::zeros(&arch, d, 1.0)?;
    let mut r = rng(seed);
    let mut p: Vec<f64> = (0..net.num_params()).map(|_| StandardNormal.sample(&mut r)).collect();
    if symmetric {
        let half = m / 2;
        for j in 0..half {
            for c in 0..d {
                p[(half + j) * d + c] = p[j * d + c];
            }
            p[m * d + half + j] = -p[m * d + j];
        }
    }
    net.set_params(&p)?;
    Ok(net)
}

/// Mean over neurons of the distance each (a_j, b_j) travelled.
pub(crate) fn neuron_displacement(p: &[f64], p0: &[f64], m: usize, d: usize) -> f64 {
    (0..m)
        .map(|j| {
            let db: f64 = (0..d).map(|c| (p[j * d + c] - p0[j * d + c]).powi(2)).sum();
            (db + (p[m * d + j] - p0[m * d + j]).powi(2)).sqrt()
        })
        .sum::<f64>()
        / m as f64
}

fn mse(f: &Mat<f64>, y: &Mat<f64>) -> f64 {
    (0..f.nrows()).map(|i| (f[(i, 0)] - y[(i, 0)]).powi(2)).sum::<f64>() / (2.0 * f.nrows() as f64)
}

/// The tangent model's test losses (converged and after `steps` steps of size eta) and eta, from K_0.
fn tangent(net: &Mlp, data: &Dataset, cfg: &LazyConfig) -> Result<(f64, f64, f64, Mat<f64>)> {
    let (xt, yt) = data.test.as_ref().ok_or_else(|| Error::Config("lazy: no test split".into()))?;
    let k = net.empirical_ntk(data.x.as_ref(), None, NtkOutputs::Trace)?;
    let k = symmetrized(&k);
    let kt = net.empirical_ntk(xt.as_ref(), Some(data.x.as_ref()), NtkOutputs::Trace)?;
    let n = data.n_train() as f64;
    let evd = k.self_adjoint_eigen(faer::Side::Lower).map_err(|e| Error::Numerical(format!("eigen: {e:?}")))?;
    let (s, u) = (evd.S(), evd.U());
    let lmax = (0..k.nrows()).map(|i| s[i]).fold(0.0, f64::max);
    let eta = cfg.lr_factor * 2.0 * n / lmax;
    let uty: Vec<f64> = (0..k.nrows()).map(|i| (0..k.nrows()).map(|r| u[(r, i)] * data.y[(r, 0)]).sum()).collect();
    // Coefficients c = U g(S) U^T y with g the filter: converged 1/lambda on the numerically nonzero spectrum
    // (min-norm interpolation), after t steps (1 - (1 - eta lambda/N)^t)/lambda.
    let t = cfg.steps as f64;
    let coef = |g: &dyn Fn(f64) -> f64| -> Mat<f64> {
        Mat::from_fn(k.nrows(), 1, |r, _| (0..k.nrows()).map(|i| u[(r, i)] * g(s[i]) * uty[i]).sum())
    };
    let cut = lmax * 1e-12 * k.nrows() as f64;
    let conv = coef(&|l| if l > cut { 1.0 / l } else { 0.0 });
    let same = coef(&|l| {
        if l > cut {
            let x = eta * l / n;
            // 1 - (1 - x)^t: accurate for small x, and with the sign of (1 - x)^t for x > 1 (t is an integer).
            let gain = if x < 1.0 { -f64::exp_m1(t * f64::ln_1p(-x)) } else { 1.0 - (1.0 - x).powi(t as i32) };
            gain / l
        } else {
            t * eta / n
        }
    });
    Ok((mse(&(&kt * &conv), yt), mse(&(&kt * &same), yt), eta, k))
}

/// ||y|| ||D^2 h|| / ||Dh||^2 (see the module docs).
fn kappa_times_tau(net: &Mlp, data: &Dataset, k: &Mat<f64>, inputs: usize, seed: u64) -> Result<f64> {
    let n = data.n_train() as f64;
    let y_norm = ((0..data.n_train()).map(|i| data.y[(i, 0)].powi(2)).sum::<f64>() / n).sqrt();
    let dh2 = max_eigenvalue(k.as_ref())? / n;
    let one = Mat::from_fn(1, 1, |_, _| 1.0);
    let mut d2 = 0.0f64;
    for i in 0..inputs {
        let oc = OutputCurvature::new(net, data.x.as_ref().subrows(i, 1), one.as_ref())?;
        let opts = LanczosOptions::new(1)
            .which(Which::LargestMagnitude)
            .max_iter(200)
            .tol(1e-8)
            .seed(derive_seed(seed, i as u64));
        d2 = d2.max(lanczos(&oc.op(), &opts)?.values[0].abs());
    }
    Ok(y_norm * d2 / dh2)
}

struct TrialRun {
    test_final: f64,
    test_best: f64,
    train_final: f64,
    displacement: f64,
    diverged: bool,
}

fn train_scale(net0: &Mlp, data: &Dataset, cfg: &LazyConfig, tau: f64, eta: f64) -> Result<TrialRun> {
    let mut net = net0.clone();
    net.alpha = tau;
    let res = train(
        &mut net,
        data,
        &TrainConfig::gd(step_on_loss(eta, tau), cfg.steps),
        &ProbeConfig::loss_only(cfg.every),
        |_| Ok(()),
    )?;
    let tests: Vec<f64> = res.records.iter().filter_map(|r| r.test_loss).collect();
    let last = res.records.last().ok_or_else(|| Error::Numerical("lazy: no records".into()))?;
    if matches!(res.status, Status::Diverged { .. }) {
        // Counted in `diverged`; its numbers are not results.
        return Ok(TrialRun {
            test_final: f64::NAN,
            test_best: f64::NAN,
            train_final: f64::NAN,
            displacement: f64::NAN,
            diverged: true,
        });
    }
    Ok(TrialRun {
        test_final: last.test_loss.unwrap_or(f64::NAN),
        test_best: tests.iter().copied().fold(f64::INFINITY, f64::min),
        train_final: last.loss,
        displacement: neuron_displacement(net.params(), net0.params(), cfg.width, cfg.input_dim),
        diverged: matches!(res.status, Status::Diverged { .. }),
    })
}

/// Runs the sweep, the scaling table and the particles; each trial, width and scale is one checkpointed step.
pub fn run(cfg: &LazyConfig, ctx: &mut Context) -> Result<LazyResult> {
    cfg.validate()?;
    let (data, _) =
        teacher_data(cfg.n_train, cfg.n_test, cfg.input_dim, cfg.teacher_neurons, derive_seed(cfg.seed, DATA_STREAM))?;
    let total = cfg.trials * (1 + cfg.scales.len()) + cfg.scaling.widths.len() + cfg.particles.scales.len();
    let mut done = 0;
    ctx.progress(0, total);
    let mut tangents = Vec::new();
    let mut runs: Vec<Vec<TrialRun>> = (0..cfg.scales.len()).map(|_| Vec::new()).collect();
    for trial in 0..cfg.trials {
        let seed = derive_seed(derive_seed(cfg.seed, NET_STREAM), trial as u64);
        let net0 = student(cfg.input_dim, cfg.width, Parameterization::Ntk, true, seed)?;
        let tr: TangentResult = ctx.step(&format!("trial={trial},tangent"), || {
            let (converged, same_steps, lr, k) = tangent(&net0, &data, cfg)?;
            let kt = kappa_times_tau(&net0, &data, &k, cfg.kappa_inputs, derive_seed(seed, LANCZOS_STREAM))?;
            Ok(TangentResult { converged, same_steps, lr, kappa_times_tau: kt })
        })?;
        done += 1;
        ctx.progress(done, total);
        for (s, &tau) in cfg.scales.iter().enumerate() {
            let r: (f64, f64, f64, f64, bool) = ctx.step(&format!("trial={trial},tau={tau:e}"), || {
                let r = train_scale(&net0, &data, cfg, tau, tr.lr)?;
                Ok((r.test_final, r.test_best, r.train_final, r.displacement, r.diverged))
            })?;
            runs[s].push(TrialRun {
                test_final: r.0,
                test_best: r.1,
                train_final: r.2,
                displacement: r.3,
                diverged: r.4,
            });
            done += 1;
            ctx.progress(done, total);
        }
        tangents.push(tr);
    }
    let scaling = lazy_scaling::width_scaling(cfg, ctx, &mut done, total)?;
    let particles = lazy_scaling::particles(cfg, ctx, &mut done, total)?;
    let by_scale: Vec<ScaleResult> = cfg
        .scales
        .iter()
        .zip(&runs)
        .map(|(&tau, rs)| ScaleResult {
            scale: tau,
            test_loss_final: rs.iter().map(|r| r.test_final).collect(),
            test_loss_best: rs.iter().map(|r| r.test_best).collect(),
            train_loss_final: rs.iter().map(|r| r.train_final).collect(),
            displacement: rs.iter().map(|r| r.displacement).collect(),
            kappa: tangents.iter().map(|t| t.kappa_times_tau / tau).collect(),
            diverged: rs.iter().filter(|r| r.diverged).count(),
        })
        .collect();
    let mean = |v: &[f64]| mean_std(v).0;
    let conv = mean(&tangents.iter().map(|t| t.converged).collect::<Vec<_>>());
    let same = mean(&tangents.iter().map(|t| t.same_steps).collect::<Vec<_>>());
    let (_, yt) = data.test.as_ref().ok_or_else(|| Error::Config("lazy: no test split".into()))?;
    Ok(LazyResult {
        config: cfg.clone(),
        scales: cfg.scales.clone(),
        test_loss_final: by_scale.iter().map(|s| mean(&s.test_loss_final)).collect(),
        test_loss_best: by_scale.iter().map(|s| mean(&s.test_loss_best)).collect(),
        tangent_test_loss: vec![conv; cfg.scales.len()],
        tangent_test_loss_same_steps: vec![same; cfg.scales.len()],
        kappa: by_scale.iter().map(|s| mean(&s.kappa)).collect(),
        null_test_loss: mse(&Mat::zeros(yt.nrows(), 1), yt),
        by_scale,
        tangent: tangents,
        slope_init_meanfield: scaling.fit_init_meanfield.exponent,
        slope_init_lazy: scaling.fit_init_lazy.exponent,
        slope_displacement_meanfield: scaling.fit_displacement_meanfield.exponent,
        slope_displacement_lazy: scaling.fit_displacement_lazy.exponent,
        scaling,
        particles,
    })
}

/// `ntklab run lazy`.
pub struct Lazy;

impl Reproduction for Lazy {
    const NAME: &'static str = "lazy";
    const DESCRIPTION: &'static str =
        "Lazy vs mean-field training (Chizat, Oyallon & Bach 2019): test loss against the scale, the tangent model, width scalings, particles";
    type Config = LazyConfig;
    type Summary = LazyResult;

    fn full() -> LazyConfig {
        LazyConfig::full()
    }
    fn quick() -> LazyConfig {
        LazyConfig::quick()
    }
    fn seed(cfg: &LazyConfig) -> u64 {
        cfg.seed
    }
    fn set_seed(cfg: &mut LazyConfig, seed: u64) {
        cfg.seed = seed;
    }
    fn validate(cfg: &LazyConfig) -> Result<()> {
        cfg.validate()
    }
    fn run(cfg: &LazyConfig, ctx: &mut Context) -> Result<LazyResult> {
        run(cfg, ctx)
    }
    fn report(res: &LazyResult) -> Report {
        super::lazy_report::report(res)
    }
    fn console(res: &LazyResult) -> String {
        let mut s = format!(
            "lazy: m = {}, d = {}, N = {}; tangent model test loss {:.3e} (same steps {:.3e}), zero predictor {:.3e}\n",
            res.config.width,
            res.config.input_dim,
            res.config.n_train,
            res.tangent_test_loss[0],
            res.tangent_test_loss_same_steps[0],
            res.null_test_loss
        );
        s += &format!("{:>10} {:>11} {:>11} {:>10}\n", "tau", "test final", "test best", "kappa");
        for i in 0..res.scales.len() {
            s += &format!(
                "{:>10.3e} {:>11.3e} {:>11.3e} {:>10.2e}\n",
                res.scales[i], res.test_loss_final[i], res.test_loss_best[i], res.kappa[i]
            );
        }
        s += &format!(
            "slopes vs width: init mean-field {:.3} lazy {:.3}; displacement mean-field {:.3} lazy {:.3}",
            res.slope_init_meanfield,
            res.slope_init_lazy,
            res.slope_displacement_meanfield,
            res.slope_displacement_lazy
        );
        s
    }
}
