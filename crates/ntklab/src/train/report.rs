//! The typed summary of a training run (`summary.json`) and its report page (loss, sharpness against 2/eta,
//! change from initialization, distance to the tangent model), made from the summary and `records.jsonl` alone.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::{Loss, Method, OdeStats, Probe, ProbeConfig, Record, Run, Status, TrainConfig, TrainResult};
use crate::report::{Chart, Report, Section, Series};
use crate::{Error, Result};

/// What `ntklab train` writes as `summary.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainSummary {
    /// How the run ended.
    pub status: Status,
    /// The status in words.
    pub status_text: String,
    /// Updates performed.
    pub steps: u64,
    /// Time reached (gradient flow).
    #[serde(with = "crate::data::json_f64")]
    pub t: f64,
    /// Training loss at initialization.
    #[serde(with = "crate::data::json_f64")]
    pub initial_loss: f64,
    /// The last record.
    pub last: Option<Record>,
    /// Step at which the linearized model diverged, if it did.
    pub linearized_diverged_at: Option<u64>,
    /// Integrator statistics (gradient flow).
    pub ode: Option<OdeStats>,
    /// Parameters.
    pub num_params: usize,
    /// Training points.
    pub n_train: usize,
    /// Test points.
    pub n_test: usize,
    /// Input dimension.
    pub input_dim: usize,
    /// Outputs.
    pub output_dim: usize,
    /// Architecture text.
    pub arch: String,
    /// Parameterization.
    pub parameterization: String,
    /// Output scale.
    #[serde(with = "crate::data::json_f64")]
    pub alpha: f64,
    /// Optimizer settings.
    pub train: TrainConfig,
    /// Probe settings.
    pub probes: ProbeConfig,
    /// Master seed of the config.
    #[serde(default, with = "crate::data::seed")]
    pub seed: u64,
}

impl TrainSummary {
    /// The summary of `result` for `run` (its config's master seed `seed`).
    pub fn new(result: &TrainResult, run: &Run, seed: u64) -> TrainSummary {
        TrainSummary {
            status: result.status.clone(),
            status_text: result.status.to_string(),
            steps: result.steps,
            t: result.t,
            initial_loss: result.initial_loss,
            last: result.last.clone(),
            linearized_diverged_at: result.linearized_diverged_at,
            ode: result.ode,
            num_params: run.net.num_params(),
            n_train: run.data.n_train(),
            n_test: run.data.test.as_ref().map_or(0, |(x, _)| x.nrows()),
            input_dim: run.data.input_dim(),
            output_dim: run.data.output_dim(),
            arch: run.net.arch.to_string(),
            parameterization: run.net.arch.parameterization.to_string(),
            alpha: run.net.alpha,
            train: run.train.clone(),
            probes: run.probes.clone(),
            seed,
        }
    }
}

/// Reads `records.jsonl` (one record per line; a torn last line from an interrupted run is ignored).
pub fn read_records(path: &Path) -> Result<Vec<Record>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::file(path, e))?;
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::with_capacity(lines.len());
    for (i, l) in lines.iter().enumerate() {
        match serde_json::from_str::<Record>(l) {
            Ok(r) => out.push(r),
            Err(_) if i + 1 == lines.len() && !text.ends_with('\n') => break,
            Err(e) => return Err(Error::file(path, format!("line {}: {e}", i + 1))),
        }
    }
    Ok(out)
}

/// Reads at most about `max` records from `records.jsonl`, evenly spaced, always with the first and the last,
/// in one pass of bounded memory (for plots of runs with millions of records).
pub fn read_records_thinned(path: &Path, max: usize) -> Result<Vec<Record>> {
    use std::io::BufRead;
    let count = {
        let f = std::fs::File::open(path).map_err(|e| Error::file(path, e))?;
        std::io::BufReader::new(f).lines().count()
    };
    let stride = count.div_ceil(max.max(1)).max(1);
    let f = std::fs::File::open(path).map_err(|e| Error::file(path, e))?;
    let mut out = Vec::with_capacity(count.min(max) + 1);
    let mut last = None;
    for (i, line) in std::io::BufReader::new(f).lines().enumerate() {
        let line = line.map_err(|e| Error::file(path, e))?;
        let Ok(r) = serde_json::from_str::<Record>(&line) else {
            if i + 1 == count {
                break; // a torn last line
            }
            return Err(Error::file(path, format!("line {} is not a record", i + 1)));
        };
        if i % stride == 0 {
            out.push(r);
        } else {
            last = Some(r);
        }
    }
    if let Some(r) = last {
        if out.last().is_none_or(|l| l.step < r.step) {
            out.push(r);
        }
    }
    Ok(out)
}

fn series(records: &[Record], name: &str, f: impl Fn(&Record) -> Option<f64>) -> Option<Series> {
    let pts: Vec<(f64, f64)> = records.iter().filter_map(|r| Some((r.step as f64, f(r)?))).collect();
    (!pts.is_empty()).then(|| Series::line(name, pts))
}

/// The report of a training run.
pub fn report(s: &TrainSummary, records: &[Record]) -> Report {
    let flow = matches!(s.train.method, Method::Flow(_));
    let x_label = if flow { "t / lr" } else { "step" };
    let chart = |title: &str, y_label: &str, log_y: bool, series: Vec<Series>, hlines: Vec<(String, f64)>| Chart {
        title: title.into(),
        x_label: x_label.into(),
        y_label: y_label.into(),
        log_x: false,
        log_y,
        series,
        hlines,
    };
    let mut sections = Vec::new();
    let mut plot = |stem: &str, c: Chart, caption: &str| {
        sections.push(Section::Plot { stem: stem.into(), chart: c, caption: caption.into() })
    };
    let loss: Vec<Series> = [
        series(records, "train", |r| Some(r.loss)),
        series(records, "test", |r| r.test_loss),
        series(records, "linearized (train)", |r| r.lin_loss),
    ]
    .into_iter()
    .flatten()
    .collect();
    plot("loss", chart("Training loss", "loss", true, loss, vec![]), "Loss at each record (log scale)");
    let probes = &s.probes;
    if probes.has(Probe::Sharpness) || probes.has(Probe::NtkMax) {
        let mut ser = Vec::new();
        ser.extend(series(records, "sharpness lambda_max(H)", |r| r.sharpness));
        let n = s.n_train;
        let whole = probes.ntk_subset.is_none_or(|m| m == n);
        if s.train.loss == Loss::Mse && whole {
            ser.extend(series(records, "lambda_max(NTK)/N", |r| r.ntk_max.map(|v| v / n as f64)));
        }
        let mut h = Vec::new();
        if !flow {
            if s.train.schedule.is_constant() {
                h.push((format!("2/lr = {:.4}", 2.0 / s.train.lr), 2.0 / s.train.lr));
            } else {
                ser.extend(series(records, "2/lr", |r| Some(2.0 / r.lr)));
            }
        }
        if !ser.is_empty() {
            plot(
                "sharpness",
                chart("Sharpness and the edge of stability", "eigenvalue", false, ser, h),
                "Top Hessian eigenvalue (and NTK edge for MSE) against the stability threshold 2/lr",
            );
        }
    }
    if probes.has(Probe::NtkChange) || probes.has(Probe::WeightChange) {
        let ser: Vec<Series> = [
            series(records, "||K_t - K_0||_F / ||K_0||_F", |r| r.ntk_change),
            series(records, "||w_t - w_0|| / ||w_0||", |r| r.weight_change),
        ]
        .into_iter()
        .flatten()
        .collect();
        plot(
            "ntk_change",
            chart("Relative change from initialization", "relative change", false, ser, vec![]),
            "Relative change of the NTK and of the weights",
        );
    }
    if probes.has(Probe::Linearized) {
        let ser: Vec<Series> =
            [series(records, "train", |r| r.lin_distance), series(records, "test", |r| r.lin_test_distance)]
                .into_iter()
                .flatten()
                .collect();
        if !ser.is_empty() {
            plot(
                "linearized",
                chart("Distance to the linearized model", "||f - f_lin|| / sqrt(N)", false, ser, vec![]),
                "Distance between the network and its tangent model trained alongside",
            );
        }
    }
    let last = s.last.as_ref();
    let mut rows = vec![
        vec!["status".to_string(), s.status_text.clone()],
        vec!["steps".into(), s.steps.to_string()],
        vec!["initial loss".into(), format!("{:.4e}", s.initial_loss)],
        vec!["final loss".into(), last.map_or("-".into(), |r| format!("{:.4e}", r.loss))],
    ];
    if let Some(r) = last {
        for (k, v) in [
            ("final test loss", r.test_loss),
            ("final sharpness", r.sharpness),
            ("final NTK change", r.ntk_change),
            ("final distance to the linearized model", r.lin_distance),
        ] {
            if let Some(v) = v {
                rows.push(vec![k.to_string(), format!("{v:.4e}")]);
            }
        }
    }
    sections.push(Section::Table { caption: "Outcome".into(), headers: vec!["".into(), "".into()], rows });
    let method = match &s.train.method {
        Method::Flow(_) => "gradient flow (adaptive Dormand-Prince)".to_string(),
        Method::Discrete { batch, momentum, nesterov } => format!(
            "{}{}",
            if batch.is_some() { "SGD" } else { "full-batch GD" },
            if *momentum > 0.0 {
                format!(" with {} momentum {momentum}", if *nesterov { "Nesterov" } else { "heavy-ball" })
            } else {
                String::new()
            }
        ),
    };
    Report {
        title: format!("Training run: {}", s.arch),
        claim: "A training run with per-step diagnostics: loss, sharpness against the stability threshold 2/lr \
                (Cohen et al. 2021), the change of the NTK and the weights from initialization, and the distance to \
                the tangent model (Lee et al. 2019; Chizat, Oyallon & Bach 2019)."
            .into(),
        setup: format!(
            "Network `{}` ({} parameterization, alpha = {}, {} parameters) on {} training and {} test points, \
             d = {}, k = {}; {method}, lr = {}, {} steps, {:?} loss; records every {} steps; seed {}.",
            s.arch,
            s.parameterization,
            s.alpha,
            s.num_params,
            s.n_train,
            s.n_test,
            s.input_dim,
            s.output_dim,
            s.train.lr,
            s.train.steps,
            s.train.loss,
            s.probes.every,
            s.seed
        ),
        comparisons: vec![],
        sections,
    }
}
