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

pub use ntklab::runs::{check_replaceable, mark_dir, marked_as, refuse_existing, MARKER};

/// Progress bars for the library's long calls: the first stage makes the bar.
#[derive(Default)]
pub struct Bars {
    bar: std::cell::OnceCell<Progress>,
}

impl ntklab::runs::Watch for Bars {
    fn stage(&self, name: &str, total: u64) {
        self.bar.get_or_init(|| bar(total, name)).set_length(total);
    }
    fn position(&self, done: u64) {
        if let Some(pb) = self.bar.get() {
            pb.set_position(done);
        }
    }
    fn message(&self, msg: &str) {
        if let Some(pb) = self.bar.get() {
            pb.set_message(msg.to_string());
        }
    }
    fn finish(&self) {
        if let Some(pb) = self.bar.get() {
            pb.finish_and_clear();
        }
    }
}
