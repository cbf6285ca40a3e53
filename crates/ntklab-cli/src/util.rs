//! Small helpers shared by commands: progress spinners, output folders, matrix loading.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};

/// A spinner on stderr (hidden when stderr is not a terminal).
pub fn spinner(msg: &str) -> ProgressBar {
    let pb = ProgressBar::new_spinner();
    pb.set_style(ProgressStyle::with_template("{spinner} {msg} [{elapsed_precise}]").expect("valid template"));
    pb.set_message(msg.to_string());
    pb.enable_steady_tick(Duration::from_millis(120));
    pb
}

/// A counted progress bar on stderr (hidden when stderr is not a terminal).
pub fn bar(len: u64, msg: &str) -> ProgressBar {
    let pb = ProgressBar::new(len);
    pb.set_style(
        ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} [{elapsed_precise} < {eta_precise}]")
            .expect("valid template")
            .progress_chars("=> "),
    );
    pb.set_message(msg.to_string());
    pb
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

/// Mark `dir` as created by ntklab.
pub fn mark_dir(dir: &Path) -> Result<()> {
    std::fs::write(dir.join(MARKER), b"created by ntklab; --force may replace this folder\n")
        .with_context(|| format!("cannot write {}", dir.join(MARKER).display()))
}

/// Err unless `dir` may be deleted to be replaced: a folder that ntklab created (it holds [`MARKER`]) and
/// neither the working directory nor one of its parents. `what` names the option in the message.
pub fn check_replaceable(dir: &Path, what: &str) -> Result<()> {
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
    Ok(())
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
