//! `ntklab run <name>`: any reproduction of `ntklab::experiment::REGISTRY`, one generic path. Writes a report
//! folder (summary.json, report.html, report.md, provenance.json, plots) and prints the key numbers; with
//! `--resume` an interrupted run continues from its completed steps. `ntklab report DIR...` remakes reports.

use std::path::PathBuf;

use anyhow::{Context as _, Result};
use clap::Args;
use ntklab::experiment::{find, REGISTRY};

use crate::util::Bars;

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
    let done = ntklab::runs::run_experiment(exp, &prepared, &out, a.resume, a.force, &Bars::default())?;
    if done.reused > 0 {
        println!("resumed: {} completed steps taken from the checkpoint", done.reused);
    }
    println!("{}\n({:.1} s)", done.console, done.seconds);
    println!("wrote {}/{{{}}}", out.display(), done.files.join(","));
    Ok(())
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
                    ntklab::runs::rereport_train(d)?;
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
