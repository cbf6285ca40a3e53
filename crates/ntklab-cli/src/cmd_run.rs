//! `ntklab run <name>`: any reproduction of `ntklab::experiment::REGISTRY`, one generic path. Writes a report
//! folder (summary.json, report.html, report.md, provenance.json, plots) and prints the key numbers; with
//! `--resume` an interrupted run continues from its completed steps. `ntklab report DIR...` remakes reports.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use clap::Args;
use ntklab::experiment::{find, Context, Experiment, REGISTRY};

use crate::util::{bar, check_replaceable, ensure_dir, mark_dir, refuse_existing};

/// Arguments of `ntklab run`.
#[derive(Args, Debug)]
pub struct RunArgs {
    /// Which reproduction (`ntklab run --list` shows them).
    #[arg(required_unless_present = "list")]
    pub name: Option<String>,
    /// List the reproductions and exit.
    #[arg(long)]
    pub list: bool,
    /// Report folder (default: runs/<name>).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// A small instance (seconds; for tests and CI) instead of the full-size run.
    #[arg(long)]
    pub quick: bool,
    /// Master seed (data and initializations).
    #[arg(long)]
    pub seed: Option<u64>,
    /// TOML file overriding fields of the configuration (e.g. `widths = [64, 256, 1024]`, `steps = 50`); the
    /// keys are those of `config` in summary.json (`--print-config` shows them).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Print the configuration that would run (as TOML) and exit.
    #[arg(long)]
    pub print_config: bool,
    /// Continue an interrupted run of the same configuration from its completed steps.
    #[arg(long)]
    pub resume: bool,
    /// Overwrite existing outputs (refused otherwise).
    #[arg(long)]
    pub force: bool,
}

/// Run `ntklab run`.
pub fn run(a: RunArgs) -> Result<()> {
    if a.list {
        for e in REGISTRY {
            println!("{:<15} {}", e.name(), e.description());
        }
        return Ok(());
    }
    let name = a.name.as_deref().unwrap_or_default();
    let exp = find(name)?;
    let overrides = match &a.config {
        None => None,
        Some(p) => {
            let text = std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
            Some(text.parse::<toml::Table>().with_context(|| format!("{} is not valid TOML", p.display()))?)
        }
    };
    let prepared = exp
        .prepare(a.quick, overrides.as_ref(), a.seed)
        .with_context(|| a.config.as_ref().map_or("invalid configuration".into(), |p| format!("in {}", p.display())))?;
    if a.print_config {
        let cfg: toml::Value = toml::Value::try_from(&prepared.config).context("writing the configuration")?;
        print!("{}", toml::to_string(&cfg).context("writing the configuration")?);
        return Ok(());
    }
    let out = a.out.clone().unwrap_or_else(|| PathBuf::from("runs").join(name));
    refuse_existing(&[out.join("summary.json"), out.join("report.html")], a.force)?;
    let partial = partial_dir(&out);
    let resuming = a.resume && partial.join("checkpoint.jsonl").is_file();
    if a.resume && !resuming {
        eprintln!("note: nothing to resume in {} (no checkpoint); starting from the beginning", partial.display());
    }
    if partial.exists() && !resuming {
        check_replaceable(&partial, "a new run", "run")?;
        std::fs::remove_dir_all(&partial).with_context(|| format!("cannot remove stale {}", partial.display()))?;
    }
    ensure_dir(&partial)?;
    mark_dir(&partial, "run")?;
    let res = execute(exp, &prepared, &partial, resuming, name);
    match res {
        Ok((console, reused)) => {
            let names = commit(&partial, &out)?;
            if reused > 0 {
                println!("resumed: {reused} completed steps taken from the checkpoint");
            }
            println!("{console}");
            println!("wrote {}/{{{}}}", out.display(), names.join(","));
            Ok(())
        }
        Err(e) => {
            let kept = partial.join("checkpoint.jsonl").is_file()
                && std::fs::read_to_string(partial.join("checkpoint.jsonl")).map_or(0, |t| t.lines().count()) > 1;
            if kept {
                eprintln!(
                    "note: the completed steps are kept in {}; `--resume` continues from them",
                    partial.display()
                );
            } else {
                let _ = std::fs::remove_dir_all(&partial);
            }
            Err(e)
        }
    }
}

/// The hidden sibling a run writes into before it is moved into place.
fn partial_dir(out: &Path) -> PathBuf {
    let name = out.file_name().map_or_else(|| "run".to_string(), |n| n.to_string_lossy().to_string());
    out.with_file_name(format!("{name}.partial"))
}

fn execute(
    exp: &dyn Experiment,
    prepared: &ntklab::experiment::Prepared,
    dir: &Path,
    resume: bool,
    name: &str,
) -> Result<(String, usize)> {
    let pb = bar(1, &format!("{name}: steps"));
    let progress = |done: usize, total: usize| {
        pb.set_length(total as u64);
        pb.set_position(done as u64);
    };
    let mut ctx = Context::new(progress).with_checkpoint(&dir.join("checkpoint.jsonl"), &prepared.hash, resume)?;
    let res = exp.execute(prepared, dir, &mut ctx);
    let reused = ctx.reused();
    drop(ctx);
    pb.finish_and_clear();
    let done = res?;
    let _ = std::fs::remove_file(dir.join("checkpoint.jsonl"));
    Ok((format!("{}\n({:.1} s)", done.console, done.seconds), reused))
}

/// Moves everything from the finished `.partial` folder into `out`; returns the file names.
fn commit(partial: &Path, out: &Path) -> Result<Vec<String>> {
    ensure_dir(out)?;
    let mut names = Vec::new();
    for entry in std::fs::read_dir(partial).with_context(|| format!("cannot list {}", partial.display()))? {
        let entry = entry?;
        let fname = entry.file_name();
        if fname.to_string_lossy() == crate::util::MARKER && out.join(&fname).exists() {
            continue;
        }
        std::fs::rename(entry.path(), out.join(&fname))
            .with_context(|| format!("cannot move {} into {}", entry.path().display(), out.display()))?;
        if fname.to_string_lossy() != crate::util::MARKER {
            names.push(fname.to_string_lossy().to_string());
        }
    }
    let _ = std::fs::remove_dir_all(partial);
    names.sort();
    Ok(names)
}

/// Arguments of `ntklab report`.
#[derive(Args, Debug)]
pub struct ReportArgs {
    /// Run folders, or folders holding runs (searched a few levels down).
    #[arg(required = true)]
    pub dirs: Vec<PathBuf>,
}

/// Run `ntklab report`: remake report.html/report.md/plots of every run found from its summary.json, then write
/// index.html in each folder given.
pub fn run_report(a: ReportArgs) -> Result<()> {
    for root in &a.dirs {
        if !root.is_dir() {
            anyhow::bail!("{} is not a folder", root.display());
        }
        let runs = ntklab::report::find_dirs(root, 6, &|d| {
            d.join("provenance.json").is_file() && d.join("summary.json").is_file()
        });
        let mut made = 0;
        let mut failed = 0;
        for d in &runs {
            // One bad folder is reported and skipped; the others are still remade.
            let res = (|| -> Result<bool> {
                let prov = ntklab::report::Provenance::read(d)?;
                if let Some(name) = prov.kind.strip_prefix("run:") {
                    find(name)?.rereport(d)?;
                    Ok(true)
                } else if prov.kind == "train" {
                    crate::cmd_train::rereport(d)?;
                    Ok(true)
                } else {
                    Ok(false)
                }
            })();
            match res {
                Ok(true) => made += 1,
                Ok(false) => {}
                Err(e) => {
                    failed += 1;
                    eprintln!("warning: cannot remake the report in {}: {e:#}", d.display());
                }
            }
        }
        if failed > 0 {
            eprintln!("{failed} folder(s) skipped");
        }
        let listed = ntklab::report::write_index(root)?;
        println!("{}: remade {made} report(s); index.html lists {listed}", root.display());
    }
    Ok(())
}
