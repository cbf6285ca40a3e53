//! Gradient descent at the edge of stability (Cohen, Kaur, Li, Kolter & Talwalkar 2021).
//!
//! Full-batch GD with the square loss L = 1/(2N) sum_i ||f(x_i) - y_i||^2 on a subset of the bundled digits
//! (`data::bundled`, one-hot targets; or of MNIST / CIFAR-10 read from disk, `data` and `data_path`, as in the
//! paper's CIFAR-10 subsets), for their fc-tanh network: `flatten, dense(200), tanh, dense(200), tanh,
//! dense(10)` in the 'standard' parameterization with PyTorch's default `nn.Linear` initialization (W and b
//! uniform on [-1/sqrt(n_in), 1/sqrt(n_in)]). At each step size eta the sharpness S_t (the top eigenvalue of the
//! loss Hessian: Lanczos on exact Hessian-vector products, one R-operator pass each) is recorded every
//! `sharpness_every` steps and the loss at every step. Expected: progressive sharpening until S_t reaches 2/eta,
//! then S_t hovering at 2/eta while the loss keeps falling, non-monotonically. Beside it, gradient flow (the
//! adaptive Dormand–Prince integrator) from the same initialization: its sharpness keeps rising past every 2/eta.

use std::time::Instant;

use rand_distr::{Distribution, Uniform};
use serde::{Deserialize, Serialize};

use super::{mean_std, Context, Reproduction};
use crate::data::bundled::Bundled;
use crate::data::external::{load_real, External};
use crate::data::synthetic::{derive_seed, rng};
use crate::data::Dataset;
use crate::kernel::spatial::Shape;
use crate::kernel::{Architecture, Parameterization};
use crate::net::{LossCurvature, Mlp};
use crate::report::Report;
use crate::spectrum::{lanczos, LanczosOptions, Which};
use crate::train::probes::accuracy;
use crate::train::{train_with_progress, Loss, OdeOptions, Probe, ProbeConfig, Status, TrainConfig};
use crate::{Error, Result};

/// What to run; see the module docs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EosConfig {
    /// The data set: `digits` (bundled), or `mnist` / `cifar10` read from `data_path` (one-hot targets).
    pub data: String,
    /// Folder of the mnist / cifar10 files (relative to the working directory).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_path: Option<std::path::PathBuf>,
    /// Training images drawn from the set (seeded).
    pub n_train: usize,
    /// Hidden width of the two tanh layers.
    pub hidden: usize,
    /// Step sizes.
    #[serde(with = "crate::data::json_f64::vec")]
    pub etas: Vec<f64>,
    /// GD steps per step size.
    pub steps: u64,
    /// Sharpness every this many steps.
    pub sharpness_every: u64,
    /// Lanczos iterations per sharpness probe.
    pub lanczos_iter: usize,
    /// Gradient flow: run it to time `flow_time` (0: no flow).
    #[serde(with = "crate::data::json_f64")]
    pub flow_time: f64,
    /// Gradient flow: records (with sharpness) every this much time.
    #[serde(with = "crate::data::json_f64")]
    pub flow_every: f64,
    /// Master seed.
    #[serde(with = "crate::data::seed")]
    pub seed: u64,
}

impl EosConfig {
    /// The full run: 1000 digits, three step sizes, 6000 steps, gradient flow to t = 300.
    pub fn full() -> EosConfig {
        EosConfig {
            data: "digits".into(),
            data_path: None,
            n_train: 1000,
            hidden: 200,
            etas: vec![0.1, 2.0 / 30.0, 0.05],
            steps: 6000,
            sharpness_every: 50,
            lanczos_iter: 40,
            flow_time: 300.0,
            flow_every: 10.0,
            seed: 0,
        }
    }

    /// A small instance for tests and CI.
    pub fn quick() -> EosConfig {
        EosConfig {
            n_train: 100,
            etas: vec![0.125, 0.1, 0.08],
            steps: 1200,
            sharpness_every: 20,
            flow_time: 40.0,
            flow_every: 4.0,
            ..Self::full()
        }
    }

    /// Checks every value, naming the key.
    pub fn validate(&self) -> Result<()> {
        if !(10..=100_000).contains(&self.n_train) {
            return Err(Error::Config("n_train must be in 10..=100000".into()));
        }
        if Bundled::parse(&self.data).is_none() && External::parse(&self.data).is_none() {
            return Err(Error::Config(format!(
                "data: `{}` is not a real image set (digits, or from disk: {})",
                self.data,
                External::NAMES
            )));
        }
        if self.data.trim().eq_ignore_ascii_case("diabetes") {
            return Err(Error::Config(
                "data: diabetes is a regression table; eos needs classes (digits, mnist, cifar10)".into(),
            ));
        }
        crate::data::memory::check_alloc(
            8 * self.n_train * (3072 + 4 * self.hidden + self.lanczos_iter),
            "the training set and the passes of the eos runs",
        )?;
        if !(1..=4096).contains(&self.hidden) {
            return Err(Error::Config("hidden must be in 1..=4096".into()));
        }
        if self.etas.is_empty() || self.etas.iter().any(|e| e.is_nan() || *e <= 0.0 || *e > 100.0) {
            return Err(Error::Config("etas: at least one, each in (0, 100]".into()));
        }
        if self.steps == 0 || self.steps > 200_000 || self.sharpness_every == 0 {
            return Err(Error::Config(
                "steps must be in 1..=200000 (the loss is kept at every step) and sharpness_every >= 1".into(),
            ));
        }
        if self.steps / self.sharpness_every > 100_000 {
            return Err(Error::Config("at most 10^5 sharpness probes: raise sharpness_every".into()));
        }
        if !(2..=1000).contains(&self.lanczos_iter) {
            return Err(Error::Config("lanczos_iter must be in 2..=1000".into()));
        }
        if !(self.flow_time >= 0.0 && self.flow_time.is_finite()) {
            return Err(Error::Config("flow_time must be finite and >= 0".into()));
        }
        if self.flow_time > 0.0
            && !(self.flow_every > 0.0
                && self.flow_every <= self.flow_time
                && self.flow_time / self.flow_every <= 100_000.0)
        {
            return Err(Error::Config("flow_every must be in (0, flow_time] with at most 10^5 records".into()));
        }
        Ok(())
    }
}

/// One step size's run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EosRun {
    /// The step size.
    #[serde(with = "crate::data::json_f64")]
    pub eta: f64,
    /// Loss at every step (step 0 first).
    #[serde(with = "crate::data::json_f64::vec")]
    pub loss: Vec<f64>,
    /// Steps of the sharpness records.
    pub sharpness_steps: Vec<u64>,
    /// Sharpness at those steps.
    #[serde(with = "crate::data::json_f64::vec")]
    pub sharpness: Vec<f64>,
    /// First record step with sharpness above 2/eta (None: never).
    pub first_crossing_step: Option<u64>,
    /// Mean of sharpness * eta / 2 over the records from the first crossing on (NaN without a crossing).
    #[serde(with = "crate::data::json_f64")]
    pub sharpness_after_over_2_over_eta: f64,
    /// Whether the loss rose at some step after the first crossing.
    pub loss_nonmonotone: bool,
    /// Steps (after the first crossing) at which the loss rose.
    pub loss_increases: usize,
    /// Training accuracy at the end.
    #[serde(with = "crate::data::json_f64")]
    pub final_accuracy: f64,
    /// How the run ended.
    pub status: String,
}

/// The record of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EosResult {
    /// The configuration.
    pub config: EosConfig,
    /// Per step size.
    pub runs: Vec<EosRun>,
    /// Gradient flow: record times.
    #[serde(with = "crate::data::json_f64::vec")]
    pub flow_times: Vec<f64>,
    /// Gradient flow: sharpness at those times.
    #[serde(with = "crate::data::json_f64::vec")]
    pub flow_sharpness: Vec<f64>,
    /// Gradient flow: loss at those times.
    #[serde(with = "crate::data::json_f64::vec")]
    pub flow_loss: Vec<f64>,
    /// Mean wall-clock seconds per sharpness probe (GD runs).
    #[serde(with = "crate::data::json_f64")]
    pub seconds_per_probe: f64,
    /// Parameters of the network.
    pub params: usize,
}

const DATA_STREAM: u64 = 0;
const NET_STREAM: u64 = 1;
const LANCZOS_STREAM: u64 = 2;

/// The fc-tanh net with PyTorch's default initialization.
pub(crate) fn fc_tanh(shape: &Shape, hidden: usize, k: usize, seed: u64) -> Result<Mlp> {
    let arch = Architecture::parse(
        &format!("flatten,dense({hidden},b_std=1),tanh,dense({hidden},b_std=1),tanh,dense({k},b_std=1)"),
        Parameterization::Standard,
    )?;
    let mut net = Mlp::zeros_for(&arch, shape, 1.0)?;
    let mut r = rng(seed);
    let blocks: Vec<(usize, usize, f64)> =
        net.dense.iter().map(|p| (p.w_off, p.n_in * p.n_out + p.n_out, 1.0 / (p.n_in as f64).sqrt())).collect();
    let params = net.params_mut();
    for (off, len, bound) in blocks {
        let u = Uniform::new_inclusive(-bound, bound).map_err(|e| Error::Numerical(e.to_string()))?;
        for v in &mut params[off..off + len] {
            *v = u.sample(&mut r);
        }
    }
    Ok(net)
}

fn sharpness(net: &Mlp, data: &Dataset, iters: usize, seed: u64) -> Result<f64> {
    let lc = LossCurvature::new(net, data.x.as_ref(), data.y.as_ref(), Loss::Mse)?;
    let opts = LanczosOptions::new(1).which(Which::LargestAlgebraic).max_iter(iters).tol(1e-6).seed(seed);
    let res = lanczos(&lc.hessian_op(), &opts)?;
    Ok(res.values[0])
}

fn gd_run(cfg: &EosConfig, data: &Dataset, net0: &Mlp, eta: f64, k: usize) -> Result<(EosRun, f64, usize)> {
    let mut net = net0.clone();
    let mut probe_net = net0.clone();
    let lseed = derive_seed(derive_seed(cfg.seed, LANCZOS_STREAM), k as u64);
    let (mut steps, mut values) = (vec![0], vec![sharpness(net0, data, cfg.lanczos_iter, lseed)?]);
    let (mut probe_time, mut probes) = (0.0, 0usize);
    let res = train_with_progress(
        &mut net,
        data,
        &TrainConfig::gd(eta, cfg.steps),
        &ProbeConfig::loss_only(1),
        |_| Ok(()),
        |s, w| {
            if s % cfg.sharpness_every == 0 {
                let t0 = Instant::now();
                // A diverging run is the trainer's to report (status "diverged"): the probe records NaN.
                let value = if w.iter().all(|v| v.is_finite()) {
                    probe_net.set_params(w)?;
                    sharpness(&probe_net, data, cfg.lanczos_iter, derive_seed(lseed, s)).unwrap_or(f64::NAN)
                } else {
                    f64::NAN
                };
                values.push(value);
                steps.push(s);
                probe_time += t0.elapsed().as_secs_f64();
                probes += 1;
            }
            Ok(())
        },
    )?;
    let loss: Vec<f64> = res.records.iter().map(|r| r.loss).collect();
    let edge = 2.0 / eta;
    let first = steps.iter().zip(&values).find(|(_, s)| **s > edge).map(|(t, _)| *t);
    let (after, increases) = match first {
        Some(t0) => {
            let ratios: Vec<f64> =
                steps.iter().zip(&values).filter(|(t, _)| **t >= t0).map(|(_, s)| s * eta / 2.0).collect();
            let inc = loss.windows(2).skip(t0 as usize).filter(|w| w[1] > w[0]).count();
            (mean_std(&ratios).0, inc)
        }
        None => (f64::NAN, 0),
    };
    let run = EosRun {
        eta,
        first_crossing_step: first,
        sharpness_after_over_2_over_eta: after,
        loss_nonmonotone: increases > 0,
        loss_increases: increases,
        final_accuracy: accuracy(net.forward(data.x.as_ref())?.as_ref(), data.y.as_ref()),
        status: match res.status {
            Status::Diverged { .. } => res.status.to_string(),
            _ => "completed".into(),
        },
        loss,
        sharpness_steps: steps,
        sharpness: values,
    };
    Ok((run, probe_time, probes))
}

/// Runs every step size and the flow; each is one checkpointed step.
pub fn run(cfg: &EosConfig, ctx: &mut Context) -> Result<EosResult> {
    cfg.validate()?;
    let data =
        load_real(&cfg.data, cfg.data_path.as_deref(), Some(cfg.n_train), 0, derive_seed(cfg.seed, DATA_STREAM))?;
    let net0 = fc_tanh(&data.example_shape(), cfg.hidden, data.output_dim(), derive_seed(cfg.seed, NET_STREAM))?;
    let total = cfg.etas.len() + usize::from(cfg.flow_time > 0.0);
    ctx.progress(0, total);
    let (mut runs, mut time, mut probes) = (Vec::new(), 0.0, 0usize);
    for (k, &eta) in cfg.etas.iter().enumerate() {
        let (r, t, p): (EosRun, f64, usize) =
            ctx.step(&format!("eta={eta:e}"), || gd_run(cfg, &data, &net0, eta, k))?;
        runs.push(r);
        time += t;
        probes += p;
        ctx.progress(k + 1, total);
    }
    let (mut flow_times, mut flow_sharpness, mut flow_loss) = (vec![], vec![], vec![]);
    if cfg.flow_time > 0.0 {
        type Flow = (Vec<f64>, Vec<f64>, Vec<f64>);
        (flow_times, flow_sharpness, flow_loss) = ctx.step("flow", || -> Result<Flow> {
            let mut net = net0.clone();
            let records = (cfg.flow_time / cfg.flow_every).round().max(1.0) as u64;
            let probes = ProbeConfig {
                lanczos_max_iter: cfg.lanczos_iter,
                lanczos_tol: 1e-6,
                ..ProbeConfig::loss_only(1).with(Probe::Sharpness)
            };
            let res = train_with_progress(
                &mut net,
                &data,
                &TrainConfig::flow(cfg.flow_every, records, OdeOptions::default()),
                &probes,
                |_| Ok(()),
                |_, _| Ok(()),
            )?;
            Ok((
                res.records.iter().map(|r| r.t).collect(),
                res.records.iter().map(|r| r.sharpness.unwrap_or(f64::NAN)).collect(),
                res.records.iter().map(|r| r.loss).collect(),
            ))
        })?;
        ctx.progress(total, total);
    }
    Ok(EosResult {
        config: cfg.clone(),
        runs,
        flow_times,
        flow_sharpness,
        flow_loss,
        seconds_per_probe: if probes > 0 { time / probes as f64 } else { f64::NAN },
        params: net0.num_params(),
    })
}

/// `ntklab run eos`.
pub struct Eos;

impl Reproduction for Eos {
    const NAME: &'static str = "eos";
    const DESCRIPTION: &'static str =
        "Gradient descent at the edge of stability (Cohen et al. 2021): sharpness rises to 2/eta and hovers there";
    type Config = EosConfig;
    type Summary = EosResult;

    fn full() -> EosConfig {
        EosConfig::full()
    }
    fn quick() -> EosConfig {
        EosConfig::quick()
    }
    fn seed(cfg: &EosConfig) -> u64 {
        cfg.seed
    }
    fn set_seed(cfg: &mut EosConfig, seed: u64) {
        cfg.seed = seed;
    }
    fn validate(cfg: &EosConfig) -> Result<()> {
        cfg.validate()
    }
    fn run(cfg: &EosConfig, ctx: &mut Context) -> Result<EosResult> {
        run(cfg, ctx)
    }
    fn report(res: &EosResult) -> Report {
        super::eos_report::report(res)
    }
    fn console(res: &EosResult) -> String {
        let mut s = format!(
            "eos: fc-tanh on {} {} images ({} parameters), {:.3} s per sharpness probe\n{:>9} {:>8} {:>12} {:>14} {:>10}\n",
            res.config.n_train,
            res.config.data, res.params, res.seconds_per_probe, "eta", "2/eta", "crossing", "S eta/2 after", "loss rises"
        );
        for r in &res.runs {
            s += &format!(
                "{:>9.5} {:>8.2} {:>12} {:>14.3} {:>10}\n",
                r.eta,
                2.0 / r.eta,
                r.first_crossing_step.map_or("-".into(), |v| v.to_string()),
                r.sharpness_after_over_2_over_eta,
                r.loss_increases
            );
        }
        if let (Some(t), Some(sh)) = (res.flow_times.last(), res.flow_sharpness.last()) {
            s += &format!("gradient flow: sharpness {:.2} at t = {t}", sh);
        }
        s.trim_end().to_string()
    }
}
