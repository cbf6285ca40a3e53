//! Small helpers shared by commands: progress spinners, output folders, matrix loading.

use std::io::IsTerminal;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};

/// Progress on stderr: an indicatif bar or spinner with elapsed time and ETA on a terminal; otherwise (logs,
/// CI, pipes) a line when a stage starts, a line at most every 10 s while it runs, and one when it ends.
pub struct Progress {
    pb: ProgressBar,
    lines: Option<std::sync::Mutex<LineState>>,
    /// The furthest position reported (reports from worker threads may arrive out of order).
    pos: std::sync::atomic::AtomicU64,
}

struct LineState {
    msg: String,
    started: Instant,
    last: Instant,
    len: u64,
}

impl Progress {
    fn new(pb: ProgressBar, msg: &str, len: u64) -> Progress {
        let lines = (!std::io::stderr().is_terminal()).then(|| {
            eprintln!("{msg} ...");
            let now = Instant::now();
            std::sync::Mutex::new(LineState { msg: msg.to_string(), started: now, last: now, len })
        });
        Progress { pb, lines, pos: std::sync::atomic::AtomicU64::new(0) }
    }

    /// Total units of work.
    pub fn set_length(&self, len: u64) {
        self.pb.set_length(len);
        if let Some(l) = &self.lines {
            if let Ok(mut g) = l.lock() {
                g.len = len;
            }
        }
    }

    /// Units done.
    pub fn set_position(&self, pos: u64) {
        let prev = self.pos.fetch_max(pos, std::sync::atomic::Ordering::Relaxed);
        if pos < prev {
            return;
        }
        self.pb.set_position(pos);
        if let Some(l) = &self.lines {
            if let Ok(mut g) = l.lock() {
                if g.last.elapsed() >= Duration::from_secs(10) && g.len > 0 && pos < g.len {
                    let el = g.started.elapsed().as_secs_f64();
                    let eta = if pos > 0 { el * (g.len - pos) as f64 / pos as f64 } else { f64::NAN };
                    eprintln!(
                        "{}: {pos}/{} ({:.0} %), {el:.0} s elapsed, about {eta:.0} s left",
                        g.msg,
                        g.len,
                        100.0 * pos as f64 / g.len as f64
                    );
                    g.last = Instant::now();
                }
            }
        }
    }

    /// A short status after the message (e.g. the current loss).
    pub fn set_message(&self, m: String) {
        self.pb.set_message(m);
    }

    /// Done: clears the bar (a terminal) or prints the time taken (otherwise).
    pub fn finish_and_clear(&self) {
        self.pb.finish_and_clear();
        if let Some(l) = &self.lines {
            if let Ok(g) = l.lock() {
                eprintln!("{}: done in {:.1} s", g.msg, g.started.elapsed().as_secs_f64());
            }
        }
    }

    /// No output at all (runs inside a sweep).
    pub fn hidden() -> Progress {
        Progress { pb: ProgressBar::hidden(), lines: None, pos: std::sync::atomic::AtomicU64::new(0) }
    }
}

/// A spinner for work of unknown length.
pub fn spinner(msg: &str) -> Progress {
    let pb = ProgressBar::new_spinner();
    pb.set_style(ProgressStyle::with_template("{spinner} {msg} [{elapsed_precise}]").expect("valid template"));
    pb.set_message(msg.to_string());
    pb.enable_steady_tick(Duration::from_millis(120));
    Progress::new(pb, msg, 0)
}

/// A counted progress bar with an ETA.
pub fn bar(len: u64, msg: &str) -> Progress {
    let pb = ProgressBar::new(len);
    pb.set_style(
        ProgressStyle::with_template("{prefix} [{bar:40}] {pos}/{len} [{elapsed_precise} < {eta_precise}] {msg}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    pb.set_prefix(msg.to_string());
    Progress::new(pb, msg, len)
}

/// Create the output folder (and parents) if needed.
pub fn ensure_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create output folder {}", dir.display()))
}

/// Load an N x d data matrix from .npy/.csv with the file named in errors.
pub fn load_matrix(path: &Path, what: &str) -> Result<faer::Mat<f64>> {
    ntklab::data::read_matrix(path).with_context(|| format!("reading {what}"))
}

/// The file ntklab leaves in every folder it creates as a whole (run folders), so that `--force` can tell its
/// own output from anything else.
pub const MARKER: &str = ".ntklab-output";

/// Mark `dir` as created by ntklab as a folder of `kind` (`train`, `run`, `sweep`, `kernel`).
pub fn mark_dir(dir: &Path, kind: &str) -> Result<()> {
    std::fs::write(dir.join(MARKER), format!("created by ntklab; --force may replace this folder\nkind: {kind}\n"))
        .with_context(|| format!("cannot write {}", dir.join(MARKER).display()))
}

/// Err unless `dir` may be deleted to be replaced by a folder of `kind`: a folder that ntklab created (it holds
/// [`MARKER`]) as that kind (markers from before kinds were recorded match any), and neither the working
/// directory nor one of its parents. `what` names the option in the message.
pub fn check_replaceable(dir: &Path, what: &str, kind: &str) -> Result<()> {
    let canon = dir.canonicalize().with_context(|| format!("cannot resolve {}", dir.display()))?;
    let cwd = std::env::current_dir().and_then(|c| c.canonicalize()).context("cannot resolve the working directory")?;
    if cwd.starts_with(&canon) {
        anyhow::bail!(
            "refusing to replace {}: it is the working directory or one of its parents ({what} never deletes those)",
            dir.display()
        );
    }
    if !canon.is_dir() || !canon.join(MARKER).is_file() {
        anyhow::bail!(
            "refusing to replace {}: it was not created by ntklab (no {MARKER} file in it), so {what} will not delete \
             it; remove it yourself or choose another --out",
            dir.display()
        );
    }
    let marker = std::fs::read_to_string(canon.join(MARKER)).unwrap_or_default();
    if let Some(found) = marker.lines().find_map(|l| l.strip_prefix("kind: ")) {
        if found.trim() != kind {
            anyhow::bail!(
                "refusing to replace {}: it is a {} folder, not a {kind} folder, so {what} will not delete it",
                dir.display(),
                found.trim()
            );
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
pub fn refuse_existing(paths: &[std::path::PathBuf], force: bool) -> Result<()> {
    if force {
        return Ok(());
    }
    if let Some(p) = paths.iter().find(|p| p.exists()) {
        anyhow::bail!("{} already exists (pass --force to overwrite it, or choose another output)", p.display());
    }
    Ok(())
}
