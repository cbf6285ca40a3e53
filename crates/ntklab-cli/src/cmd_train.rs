//! `ntklab train --config run.toml`: train a finite network with per-step diagnostics and write a run folder.
//!
//! Run folder (OUT, from `--out`, the config's `out`, or `runs/<config name>`):
//! * `config.toml`: the config as given; `records.jsonl`: one JSON record per line, streamed while training;
//! * `summary.json`: status (completed / converged / diverged at step s), final record, resolved settings;
//! * `model.safetensors` (final weights, PyTorch `nn.Sequential` names; see `ntklab::net::io`),
//!   `model_init.safetensors` and, with the `linearized` probe, `model_linearized.safetensors` (the tangent
//!   model's parameters w_lin: f_lin(x) = f(x; w_0) + J(w_0)(w_lin - w_0));
//! * plots (SVG + PNG): `loss`, and per enabled probe `sharpness` (with 2/lr), `ntk_change`, `linearized`.
//!
//! Everything is written into `OUT.partial/` and renamed to OUT at the end, so OUT only ever holds a finished
//! run; an interrupted run leaves `OUT.partial/`, which the next run with the same OUT replaces. The config is
//! checked completely before anything is created.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Args;
use ntklab::net::{save_mlp, Precision};
use ntklab::train::{train_with_progress, Loss, Method, Probe, Record, RunConfig, Status, TrainResult};

use crate::plot::{self, Chart, Series};
use crate::util::{bar, check_replaceable, mark_dir};

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

/// The `.partial` sibling of the run folder.
fn partial_dir(out: &Path) -> PathBuf {
    let name = out.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_else(|| "run".into());
    out.with_file_name(format!("{name}.partial"))
}

/// Run `ntklab train`.
pub fn run(a: TrainArgs) -> Result<()> {
    let text =
        std::fs::read_to_string(&a.config).with_context(|| format!("cannot read config {}", a.config.display()))?;
    let cfg = RunConfig::from_toml_str(&text).with_context(|| format!("in {}", a.config.display()))?;
    let base = a.config.parent().map(Path::to_path_buf).unwrap_or_default();
    let mut run = cfg.resolve(&base).with_context(|| format!("in {}", a.config.display()))?;
    let out = match (&a.out, &cfg.out) {
        (Some(o), _) | (None, Some(o)) => o.clone(),
        (None, None) => {
            let stem = a.config.file_stem().map(|s| s.to_string_lossy().to_string()).unwrap_or_else(|| "run".into());
            PathBuf::from("runs").join(stem)
        }
    };
    if out.exists() && !a.force {
        bail!("run folder {} already exists (pass --force to replace it, or choose another --out)", out.display());
    }
    if out.exists() {
        // --force: only a run folder ntklab made, never the working directory or a parent of it.
        check_replaceable(&out, "--force")?;
    }
    let partial = partial_dir(&out);
    if partial.exists() {
        check_replaceable(&partial, "a new run")?;
        std::fs::remove_dir_all(&partial).with_context(|| format!("cannot remove stale {}", partial.display()))?;
    }
    std::fs::create_dir_all(&partial).with_context(|| format!("cannot create run folder {}", partial.display()))?;
    mark_dir(&partial)?;
    let res = write_run(&text, &mut run, &partial);
    match res {
        Ok(result) => {
            if out.exists() {
                std::fs::remove_dir_all(&out).with_context(|| format!("cannot replace {}", out.display()))?;
            }
            std::fs::rename(&partial, &out)
                .with_context(|| format!("cannot move {} to {}", partial.display(), out.display()))?;
            report(&result, &out);
            Ok(())
        }
        Err(e) => {
            let _ = std::fs::remove_dir_all(&partial);
            Err(e)
        }
    }
}

fn report(r: &TrainResult, out: &Path) {
    let last = r.last.as_ref().map(|l| format!(", final loss {:.4e}", l.loss)).unwrap_or_default();
    match &r.status {
        Status::Diverged { .. } => eprintln!("warning: {} (initial loss {:.4e})", r.status, r.initial_loss),
        s => eprintln!("{s}: {} steps, t = {:.4}, initial loss {:.4e}{last}", r.steps, r.t, r.initial_loss),
    }
    println!("{}", out.display());
}

fn write_run(text: &str, run: &mut ntklab::train::Run, dir: &Path) -> Result<TrainResult> {
    ntklab::data::io::write_atomic(&dir.join("config.toml"), |w| w.write_all(text.as_bytes()))?;
    let net0 = run.net.clone();
    save_mlp(&net0, &dir.join("model_init.safetensors"), Precision::F64)?;
    let rec_path = dir.join("records.jsonl");
    let mut w =
        BufWriter::new(File::create(&rec_path).with_context(|| format!("cannot create {}", rec_path.display()))?);
    let pb = bar(run.train.steps, "training");
    let started = Instant::now();
    let on_record = |r: &Record| {
        let line = serde_json::to_string(r).map_err(|e| ntklab::Error::file(&rec_path, e))?;
        writeln!(w, "{line}").and_then(|_| w.flush()).map_err(|e| ntklab::Error::file(&rec_path, e))?;
        pb.set_message(format!("loss {:.3e}", r.loss));
        Ok(())
    };
    let progress = |s| pb.set_position(s);
    let result = match run.precision {
        Precision::F64 => train_with_progress(&mut run.net, &run.data, &run.train, &run.probes, on_record, progress),
        Precision::F32 => {
            let mut n32 = run.net.cast::<f32>();
            let r = train_with_progress(&mut n32, &run.data, &run.train, &run.probes, on_record, progress);
            run.net = n32.cast();
            r
        }
    };
    pb.finish_and_clear();
    let result = result?;
    drop(w);
    let seconds = started.elapsed().as_secs_f64();
    if run.net.params().iter().all(|v| v.is_finite()) {
        save_mlp(&run.net, &dir.join("model.safetensors"), Precision::F64)?;
    }
    if let Some(wl) = &result.linearized_params {
        let mut lin = net0.clone();
        lin.set_params(wl)?;
        save_mlp(&lin, &dir.join("model_linearized.safetensors"), Precision::F64)?;
    }
    let summary = serde_json::json!({
        "status": result.status,
        "status_text": result.status.to_string(),
        "steps": result.steps,
        "t": result.t,
        "initial_loss": result.initial_loss,
        "last": result.last,
        "linearized_diverged_at": result.linearized_diverged_at,
        "ode": result.ode,
        "num_params": run.net.num_params(),
        "n_train": run.data.n_train(),
        "n_test": run.data.test.as_ref().map_or(0, |(x, _)| x.nrows()),
        "input_dim": run.data.input_dim(),
        "output_dim": run.data.output_dim(),
        "arch": run.net.arch.to_string(),
        "parameterization": run.net.arch.parameterization.to_string(),
        "alpha": run.net.alpha,
        "train": run.train,
        "probes": run.probes,
    });
    let body = serde_json::to_string_pretty(&summary)?;
    ntklab::data::io::write_atomic(&dir.join("summary.json"), |w| w.write_all(body.as_bytes()))?;
    plots(&result.records, run, dir)?;
    eprintln!("trained in {seconds:.2} s");
    Ok(result)
}

fn series(records: &[Record], name: &str, f: impl Fn(&Record) -> Option<f64>) -> Option<Series> {
    let pts: Vec<(f64, f64)> = records.iter().filter_map(|r| Some((r.step as f64, f(r)?))).collect();
    (!pts.is_empty()).then(|| Series::line(name, pts))
}

fn plots(records: &[Record], run: &ntklab::train::Run, dir: &Path) -> Result<()> {
    let x_label = if matches!(run.train.method, Method::Flow(_)) { "t / lr" } else { "step" };
    let chart = |title: &str, y_label: &str, log_y: bool, series: Vec<Series>, hlines: Vec<(String, f64)>| Chart {
        title: title.into(),
        x_label: x_label.into(),
        y_label: y_label.into(),
        log_x: false,
        log_y,
        series,
        hlines,
    };
    let loss: Vec<Series> = [
        series(records, "train", |r| Some(r.loss)),
        series(records, "test", |r| r.test_loss),
        series(records, "linearized (train)", |r| r.lin_loss),
    ]
    .into_iter()
    .flatten()
    .collect();
    plot::save(&chart("Training loss", "loss", true, loss, vec![]), &dir.join("loss"))?;
    let probes = &run.probes;
    if probes.has(Probe::Sharpness) || probes.has(Probe::NtkMax) {
        let mut s = Vec::new();
        s.extend(series(records, "sharpness lambda_max(H)", |r| r.sharpness));
        let n = run.data.n_train();
        let whole = probes.ntk_subset.is_none_or(|m| m == n);
        if run.train.loss == Loss::Mse && whole {
            s.extend(series(records, "lambda_max(NTK)/N", |r| r.ntk_max.map(|v| v / n as f64)));
        }
        let mut h = Vec::new();
        if !matches!(run.train.method, Method::Flow(_)) {
            if run.train.schedule.is_constant() {
                h.push((format!("2/lr = {:.4}", 2.0 / run.train.lr), 2.0 / run.train.lr));
            } else {
                s.extend(series(records, "2/lr", |r| Some(2.0 / r.lr)));
            }
        }
        if !s.is_empty() {
            plot::save(
                &chart("Sharpness and the edge of stability", "eigenvalue", false, s, h),
                &dir.join("sharpness"),
            )?;
        }
    }
    if probes.has(Probe::NtkChange) || probes.has(Probe::WeightChange) {
        let s: Vec<Series> = [
            series(records, "||K_t - K_0||_F / ||K_0||_F", |r| r.ntk_change),
            series(records, "||w_t - w_0|| / ||w_0||", |r| r.weight_change),
        ]
        .into_iter()
        .flatten()
        .collect();
        plot::save(
            &chart("Relative change from initialization", "relative change", false, s, vec![]),
            &dir.join("ntk_change"),
        )?;
    }
    if probes.has(Probe::Linearized) {
        let s: Vec<Series> =
            [series(records, "train", |r| r.lin_distance), series(records, "test", |r| r.lin_test_distance)]
                .into_iter()
                .flatten()
                .collect();
        if !s.is_empty() {
            plot::save(
                &chart("Distance to the linearized model", "||f - f_lin|| / sqrt(N)", false, s, vec![]),
                &dir.join("linearized"),
            )?;
        }
    }
    Ok(())
}
