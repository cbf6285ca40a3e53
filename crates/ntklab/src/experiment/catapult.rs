//! The catapult mechanism (Lewkowycz, Bahri, Dyer, Sohl-Dickstein & Gur-Ari 2020): phases of full-batch GD on a
//! wide two-layer ReLU network (NTK parameterization, MSE) as the learning rate grows.
//!
//! Conventions (ARCHITECTURE.md): L = 1/(2N) sum_i (f(x_i) - y_i)^2, lambda0 = lambda_max(Theta_0) / N with Theta_0
//! the empirical NTK on the N training points, so the linearized model is GD-stable exactly for
//! eta < eta_crit = 2 / lambda0. Learning rates are given as factors c of eta_crit (eta = c * 2 / lambda0).
//!
//! Phases, read off the loss curve L_0, L_1, ..., L_T of each run ([`classify`]):
//! * lazy: the loss never exceeds L_0 (to a relative 1e-9) and ends below it (the NTK barely moves);
//! * catapult: the loss rises above L_0, then comes back below L_0 by step T (the NTK's top eigenvalue then
//!   typically ends lower than at initialization: the run was thrown to a flatter region);
//! * divergent: the loss or gradient became non-finite or exceeded `divergence_factor` * L_0;
//! * unresolved: finite, but still at or above L_0 after T steps (neither converged nor diverged yet).
//!
//! The uv model of the paper (a two-layer linear network) has eta_max = 4 / lambda0, i.e. c = 2; the paper
//! reports larger maximal rates for ReLU networks. This experiment measures c_max as the largest swept factor that
//! converges below the first divergent one, refined by bisection.

use faer::Mat;
use serde::{Deserialize, Serialize};

use super::{Context, Reproduction};
use crate::report::{Chart, Comparison, Report, Section, Series};

use crate::data::datasets::{synthetic, Builtin, Dataset, SyntheticSpec};
use crate::data::synthetic::derive_seed;
use crate::kernel::{Activation, Parameterization};
use crate::net::{Mlp, NtkOutputs};
use crate::spectrum::max_eigenvalue;
use crate::train::{train, Probe, ProbeConfig, Status, TrainConfig};
use crate::{Error, Result};

/// What to run; see the module docs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CatapultConfig {
    /// Hidden width m of f(x) = (1/sqrt(m)) sum_i a_i relu(w_i . x / sqrt(d)).
    pub width: usize,
    /// Training points N (the `teacher` set: inputs on the sphere of radius sqrt(d), a random ReLU teacher).
    pub n_train: usize,
    /// Input dimension d.
    pub input_dim: usize,
    /// GD steps per learning rate.
    pub steps: u64,
    /// Learning rates as factors c of eta_crit = 2 / lambda0.
    #[serde(with = "crate::data::json_f64::vec")]
    pub lr_factors: Vec<f64>,
    /// Bisection steps refining c_max between the last converging and the first divergent factor.
    pub refine: usize,
    /// A run diverges when its loss exceeds this multiple of L_0 (or is not finite).
    #[serde(with = "crate::data::json_f64")]
    pub divergence_factor: f64,
    /// Master seed (data and initialization; every run starts from the same network).
    #[serde(with = "crate::data::seed")]
    pub seed: u64,
    /// Hidden-layer counts of the ReLU networks whose eta_max lambda0 is measured (same width, data and
    /// sweep; 1 is the main run).
    #[serde(default = "default_depths")]
    pub depths: Vec<usize>,
    /// Width n of the uv model (0: skip it).
    #[serde(default = "default_uv_width")]
    pub uv_width: usize,
    /// Bisection steps of the uv model's eta_max.
    #[serde(default = "default_uv_refine")]
    pub uv_refine: usize,
}

fn default_depths() -> Vec<usize> {
    vec![1]
}

fn default_uv_width() -> usize {
    0
}

fn default_uv_refine() -> usize {
    12
}

impl Default for CatapultConfig {
    fn default() -> Self {
        CatapultConfig::full()
    }
}

impl CatapultConfig {
    /// The full run: m = 4096, N = 32, d = 10, 300 steps, c in {0.5, ..., 6}, 4 bisection steps.
    pub fn full() -> CatapultConfig {
        CatapultConfig {
            width: 4096,
            n_train: 32,
            input_dim: 10,
            steps: 300,
            lr_factors: vec![0.5, 0.9, 1.2, 1.6, 2.0, 2.5, 3.0, 3.5, 4.5, 6.0],
            refine: 4,
            divergence_factor: 1e10,
            seed: 0,
            depths: vec![1, 2, 3],
            uv_width: 1000,
            uv_refine: 16,
        }
    }

    /// A small instance for tests and CI (about a second): m = 512, N = 16, 150 steps, no refinement.
    pub fn quick() -> CatapultConfig {
        CatapultConfig {
            width: 512,
            n_train: 16,
            input_dim: 8,
            steps: 150,
            refine: 0,
            depths: vec![1, 2],
            uv_width: 200,
            uv_refine: 12,
            ..CatapultConfig::full()
        }
    }

    /// Checks the configuration.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Config(format!("catapult: {m}")));
        if self.width == 0 || self.n_train == 0 || self.input_dim == 0 || self.steps == 0 {
            return bad("width, n_train, input_dim and steps must be positive".into());
        }
        if self.lr_factors.is_empty() || self.lr_factors.iter().any(|c| !(*c > 0.0 && c.is_finite())) {
            return bad(format!("lr_factors must be non-empty, finite and > 0, got {:?}", self.lr_factors));
        }
        if self.divergence_factor.is_nan() || self.divergence_factor <= 1.0 {
            return bad(format!("divergence_factor must be > 1, got {}", self.divergence_factor));
        }
        if self.depths.iter().any(|&d| d == 0 || d > 10) {
            return bad(format!("depths are hidden-layer counts in 1..=10, got {:?}", self.depths));
        }
        Ok(())
    }
}

/// The phase of one GD run (module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    /// The loss never rose above L_0.
    Lazy,
    /// The loss rose above L_0, then came back below it.
    Catapult,
    /// The loss blew up (non-finite or above the divergence threshold).
    Divergent,
    /// Still at or above L_0 after all steps.
    Unresolved,
}

impl Phase {
    /// Lazy or catapult: the run converged below its initial loss.
    pub fn converged(self) -> bool {
        matches!(self, Phase::Lazy | Phase::Catapult)
    }
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Phase::Lazy => "lazy",
            Phase::Catapult => "catapult",
            Phase::Divergent => "divergent",
            Phase::Unresolved => "unresolved",
        })
    }
}

/// Relative tolerance for "the loss rose": L_t > L_0 (1 + RISE_TOL).
const RISE_TOL: f64 = 1e-9;

/// The phase of a run from its loss curve (L_0 first) and whether training reported divergence.
pub fn classify(losses: &[f64], diverged: bool) -> Phase {
    if diverged || losses.iter().any(|l| !l.is_finite()) {
        return Phase::Divergent;
    }
    let (l0, last) = match (losses.first(), losses.last()) {
        (Some(a), Some(b)) => (*a, *b),
        _ => return Phase::Unresolved,
    };
    let rose = losses.iter().any(|&l| l > l0 * (1.0 + RISE_TOL));
    if last >= l0 {
        Phase::Unresolved
    } else if rose {
        Phase::Catapult
    } else {
        Phase::Lazy
    }
}

/// Whether L_{t+1} <= L_t (to a relative 1e-9) at every step.
pub fn is_monotone(losses: &[f64]) -> bool {
    losses.windows(2).all(|w| w[1] <= w[0] * (1.0 + RISE_TOL))
}

/// One GD run at eta = lr_factor * 2 / lambda0.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CatapultRun {
    /// c in eta = c * 2 / lambda0.
    #[serde(with = "crate::data::json_f64")]
    pub lr_factor: f64,
    /// The learning rate eta.
    #[serde(with = "crate::data::json_f64")]
    pub lr: f64,
    /// The phase.
    pub phase: Phase,
    /// Whether the loss decreased at every step.
    pub monotone: bool,
    /// How training ended (e.g. "completed", "diverged at step 7: ...").
    pub status: String,
    /// Steps taken.
    pub steps: u64,
    /// L_0.
    #[serde(with = "crate::data::json_f64")]
    pub loss_initial: f64,
    /// max_t L_t over the recorded steps.
    #[serde(with = "crate::data::json_f64")]
    pub loss_peak: f64,
    /// The step of the peak.
    pub peak_step: u64,
    /// The last recorded loss.
    #[serde(with = "crate::data::json_f64")]
    pub loss_final: f64,
    /// lambda_max(Theta) at initialization.
    #[serde(with = "crate::data::json_f64")]
    pub ntk_max_initial: f64,
    /// lambda_max(Theta) at the last record.
    #[serde(with = "crate::data::json_f64")]
    pub ntk_max_final: f64,
    /// Loss at every step until the end (or divergence).
    #[serde(with = "crate::data::json_f64::vec")]
    pub losses: Vec<f64>,
    /// lambda_max of the empirical NTK at every step.
    #[serde(with = "crate::data::json_f64::vec")]
    pub ntk_max: Vec<f64>,
}

/// The outcome of [`run`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CatapultResult {
    /// The configuration that produced it.
    pub config: CatapultConfig,
    /// lambda_max(Theta_0) of the train NTK at initialization.
    #[serde(with = "crate::data::json_f64")]
    pub ntk_max0: f64,
    /// lambda0 = lambda_max(Theta_0) / N, the top eigenvalue of the loss Hessian's Gauss–Newton part.
    #[serde(with = "crate::data::json_f64")]
    pub lambda0: f64,
    /// The linearized stability edge eta_crit = 2 / lambda0.
    #[serde(with = "crate::data::json_f64")]
    pub eta_crit: f64,
    /// The swept runs in order of `lr_factors`.
    pub runs: Vec<CatapultRun>,
    /// Runs of the bisection for c_max, in the order run.
    pub refinement: Vec<CatapultRun>,
    /// Largest factor c (swept or bisected) that converged below the first divergent or unresolved one
    /// (None when even the smallest factor failed to converge).
    #[serde(default, with = "crate::data::json_f64::opt")]
    pub max_converging_factor: Option<f64>,
    /// Smallest factor c above it that did not converge (None when every swept factor converged).
    #[serde(default, with = "crate::data::json_f64::opt")]
    pub first_failing_factor: Option<f64>,
    /// The uv model's bisection (None when `uv_width` = 0).
    #[serde(default)]
    pub uv: Option<super::catapult_uv::UvResult>,
    /// eta_max lambda0 of the uv model (prediction: 4).
    #[serde(default, with = "crate::data::json_f64::opt")]
    pub uv_eta_max_lambda0: Option<f64>,
    /// ReLU networks by depth (`config.depths` order).
    #[serde(default)]
    pub by_depth: Vec<DepthResult>,
    /// eta_max lambda0 of the ReLU networks, in `config.depths` order (None where nothing converged).
    #[serde(default)]
    pub eta_max_lambda0_by_depth: Vec<Option<f64>>,
}

/// eta_max of a ReLU network with `hidden_layers` hidden layers of the config's width.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DepthResult {
    /// Hidden layers.
    pub hidden_layers: usize,
    /// lambda0 = lambda_max(Theta_0) / N.
    #[serde(with = "crate::data::json_f64")]
    pub lambda0: f64,
    /// Largest converging factor c below the first failing one (eta = c * 2 / lambda0).
    #[serde(default, with = "crate::data::json_f64::opt")]
    pub max_converging_factor: Option<f64>,
    /// Smallest failing factor above it.
    #[serde(default, with = "crate::data::json_f64::opt")]
    pub first_failing_factor: Option<f64>,
    /// eta_max lambda0 (the bracket's midpoint times 2).
    #[serde(default, with = "crate::data::json_f64::opt")]
    pub eta_max_lambda0: Option<f64>,
    /// Phases of the runs, as (c, phase), in the order run.
    pub phases: Vec<(f64, Phase)>,
}

impl CatapultResult {
    /// eta_max in units of eta_crit = 2 / lambda0: the midpoint of the bracket when both ends are known.
    pub fn eta_max_factor(&self) -> Option<f64> {
        match (self.max_converging_factor, self.first_failing_factor) {
            (Some(a), Some(b)) => Some(0.5 * (a + b)),
            (Some(a), None) => Some(a),
            _ => None,
        }
    }
}

/// The data set and initial network of a config.
pub fn setup(cfg: &CatapultConfig) -> Result<(Dataset, Mlp)> {
    let mut spec = SyntheticSpec::new(Builtin::Teacher, cfg.n_train, cfg.input_dim, derive_seed(cfg.seed, 0));
    spec.noise = Some(0.0);
    let data = synthetic(&spec)?;
    let net = Mlp::two_layer(
        cfg.input_dim,
        cfg.width,
        Activation::Relu,
        Parameterization::Ntk,
        1.0,
        derive_seed(cfg.seed, 1),
    )?;
    Ok((data, net))
}

/// One GD run from `net0` at eta = factor * eta_crit, recording loss and lambda_max(Theta) every step.
fn gd_run(net0: &Mlp, data: &Dataset, cfg: &CatapultConfig, eta_crit: f64, factor: f64) -> Result<CatapultRun> {
    let mut net = net0.clone();
    let eta = factor * eta_crit;
    let mut tc = TrainConfig::gd(eta, cfg.steps);
    tc.divergence_factor = cfg.divergence_factor;
    let probes = ProbeConfig::loss_only(1).with(Probe::NtkMax);
    let res = train(&mut net, data, &tc, &probes, |_| Ok(()))?;
    let losses: Vec<f64> = res.records.iter().map(|r| r.loss).collect();
    let ntk_max: Vec<f64> = res.records.iter().map(|r| r.ntk_max.unwrap_or(f64::NAN)).collect();
    let diverged = matches!(res.status, Status::Diverged { .. });
    let (peak_step, loss_peak) =
        losses
            .iter()
            .enumerate()
            .fold((0, f64::NEG_INFINITY), |(bi, bv), (i, &v)| if v > bv { (i, v) } else { (bi, bv) });
    Ok(CatapultRun {
        lr_factor: factor,
        lr: eta,
        phase: classify(&losses, diverged),
        monotone: is_monotone(&losses),
        status: res.status.to_string(),
        steps: res.steps,
        loss_initial: res.initial_loss,
        loss_peak,
        peak_step: res.records.get(peak_step).map_or(0, |r| r.step),
        loss_final: losses.last().copied().unwrap_or(f64::NAN),
        ntk_max_initial: ntk_max.first().copied().unwrap_or(f64::NAN),
        ntk_max_final: ntk_max.last().copied().unwrap_or(f64::NAN),
        losses,
        ntk_max,
    })
}

/// Runs the sweep and the bisection; each GD run is one checkpointed step of `ctx`.
pub fn run(cfg: &CatapultConfig, ctx: &mut Context) -> Result<CatapultResult> {
    cfg.validate()?;
    let (data, net) = setup(cfg)?;
    let lambda0 = lambda_max_over_n(&net, &data)?;
    let ntk_max0 = lambda0 * cfg.n_train as f64;
    let eta_crit = 2.0 / lambda0;
    let mut factors = cfg.lr_factors.clone();
    factors.sort_by(|a, b| a.total_cmp(b));
    factors.dedup();
    let total = factors.len() + cfg.refine;
    // (Depth sweeps and the uv model report no progress of their own: they are short next to the main sweep.)
    ctx.progress(0, total);
    let mut runs = Vec::with_capacity(factors.len());
    for (i, &c) in factors.iter().enumerate() {
        runs.push(ctx.step(&format!("lr_factor={c}"), || gd_run(&net, &data, cfg, eta_crit, c))?);
        ctx.progress(i + 1, total);
    }
    // Bracket: the first failing factor, and the largest converging one below it.
    let first_fail = runs.iter().position(|r| !r.phase.converged());
    let (mut lo, mut hi) = match first_fail {
        Some(0) => (None, Some(runs[0].lr_factor)),
        Some(k) => (Some(runs[k - 1].lr_factor), Some(runs[k].lr_factor)),
        None => (runs.last().map(|r| r.lr_factor), None),
    };
    let mut refinement = Vec::new();
    for j in 0..cfg.refine {
        if let (Some(a), Some(b)) = (lo, hi) {
            let mid = 0.5 * (a + b);
            let r = ctx.step(&format!("lr_factor={mid}"), || gd_run(&net, &data, cfg, eta_crit, mid))?;
            if r.phase.converged() {
                lo = Some(mid);
            } else {
                hi = Some(mid);
            }
            refinement.push(r);
        }
        ctx.progress(factors.len() + j + 1, total);
    }
    let mut by_depth = Vec::with_capacity(cfg.depths.len());
    for &depth in &cfg.depths {
        if depth == 1 {
            let phases = runs.iter().chain(&refinement).map(|r| (r.lr_factor, r.phase)).collect();
            by_depth.push(depth_result(1, lambda0, lo, hi, phases));
            continue;
        }
        let net = deep_relu(cfg, depth)?;
        let lam = lambda_max_over_n(&net, &data)?;
        let crit = 2.0 / lam;
        let (rs, dlo, dhi) = super::catapult_uv::sweep_and_bisect(
            &factors,
            cfg.refine,
            |c| ctx.step(&format!("depth={depth} lr_factor={c}"), || gd_run(&net, &data, cfg, crit, c)),
            |r: &CatapultRun| r.phase.converged(),
        )?;
        by_depth.push(depth_result(depth, lam, dlo, dhi, rs.iter().map(|r| (r.lr_factor, r.phase)).collect()));
    }
    let uv = if cfg.uv_width > 0 {
        Some(super::catapult_uv::run_uv(cfg.uv_width, cfg.steps, cfg.uv_refine, cfg.divergence_factor, cfg.seed, ctx)?)
    } else {
        None
    };
    Ok(CatapultResult {
        config: cfg.clone(),
        ntk_max0,
        lambda0,
        eta_crit,
        runs,
        refinement,
        max_converging_factor: lo,
        first_failing_factor: hi,
        uv_eta_max_lambda0: uv.as_ref().and_then(|u| u.eta_max_lambda0()),
        uv,
        eta_max_lambda0_by_depth: by_depth.iter().map(|d| d.eta_max_lambda0).collect(),
        by_depth,
    })
}

fn depth_result(
    depth: usize,
    lambda0: f64,
    lo: Option<f64>,
    hi: Option<f64>,
    phases: Vec<(f64, Phase)>,
) -> DepthResult {
    DepthResult {
        hidden_layers: depth,
        lambda0,
        max_converging_factor: lo,
        first_failing_factor: hi,
        eta_max_lambda0: super::catapult_uv::bracket_mid(lo, hi).map(|c| 2.0 * c),
        phases,
    }
}

/// A ReLU network with `depth` hidden layers of the config's width (ntk parameterization, no biases), from
/// its own seed stream.
fn deep_relu(cfg: &CatapultConfig, depth: usize) -> Result<Mlp> {
    let mut layers = Vec::new();
    for _ in 0..depth {
        layers.push(crate::kernel::Layer::Dense { width: cfg.width, w_std: 1.0, b_std: None });
        layers.push(crate::kernel::Layer::Activation(Activation::Relu));
    }
    layers.push(crate::kernel::Layer::Dense { width: 1, w_std: 1.0, b_std: None });
    let arch = crate::kernel::Architecture::sequential(layers, Parameterization::Ntk);
    Mlp::init(&arch, cfg.input_dim, 1.0, derive_seed(cfg.seed, 10 + depth as u64))
}

/// lambda0 = lambda_max(Theta_0) / N on the training inputs.
fn lambda_max_over_n(net: &Mlp, data: &Dataset) -> Result<f64> {
    let theta0 = net.empirical_ntk(data.x.as_ref(), None, NtkOutputs::Trace)?;
    let sym = Mat::from_fn(theta0.nrows(), theta0.ncols(), |i, j| 0.5 * (theta0[(i, j)] + theta0[(j, i)]));
    Ok(max_eigenvalue(sym.as_ref())? / data.n_train() as f64)
}

/// `ntklab run catapult`.
pub struct Catapult;

impl Reproduction for Catapult {
    const NAME: &'static str = "catapult";
    const DESCRIPTION: &'static str =
        "Catapult phase of large-learning-rate GD (Lewkowycz et al. 2020): lazy / catapult / divergent";
    type Config = CatapultConfig;
    type Summary = CatapultResult;

    fn full() -> CatapultConfig {
        CatapultConfig::full()
    }
    fn quick() -> CatapultConfig {
        CatapultConfig::quick()
    }
    fn seed(cfg: &CatapultConfig) -> u64 {
        cfg.seed
    }
    fn set_seed(cfg: &mut CatapultConfig, seed: u64) {
        cfg.seed = seed;
    }
    fn validate(cfg: &CatapultConfig) -> Result<()> {
        cfg.validate()
    }
    fn run(cfg: &CatapultConfig, ctx: &mut Context) -> Result<CatapultResult> {
        run(cfg, ctx)
    }
    fn report(res: &CatapultResult) -> Report {
        report(res)
    }
    fn console(res: &CatapultResult) -> String {
        let c = &res.config;
        let mut s = format!(
            "catapult: two-layer ReLU net, width {}, N = {}, d = {}, {} GD steps\nlambda0 = lambda_max(NTK)/N = {:.6} \
             -> eta_crit = 2/lambda0 = {:.6}; learning rates in units of eta_crit:\n{:>8} {:>11} {:>10} {:>12} {:>12} \
             {:>12}\n",
            c.width,
            c.n_train,
            c.input_dim,
            c.steps,
            res.lambda0,
            res.eta_crit,
            "eta/crit",
            "phase",
            "monotone",
            "peak/L0",
            "final/L0",
            "lam_T/lam_0"
        );
        for r in res.runs.iter().chain(&res.refinement) {
            s += &format!(
                "{:>8.3} {:>11} {:>10} {:>12.3e} {:>12.3e} {:>12.4}\n",
                r.lr_factor,
                r.phase.to_string(),
                r.monotone,
                r.loss_peak / r.loss_initial,
                r.loss_final / r.loss_initial,
                r.ntk_max_final / r.ntk_max_initial
            );
        }
        s += &eta_max_line(res);
        for d in &res.by_depth {
            s += &format!(
                "\n{} hidden layer(s): lambda0 = {:.6}, eta_max lambda0 = {}",
                d.hidden_layers,
                d.lambda0,
                d.eta_max_lambda0.map_or("not found".into(), |v| format!("{v:.3}"))
            );
        }
        if let Some(uv) = &res.uv {
            s += &format!(
                "\nuv model (n = {}): eta_max lambda0 = {} (prediction 4)",
                uv.width,
                uv.eta_max_lambda0().map_or("not found".into(), |v| format!("{v:.5}"))
            );
        }
        s
    }
}

fn eta_max_line(res: &CatapultResult) -> String {
    match (res.max_converging_factor, res.first_failing_factor) {
        (Some(a), Some(b)) => format!(
            "measured eta_max in [{a:.3}, {b:.3}] x 2/lambda0 (i.e. {:.2}/lambda0 .. {:.2}/lambda0); the uv model \
             of Lewkowycz et al. predicts 2 x 2/lambda0",
            2.0 * a,
            2.0 * b
        ),
        (Some(a), None) => format!("every rate converged: eta_max > {a:.3} x 2/lambda0 (extend lr_factors)"),
        (None, Some(b)) => format!("even the smallest rate ({b:.3} x 2/lambda0) failed to converge"),
        (None, None) => "no runs".into(),
    }
}

fn depth_chart(res: &CatapultResult) -> Chart {
    let pts: Vec<(f64, f64)> =
        res.by_depth.iter().filter_map(|d| d.eta_max_lambda0.map(|v| (d.hidden_layers as f64, v))).collect();
    let mut hlines = vec![("uv model: 4".into(), 4.0)];
    if let Some(v) = res.uv_eta_max_lambda0 {
        hlines.push((format!("uv measured {v:.4}"), v));
    }
    Chart {
        title: "eta_max lambda0 against depth".into(),
        x_label: "hidden layers".into(),
        y_label: "eta_max * lambda0".into(),
        log_x: false,
        log_y: false,
        series: vec![Series::markers("ReLU networks", pts)],
        hlines,
    }
}

fn run_label(r: &CatapultRun) -> String {
    format!("{:.2} ({})", r.lr_factor, r.phase)
}

fn report(res: &CatapultResult) -> Report {
    let c = &res.config;
    // Curves of the converged runs and of the first one that did not converge (later ones only blow up faster).
    let first_fail = res.runs.iter().position(|r| !r.phase.converged()).map_or(res.runs.len(), |k| k + 1);
    let runs: Vec<&CatapultRun> = res.runs.iter().take(first_fail).collect();
    let curve = |r: &CatapultRun, v: &[f64], v0: f64| -> Series {
        Series::line(run_label(r), v.iter().enumerate().map(|(i, l)| (i as f64, l / v0)).collect())
    };
    let loss = Chart {
        title: "Training loss / L0 (eta in units of 2/lambda0)".into(),
        x_label: "GD step".into(),
        y_label: "L_t / L_0".into(),
        log_x: false,
        log_y: true,
        series: runs.iter().map(|r| curve(r, &r.losses, r.loss_initial)).collect(),
        hlines: vec![("L_0".into(), 1.0)],
    };
    let ntk = Chart {
        title: "Top NTK eigenvalue / its initial value".into(),
        x_label: "GD step".into(),
        y_label: "lambda_max(K_t) / lambda_max(K_0)".into(),
        log_x: false,
        log_y: true,
        series: runs.iter().map(|r| curve(r, &r.ntk_max, r.ntk_max_initial)).collect(),
        hlines: vec![("initial".into(), 1.0)],
    };
    let all: Vec<&CatapultRun> = res.runs.iter().chain(&res.refinement).collect();
    let thr = c.divergence_factor;
    let mut series = Vec::new();
    for ph in [Phase::Lazy, Phase::Catapult, Phase::Unresolved, Phase::Divergent] {
        let pts: Vec<(f64, f64)> = all
            .iter()
            .filter(|r| r.phase == ph)
            .map(|r| (r.lr_factor, if ph == Phase::Divergent { thr } else { r.loss_peak / r.loss_initial }))
            .collect();
        if !pts.is_empty() {
            let name = if ph == Phase::Divergent { format!("divergent (drawn at {thr:.0e})") } else { ph.to_string() };
            series.push(Series::markers(name, pts));
        }
    }
    let phase = Chart {
        title: "Phase diagram: peak loss / L0 vs learning rate".into(),
        x_label: "eta / (2/lambda0)".into(),
        y_label: "max_t L_t / L_0".into(),
        log_x: false,
        log_y: true,
        series,
        hlines: vec![],
    };
    let conv: Vec<(f64, f64)> = all
        .iter()
        .filter(|r| r.phase.converged())
        .map(|r| (r.lr_factor, r.ntk_max_final / r.ntk_max_initial))
        .collect();
    let mut xs: Vec<f64> = all.iter().map(|r| r.lr_factor).collect();
    xs.sort_by(|a, b| a.total_cmp(b));
    let flat = Chart {
        title: "Final top NTK eigenvalue of converged runs".into(),
        x_label: "eta / (2/lambda0)".into(),
        y_label: "lambda_max(K_T) / lambda_max(K_0)".into(),
        log_x: false,
        log_y: false,
        series: vec![
            Series::markers("converged runs", conv),
            Series::line(
                "stability bound 2/eta (= 1/c)",
                xs.iter().filter(|&&c| c >= 0.5).map(|&c| (c, 1.0 / c)).collect(),
            ),
        ],
        hlines: vec![("initial".into(), 1.0)],
    };
    let rows = all
        .iter()
        .map(|r| {
            vec![
                format!("{:.3}", r.lr_factor),
                format!("{:.4}", r.lr),
                r.phase.to_string(),
                r.monotone.to_string(),
                format!("{:.3e} ({})", r.loss_peak / r.loss_initial, r.peak_step),
                format!("{:.3e}", r.loss_final / r.loss_initial),
                format!("{:.4}", r.ntk_max_final / r.ntk_max_initial),
                r.status.to_string(),
            ]
        })
        .collect();
    let lazy_ok = res.runs.iter().filter(|r| r.lr_factor < 1.0).all(|r| r.phase == Phase::Lazy);
    let catapult_seen = all.iter().any(|r| r.phase == Phase::Catapult);
    let flatter = all
        .iter()
        .filter(|r| r.phase == Phase::Catapult)
        .all(|r| r.ntk_max_final / r.ntk_max_initial < 1.0 / r.lr_factor.max(1e-300) * 1.05);
    let plot =
        |stem: &str, chart: Chart, caption: &str| Section::Plot { stem: stem.into(), chart, caption: caption.into() };
    Report {
        title: "Catapult phase of large-learning-rate gradient descent".into(),
        claim: "Lewkowycz, Bahri, Dyer, Sohl-Dickstein & Gur-Ari (2020): with MSE loss, GD on a wide network is lazy \
                for eta < 2/lambda0; for larger rates the loss first grows, the top NTK eigenvalue drops until the run \
                fits in the new, flatter region (the catapult), and beyond eta_max training diverges. Their solvable \
                two-layer linear (uv) model has eta_max = 4/lambda0; they report larger maximal rates for ReLU \
                networks."
            .into(),
        setup: format!(
            "f(x) = (1/sqrt(m)) sum_i a_i relu(w_i . x / sqrt(d)), ntk parameterization, m = {}, d = {}; N = {} \
             points on the sphere with a random ReLU-teacher target; full-batch GD on L = 1/(2N) sum (f - y)^2 for \
             {} steps from the same initialization at every rate. lambda0 = lambda_max(K_0)/N = {:.6}, eta_crit = \
             2/lambda0 = {:.6}. Phases: lazy = the loss never exceeds L0 and ends below it; catapult = it exceeds L0, \
             then ends below it; divergent = non-finite or above {:.0e} L0; unresolved = still >= L0 after all \
             steps. Seed {}.",
            c.width, c.input_dim, c.n_train, c.steps, res.lambda0, res.eta_crit, c.divergence_factor, c.seed
        ),
        comparisons: vec![
            Comparison {
                quantity: "phase below eta_crit".into(),
                expected: "lazy (monotone loss)".into(),
                measured: if lazy_ok { "lazy".into() } else { "not all lazy".into() },
                agrees: Some(lazy_ok),
            },
            Comparison {
                quantity: "catapult runs above eta_crit".into(),
                expected: "loss spike, then convergence with lambda_T < 2/eta".into(),
                measured: format!(
                    "{} catapult run(s){}",
                    all.iter().filter(|r| r.phase == Phase::Catapult).count(),
                    if flatter { ", all ending below 2/eta" } else { ", some above 2/eta" }
                ),
                agrees: Some(catapult_seen && flatter),
            },
            Comparison {
                quantity: "eta_max".into(),
                expected: "4/lambda0 in the uv model, larger for ReLU".into(),
                measured: eta_max_line(res),
                agrees: None,
            },
        ]
        .into_iter()
        .chain(res.uv.as_ref().map(|uv| {
            let (lo, hi) = (uv.max_converging_factor, uv.first_failing_factor);
            let ok = matches!((lo, hi), (Some(a), Some(b)) if a <= 2.0 && 2.0 <= b);
            Comparison {
                quantity: format!("uv model eta_max lambda0 (n = {})", uv.width),
                expected: "4 (exact)".into(),
                measured: match (lo, hi) {
                    (Some(a), Some(b)) => format!("in [{:.5}, {:.5}]", 2.0 * a, 2.0 * b),
                    _ => "no bracket".into(),
                },
                agrees: Some(ok),
            }
        }))
        .chain((res.by_depth.len() > 1).then(|| {
            Comparison {
                quantity: "eta_max lambda0 of ReLU nets by depth".into(),
                expected: "larger than the uv model's 4".into(),
                measured: res
                    .by_depth
                    .iter()
                    .map(|d| {
                        format!(
                            "{} layer(s): {}",
                            d.hidden_layers,
                            d.eta_max_lambda0.map_or("-".into(), |v| format!("{v:.2}"))
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("; "),
                agrees: Some(res.by_depth.iter().all(|d| d.eta_max_lambda0.is_some_and(|v| v > 4.0))),
            }
        }))
        .collect(),
        sections: vec![
            plot("loss_curves", loss, "Loss curves of the converged runs and the first failing one"),
            plot(
                "eta_max_by_depth",
                depth_chart(res),
                "Maximal converging learning rate times lambda0 for ReLU networks of each depth (bisection \
                 bracket midpoints), beside the uv model's measured value and its exact 4",
            ),
            plot("ntk_curves", ntk, "Top NTK eigenvalue during training"),
            plot("phase_diagram", phase, "Peak loss against the learning rate, by phase"),
            plot(
                "final_curvature",
                flat,
                "Converged catapult runs should sit below the line 1/c, i.e. end with lambda_max < 2/eta where GD \
                 at that rate is stable",
            ),
            Section::Table {
                caption: format!(
                    "All runs{}",
                    if res.refinement.is_empty() {
                        String::new()
                    } else {
                        format!(" (the last {} rows are the bisection for eta_max)", res.refinement.len())
                    }
                ),
                headers: [
                    "eta / eta_crit",
                    "eta",
                    "phase",
                    "monotone",
                    "peak L / L0 (step)",
                    "final L / L0",
                    "lambda_T / lambda_0",
                    "status",
                ]
                .map(String::from)
                .to_vec(),
                rows,
            },
        ],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classify_reads_the_loss_curve() {
        assert_eq!(classify(&[1.0, 0.5, 0.2], false), Phase::Lazy);
        assert_eq!(classify(&[1.0, 0.5, 0.6, 0.2], false), Phase::Lazy);
        assert!(!is_monotone(&[1.0, 0.5, 0.6, 0.2]));
        assert!(is_monotone(&[1.0, 0.5, 0.2]));
        assert_eq!(classify(&[1.0, 3.0, 50.0, 0.4], false), Phase::Catapult);
        assert_eq!(classify(&[1.0, 3.0, 50.0, 2.0], false), Phase::Unresolved);
        assert_eq!(classify(&[1.0, 3.0, f64::INFINITY], false), Phase::Divergent);
        assert_eq!(classify(&[1.0, 3.0], true), Phase::Divergent);
    }

    #[test]
    fn quick_sweep_shows_lazy_catapult_and_divergent_phases() {
        let cfg =
            CatapultConfig { lr_factors: vec![0.5, 0.9, 1.2, 1.6, 2.0, 2.5, 3.0, 6.0], ..CatapultConfig::quick() };
        let res = run(&cfg, &mut Context::quiet()).unwrap();
        for r in &res.runs {
            eprintln!(
                "c = {:.2}: {} (peak {:.3e} at {}, final {:.3e}, lambda {:.3} -> {:.3})",
                r.lr_factor,
                r.phase,
                r.loss_peak / r.loss_initial,
                r.peak_step,
                r.loss_final / r.loss_initial,
                r.ntk_max_initial,
                r.ntk_max_final
            );
        }
        // Below the edge: monotone, lazy.
        for r in res.runs.iter().filter(|r| r.lr_factor < 1.0) {
            assert_eq!(r.phase, Phase::Lazy, "c = {}", r.lr_factor);
            assert!(r.monotone, "c = {} is not monotone", r.lr_factor);
        }
        let cmax = res.max_converging_factor.expect("something converges");
        // A catapult between the edge and c_max, ending at a smaller NTK top eigenvalue.
        let cat: Vec<&CatapultRun> = res
            .runs
            .iter()
            .filter(|r| r.lr_factor > 1.0 && r.lr_factor <= cmax && r.phase == Phase::Catapult)
            .collect();
        assert!(!cat.is_empty(), "no catapult between 1 and {cmax}");
        assert!(cat.iter().any(|r| r.ntk_max_final < r.ntk_max_initial));
        // The largest rate diverges, without a panic.
        assert_eq!(res.runs.last().unwrap().phase, Phase::Divergent);
        assert!(res.first_failing_factor.is_some());
        // The uv model brackets 4 to its bisection's precision (12 halvings of a 0.2-wide bracket in c).
        let uv = res.uv_eta_max_lambda0.expect("uv bracket");
        assert!((uv - 4.0).abs() <= 2.0 * 0.2 / 4096.0, "uv eta_max lambda0 = {uv}");
        // Every depth finds an edge above the linearized one (c > 1, i.e. eta_max lambda0 > 2).
        assert_eq!(res.by_depth.len(), 2);
        assert_eq!(res.eta_max_lambda0_by_depth.len(), 2);
        for d in &res.by_depth {
            eprintln!("depth {}: eta_max lambda0 = {:?}", d.hidden_layers, d.eta_max_lambda0);
            assert!(d.eta_max_lambda0.is_some_and(|v| v > 2.0), "depth {}: {:?}", d.hidden_layers, d.eta_max_lambda0);
        }
        assert_eq!(res.by_depth[0].eta_max_lambda0, res.eta_max_factor().map(|c| 2.0 * c));
    }
}
