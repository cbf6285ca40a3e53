//! The PL* condition (Liu, Zhu & Belkin 2022): for the square loss L = 1/(2N) sum (f - y)^2 the gradient obeys
//! ||grad L||^2 = r^T K r / N^2 >= (lambda_min(K)/N) 2 L, with K = J J^T the empirical NTK, so mu_t =
//! lambda_min(K_t)/N is a PL constant at w_t, and while mu_t >= mu > 0 along the way GD at step eta contracts the
//! loss at least like (1 - eta mu)^t. Over-parameterized (wide) networks keep mu_t away from 0 along the whole
//! trajectory; under-parameterized ones (fewer parameters than data) have lambda_min(K) = 0 and no such rate.
//!
//! For each width this trains a two-layer ReLU net with full-batch GD (a fixed fraction of the stability edge
//! 2N / lambda_max(K_0)) and records, every `every` steps, the loss, lambda_min(K_t) and the PL ratio
//! ||grad L||^2 / (2L).

use serde::{Deserialize, Serialize};

use super::{Context, Reproduction};
use crate::data::datasets::{synthetic, Builtin, SyntheticSpec};
use crate::data::synthetic::derive_seed;
use crate::kernel::{Architecture, Parameterization};
use crate::net::{Mlp, NtkOutputs};
use crate::report::{Chart, Comparison, Report, Section, Series};
use crate::spectrum::max_eigenvalue;
use crate::train::probes::symmetrized;
use crate::train::{train, Probe, ProbeConfig, Status, TrainConfig};
use crate::{Error, Result};

/// What to run; see the module docs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlConfig {
    /// Hidden widths (from under- to over-parameterized).
    pub widths: Vec<usize>,
    /// Training points N (the `teacher` set).
    pub n_train: usize,
    /// Input dimension d.
    pub input_dim: usize,
    /// GD steps.
    pub steps: u64,
    /// Record every this many steps.
    pub every: u64,
    /// Step size as a fraction of the stability edge 2N / lambda_max(K_0).
    #[serde(with = "crate::data::json_f64")]
    pub lr_factor: f64,
    /// Master seed.
    #[serde(with = "crate::data::seed")]
    pub seed: u64,
}

impl PlConfig {
    /// The full run: widths 2 .. 2048, N = 64, d = 8, 4000 steps.
    pub fn full() -> PlConfig {
        PlConfig {
            widths: vec![2, 4, 8, 32, 128, 512, 2048],
            n_train: 64,
            input_dim: 8,
            steps: 4000,
            every: 40,
            lr_factor: 0.5,
            seed: 0,
        }
    }

    /// A small instance for tests and CI.
    pub fn quick() -> PlConfig {
        PlConfig { widths: vec![1, 2, 64, 512], n_train: 24, input_dim: 4, steps: 600, every: 20, ..PlConfig::full() }
    }

    /// Checks every value, naming the key.
    pub fn validate(&self) -> Result<()> {
        if self.widths.is_empty() || self.widths.iter().any(|&w| w == 0 || w > 1 << 16) {
            return Err(Error::Config("widths: at least one, each in 1..=65536".into()));
        }
        if !(2..=4096).contains(&self.n_train) || !(1..=4096).contains(&self.input_dim) {
            return Err(Error::Config("n_train must be in 2..=4096 and input_dim in 1..=4096".into()));
        }
        if self.steps == 0 || self.every == 0 || self.steps > 10_000_000 {
            return Err(Error::Config("steps must be in 1..=10^7 and every >= 1".into()));
        }
        if !(self.lr_factor > 0.0 && self.lr_factor < 1.0) {
            return Err(Error::Config(format!("lr_factor must be in (0, 1), got {}", self.lr_factor)));
        }
        Ok(())
    }
}

/// One width's trajectory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlRun {
    /// Hidden width.
    pub width: usize,
    /// Parameters (P < N: under-parameterized).
    pub params: usize,
    /// Step size used.
    #[serde(with = "crate::data::json_f64")]
    pub lr: f64,
    /// Record steps.
    pub steps: Vec<u64>,
    /// Loss at each record.
    #[serde(with = "crate::data::json_f64::vec")]
    pub loss: Vec<f64>,
    /// mu_t = lambda_min(K_t) / N at each record.
    #[serde(with = "crate::data::json_f64::vec")]
    pub mu: Vec<f64>,
    /// ||grad L||^2 / (2 L) at each record.
    #[serde(with = "crate::data::json_f64::vec")]
    pub pl_ratio: Vec<f64>,
    /// min_t mu_t.
    #[serde(with = "crate::data::json_f64")]
    pub mu_min: f64,
    /// min_t of the PL ratio.
    #[serde(with = "crate::data::json_f64")]
    pub pl_ratio_min: f64,
    /// Measured contraction per step, (L_T / L_0)^(1/T).
    #[serde(with = "crate::data::json_f64")]
    pub rate_measured: f64,
    /// The PL* bound's contraction per step, 1 - eta mu_min.
    #[serde(with = "crate::data::json_f64")]
    pub rate_bound: f64,
    /// Worst violation of ratio >= mu_t over the records, relative to mu_t (<= 0 when the inequality holds).
    #[serde(with = "crate::data::json_f64")]
    pub worst_violation: f64,
    /// How the run ended.
    pub status: String,
}

/// The record of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlResult {
    /// The configuration.
    pub config: PlConfig,
    /// Widths.
    pub widths: Vec<usize>,
    /// Per width.
    pub runs: Vec<PlRun>,
    /// min_t mu_t per width.
    #[serde(with = "crate::data::json_f64::vec")]
    pub mu_min: Vec<f64>,
    /// min_t PL ratio per width.
    #[serde(with = "crate::data::json_f64::vec")]
    pub pl_ratio_min: Vec<f64>,
    /// Measured contraction per width.
    #[serde(with = "crate::data::json_f64::vec")]
    pub rate_measured: Vec<f64>,
    /// PL* bound on the contraction per width.
    #[serde(with = "crate::data::json_f64::vec")]
    pub rate_bound: Vec<f64>,
}

const DATA_STREAM: u64 = 0;
const NET_STREAM: u64 = 1;

/// Trains every width; each is one checkpointed step.
pub fn run(cfg: &PlConfig, ctx: &mut Context) -> Result<PlResult> {
    cfg.validate()?;
    let mut spec = SyntheticSpec::new(Builtin::Teacher, cfg.n_train, cfg.input_dim, derive_seed(cfg.seed, DATA_STREAM));
    spec.noise = Some(0.0);
    let data = synthetic(&spec)?;
    let n = cfg.n_train as f64;
    ctx.progress(0, cfg.widths.len());
    let mut runs = Vec::new();
    for (k, &m) in cfg.widths.iter().enumerate() {
        let r: PlRun = ctx.step(&format!("width={m}"), || {
            let arch =
                Architecture::parse(&format!("dense({m},b_std=0.1),relu,dense(1,b_std=0.1)"), Parameterization::Ntk)?;
            let mut net =
                Mlp::init(&arch, cfg.input_dim, 1.0, derive_seed(derive_seed(cfg.seed, NET_STREAM), m as u64))?;
            let params = net.num_params();
            let k0 = net.empirical_ntk(data.x.as_ref(), None, NtkOutputs::Trace)?;
            let sym = symmetrized(&k0);
            let lr = cfg.lr_factor * 2.0 * n / max_eigenvalue(sym.as_ref())?;
            let probes = ProbeConfig::loss_only(cfg.every).with(Probe::NtkMin).with(Probe::Pl);
            let res = train(&mut net, &data, &TrainConfig::gd(lr, cfg.steps), &probes, |_| Ok(()))?;
            let steps: Vec<u64> = res.records.iter().map(|r| r.step).collect();
            let loss: Vec<f64> = res.records.iter().map(|r| r.loss).collect();
            // lambda_min can come out a rounding error below 0 for a singular K: clamp to 0.
            let mu: Vec<f64> = res.records.iter().map(|r| r.ntk_min.unwrap_or(f64::NAN).max(0.0) / n).collect();
            let pl: Vec<f64> = res.records.iter().map(|r| r.pl_ratio.unwrap_or(f64::NAN)).collect();
            let mu_min = mu.iter().copied().fold(f64::INFINITY, f64::min);
            let pl_min = pl.iter().copied().fold(f64::INFINITY, f64::min);
            let worst = mu
                .iter()
                .zip(&pl)
                .filter(|(m, _)| **m > 0.0)
                .map(|(m, p)| (m - p) / m)
                .fold(f64::NEG_INFINITY, f64::max);
            let t = *steps.last().unwrap_or(&1) as f64;
            let (l0, lt) = (loss[0], *loss.last().unwrap_or(&loss[0]));
            Ok(PlRun {
                width: m,
                params,
                lr,
                steps,
                mu_min,
                pl_ratio_min: pl_min,
                rate_measured: (lt / l0).powf(1.0 / t.max(1.0)),
                rate_bound: 1.0 - lr * mu_min,
                worst_violation: worst,
                loss,
                mu,
                pl_ratio: pl,
                status: match res.status {
                    Status::Diverged { .. } => res.status.to_string(),
                    _ => "completed".into(),
                },
            })
        })?;
        runs.push(r);
        ctx.progress(k + 1, cfg.widths.len());
    }
    Ok(PlResult {
        config: cfg.clone(),
        widths: cfg.widths.clone(),
        mu_min: runs.iter().map(|r| r.mu_min).collect(),
        pl_ratio_min: runs.iter().map(|r| r.pl_ratio_min).collect(),
        rate_measured: runs.iter().map(|r| r.rate_measured).collect(),
        rate_bound: runs.iter().map(|r| r.rate_bound).collect(),
        runs,
    })
}

/// `ntklab run pl`.
pub struct Pl;

impl Reproduction for Pl {
    const NAME: &'static str = "pl";
    const DESCRIPTION: &'static str =
        "The PL* condition (Liu, Zhu & Belkin 2022): lambda_min of the NTK along GD, wide vs narrow networks";
    type Config = PlConfig;
    type Summary = PlResult;

    fn full() -> PlConfig {
        PlConfig::full()
    }
    fn quick() -> PlConfig {
        PlConfig::quick()
    }
    fn seed(cfg: &PlConfig) -> u64 {
        cfg.seed
    }
    fn set_seed(cfg: &mut PlConfig, seed: u64) {
        cfg.seed = seed;
    }
    fn validate(cfg: &PlConfig) -> Result<()> {
        cfg.validate()
    }
    fn run(cfg: &PlConfig, ctx: &mut Context) -> Result<PlResult> {
        run(cfg, ctx)
    }
    fn report(res: &PlResult) -> Report {
        report(res)
    }
    fn console(res: &PlResult) -> String {
        let mut s = format!(
            "PL*: two-layer ReLU nets, N = {}; {:>6} {:>7} {:>11} {:>11} {:>11} {:>11}\n",
            res.config.n_train, "width", "params", "min mu_t", "min ratio", "rate", "bound"
        );
        for r in &res.runs {
            s += &format!(
                "{:>6} {:>7} {:>11.3e} {:>11.3e} {:>11.6} {:>11.6}\n",
                r.width, r.params, r.mu_min, r.pl_ratio_min, r.rate_measured, r.rate_bound
            );
        }
        s.trim_end().to_string()
    }
}

fn report(res: &PlResult) -> Report {
    let c = &res.config;
    let curves = |f: &dyn Fn(&PlRun) -> &Vec<f64>| -> Vec<Series> {
        res.runs
            .iter()
            .map(|r| {
                Series::line(
                    format!("width {}", r.width),
                    r.steps.iter().map(|&s| s as f64).zip(f(r).iter().copied()).collect(),
                )
            })
            .collect()
    };
    let chart = |title: &str, y: &str, series: Vec<Series>, log_y: bool| Chart {
        title: title.into(),
        x_label: "GD step".into(),
        y_label: y.into(),
        log_x: false,
        log_y,
        series,
        hlines: vec![],
    };
    let mut bound_series = curves(&|r| &r.loss);
    if let Some(r) = res.runs.last() {
        bound_series.push(Series::line(
            format!("PL* bound (1 - eta mu)^t L0, width {}", r.width),
            r.steps.iter().map(|&s| (s as f64, r.loss[0] * r.rate_bound.powf(s as f64))).collect(),
        ));
    }
    let wide = res.runs.iter().filter(|r| r.params >= c.n_train);
    let narrow = res.runs.iter().filter(|r| r.params < c.n_train);
    let wide_ok = wide.clone().all(|r| r.mu_min > 0.0);
    let narrow_zero = narrow.clone().all(|r| r.mu_min < 1e-10 * res.runs.iter().map(|r| r.mu_min).fold(0.0, f64::max));
    let holds = res.runs.iter().all(|r| r.worst_violation <= 1e-6);
    let rows = res
        .runs
        .iter()
        .map(|r| {
            vec![
                r.width.to_string(),
                r.params.to_string(),
                format!("{:.4}", r.lr),
                format!("{:.3e}", r.mu_min),
                format!("{:.3e}", r.pl_ratio_min),
                format!("{:.6}", r.rate_measured),
                format!("{:.6}", r.rate_bound),
                format!("{:.1e}", r.worst_violation),
                r.status.clone(),
            ]
        })
        .collect();
    Report {
        title: "The PL* condition along gradient descent".into(),
        claim: "Liu, Zhu & Belkin (2022): wide networks satisfy the PL* condition ||grad L||^2 >= 2 mu L with mu = \
                lambda_min(K)/N bounded away from 0 along the whole GD trajectory, which gives linear convergence \
                L_t <= (1 - eta mu)^t L_0; under-parameterized networks (fewer parameters than data) do not, since \
                then lambda_min(K) = 0."
            .into(),
        setup: format!(
            "Two-layer ReLU networks `dense(m, b_std=0.1), relu, dense(1, b_std=0.1)` (NTK parameterization) for m in \
             {:?}; N = {} points of the teacher set in d = {} (noise-free); full-batch GD for {} steps at eta = {} x \
             2N / lambda_max(K_0); records every {} steps (loss, lambda_min(K_t), ||grad L||^2/(2L)). Seed {}.",
            c.widths, c.n_train, c.input_dim, c.steps, c.lr_factor, c.every, c.seed
        ),
        comparisons: vec![
            Comparison {
                quantity: "||grad L||^2 / (2L) >= mu_t at every record, every width".into(),
                expected: "holds (an identity of the square loss)".into(),
                measured: format!(
                    "worst relative violation {:.1e}",
                    res.runs.iter().map(|r| r.worst_violation).fold(f64::NEG_INFINITY, f64::max)
                ),
                agrees: Some(holds),
            },
            Comparison {
                quantity: "min_t mu_t, over-parameterized widths (P >= N)".into(),
                expected: "> 0".into(),
                measured: wide.map(|r| format!("{}: {:.2e}", r.width, r.mu_min)).collect::<Vec<_>>().join(", "),
                agrees: Some(wide_ok),
            },
            Comparison {
                quantity: "min_t mu_t, under-parameterized widths (P < N)".into(),
                expected: "0 (rank of K below N)".into(),
                measured: narrow.map(|r| format!("{}: {:.2e}", r.width, r.mu_min)).collect::<Vec<_>>().join(", "),
                agrees: Some(narrow_zero),
            },
        ],
        sections: vec![
            Section::Plot {
                stem: "loss".into(),
                chart: chart("Training loss and the PL* bound", "L_t", bound_series, true),
                caption: "Loss curves, with the PL* bound (1 - eta mu_min)^t L_0 of the widest net as the last line"
                    .into(),
            },
            Section::Plot {
                stem: "mu".into(),
                chart: chart("mu_t = lambda_min(K_t) / N along GD", "mu_t", curves(&|r| &r.mu), true),
                caption: "Under-parameterized nets have lambda_min = 0 (not drawn on the log scale)".into(),
            },
            Section::Plot {
                stem: "pl_ratio".into(),
                chart: chart("PL ratio ||grad L||^2 / (2L)", "ratio", curves(&|r| &r.pl_ratio), true),
                caption: "Always at least mu_t".into(),
            },
            Section::Table {
                caption: "Per width".into(),
                headers: [
                    "width",
                    "params",
                    "eta",
                    "min mu_t",
                    "min ratio",
                    "rate",
                    "bound 1 - eta mu",
                    "worst violation",
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
    fn quick_instance_shows_pl_for_wide_nets_only() {
        let cfg = PlConfig::quick();
        let res = run(&cfg, &mut Context::quiet()).unwrap();
        for r in &res.runs {
            // The PL inequality is an identity of the square loss: it holds at every record up to rounding.
            assert!(r.worst_violation <= 1e-6, "width {}: violation {}", r.width, r.worst_violation);
            assert_eq!(r.status, "completed", "width {}", r.width);
        }
        let (narrow, wide): (Vec<&PlRun>, Vec<&PlRun>) = res.runs.iter().partition(|r| r.params < cfg.n_train);
        assert!(!narrow.is_empty() && !wide.is_empty());
        let top = wide.iter().map(|r| r.mu_min).fold(0.0, f64::max);
        for r in &narrow {
            assert!(r.mu_min < 1e-9 * top, "narrow width {}: mu_min {}", r.width, r.mu_min);
        }
        let widest = res.runs.last().unwrap();
        assert!(widest.mu_min > 0.0);
        // Linear convergence at least as fast as the PL* bound.
        assert!(widest.rate_measured <= widest.rate_bound + 1e-12, "{} vs {}", widest.rate_measured, widest.rate_bound);
        assert!(widest.loss.last().unwrap() < &(1e-3 * widest.loss[0]), "{:?}", widest.loss.last());
    }
}
