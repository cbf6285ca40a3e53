//! Transition to linearity (Liu, Zhu & Belkin, NeurIPS 2020): for networks in the NTK parameterization the
//! Hessian of the output f(x; w) w.r.t. the parameters has spectral norm O~(1/sqrt(m)) at initialization (m the
//! width), so the model is nearly linear in w on O(1) balls, and the NTK moves by O(1/sqrt(m)) in training.
//!
//! For each depth (number of Dense layers) and width m this measures, averaged over `seeds` initializations:
//! * `||d^2 f(x)/dw^2||_2` at `hessian_inputs` inputs x, by Lanczos (largest magnitude) on exact output-Hessian
//!   products ([`OutputHessian`]);
//! * the relative NTK change `||Theta_T - Theta_0||_F / ||Theta_0||_F` on the training set after `steps` steps
//!   of full-batch GD on MSE with eta = lr_factor * 2N / lambda_max(Theta_0) (the same fraction of the
//!   stability edge at every width);
//!
//! and fits log-log slopes against m. Theory: ||d^2 f|| = O~(m^-1/2) (for the two-layer net exactly
//! ~ sqrt(2 ln m) / sqrt(m), the sqrt(ln m) being the largest of m Gaussian readout weights, so finite-width
//! slopes sit slightly above -1/2; [`LinearityFit::hessian_log_corrected`] divides it out). The NTK change is
//! bounded by O(||d^2 f|| R) = O(m^-1/2) for a weight displacement R = O(1) (Liu et al.); along GD from a random
//! initialization it is in fact smaller, O(1/m) (Dyer & Gur-Ari 2019; Huang & Yau 2020), because the first-order
//! changes of the per-neuron terms have random signs and cancel: expect slopes between -1 and -1/2.
//!
//! Output-Hessian products are one R-operator pass each ([`OutputCurvature`]).

use faer::{Mat, MatRef};
use serde::{Deserialize, Serialize};

use super::{fit_power_law, mean_std, Context, PowerLawFit, Reproduction};
use crate::data::datasets::{synthetic, Builtin, Dataset, SyntheticSpec};
use crate::data::synthetic::derive_seed;
use crate::kernel::{Activation, Architecture, Layer, Parameterization};
use crate::net::{Mlp, NtkOutputs, OutputCurvature};
use crate::report::{Chart, Comparison, Report, Section, Series};
use crate::spectrum::{lanczos, max_eigenvalue, FnOp, LanczosOptions, SymOp, Which};
use crate::train::{train, Probe, ProbeConfig, Status, TrainConfig};
use crate::{Error, Result};

/// What to sweep and how to measure; see the module docs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LinearityConfig {
    /// Hidden widths m (every hidden layer has width m).
    pub widths: Vec<usize>,
    /// Depths as numbers of Dense layers: 2 is the two-layer net f = c2 a . phi(c1 W x), 3 has two hidden layers.
    pub depths: Vec<usize>,
    /// Widths above this are skipped for depth >= 3: P ~ m^2 there and the Lanczos basis stores
    /// `lanczos_max_iter` vectors of length P.
    pub deep_max_width: usize,
    /// Activation after each hidden layer; must be twice differentiable for the Hessian to mean anything
    /// (e.g. `tanh`, `erf`, `gelu`, `softplus`).
    pub activation: String,
    /// Input dimension d.
    pub input_dim: usize,
    /// Training points N (the `teacher` set on the sphere of radius sqrt(d)) for the NTK-change runs.
    pub n_train: usize,
    /// Inputs (the first training points) at which the output Hessian is measured, per initialization.
    pub hessian_inputs: usize,
    /// Independent initializations per (depth, width).
    pub seeds: usize,
    /// GD steps of the NTK-change runs.
    pub steps: u64,
    /// Learning rate as a fraction of the linearized stability edge 2N / lambda_max(Theta_0).
    #[serde(with = "crate::data::json_f64")]
    pub lr_factor: f64,
    /// Lanczos steps per Hessian norm.
    pub lanczos_max_iter: usize,
    /// Lanczos relative residual tolerance.
    #[serde(with = "crate::data::json_f64")]
    pub lanczos_tol: f64,
    /// Master seed.
    #[serde(with = "crate::data::seed")]
    pub seed: u64,
}

impl Default for LinearityConfig {
    fn default() -> Self {
        LinearityConfig::full()
    }
}

impl LinearityConfig {
    /// The full sweep: widths 64..8192 (depth 3 up to 2048), tanh, d = 8, N = 16, 3 seeds, 100 GD steps.
    pub fn full() -> LinearityConfig {
        LinearityConfig {
            widths: (6..=13).map(|k| 1usize << k).collect(),
            depths: vec![2, 3],
            deep_max_width: 2048,
            activation: "tanh".into(),
            input_dim: 8,
            n_train: 16,
            hessian_inputs: 4,
            seeds: 3,
            steps: 100,
            lr_factor: 0.5,
            lanczos_max_iter: 60,
            lanczos_tol: 1e-4,
            seed: 0,
        }
    }

    /// A small instance for tests and CI (a few seconds): widths 64..1024, depth 3 up to 512, 2 seeds.
    pub fn quick() -> LinearityConfig {
        LinearityConfig {
            widths: (6..=10).map(|k| 1usize << k).collect(),
            deep_max_width: 512,
            hessian_inputs: 2,
            seeds: 2,
            steps: 40,
            lanczos_max_iter: 40,
            ..LinearityConfig::full()
        }
    }

    /// Checks the configuration.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Config(format!("linearity: {m}")));
        if self.widths.len() < 2 || self.widths.contains(&0) {
            return bad(format!("need at least two positive widths, got {:?}", self.widths));
        }
        if self.depths.is_empty() || self.depths.iter().any(|&l| l < 2) {
            return bad(format!("depths (numbers of Dense layers) must be >= 2, got {:?}", self.depths));
        }
        Activation::parse(&self.activation).map_err(|e| Error::Config(format!("linearity: activation: {e}")))?;
        if self.input_dim == 0 || self.n_train == 0 || self.seeds == 0 || self.steps == 0 {
            return bad("input_dim, n_train, seeds and steps must be positive".into());
        }
        if self.hessian_inputs == 0 || self.hessian_inputs > self.n_train {
            return bad(format!("hessian_inputs must be in 1..={}, got {}", self.n_train, self.hessian_inputs));
        }
        if !(self.lr_factor > 0.0 && self.lr_factor.is_finite()) {
            return bad(format!("lr_factor must be finite and > 0, got {}", self.lr_factor));
        }
        if self.lanczos_max_iter == 0 || !(self.lanczos_tol >= 0.0 && self.lanczos_tol.is_finite()) {
            return bad("lanczos_max_iter must be >= 1 and lanczos_tol finite and >= 0".into());
        }
        Ok(())
    }

    /// The (depth, width) pairs measured, in order.
    pub fn grid(&self) -> Vec<(usize, usize)> {
        let mut g = Vec::new();
        for &l in &self.depths {
            for &m in &self.widths {
                if l <= 2 || m <= self.deep_max_width {
                    g.push((l, m));
                }
            }
        }
        g
    }
}

/// Measurements at one (depth, width).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LinearityPoint {
    /// Number of Dense layers.
    pub depth: usize,
    /// Hidden width m.
    pub width: usize,
    /// Number of parameters P.
    pub params: usize,
    /// Mean of ||d^2 f(x)/dw^2||_2 over seeds and inputs.
    #[serde(with = "crate::data::json_f64")]
    pub hessian_norm: f64,
    /// Its sample standard deviation.
    #[serde(with = "crate::data::json_f64")]
    pub hessian_norm_std: f64,
    /// Every measured norm (seed-major).
    #[serde(with = "crate::data::json_f64::vec")]
    pub hessian_norms: Vec<f64>,
    /// Whether every Lanczos run met its tolerance.
    pub lanczos_converged: bool,
    /// Mean relative NTK change ||Theta_T - Theta_0||_F / ||Theta_0||_F after `steps` GD steps.
    #[serde(with = "crate::data::json_f64")]
    pub ntk_change: f64,
    /// Its sample standard deviation.
    #[serde(with = "crate::data::json_f64")]
    pub ntk_change_std: f64,
    /// Every measured change (one per seed; NaN for a run that diverged).
    #[serde(with = "crate::data::json_f64::vec")]
    pub ntk_changes: Vec<f64>,
    /// Mean lambda_max(Theta_0) of the train NTK.
    #[serde(with = "crate::data::json_f64")]
    pub ntk_max0: f64,
    /// Mean learning rate used.
    #[serde(with = "crate::data::json_f64")]
    pub lr: f64,
    /// Mean training loss at initialization and after the GD steps.
    #[serde(with = "crate::data::json_f64")]
    pub loss_initial: f64,
    /// Mean final training loss.
    #[serde(with = "crate::data::json_f64")]
    pub loss_final: f64,
}

/// Log-log fits against width for one depth.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LinearityFit {
    /// Number of Dense layers.
    pub depth: usize,
    /// ||d^2 f||_2 ~ width^exponent.
    pub hessian: PowerLawFit,
    /// ||d^2 f||_2 / sqrt(ln m) ~ width^exponent: removes the sqrt(2 ln m) growth of the largest of m Gaussian
    /// readout weights, which sets ||d^2 f|| of the two-layer net (so this exponent is close to -1/2).
    pub hessian_log_corrected: PowerLawFit,
    /// Relative NTK change ~ width^exponent.
    pub ntk_change: PowerLawFit,
}

/// The outcome of [`run`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LinearityResult {
    /// The configuration that produced it.
    pub config: LinearityConfig,
    /// One point per (depth, width) of [`LinearityConfig::grid`].
    pub points: Vec<LinearityPoint>,
    /// One fit per depth.
    pub fits: Vec<LinearityFit>,
}

/// The NTK-parameterized MLP with `depth` Dense layers (no biases, w_std = 1), hidden width `width`, activation
/// `act` after every hidden layer, scalar output.
pub fn architecture(depth: usize, width: usize, act: &Activation) -> Architecture {
    let mut layers = Vec::with_capacity(2 * depth);
    for _ in 1..depth {
        layers.push(Layer::Dense { width, w_std: 1.0, b_std: None });
        layers.push(Layer::Activation(act.clone()));
    }
    layers.push(Layer::Dense { width: 1, w_std: 1.0, b_std: None });
    Architecture::sequential(layers, Parameterization::Ntk)
}

/// The Hessian of a scalar network output at one input, d^2 f(x)/dw^2 (P x P), as a matrix-free operator:
/// one R-operator pass per product ([`OutputCurvature`] with cotangent 1).
pub struct OutputHessian<'a> {
    inner: OutputCurvature<'a>,
}

impl<'a> OutputHessian<'a> {
    /// At input `x` (1 x d) of a network with one output.
    pub fn new(net: &'a Mlp, x: MatRef<'_, f64>) -> Result<OutputHessian<'a>> {
        if x.nrows() != 1 {
            return Err(Error::Shape(format!(
                "the output Hessian is taken at one input (1 x d), got {} rows",
                x.nrows()
            )));
        }
        if net.output_dim() != 1 {
            return Err(Error::Shape(format!(
                "the output Hessian needs a scalar output, the network has {}",
                net.output_dim()
            )));
        }
        Ok(OutputHessian { inner: OutputCurvature::new(net, x, Mat::from_fn(1, 1, |_, _| 1.0).as_ref())? })
    }

    /// Number of parameters P.
    pub fn dim(&self) -> usize {
        self.inner.dim()
    }

    /// out = d^2 f(x)/dw^2 v (v, out of length P).
    pub fn apply(&self, v: &[f64], out: &mut [f64]) -> Result<()> {
        self.inner.hvp_into(v, out)
    }

    /// As a [`SymOp`] for [`crate::spectrum::lanczos`].
    pub fn op(&self) -> impl SymOp + '_ {
        FnOp::new(self.dim(), move |v: &[f64], out: &mut [f64]| {
            self.apply(v, out).expect("SymOp::apply receives finite vectors of length dim()")
        })
    }

    /// Spectral norm ||d^2 f(x)/dw^2||_2 = max |lambda| by Lanczos (largest magnitude), with whether it converged.
    pub fn spectral_norm(&self, max_iter: usize, tol: f64, seed: u64) -> Result<(f64, bool)> {
        let opts = LanczosOptions::new(1).which(Which::LargestMagnitude).max_iter(max_iter.max(1)).tol(tol).seed(seed);
        let r = lanczos(&self.op(), &opts)?;
        Ok((r.values[0].abs(), r.converged))
    }
}

/// Seed streams.
const DATA_STREAM: u64 = 0;
const NET_STREAM: u64 = 1;
const LANCZOS_STREAM: u64 = 2;

/// One (depth, width, seed) task: the Hessian norms at the probe inputs, whether Lanczos converged, and the
/// GD run's (NTK change, lambda_max(Theta_0), eta, initial loss, final loss).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Task {
    params: usize,
    norms: Vec<f64>,
    converged: bool,
    gd: (f64, f64, f64, f64, f64),
}

/// Runs the sweep; each (depth, width, seed) is one checkpointed step of `ctx`.
pub fn run(cfg: &LinearityConfig, ctx: &mut Context) -> Result<LinearityResult> {
    cfg.validate()?;
    let act = Activation::parse(&cfg.activation)?;
    let mut spec = SyntheticSpec::new(Builtin::Teacher, cfg.n_train, cfg.input_dim, derive_seed(cfg.seed, DATA_STREAM));
    spec.noise = Some(0.0);
    let data = synthetic(&spec)?;
    let grid = cfg.grid();
    let total = grid.len() * cfg.seeds;
    let mut done = 0;
    ctx.progress(done, total);
    let mut points = Vec::with_capacity(grid.len());
    for &(depth, width) in &grid {
        let arch = architecture(depth, width, &act);
        let mut hn = Vec::new();
        let mut converged = true;
        let (mut changes, mut lams, mut lrs, mut l0s, mut l1s) = (vec![], vec![], vec![], vec![], vec![]);
        let mut params = 0;
        for r in 0..cfg.seeds {
            let task = derive_seed(derive_seed(derive_seed(cfg.seed, depth as u64), width as u64), r as u64);
            let t: Task = ctx.step(&format!("depth={depth},width={width},seed={r}"), || {
                let mut net = Mlp::init(&arch, cfg.input_dim, 1.0, derive_seed(task, NET_STREAM))?;
                let (mut norms, mut ok_all) = (Vec::new(), true);
                for i in 0..cfg.hessian_inputs {
                    let x = data.x.as_ref().subrows(i, 1);
                    let oh = OutputHessian::new(&net, x)?;
                    let (norm, ok) = oh.spectral_norm(
                        cfg.lanczos_max_iter,
                        cfg.lanczos_tol,
                        derive_seed(derive_seed(task, LANCZOS_STREAM), i as u64),
                    )?;
                    norms.push(norm);
                    ok_all &= ok;
                }
                let params = net.num_params();
                let gd = ntk_change_run(&mut net, &data, cfg)?;
                Ok(Task { params, norms, converged: ok_all, gd })
            })?;
            params = t.params;
            hn.extend(t.norms);
            converged &= t.converged;
            changes.push(t.gd.0);
            lams.push(t.gd.1);
            lrs.push(t.gd.2);
            l0s.push(t.gd.3);
            l1s.push(t.gd.4);
            done += 1;
            ctx.progress(done, total);
        }
        let (h, hs) = mean_std(&hn);
        let (c, cs) = mean_std(&changes);
        points.push(LinearityPoint {
            depth,
            width,
            params,
            hessian_norm: h,
            hessian_norm_std: hs,
            hessian_norms: hn,
            lanczos_converged: converged,
            ntk_change: c,
            ntk_change_std: cs,
            ntk_changes: changes,
            ntk_max0: mean_std(&lams).0,
            lr: mean_std(&lrs).0,
            loss_initial: mean_std(&l0s).0,
            loss_final: mean_std(&l1s).0,
        });
    }
    let mut fits = Vec::new();
    for &depth in &cfg.depths {
        let pts: Vec<&LinearityPoint> = points.iter().filter(|p| p.depth == depth).collect();
        if pts.len() < 2 {
            continue;
        }
        let w: Vec<f64> = pts.iter().map(|p| p.width as f64).collect();
        let hessian = fit_power_law(&w, &pts.iter().map(|p| p.hessian_norm).collect::<Vec<_>>())?;
        let hessian_log_corrected =
            fit_power_law(&w, &pts.iter().map(|p| p.hessian_norm / (p.width as f64).ln().sqrt()).collect::<Vec<_>>())?;
        let ntk_change = fit_power_law(&w, &pts.iter().map(|p| p.ntk_change).collect::<Vec<_>>())?;
        fits.push(LinearityFit { depth, hessian, hessian_log_corrected, ntk_change });
    }
    Ok(LinearityResult { config: cfg.clone(), points, fits })
}

/// GD on MSE at eta = lr_factor * 2N / lambda_max(Theta_0): (relative NTK change or NaN if diverged,
/// lambda_max(Theta_0), eta, initial loss, final loss).
fn ntk_change_run(net: &mut Mlp, data: &Dataset, cfg: &LinearityConfig) -> Result<(f64, f64, f64, f64, f64)> {
    let theta0 = net.empirical_ntk(data.x.as_ref(), None, NtkOutputs::Trace)?;
    let sym = Mat::from_fn(theta0.nrows(), theta0.ncols(), |i, j| 0.5 * (theta0[(i, j)] + theta0[(j, i)]));
    let lam = max_eigenvalue(sym.as_ref())?;
    let eta = cfg.lr_factor * 2.0 * data.n_train() as f64 / lam;
    let tc = TrainConfig::gd(eta, cfg.steps);
    let probes = ProbeConfig::loss_only(cfg.steps).with(Probe::NtkChange);
    let res = train(net, data, &tc, &probes, |_| Ok(()))?;
    let last = res.last.as_ref();
    let change = match res.status {
        Status::Diverged { .. } => f64::NAN,
        _ => last.and_then(|r| r.ntk_change).unwrap_or(f64::NAN),
    };
    Ok((change, lam, eta, res.initial_loss, last.map_or(f64::NAN, |r| r.loss)))
}

/// `ntklab run linearity`.
pub struct Linearity;

impl Reproduction for Linearity {
    const NAME: &'static str = "linearity";
    const DESCRIPTION: &'static str =
        "Transition to linearity (Liu, Zhu & Belkin 2020): output-Hessian norm and NTK change vs width";
    type Config = LinearityConfig;
    type Summary = LinearityResult;

    fn full() -> LinearityConfig {
        LinearityConfig::full()
    }
    fn quick() -> LinearityConfig {
        LinearityConfig::quick()
    }
    fn seed(cfg: &LinearityConfig) -> u64 {
        cfg.seed
    }
    fn set_seed(cfg: &mut LinearityConfig, seed: u64) {
        cfg.seed = seed;
    }
    fn validate(cfg: &LinearityConfig) -> Result<()> {
        cfg.validate()
    }
    fn run(cfg: &LinearityConfig, ctx: &mut Context) -> Result<LinearityResult> {
        run(cfg, ctx)
    }
    fn report(res: &LinearityResult) -> Report {
        report(res)
    }
    fn console(res: &LinearityResult) -> String {
        let c = &res.config;
        let mut s = format!(
            "transition to linearity: {} activation, ntk parameterization, d = {}\n{:>6} {:>7} {:>10} {:>13} {:>13}\n",
            c.activation, c.input_dim, "depth", "width", "params", "||d2f||", "dNTK (rel)"
        );
        for p in &res.points {
            s += &format!(
                "{:>6} {:>7} {:>10} {:>13.5e} {:>13.5e}\n",
                p.depth, p.width, p.params, p.hessian_norm, p.ntk_change
            );
        }
        for f in &res.fits {
            s += &format!(
                "depth {}: slope of ||d2f|| vs width {:+.3} (sqrt(ln m)-corrected {:+.3}); slope of NTK change {:+.3}\n",
                f.depth, f.hessian.exponent, f.hessian_log_corrected.exponent, f.ntk_change.exponent
            );
        }
        s + "theory: -0.5 for ||d2f|| (up to log factors); between -1 and -0.5 for the NTK change (see the report)"
    }
}

fn report(res: &LinearityResult) -> Report {
    let c = &res.config;
    let setup = format!(
        "MLPs with {} Dense layers, activation `{}`, ntk parameterization, no biases, d = {}; widths {:?} (depth >= 3 \
         up to {}); {} seeds. The Hessian norm ||d2f/dw2|| is measured by Lanczos (largest magnitude, {} steps, tol \
         {:.0e}) on exact Hessian-vector products of f at {} inputs per seed. The NTK change is ||K_T - K_0||_F / \
         ||K_0||_F on N = {} points (random ReLU teacher on the sphere) after {} GD steps on MSE at eta = {} x 2N / \
         lambda_max(K_0). Seed {}.",
        c.depths.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(" / "),
        c.activation,
        c.input_dim,
        c.widths,
        c.deep_max_width,
        c.seeds,
        c.lanczos_max_iter,
        c.lanczos_tol,
        c.hessian_inputs,
        c.n_train,
        c.steps,
        c.lr_factor,
        c.seed,
    );
    let mut comparisons = Vec::new();
    for f in &res.fits {
        comparisons.push(Comparison {
            quantity: format!("depth {}: slope of ||d2f|| vs width", f.depth),
            expected: "-0.5 (up to log factors)".into(),
            measured: format!(
                "{:+.3} (R^2 {:.3}); sqrt(ln m)-corrected {:+.3}",
                f.hessian.exponent, f.hessian.r2, f.hessian_log_corrected.exponent
            ),
            agrees: Some((-0.65..=-0.35).contains(&f.hessian.exponent)),
        });
        comparisons.push(Comparison {
            quantity: format!("depth {}: slope of the NTK change vs width", f.depth),
            expected: "between -1 and -0.5".into(),
            measured: format!("{:+.3} (R^2 {:.3})", f.ntk_change.exponent, f.ntk_change.r2),
            agrees: Some((-1.3..=-0.35).contains(&f.ntk_change.exponent)),
        });
    }
    type Get = fn(&LinearityPoint) -> f64;
    type Fit = fn(&LinearityFit) -> PowerLawFit;
    let panels: [(&str, &str, &str, Get, Fit); 2] = [
        (
            "hessian_vs_width",
            "Spectral norm of the output Hessian at init",
            "||d2f/dw2||",
            |p| p.hessian_norm,
            |f| f.hessian,
        ),
        (
            "ntk_change_vs_width",
            "Relative NTK change after GD",
            "||K_T - K_0||_F / ||K_0||_F",
            |p| p.ntk_change,
            |f| f.ntk_change,
        ),
    ];
    let mut sections = Vec::new();
    for (stem, title, ylabel, get, fit) in panels {
        let mut series = Vec::new();
        for f in &res.fits {
            let pts: Vec<(f64, f64)> =
                res.points.iter().filter(|p| p.depth == f.depth).map(|p| (p.width as f64, get(p))).collect();
            let ft = fit(f);
            series.push(Series::markers(format!("{}-layer net", f.depth), pts.clone()));
            let line: Vec<(f64, f64)> = pts.iter().map(|&(w, _)| (w, ft.eval(w))).collect();
            series.push(Series::line(format!("{}-layer fit: slope {:+.2}", f.depth, ft.exponent), line));
        }
        if let Some(p0) = res.points.first() {
            let (w0, v0) = (p0.width as f64, get(p0));
            let ws: Vec<f64> = res.points.iter().filter(|p| p.depth == p0.depth).map(|p| p.width as f64).collect();
            series.push(Series::line("slope -1/2", ws.iter().map(|&w| (w, v0 * (w / w0).powf(-0.5))).collect()));
        }
        let chart = Chart {
            title: title.into(),
            x_label: "width m".into(),
            y_label: ylabel.into(),
            log_x: true,
            log_y: true,
            series,
            hlines: vec![],
        };
        sections.push(Section::Plot {
            stem: stem.into(),
            chart,
            caption: format!("{title}, log-log, with fitted power laws"),
        });
    }
    sections.push(Section::Text {
        heading: Some("Reading".into()),
        body: "The Hessian slope should be close to -1/2; at moderate widths it sits a little above, because for the \
               two-layer net ||d2f|| is set by the largest of m Gaussian readout weights, ~ sqrt(2 ln m) / sqrt(m) \
               (the corrected value divides that out). The NTK change obeys Liu et al.'s bound O(||d2f|| R) = \
               O(1/sqrt(m)), but from a random initialization it is typically smaller, O(1/m) (Dyer & Gur-Ari 2019; \
               Huang & Yau 2020): first-order changes of the per-neuron terms have random signs and cancel. Slopes \
               between -1 and -1/2 are therefore expected for it; -1/2 is the worst case, not the typical one."
            .into(),
    });
    let headers = [
        "depth",
        "width",
        "params",
        "Hessian norm",
        "std",
        "NTK change",
        "std",
        "lr",
        "loss 0 -> T",
        "Lanczos converged",
    ];
    let rows = res
        .points
        .iter()
        .map(|p| {
            vec![
                p.depth.to_string(),
                p.width.to_string(),
                p.params.to_string(),
                format!("{:.4e}", p.hessian_norm),
                format!("{:.1e}", p.hessian_norm_std),
                format!("{:.4e}", p.ntk_change),
                format!("{:.1e}", p.ntk_change_std),
                format!("{:.3}", p.lr),
                format!("{:.3e} -> {:.3e}", p.loss_initial, p.loss_final),
                p.lanczos_converged.to_string(),
            ]
        })
        .collect();
    sections.push(Section::Table {
        caption: "Measurements (means over seeds)".into(),
        headers: headers.map(String::from).to_vec(),
        rows,
    });
    Report {
        title: "Transition to linearity".into(),
        claim: "Liu, Zhu & Belkin (NeurIPS 2020): in the NTK parameterization the Hessian of the network output \
                w.r.t. the parameters has spectral norm O~(1/sqrt(m)) at initialization, so wide networks are nearly \
                linear in their parameters and their NTK barely moves in training."
            .into(),
        setup,
        comparisons,
        sections,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::synthetic::sphere;

    /// Closed form for the two-layer net f = alpha c2 sum_i a_i phi(c1 w_i . x) (no biases): d^2f is block
    /// diagonal over neurons, and on span(e_{a_i}, x) the block is alpha c2 [[0, phi' u], [phi' u, a phi'' u^2]]
    /// with u = c1 |x| (zero on the rest of w_i's space), so ||d^2f|| is the largest |eigenvalue| of those 2x2s.
    fn two_layer_norm(net: &Mlp, x: MatRef<'_, f64>, act: &Activation) -> f64 {
        let (l1, l2) = (&net.dense[0], &net.dense[1]);
        let xn = (0..x.ncols()).map(|j| x[(0, j)] * x[(0, j)]).sum::<f64>().sqrt();
        let u = l1.w_mult * xn;
        let mut best: f64 = 0.0;
        for i in 0..l1.n_out {
            let z: f64 = (0..x.ncols()).map(|j| l1.w_mult * net.weight(0)[(i, j)] * x[(0, j)]).sum();
            let (d1, d2) = (act.derivative(z), act.second_derivative(z));
            let s = net.alpha * l2.w_mult;
            let (p, q) = (s * d1 * u, s * net.weight(1)[(0, i)] * d2 * u * u);
            let r = (q * q + 4.0 * p * p).sqrt();
            best = best.max(((q + r) / 2.0).abs()).max(((q - r) / 2.0).abs());
        }
        best
    }

    #[test]
    fn output_hessian_norm_matches_the_two_layer_closed_form() {
        // Lanczos to convergence vs the per-neuron 2x2 blocks: the two routes share nothing but the weights.
        let act = Activation::Tanh;
        for (m, seed) in [(16, 1), (64, 2)] {
            let net = Mlp::init(&architecture(2, m, &act), 5, 1.3, seed).unwrap();
            let x = sphere(1, 5, seed + 10);
            let oh = OutputHessian::new(&net, x.as_ref()).unwrap();
            let (lz, ok) = oh.spectral_norm(200, 1e-10, 3).unwrap();
            let exact = two_layer_norm(&net, x.as_ref(), &act);
            assert!(ok, "Lanczos did not converge");
            assert!((lz - exact).abs() <= 1e-8 * exact, "m = {m}: lanczos {lz} vs closed form {exact}");
        }
    }

    #[test]
    fn output_hessian_product_matches_finite_differences_of_the_gradient() {
        // d^2f v ~ (grad f(w + h v) - grad f(w - h v)) / 2h with grad f = J^T 1 (vjp), central differences:
        // error O(h^2) ~ 1e-10 relative for h = 1e-5.
        let act = Activation::Tanh;
        let mut net = Mlp::init(&architecture(3, 7, &act), 4, 1.0, 5).unwrap();
        let x = sphere(1, 4, 6);
        let p = net.num_params();
        let v: Vec<f64> = (0..p).map(|i| ((i * 37 % 11) as f64 - 5.0) / 5.0).collect();
        let hv = {
            let oh = OutputHessian::new(&net, x.as_ref()).unwrap();
            let mut out = vec![0.0; p];
            oh.apply(&v, &mut out).unwrap();
            out
        };
        let w0 = net.params().to_vec();
        let one = Mat::from_fn(1, 1, |_, _| 1.0);
        let h = 1e-5;
        let mut grad_at = |s: f64| {
            let w: Vec<f64> = w0.iter().zip(&v).map(|(a, b)| a + s * b).collect();
            net.set_params(&w).unwrap();
            net.vjp(x.as_ref(), one.as_ref()).unwrap()
        };
        let (gp, gm) = (grad_at(h), grad_at(-h));
        let scale = hv.iter().fold(0.0f64, |a, b| a.max(b.abs()));
        for i in 0..p {
            let fd = (gp[i] - gm[i]) / (2.0 * h);
            assert!((fd - hv[i]).abs() < 1e-6 * scale, "param {i}: fd {fd} vs R-op {}", hv[i]);
        }
    }

    #[test]
    fn quick_sweep_shows_the_transition_to_linearity() {
        let cfg = LinearityConfig::quick();
        let mut calls = 0;
        let res = run(
            &cfg,
            &mut Context::new(|d, t| {
                calls += 1;
                assert!(d <= t);
            }),
        )
        .unwrap();
        assert_eq!(calls, 1 + cfg.grid().len() * cfg.seeds);
        assert_eq!(res.points.len(), cfg.grid().len());
        assert_eq!(res.fits.len(), 2);
        for f in &res.fits {
            // Liu, Zhu & Belkin 2020: ||d^2 f|| = O~(m^-1/2).
            assert!(
                (-0.65..=-0.35).contains(&f.hessian.exponent),
                "depth {}: Hessian slope {}",
                f.depth,
                f.hessian.exponent
            );
            // The NTK moves at most like the Hessian bound, and in fact faster to zero (O(1/m) rate of change:
            // Dyer & Gur-Ari 2019), so the slope lies between -1/2 and about -1.
            assert!(
                (-1.3..=-0.35).contains(&f.ntk_change.exponent),
                "depth {}: NTK-change slope {}",
                f.depth,
                f.ntk_change.exponent
            );
        }
        assert!(res.points.iter().all(|p| p.lanczos_converged));
    }

    #[test]
    fn runs_are_deterministic() {
        let cfg = LinearityConfig { widths: vec![16, 32], seeds: 1, steps: 5, ..LinearityConfig::quick() };
        assert_eq!(run(&cfg, &mut Context::quiet()).unwrap(), run(&cfg, &mut Context::quiet()).unwrap());
    }

    #[test]
    fn bad_configs_are_rejected() {
        let mut c = LinearityConfig::quick();
        c.depths = vec![1];
        assert!(run(&c, &mut Context::quiet()).is_err());
        let mut c = LinearityConfig::quick();
        c.activation = "nope".into();
        assert!(c.validate().is_err());
        let mut c = LinearityConfig::quick();
        c.hessian_inputs = c.n_train + 1;
        assert!(c.validate().is_err());
    }
}
