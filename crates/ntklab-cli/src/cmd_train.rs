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
//! checked completely before anything is created.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Args;
use ntklab::net::{save_mlp, Precision};
use ntklab::report::{now_unix, Provenance};
use ntklab::train::{train_streaming, Record, RunConfig, Status, TrainResult, TrainSummary};

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
    let out = match (&a.out, &cfg.out) {
        (Some(o), _) | (None, Some(o)) => o.clone(),
        (None, None) => {
            let stem = a.config.file_stem().map(|s| s.to_string_lossy().to_string()).unwrap_or_else(|| "run".into());
            PathBuf::from("runs").join(stem)
        }
    };
    let result = train_into(&text, &base, &out, a.force, true).with_context(|| format!("in {}", a.config.display()))?;
    report(&result, &out);
    Ok(())
}

/// Trains the run described by the TOML `text` (array paths relative to `base`) into the run folder `out`,
/// written as `out.partial` and renamed at the end. `show` draws a progress bar on a terminal.
pub fn train_into(text: &str, base: &Path, out: &Path, force: bool, show: bool) -> Result<TrainResult> {
    let cfg = RunConfig::from_toml_str(text)?;
    let mut run = cfg.resolve(base)?;
    if out.exists() && !force {
        bail!("run folder {} already exists (pass --force to replace it, or choose another --out)", out.display());
    }
    if out.exists() {
        // --force: only a run folder ntklab made, never the working directory or a parent of it.
        check_replaceable(out, "--force", "train")?;
    }
    let partial = partial_dir(out);
    if partial.exists() {
        check_replaceable(&partial, "a new run", "train")?;
        std::fs::remove_dir_all(&partial).with_context(|| format!("cannot remove stale {}", partial.display()))?;
    }
    std::fs::create_dir_all(&partial).with_context(|| format!("cannot create run folder {}", partial.display()))?;
    mark_dir(&partial, "train")?;
    let res = write_run(text, &mut run, cfg.seed, &partial, show);
    match res {
        Ok(result) => {
            if out.exists() {
                std::fs::remove_dir_all(out).with_context(|| format!("cannot replace {}", out.display()))?;
            }
            std::fs::rename(&partial, out)
                .with_context(|| format!("cannot move {} to {}", partial.display(), out.display()))?;
            Ok(result)
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

fn write_run(text: &str, run: &mut ntklab::train::Run, seed: u64, dir: &Path, show: bool) -> Result<TrainResult> {
    let started_unix = now_unix();
    ntklab::data::io::write_atomic(&dir.join("config.toml"), |w| w.write_all(text.as_bytes()))?;
    let net0 = run.net.clone();
    save_mlp(&net0, &dir.join("model_init.safetensors"), Precision::F64)?;
    let rec_path = dir.join("records.jsonl");
    let mut w =
        BufWriter::new(File::create(&rec_path).with_context(|| format!("cannot create {}", rec_path.display()))?);
    let pb = if show { bar(run.train.steps, "training") } else { crate::util::Progress::hidden() };
    let started = Instant::now();
    let on_record = |r: &Record| {
        let line = serde_json::to_string(r).map_err(|e| ntklab::Error::file(&rec_path, e))?;
        writeln!(w, "{line}").and_then(|_| w.flush()).map_err(|e| ntklab::Error::file(&rec_path, e))?;
        pb.set_message(format!("loss {:.3e}", r.loss));
        Ok(())
    };
    let every = run.checkpoint_every;
    let template = run.net.clone();
    let ck_dir = dir.join("checkpoints");
    if every.is_some() {
        std::fs::create_dir_all(&ck_dir).with_context(|| format!("cannot create {}", ck_dir.display()))?;
    }
    // Checkpoints at steps k, 2k, ... (and none of a diverged state: saving is skipped for non-finite weights).
    let checkpoint = |s: u64, w: &[f64]| -> ntklab::Result<()> {
        pb.set_position(s);
        match every {
            Some(k) if s.is_multiple_of(k) && w.iter().all(|v| v.is_finite()) => {
                let mut net = template.clone();
                net.set_params(w)?;
                save_mlp(&net, &ck_dir.join(format!("step_{s:08}.safetensors")), Precision::F64)
            }
            _ => Ok(()),
        }
    };
    let result = match run.precision {
        Precision::F64 => train_streaming(&mut run.net, &run.data, &run.train, &run.probes, on_record, checkpoint),
        Precision::F32 => {
            let mut n32 = run.net.cast::<f32>();
            let mut wide = Vec::new();
            let r = train_streaming(&mut n32, &run.data, &run.train, &run.probes, on_record, |s, w: &[f32]| {
                if every.is_some_and(|k| s.is_multiple_of(k)) {
                    wide.clear();
                    wide.extend(w.iter().map(|&v| f64::from(v)));
                    checkpoint(s, &wide)
                } else {
                    pb.set_position(s);
                    Ok(())
                }
            });
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
    let summary = TrainSummary::new(&result, run, seed);
    ntklab::report::write_json(&dir.join("summary.json"), &summary)?;
    let prov = Provenance::here("train", Some(seed), started_unix, seconds);
    // The records went to disk as they came (the trainer keeps none in memory); the plots read them back,
    // thinned to a few thousand points.
    let records = ntklab::train::report::read_records_thinned(&rec_path, 4000)?;
    ntklab::train::report::report(&summary, &records).write(dir, &prov)?;
    if show {
        eprintln!("trained in {seconds:.2} s");
    }
    Ok(result)
}

/// Remakes the report of a train run folder from its summary.json, records.jsonl and provenance.json.
pub fn rereport(dir: &Path) -> Result<()> {
    let p = dir.join("summary.json");
    let text = std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?;
    let summary: TrainSummary =
        serde_json::from_str(&text).with_context(|| format!("{} is not a train summary", p.display()))?;
    let records = ntklab::train::report::read_records_thinned(&dir.join("records.jsonl"), 4000)?;
    let prov = Provenance::read(dir)?;
    ntklab::train::report::report(&summary, &records).write(dir, &prov)?;
    Ok(())
}
