//! Run folders: how a training run (`ntklab train`) and a reproduction (`ntklab run`) write their outputs, one
//! implementation for the CLI and the Python package (`ntklab.train`, `ntklab.run`).
//!
//! A run writes into the hidden sibling `OUT.partial/` and moves its files into OUT only when it has finished, so
//! OUT never holds a partial result. Every folder ntklab creates as a whole holds a [`MARKER`] file naming its
//! kind; `--force` (and a new run replacing a stale `.partial`) deletes only such folders of the same kind, never
//! the working directory or one of its parents. A reproduction keeps its completed steps in
//! `OUT.partial/checkpoint.jsonl` when it fails or is stopped, and `resume` continues from them.
//!
//! Two runs never write the same output at once: a run holds a [`FolderLock`] on the sibling `OUT.lock` while it
//! works (a second one is refused with a message naming the folder).
//!
//! Progress and stopping go through a [`Watch`]: the CLI draws progress bars; the Python package checks for
//! Ctrl-C in [`Watch::check`], which the work calls between units (each training step, each reproduction step).

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::experiment::{Context, Experiment, Prepared};
use crate::net::{save_mlp, Precision};
use crate::report::{now_unix, Provenance};
use crate::train::{train_streaming, Record, RunConfig, TrainResult, TrainSummary};
use crate::{Error, Result};

/// The file ntklab leaves in every folder it creates as a whole (run folders), so that `--force` can tell its
/// own output from anything else.
pub const MARKER: &str = ".ntklab-output";

/// Progress and cancellation of a long call. Every method has a default that does nothing.
pub trait Watch {
    /// A counted stage begins: `total` units of work (it may be called again with a corrected total).
    fn stage(&self, _name: &str, _total: u64) {}
    /// Units of the current stage done.
    fn position(&self, _done: u64) {}
    /// A short status (e.g. the current loss).
    fn message(&self, _msg: &str) {}
    /// The stage has ended.
    fn finish(&self) {}
    /// Called between units of work; an error (normally [`Error::Cancelled`]) stops the work there.
    fn check(&self) -> Result<()> {
        Ok(())
    }
}

/// Progress of parallel work, called from worker threads with `(done, total)`; an error from it (normally
/// [`Error::Cancelled`]) stops the work once the units in flight are done, and the call returns that error.
pub type OnProgress<'a> = &'a (dyn Fn(usize, usize) -> Result<()> + Sync);

/// An [`OnProgress`] that reports nowhere and never stops the work.
pub fn no_progress(_done: usize, _total: usize) -> Result<()> {
    Ok(())
}

/// A [`Watch`] that shows nothing and never stops the work.
pub struct Quiet;

impl Watch for Quiet {}

/// The hidden sibling a run writes into before it is moved into place.
pub fn partial_dir(out: &Path) -> PathBuf {
    let name = out.file_name().map_or_else(|| "run".to_string(), |n| n.to_string_lossy().to_string());
    out.with_file_name(format!("{name}.partial"))
}

/// Marks `dir` as created by ntklab as a folder of `kind` (`train`, `run`, `sweep`, `kernel`).
pub fn mark_dir(dir: &Path, kind: &str) -> Result<()> {
    let p = dir.join(MARKER);
    std::fs::write(&p, format!("created by ntklab; --force may replace this folder\nkind: {kind}\n"))
        .map_err(|e| Error::file(&p, format!("cannot write: {e}")))
}

/// Err unless `dir` may be deleted to be replaced by a folder of `kind`: a folder that ntklab created (it holds
/// [`MARKER`]) as that kind (markers from before kinds were recorded match any), and neither the working
/// directory nor one of its parents. `what` names the option in the message.
pub fn check_replaceable(dir: &Path, what: &str, kind: &str) -> Result<()> {
    let canon = dir.canonicalize().map_err(|e| Error::file(dir, format!("cannot resolve: {e}")))?;
    let cwd = std::env::current_dir()
        .and_then(|c| c.canonicalize())
        .map_err(|e| Error::file(".", format!("cannot resolve the working directory: {e}")))?;
    let refuse = |why: String| Err(Error::InvalidInput(format!("refusing to replace {}: {why}", dir.display())));
    if cwd.starts_with(&canon) {
        return refuse(format!("it is the working directory or one of its parents ({what} never deletes those)"));
    }
    if !canon.is_dir() || !canon.join(MARKER).is_file() {
        return refuse(format!(
            "it was not created by ntklab (no {MARKER} file in it), so {what} will not delete it; remove it \
             yourself or choose another output folder"
        ));
    }
    let marker = std::fs::read_to_string(canon.join(MARKER)).unwrap_or_default();
    if let Some(found) = marker.lines().find_map(|l| l.strip_prefix("kind: ")) {
        if found.trim() != kind {
            return refuse(format!(
                "it is a {} folder, not a {kind} folder, so {what} will not delete it",
                found.trim()
            ));
        }
    }
    Ok(())
}

/// Whether `dir` holds an ntklab marker of `kind` (or an older marker without a kind).
pub fn marked_as(dir: &Path, kind: &str) -> bool {
    match std::fs::read_to_string(dir.join(MARKER)) {
        Err(_) => false,
        Ok(m) => m.lines().find_map(|l| l.strip_prefix("kind: ")).is_none_or(|k| k.trim() == kind),
    }
}

/// One overwrite rule for every command: Err naming the first of `paths` that already exists, unless `force`.
pub fn refuse_existing(paths: &[PathBuf], force: bool) -> Result<()> {
    if force {
        return Ok(());
    }
    if let Some(p) = paths.iter().find(|p| p.exists()) {
        return Err(Error::InvalidInput(format!(
            "{} already exists (pass --force to overwrite it, or choose another output)",
            p.display()
        )));
    }
    Ok(())
}

/// An exclusive, advisory lock on a file, held while a run writes one output folder, so that two runs (two
/// processes, or two threads of one Python session) given the same folder cannot delete each other's files. The
/// operating system drops the lock when the process ends, so a crash leaves no stale lock behind; the file is
/// removed when the lock is dropped.
#[derive(Debug)]
pub struct FolderLock {
    path: PathBuf,
    _file: File,
}

impl FolderLock {
    /// Takes the lock file `path` (created if missing) for the output `what`, or Err when another run holds it.
    pub fn take(path: &Path, what: &Path) -> Result<FolderLock> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            create_dir(parent)?;
        }
        // A run that is finishing removes its lock file: a file opened just before that removal is locked in
        // vain, so the lock counts only if the file at `path` is still the one locked (else try again).
        for _ in 0..8 {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(path)
                .map_err(|e| Error::file(path, format!("cannot create the lock file: {e}")))?;
            match file.try_lock() {
                Ok(()) => {}
                Err(std::fs::TryLockError::WouldBlock) => {
                    return Err(Error::InvalidInput(format!(
                        "another ntklab run is writing to {} (it holds {}); wait for it to finish, or choose \
                         another output folder",
                        what.display(),
                        path.display()
                    )))
                }
                // A file system without locks (some network mounts): run unguarded rather than not at all.
                Err(std::fs::TryLockError::Error(e)) if e.kind() == std::io::ErrorKind::Unsupported => {}
                Err(std::fs::TryLockError::Error(e)) => return Err(Error::file(path, format!("cannot lock: {e}"))),
            }
            if same_file(&file, path) {
                use std::io::Write as _;
                let _ = writeln!(&file, "pid {}", std::process::id());
                return Ok(FolderLock { path: path.to_path_buf(), _file: file });
            }
        }
        Err(Error::file(path, "cannot take the lock: the file keeps being replaced"))
    }

    /// The lock for the run folder `out`: its sibling `OUT.lock`.
    pub fn for_run(out: &Path) -> Result<FolderLock> {
        let name = out.file_name().map_or_else(|| "run".to_string(), |n| n.to_string_lossy().to_string());
        FolderLock::take(&out.with_file_name(format!("{name}.lock")), out)
    }
}

impl Drop for FolderLock {
    fn drop(&mut self) {
        // Removed while still locked; the lock itself goes when the file closes.
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Whether the open `file` is the file now at `path`.
fn same_file(file: &File, path: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        match (file.metadata(), std::fs::metadata(path)) {
            (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
            _ => false,
        }
    }
    #[cfg(not(unix))]
    {
        let _ = file;
        path.is_file()
    }
}

/// Creates `dir` and its parents.
fn create_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::file(dir, format!("cannot create the folder: {e}")))
}

/// Trains the run described by the TOML `text` (`[data]`, `[model]`, `[optimizer]`, `[probes]`; array paths
/// relative to `base`) into the run folder `out`:
/// * `config.toml`: the config as given; `records.jsonl`: one JSON record per line, streamed while training;
/// * `summary.json`: status (completed / converged / diverged at step s), final record, resolved settings;
/// * `model.safetensors` (final weights, PyTorch `nn.Sequential` names), `model_init.safetensors` and, with the
///   `linearized` probe, `model_linearized.safetensors` (the tangent model's parameters);
/// * `checkpoints/step_*.safetensors` with `checkpoint_every`;
/// * plots, `report.html`, `report.md`, `provenance.json`.
///
/// The config is checked completely before anything is created; an existing `out` is replaced only with
/// `force` (and only if it is a train folder ntklab made). A failed or stopped run leaves nothing behind.
pub fn train_run(text: &str, base: &Path, out: &Path, force: bool, watch: &dyn Watch) -> Result<TrainResult> {
    let cfg = RunConfig::from_toml_str(text)?;
    let mut run = cfg.resolve(base)?;
    let _lock = FolderLock::for_run(out)?;
    if out.exists() && !force {
        return Err(Error::InvalidInput(format!(
            "run folder {} already exists (pass --force to replace it, or choose another output folder)",
            out.display()
        )));
    }
    if out.exists() {
        check_replaceable(out, "--force", "train")?;
    }
    let partial = partial_dir(out);
    if partial.exists() {
        check_replaceable(&partial, "a new run", "train")?;
        std::fs::remove_dir_all(&partial).map_err(|e| Error::file(&partial, format!("cannot remove: {e}")))?;
    }
    create_dir(&partial)?;
    mark_dir(&partial, "train")?;
    // A stop while the models and the report were written still counts: checked once more before the move.
    match write_train(text, &mut run, cfg.seed, &partial, watch).and_then(|r| watch.check().map(|()| r)) {
        Ok(result) => {
            if out.exists() {
                std::fs::remove_dir_all(out).map_err(|e| Error::file(out, format!("cannot replace: {e}")))?;
            }
            std::fs::rename(&partial, out)
                .map_err(|e| Error::file(&partial, format!("cannot move to {}: {e}", out.display())))?;
            Ok(result)
        }
        Err(e) => {
            let _ = std::fs::remove_dir_all(&partial);
            Err(e)
        }
    }
}

fn write_train(
    text: &str,
    run: &mut crate::train::Run,
    seed: u64,
    dir: &Path,
    watch: &dyn Watch,
) -> Result<TrainResult> {
    let started_unix = now_unix();
    crate::data::io::write_atomic(&dir.join("config.toml"), |w| w.write_all(text.as_bytes()))?;
    let net0 = run.net.clone();
    save_mlp(&net0, &dir.join("model_init.safetensors"), Precision::F64)?;
    let rec_path = dir.join("records.jsonl");
    let mut w = BufWriter::new(File::create(&rec_path).map_err(|e| Error::file(&rec_path, e))?);
    watch.stage("training", run.train.steps);
    let started = Instant::now();
    let on_record = |r: &Record| {
        let line = serde_json::to_string(r).map_err(|e| Error::file(&rec_path, e))?;
        writeln!(w, "{line}").and_then(|_| w.flush()).map_err(|e| Error::file(&rec_path, e))?;
        watch.message(&format!("loss {:.3e}", r.loss));
        Ok(())
    };
    let every = run.checkpoint_every;
    let template = run.net.clone();
    let ck_dir = dir.join("checkpoints");
    if every.is_some() {
        create_dir(&ck_dir)?;
    }
    // Checkpoints at steps k, 2k, ... (and none of a diverged state: saving is skipped for non-finite weights).
    let checkpoint = |s: u64, w: &[f64]| -> Result<()> {
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
        Precision::F64 => train_streaming(&mut run.net, &run.data, &run.train, &run.probes, on_record, |s, w| {
            watch.position(s);
            watch.check()?;
            checkpoint(s, w)
        }),
        Precision::F32 => {
            let mut n32 = run.net.cast::<f32>();
            let mut wide = Vec::new();
            let r = train_streaming(&mut n32, &run.data, &run.train, &run.probes, on_record, |s, w: &[f32]| {
                watch.position(s);
                watch.check()?;
                if every.is_some_and(|k| s.is_multiple_of(k)) {
                    wide.clear();
                    wide.extend(w.iter().map(|&v| f64::from(v)));
                    checkpoint(s, &wide)
                } else {
                    Ok(())
                }
            });
            run.net = n32.cast();
            r
        }
    };
    watch.finish();
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
    crate::report::write_json(&dir.join("summary.json"), &summary)?;
    let prov = Provenance::here("train", Some(seed), started_unix, seconds);
    // The records went to disk as they came (the trainer keeps none in memory); the plots read them back,
    // thinned to a few thousand points.
    let records = crate::train::report::read_records_thinned(&rec_path, 4000)?;
    crate::train::report::report(&summary, &records).write(dir, &prov)?;
    Ok(result)
}

/// Remakes the report of a train run folder from its summary.json, records.jsonl and provenance.json.
pub fn rereport_train(dir: &Path) -> Result<()> {
    let p = dir.join("summary.json");
    let text = std::fs::read_to_string(&p).map_err(|e| Error::file(&p, e))?;
    let summary: TrainSummary =
        serde_json::from_str(&text).map_err(|e| Error::file(&p, format!("not a train summary: {e}")))?;
    let records = crate::train::report::read_records_thinned(&dir.join("records.jsonl"), 4000)?;
    let prov = Provenance::read(dir)?;
    crate::train::report::report(&summary, &records).write(dir, &prov)?;
    Ok(())
}

/// A finished reproduction.
#[derive(Debug, Clone)]
pub struct RunOutcome {
    /// The key numbers, as the CLI prints them.
    pub console: String,
    /// Seconds the computation took.
    pub seconds: f64,
    /// Steps taken from an interrupted run's checkpoint instead of computed.
    pub reused: usize,
    /// The files written into the output folder, sorted.
    pub files: Vec<String>,
}

/// Runs the prepared reproduction `exp` into the report folder `out` (summary.json, report.html, report.md,
/// provenance.json, plots). Existing outputs are replaced only with `force`; with `resume`, an interrupted run
/// of the same configuration continues from its completed steps. A failed or stopped run keeps its completed
/// steps in `out.partial` (said on stderr) and leaves `out` as it was.
pub fn run_experiment(
    exp: &dyn Experiment,
    prepared: &Prepared,
    out: &Path,
    resume: bool,
    force: bool,
    watch: &dyn Watch,
) -> Result<RunOutcome> {
    refuse_existing(&[out.join("summary.json"), out.join("report.html")], force)?;
    let _lock = FolderLock::for_run(out)?;
    let partial = partial_dir(out);
    let checkpoint = partial.join("checkpoint.jsonl");
    let resuming = resume && checkpoint.is_file();
    if resume && !resuming {
        eprintln!("note: nothing to resume in {} (no checkpoint); starting from the beginning", partial.display());
    }
    if partial.exists() && !resuming {
        check_replaceable(&partial, "a new run", "run")?;
        std::fs::remove_dir_all(&partial).map_err(|e| Error::file(&partial, format!("cannot remove: {e}")))?;
    }
    create_dir(&partial)?;
    mark_dir(&partial, "run")?;
    watch.stage(&format!("{}: steps", exp.name()), 1);
    let res = (|| {
        let progress = |done: usize, total: usize| {
            watch.stage(&format!("{}: steps", exp.name()), total as u64);
            watch.position(done as u64);
        };
        let mut ctx =
            Context::new(progress).with_checkpoint(&checkpoint, &prepared.hash, resuming)?.with_check(|| watch.check());
        let res = exp.execute(prepared, &partial, &mut ctx);
        let reused = ctx.reused();
        drop(ctx);
        // A stop while the report was written still counts: checked once more before the commit.
        res.and_then(|done| watch.check().map(|()| (done, reused)))
    })();
    watch.finish();
    match res {
        Ok((done, reused)) => {
            if !force {
                // Any file of the same name in `out` (a plot, report.md) is overwritten only with `force`; the
                // finished steps stay in the checkpoint, so a rerun with resume and force recomputes nothing.
                let clash = clashes(&partial, out)?;
                if let Some(name) = clash.first() {
                    return Err(Error::InvalidInput(format!(
                        "{} already exists (pass --force to overwrite it, or choose another output); the \
                         finished steps are kept in {}, so a rerun with --resume --force recomputes nothing",
                        out.join(name).display(),
                        partial.display()
                    )));
                }
            }
            let _ = std::fs::remove_file(&checkpoint);
            let files = commit(&partial, out)?;
            Ok(RunOutcome { console: done.console, seconds: done.seconds, reused, files })
        }
        Err(e) => {
            let kept = std::fs::read_to_string(&checkpoint).is_ok_and(|t| t.lines().count() > 1);
            if kept {
                let note =
                    format!("the completed steps are kept in {}; resuming continues from them", partial.display());
                // In the message, where a library caller (Python) sees the error; a stop by the user carries no
                // message of its own, so that note goes to stderr.
                if matches!(e, Error::Cancelled) {
                    eprintln!("note: {note}");
                }
                return Err(e.noted(&note));
            }
            let _ = std::fs::remove_dir_all(&partial);
            Err(e)
        }
    }
}

/// The files of the finished `.partial` folder (other than the marker and the checkpoint) that `out` already
/// holds, sorted.
fn clashes(partial: &Path, out: &Path) -> Result<Vec<String>> {
    let mut names = Vec::new();
    let entries = std::fs::read_dir(partial).map_err(|e| Error::file(partial, format!("cannot list: {e}")))?;
    for entry in entries {
        let entry = entry.map_err(|e| Error::file(partial, format!("cannot list: {e}")))?;
        let name = entry.file_name().to_string_lossy().to_string();
        if name != MARKER && name != "checkpoint.jsonl" && out.join(&name).exists() {
            names.push(name);
        }
    }
    names.sort();
    Ok(names)
}

/// Moves everything from the finished `.partial` folder into `out`; returns the file names.
fn commit(partial: &Path, out: &Path) -> Result<Vec<String>> {
    create_dir(out)?;
    let mut names = Vec::new();
    let entries = std::fs::read_dir(partial).map_err(|e| Error::file(partial, format!("cannot list: {e}")))?;
    for entry in entries {
        let entry = entry.map_err(|e| Error::file(partial, format!("cannot list: {e}")))?;
        let fname = entry.file_name();
        let marker = fname.to_string_lossy() == MARKER;
        if marker && out.join(&fname).exists() {
            continue;
        }
        std::fs::rename(entry.path(), out.join(&fname))
            .map_err(|e| Error::file(entry.path(), format!("cannot move into {}: {e}", out.display())))?;
        if !marker {
            names.push(fname.to_string_lossy().to_string());
        }
    }
    let _ = std::fs::remove_dir_all(partial);
    names.sort();
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    /// Stops the work after `after` checks.
    struct StopAfter {
        after: usize,
        checks: Cell<usize>,
    }

    impl Watch for StopAfter {
        fn check(&self) -> Result<()> {
            self.checks.set(self.checks.get() + 1);
            if self.checks.get() > self.after {
                Err(Error::Cancelled)
            } else {
                Ok(())
            }
        }
    }

    fn temp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("ntklab-runs-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    const TRAIN: &str = r#"
seed = 3
[data]
name = "teacher"
n = 32
d = 4
[model]
arch = "dense(16),relu,dense(1)"
[optimizer]
kind = "gd"
lr = 0.1
steps = 40
"#;

    #[test]
    fn a_stopped_training_run_leaves_nothing_and_a_finished_one_moves_into_place() {
        let root = temp("train");
        let out = root.join("run");
        let stop = StopAfter { after: 5, checks: Cell::new(0) };
        let err = train_run(TRAIN, &root, &out, false, &stop).unwrap_err();
        assert!(matches!(err, Error::Cancelled), "{err}");
        assert_eq!(stop.checks.get(), 6, "stopped at the first check that failed");
        assert!(!out.exists() && !partial_dir(&out).exists());
        let r = train_run(TRAIN, &root, &out, false, &Quiet).unwrap();
        assert_eq!(r.steps, 40);
        let records = std::fs::read_to_string(out.join("records.jsonl")).unwrap();
        assert!(records.lines().count() >= 2);
        assert!(out.join("summary.json").is_file() && marked_as(&out, "train") && !marked_as(&out, "run"));
        // Replacing needs force; a folder ntklab did not make is never replaced.
        assert!(train_run(TRAIN, &root, &out, false, &Quiet).unwrap_err().to_string().contains("already exists"));
        let foreign = root.join("mine");
        std::fs::create_dir_all(&foreign).unwrap();
        let e = train_run(TRAIN, &root, &foreign, true, &Quiet).unwrap_err().to_string();
        assert!(e.contains("not created by ntklab"), "{e}");
        assert!(foreign.is_dir());
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn a_stopped_reproduction_keeps_its_steps_and_resumes_from_them() {
        let root = temp("run");
        let out = root.join("lin");
        let exp = crate::experiment::find("linearity").unwrap();
        let prepared = exp.prepare(true, None, None).unwrap();
        let stop = StopAfter { after: 2, checks: Cell::new(0) };
        let err = run_experiment(exp, &prepared, &out, false, false, &stop).unwrap_err();
        assert!(matches!(err, Error::Cancelled), "{err}");
        assert!(!out.join("summary.json").exists());
        let cp = std::fs::read_to_string(partial_dir(&out).join("checkpoint.jsonl")).unwrap();
        assert_eq!(cp.lines().count(), 3, "the header and the two steps completed before the stop");
        let done = run_experiment(exp, &prepared, &out, true, false, &Quiet).unwrap();
        assert_eq!(done.reused, 2);
        assert!(done.files.iter().any(|f| f == "summary.json") && done.files.iter().any(|f| f == "report.html"));
        assert!(!partial_dir(&out).exists());
        let _ = std::fs::remove_dir_all(&root);
    }

    /// While one run holds an output folder, a second run into it is refused and touches nothing; once the
    /// first is done the lock file is gone and the folder is free again.
    #[test]
    fn a_second_run_into_a_folder_in_use_is_refused() {
        let root = temp("lock");
        let out = root.join("run");
        let held = FolderLock::for_run(&out).unwrap();
        let lock_file = root.join("run.lock");
        assert!(lock_file.is_file());
        let e = train_run(TRAIN, &root, &out, true, &Quiet).unwrap_err().to_string();
        assert!(e.contains("another ntklab run is writing to") && e.contains("run.lock"), "{e}");
        assert!(!out.exists() && !partial_dir(&out).exists());
        let exp = crate::experiment::find("linearity").unwrap();
        let prepared = exp.prepare(true, None, None).unwrap();
        let e = run_experiment(exp, &prepared, &out, false, true, &Quiet).unwrap_err().to_string();
        assert!(e.contains("another ntklab run is writing to"), "{e}");
        drop(held);
        assert!(!lock_file.exists());
        train_run(TRAIN, &root, &out, false, &Quiet).unwrap();
        assert!(!lock_file.exists() && out.join("summary.json").is_file());
        let _ = std::fs::remove_dir_all(&root);
    }

    /// A reproduction into a folder that already holds a file it would write (here report.md) overwrites it
    /// only with force; without, it says so and keeps its finished steps, and resume + force recomputes nothing.
    #[test]
    fn a_reproduction_overwrites_nothing_without_force() {
        let root = temp("clash");
        let out = root.join("lin");
        std::fs::create_dir_all(&out).unwrap();
        std::fs::write(out.join("report.md"), "my notes").unwrap();
        let exp = crate::experiment::find("linearity").unwrap();
        let prepared = exp.prepare(true, None, None).unwrap();
        let e = run_experiment(exp, &prepared, &out, false, false, &Quiet).unwrap_err().to_string();
        assert!(e.contains("report.md already exists") && e.contains("--resume --force"), "{e}");
        assert_eq!(std::fs::read_to_string(out.join("report.md")).unwrap(), "my notes");
        assert!(!out.join("summary.json").exists());
        let steps = std::fs::read_to_string(partial_dir(&out).join("checkpoint.jsonl")).unwrap().lines().count() - 1;
        assert!(steps >= 1);
        let done = run_experiment(exp, &prepared, &out, true, true, &Quiet).unwrap();
        assert_eq!(done.reused, steps, "every step came from the checkpoint");
        assert_ne!(std::fs::read_to_string(out.join("report.md")).unwrap(), "my notes");
        assert!(!partial_dir(&out).exists());
        let _ = std::fs::remove_dir_all(&root);
    }

    /// An error from the progress callback stops a kernel computation early (dense tiles and CNN rows) and is
    /// what the call returns.
    #[test]
    fn an_error_from_progress_stops_a_kernel() {
        use crate::kernel::{Architecture, Parameterization};
        use std::sync::atomic::{AtomicUsize, Ordering};
        let (calls, total) = (&AtomicUsize::new(0), &AtomicUsize::new(0));
        let stop_after = |n: usize| {
            move |done: usize, t: usize| {
                calls.fetch_add(1, Ordering::Relaxed);
                total.store(t, Ordering::Relaxed);
                if done >= n {
                    Err(Error::Cancelled)
                } else {
                    Ok(())
                }
            }
        };
        // Two threads, as on CI: with many, every task could start before the second one finishes.
        let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap();
        let arch = Architecture::parse("dense(8),relu,dense(1)", Parameterization::Ntk).unwrap();
        let x = faer::Mat::from_fn(1500, 3, |i, j| ((i * 7 + j * 3) % 11) as f64 / 11.0 - 0.4);
        let r = pool.install(|| crate::kernel::kernel_with_progress::<f64>(&arch, x.as_ref(), None, &stop_after(2)));
        assert!(matches!(r, Err(Error::Cancelled)));
        let (c, t) = (calls.load(Ordering::Relaxed), total.load(Ordering::Relaxed));
        assert!(t > 10 && c < t, "{c} progress calls of {t} tiles: the rest were skipped");

        calls.store(0, Ordering::Relaxed);
        let arch = Architecture::parse("conv(4,3x3,padding=same),relu,global_avg_pool,dense(1)", Parameterization::Ntk)
            .unwrap();
        let shape = crate::kernel::Shape::image(&[4, 4], 2);
        let x = faer::Mat::from_fn(60, 32, |i, j| ((i * 5 + j * 3) % 13) as f64 / 13.0 - 0.5);
        let job = crate::kernel::cnn::CnnKernel::<f64>::new(&arch, &shape, x.as_ref(), None).unwrap();
        assert!(matches!(pool.install(|| job.full(&stop_after(3))), Err(Error::Cancelled)));
        assert!(calls.load(Ordering::Relaxed) < 60);
        assert!(job.full(&no_progress).is_ok());
    }
}
