//! `ntklab sweep --config base.toml --grid optimizer.lr=0.1,0.3,1 --seeds 0..4`: a grid of train runs, each in
//! its own folder `OUT/runs/<id>` (id = content hash of its full config), run in parallel, with `sweep.csv`,
//! `sweep.json` and `report.html` in OUT rewritten (atomically) after every finished run.
//!
//! Resumable: a run whose folder holds a finished summary is skipped, so the same command after an interruption
//! (Ctrl-C, SIGTERM, a crash) only runs what is missing. Every run writes into `<id>.partial` and is renamed when
//! complete: an interrupted run is left as `<id>.partial` (incomplete) and redone next time; the sweep files are
//! never half written.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Args;
use ntklab::report::{now_unix, Provenance};
use ntklab::train::sweep::{expand, parse_axis, parse_seeds, report, row, write_table, Axis, Point, SweepRow};
use ntklab::train::TrainSummary;

use crate::util::{check_replaceable, ensure_dir, mark_dir};

/// Arguments of `ntklab sweep`.
#[derive(Args, Debug)]
pub struct SweepArgs {
    /// The base train config (TOML, as for `ntklab train`).
    #[arg(long)]
    pub config: PathBuf,
    /// A grid axis `key=v1,v2,...` over any config key (repeatable), e.g. `optimizer.lr=0.1,0.3,1` or
    /// `model.arch="dense(64),relu,dense(1)","dense(256),relu,dense(1)"` (quote values holding commas).
    #[arg(long = "grid")]
    pub grid: Vec<String>,
    /// Seeds: `0..4` (0, 1, 2, 3), `0..=4` or `1,5,9` (the config's master seed).
    #[arg(long)]
    pub seeds: Option<String>,
    /// Sweep folder (default: sweeps/<config name>).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Runs at a time (default: the number of cores; each run also uses the shared thread pool).
    #[arg(long)]
    pub jobs: Option<usize>,
    /// The metric tabulated and plotted: a field of the last record (loss, test_loss, sharpness, ntk_change,
    /// weight_change, lin_distance, accuracy, ...).
    #[arg(long, default_value = "loss")]
    pub metric: String,
}

/// Run `ntklab sweep`.
pub fn run(a: SweepArgs) -> Result<()> {
    let text = std::fs::read_to_string(&a.config).with_context(|| format!("cannot read {}", a.config.display()))?;
    let base: toml::Table = text.parse().with_context(|| format!("{} is not valid TOML", a.config.display()))?;
    let base_dir = a.config.parent().map(Path::to_path_buf).unwrap_or_default();
    let base_dir = if base_dir.as_os_str().is_empty() { PathBuf::from(".") } else { base_dir };
    let axes: Vec<Axis> = a.grid.iter().map(|g| parse_axis(g)).collect::<ntklab::Result<_>>()?;
    let seeds = a.seeds.as_deref().map(parse_seeds).transpose()?.unwrap_or_default();
    let mut points = expand(&base, &axes, &seeds)?;
    // A run's id covers its data files' contents too: changed data are not "done".
    for p in &mut points {
        let mut files = Vec::new();
        if let Some(toml::Value::Table(d)) = p.config.get("data") {
            for key in ["x", "y", "x_test", "y_test"] {
                if let Some(toml::Value::String(f)) = d.get(key) {
                    let bytes = std::fs::read(base_dir.join(f)).with_context(|| format!("reading data.{key} = {f}"))?;
                    files.push((key, ntklab::experiment::bytes_hash(&bytes)));
                }
            }
        }
        if let Some(model) = p.config.get("model").and_then(|m| m.get("init")).and_then(|v| v.as_str()) {
            let bytes = std::fs::read(base_dir.join(model)).with_context(|| format!("reading model.init = {model}"))?;
            files.push(("init", ntklab::experiment::bytes_hash(&bytes)));
        }
        if !files.is_empty() {
            p.id = ntklab::experiment::content_hash(&(&p.config, &files))[..12].to_string();
        }
    }
    let grid_size = axes.iter().map(|a| a.values.len()).product::<usize>() * seeds.len().max(1);
    if points.len() < grid_size {
        println!(
            "note: {} grid points repeat a configuration; each distinct run is done once",
            grid_size - points.len()
        );
    }
    if !ntklab::train::sweep::METRICS.contains(&a.metric.as_str()) {
        bail!("--metric {}: not a record field (one of {})", a.metric, ntklab::train::sweep::METRICS.join(", "));
    }
    // Every point must be a valid run before anything starts (a typo in a key fails here, naming it), and the
    // runs that go at once must fit in memory together.
    let mut peak = 0usize;
    for p in &points {
        let t = toml::to_string(&p.config).context("writing a run config")?;
        let cfg = ntklab::train::RunConfig::from_toml_str(&t).with_context(|| describe(p))?;
        peak = peak.max(cfg.resolve(&base_dir).with_context(|| describe(p))?.peak_bytes());
    }
    let stem = a.config.file_stem().map_or_else(|| "sweep".to_string(), |s| s.to_string_lossy().to_string());
    let out = a.out.clone().unwrap_or_else(|| PathBuf::from("sweeps").join(&stem));
    if out.exists() && !crate::util::marked_as(&out, "sweep") {
        bail!("{} exists and is not a sweep folder made by ntklab; choose another --out", out.display());
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let jobs = a.jobs.unwrap_or(cores).clamp(1, 8 * cores).min(points.len().max(1));
    ntklab::data::memory::check_alloc(
        peak.saturating_mul(jobs),
        &format!("{jobs} runs at once (pass a smaller --jobs)"),
    )?;
    ensure_dir(&out.join("runs"))?;
    mark_dir(&out, "sweep")?;
    // One sweep at a time writes into a folder (its runs lock their own folders too).
    let _lock = ntklab::runs::FolderLock::take(&out.join("sweep.lock"), &out)?;
    let started_unix = now_unix();
    let t0 = Instant::now();
    let before: Vec<Option<TrainSummary>> = points.iter().map(|p| finished(&out, p)).collect::<Result<_>>()?;
    let done_before: Vec<bool> = before.iter().map(Option::is_some).collect();
    let skipped = done_before.iter().filter(|d| **d).count();
    println!(
        "sweep: {} runs ({} already complete, skipped), {jobs} at a time, into {}",
        points.len(),
        skipped,
        out.display()
    );
    let rows: Mutex<Vec<Option<SweepRow>>> =
        Mutex::new(points.iter().zip(&before).map(|(p, b)| b.as_ref().map(|s| row(p, Ok(s), &a.metric))).collect());
    let next = AtomicUsize::new(0);
    let failures = AtomicUsize::new(0);
    let publish = |rows: &[Option<SweepRow>]| -> Result<()> {
        let done: Vec<SweepRow> = rows.iter().flatten().cloned().collect();
        write_table(&out, &axes, &done, &a.metric)?;
        let prov = Provenance::here("sweep", None, started_unix, t0.elapsed().as_secs_f64());
        report(&axes, &done, &a.metric, &stem).write(&out, &prov)?;
        Ok(())
    };
    publish(&rows.lock().expect("no poisoned lock"))?;
    std::thread::scope(|s| {
        for _ in 0..jobs {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= points.len() {
                    break;
                }
                if done_before[i] {
                    continue;
                }
                let p = &points[i];
                let dir = out.join("runs").join(&p.id);
                let res = run_point(p, &base_dir, &dir);
                let r = match &res {
                    Ok(summary) => row(p, Ok(summary), &a.metric),
                    Err(e) => {
                        failures.fetch_add(1, Ordering::SeqCst);
                        row(p, Err(&format!("{e:#}")), &a.metric)
                    }
                };
                println!("{} {}: {}", p.id, describe_short(p), r.status);
                let mut g = rows.lock().expect("no poisoned lock");
                g[i] = Some(r);
                if let Err(e) = publish(&g) {
                    eprintln!("warning: cannot update the sweep table: {e:#}");
                }
            });
        }
    });
    let n_fail = failures.load(Ordering::SeqCst);
    println!(
        "wrote {}/{{sweep.csv,sweep.json,report.html}} ({} runs, {} failed) in {:.1} s",
        out.display(),
        points.len(),
        n_fail,
        t0.elapsed().as_secs_f64()
    );
    if n_fail > 0 {
        bail!("{n_fail} of {} runs failed (see sweep.csv); running the command again retries them", points.len());
    }
    Ok(())
}

fn describe_short(p: &Point) -> String {
    let mut s: Vec<String> = p.settings.iter().map(|(k, v)| format!("{k}={}", ntklab::train::sweep::show(v))).collect();
    if let Some(seed) = p.seed {
        s.push(format!("seed={seed}"));
    }
    s.join(" ")
}

fn describe(p: &Point) -> String {
    format!("in the sweep point {}", describe_short(p))
}

/// The summary of a completed run folder (None: not completed). A summary that exists but cannot be read is
/// an error: the folder is then neither skipped nor replaced.
fn finished(out: &Path, p: &Point) -> Result<Option<TrainSummary>> {
    let path = out.join("runs").join(&p.id).join("summary.json");
    if !path.is_file() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let s = serde_json::from_str(&text).with_context(|| {
        format!("{} exists but is not a train summary; move that run folder away to redo it", path.display())
    })?;
    Ok(Some(s))
}

/// Trains one point into `dir` (its config saved as the run's config.toml).
fn run_point(p: &Point, base_dir: &Path, dir: &Path) -> Result<TrainSummary> {
    let text = toml::to_string(&p.config).context("writing the run config")?;
    if dir.exists() {
        // A folder without a readable summary: an earlier failure; ntklab made it, so it may be replaced.
        check_replaceable(dir, "the sweep", "train")?;
    }
    ntklab::runs::train_run(&text, base_dir, dir, true, &ntklab::runs::Quiet)?;
    let s = std::fs::read_to_string(dir.join("summary.json")).context("reading the run's summary")?;
    serde_json::from_str(&s).context("reading the run's summary")
}
