//! `ntklab train --config run.toml`: train a finite network with per-step diagnostics and write a run folder.
//!
//! Run folder (OUT, from `--out`, the config's `out`, or `runs/<config name>`):
//! * `config.toml`: the config as given; `records.jsonl`: one JSON record per line, streamed while training;
//! * `summary.json`: status (completed / converged / diverged at step s), final record, resolved settings;
//! * `model.safetensors` (final weights, PyTorch `nn.Sequential` names; see `ntklab::net::io`),
//!   `model_init.safetensors` and, with the `linearized` probe, `model_linearized.safetensors` (the tangent
//!   model's parameters w_lin: f_lin(x) = f(x; w_0) + J(w_0)(w_lin - w_0));
//! * plots (SVG + PNG): `loss`, and per enabled probe `sharpness` (with 2/lr), `ntk_change`, `linearized`;
//! * `report.html` (one self-contained page with every plot), `report.md`, `provenance.json`.
//!
//! Everything is written into `OUT.partial/` and renamed to OUT at the end, so OUT only ever holds a finished
//! run; an interrupted run leaves `OUT.partial/`, which the next run with the same OUT replaces. The config is
//! checked completely before anything is created. The folder logic is `ntklab::runs::train_run`, shared with
//! the Python package's `ntklab.train`.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Args;
use ntklab::train::{RunConfig, Status, TrainResult};

use crate::util::Bars;

/// Arguments of `ntklab train`.
#[derive(Args, Debug)]
pub struct TrainArgs {
    /// Run description (TOML: `[data]`, `[model]`, `[optimizer]`, `[probes]`; see examples/train_basic.toml).
    #[arg(long)]
    pub config: PathBuf,
    /// Run folder (overrides `out` in the config; default runs/<config file name>).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Replace the run folder if it exists.
    #[arg(long)]
    pub force: bool,
}

/// Run `ntklab train`.
pub fn run(a: TrainArgs) -> Result<()> {
    let text =
        std::fs::read_to_string(&a.config).with_context(|| format!("cannot read config {}", a.config.display()))?;
    let cfg = RunConfig::from_toml_str(&text).with_context(|| format!("in {}", a.config.display()))?;
    let base = a.config.parent().map(Path::to_path_buf).unwrap_or_default();
    let out = match (&a.out, &cfg.out) {
        (Some(o), _) | (None, Some(o)) => o.clone(),
        (None, None) => {
            let stem = a.config.file_stem().map(|s| s.to_string_lossy().to_string()).unwrap_or_else(|| "run".into());
            PathBuf::from("runs").join(stem)
        }
    };
    let started = Instant::now();
    let result = ntklab::runs::train_run(&text, &base, &out, a.force, &Bars::default())
        .with_context(|| format!("in {}", a.config.display()))?;
    eprintln!("trained in {:.2} s", started.elapsed().as_secs_f64());
    report(&result, &out);
    Ok(())
}

fn report(r: &TrainResult, out: &Path) {
    let last = r.last.as_ref().map(|l| format!(", final loss {:.4e}", l.loss)).unwrap_or_default();
    match &r.status {
        Status::Diverged { .. } => eprintln!("warning: {} (initial loss {:.4e})", r.status, r.initial_loss),
        s => eprintln!("{s}: {} steps, t = {:.4}, initial loss {:.4e}{last}", r.steps, r.t, r.initial_loss),
    }
    println!("{}", out.display());
}
