//! `ntklab run <name>`: named reproductions from `ntklab::experiment`, each writing a report folder with plots
//! (SVG + PNG), summary.json (the full result record, config included) and report.md, and printing the key numbers.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use ntklab::experiment::catapult::{self, CatapultConfig, CatapultResult, Phase};
use ntklab::experiment::linearity::{self, LinearityConfig, LinearityResult};
use ntklab::experiment::linearity_dag::{self, Family, LinearityDagConfig, LinearityDagResult};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::plot::{self, Chart, Series};
use crate::util::{bar, check_replaceable, ensure_dir, mark_dir, refuse_existing};

/// The reproductions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Name {
    /// Transition to linearity (Liu, Zhu & Belkin 2020): Hessian norm of f and NTK change vs width.
    Linearity,
    /// Transition to linearity on DAGs (Zhu, Liu & Belkin 2022): Hessian norm vs minimum in-degree, bottleneck.
    LinearityDag,
    /// Catapult phase of large-learning-rate GD (Lewkowycz et al. 2020): lazy / catapult / divergent.
    Catapult,
}

impl Name {
    fn as_str(self) -> &'static str {
        match self {
            Name::Linearity => "linearity",
            Name::LinearityDag => "linearity-dag",
            Name::Catapult => "catapult",
        }
    }
}

/// Arguments of `ntklab run`.
#[derive(Args, Debug)]
pub struct RunArgs {
    /// Which reproduction: linearity, linearity-dag or catapult.
    #[arg(value_enum)]
    pub name: Name,
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
    /// keys are those of `config` in summary.json.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Overwrite existing outputs (refused otherwise).
    #[arg(long)]
    pub force: bool,
}

/// Configs with a master seed.
trait Seeded {
    fn seed_mut(&mut self) -> &mut u64;
}

impl Seeded for LinearityConfig {
    fn seed_mut(&mut self) -> &mut u64 {
        &mut self.seed
    }
}
impl Seeded for LinearityDagConfig {
    fn seed_mut(&mut self) -> &mut u64 {
        &mut self.seed
    }
}
impl Seeded for CatapultConfig {
    fn seed_mut(&mut self) -> &mut u64 {
        &mut self.seed
    }
}

fn set_seed<C: Seeded>(cfg: &mut C, s: u64) {
    *cfg.seed_mut() = s;
}

/// The base config (quick or full), with the TOML overrides and the seed applied.
fn resolve<C: Serialize + DeserializeOwned + Seeded>(base: C, file: Option<&Path>, seed: Option<u64>) -> Result<C> {
    let mut v = toml::Value::try_from(&base).context("serializing the default configuration")?;
    if let Some(p) = file {
        let text = std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
        let over: toml::Table = text.parse().with_context(|| format!("{} is not valid TOML", p.display()))?;
        let table = v.as_table_mut().expect("configs serialize to tables");
        for (k, val) in over {
            if !table.contains_key(&k) {
                let known: Vec<&String> = table.keys().collect();
                anyhow::bail!(
                    "{}: unknown key `{k}` (known: {})",
                    p.display(),
                    known.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
                );
            }
            table.insert(k, val);
        }
    }
    let mut cfg: C = v.try_into().context("invalid configuration")?;
    if let Some(s) = seed {
        // Set after parsing: TOML integers stop at 2^63 - 1, but every u64 is a valid seed.
        set_seed(&mut cfg, s);
    }
    Ok(cfg)
}

fn write_text(path: &Path, text: &str) -> Result<()> {
    ntklab::data::io::write_atomic(path, |w| std::io::Write::write_all(w, text.as_bytes()))?;
    Ok(())
}

fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    write_text(path, &(serde_json::to_string_pretty(value)? + "\n"))
}

/// Run `ntklab run`.
pub fn run(a: RunArgs) -> Result<()> {
    let out = a.out.clone().unwrap_or_else(|| PathBuf::from("runs").join(a.name.as_str()));
    match a.name {
        Name::Linearity => {
            let base = if a.quick { LinearityConfig::quick() } else { LinearityConfig::full() };
            let cfg = resolve(base, a.config.as_deref(), a.seed)?;
            cfg.validate()?;
            in_new_dir(&out, a.force, |o| run_linearity(&cfg, o))
        }
        Name::LinearityDag => {
            let base = if a.quick { LinearityDagConfig::quick() } else { LinearityDagConfig::full() };
            let cfg = resolve(base, a.config.as_deref(), a.seed)?;
            cfg.validate()?;
            in_new_dir(&out, a.force, |o| run_linearity_dag(&cfg, o))
        }
        Name::Catapult => {
            let base = if a.quick { CatapultConfig::quick() } else { CatapultConfig::full() };
            let cfg = resolve(base, a.config.as_deref(), a.seed)?;
            cfg.validate()?;
            in_new_dir(&out, a.force, |o| run_catapult(&cfg, o))
        }
    }
}

/// Runs `f` with the report folder `out`, created if needed; a failure leaves no folder this call created (only an
/// empty one is ever removed).
fn in_new_dir(out: &Path, force: bool, f: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    refuse_existing(&[out.join("summary.json"), out.join("report.md")], force)?;
    // Everything is written into a marked `.partial` sibling and moved into `out` only when the run succeeded,
    // so a failed or interrupted run leaves no half report (and no folder it created).
    let name = out.file_name().map_or_else(|| "run".to_string(), |n| n.to_string_lossy().to_string());
    let partial = out.with_file_name(format!("{name}.partial"));
    if partial.exists() {
        check_replaceable(&partial, "a new run")?;
        std::fs::remove_dir_all(&partial).with_context(|| format!("cannot remove stale {}", partial.display()))?;
    }
    ensure_dir(&partial)?;
    mark_dir(&partial)?;
    if let Err(e) = f(&partial) {
        let _ = std::fs::remove_dir_all(&partial);
        return Err(e);
    }
    ensure_dir(out)?;
    let mut names = Vec::new();
    for entry in std::fs::read_dir(&partial).with_context(|| format!("cannot list {}", partial.display()))? {
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
    let _ = std::fs::remove_dir_all(&partial);
    names.sort();
    println!("wrote {}/{{{}}}", out.display(), names.join(","));
    Ok(())
}

/// Runs `f` with a progress bar fed by its `(done, total)` callback.
fn with_bar<T>(msg: &str, f: impl FnOnce(&mut dyn FnMut(usize, usize)) -> ntklab::Result<T>) -> Result<(T, f64)> {
    let pb = bar(1, msg);
    let t0 = Instant::now();
    let res = f(&mut |done, total| {
        pb.set_length(total as u64);
        pb.set_position(done as u64);
    });
    pb.finish_and_clear();
    Ok((res?, t0.elapsed().as_secs_f64()))
}

// ---------------------------------------------------------------------------------------------------------------
// linearity-dag

fn run_linearity_dag(cfg: &LinearityDagConfig, out: &Path) -> Result<()> {
    let (res, secs) = with_bar("linearity-dag: families x widths x seeds", |p| linearity_dag::run(cfg, p))?;
    write_json(&out.join("summary.json"), &res)?;
    let mut series = Vec::new();
    for (family, fit) in &res.fits {
        let pts: Vec<(f64, f64)> =
            res.points.iter().filter(|p| p.family == *family).map(|p| (p.width as f64, p.hessian_norm)).collect();
        series.push(Series::markers(family.as_str(), pts.clone()));
        let line = pts.iter().map(|&(w, _)| (w, fit.eval(w))).collect();
        series.push(Series::line(format!("{} fit: slope {:+.2}", family.as_str(), fit.exponent), line));
    }
    if let Some(p0) = res.points.iter().find(|p| p.family == Family::Uniform) {
        let (w0, v0) = (p0.width as f64, p0.hessian_norm);
        series.push(Series::line(
            "slope -1/2",
            cfg.widths.iter().map(|&w| (w as f64, v0 * (w as f64 / w0).powf(-0.5))).collect(),
        ));
    }
    let chart = Chart {
        title: "Output Hessian of DAG networks at init".into(),
        x_label: "width m (minimum in-degree, except the bottleneck)".into(),
        y_label: "||d2f/dw2||".into(),
        log_x: true,
        log_y: true,
        series,
        hlines: vec![],
    };
    plot::save(&chart, &out.join("hessian_vs_in_degree"))?;
    write_text(&out.join("report.md"), &linearity_dag_report(&res, secs))?;
    println!(
        "transition to linearity on DAGs ({secs:.1} s): {} activation, {} hidden layers",
        cfg.activation, cfg.hidden_layers
    );
    println!("{:>11} {:>7} {:>10} {:>10} {:>13}", "family", "width", "min in-deg", "params", "||d2f||");
    for p in &res.points {
        println!(
            "{:>11} {:>7} {:>10} {:>10} {:>13.5e}",
            p.family.as_str(),
            p.width,
            p.min_in_degree,
            p.params,
            p.hessian_norm
        );
    }
    println!(
        "slopes of ||d2f|| vs m: uniform {:+.3}, bottleneck {:+.3}, skip {:+.3} (theory: -0.5, 0, -0.5)",
        res.slope_uniform, res.slope_bottleneck, res.slope_skip
    );
    Ok(())
}

fn linearity_dag_report(res: &LinearityDagResult, secs: f64) -> String {
    let c = &res.config;
    let mut s = String::new();
    let _ = writeln!(s, "# Transition to linearity of DAG networks\n");
    let _ = writeln!(
        s,
        "Zhu, Liu & Belkin (2022): for a network on any directed acyclic graph the spectral norm of the Hessian of \
         the output w.r.t. the parameters is O~(1/sqrt(m)) at initialization, m the minimum in-degree of the \
         neurons outside the input and first layers; a neuron whose in-degree stays fixed (a bottleneck) keeps it \
         O(1).\n"
    );
    let _ = writeln!(
        s,
        "Setup: {} hidden layers of width m, {} activation, NTK parameterization, no biases, d = {}; bottleneck \
         width k = {}; ||d2f|| by Lanczos on exact output-Hessian products at {} inputs x {} seeds; {:.1} s.\n",
        c.hidden_layers, c.activation, c.input_dim, c.bottleneck, c.hessian_inputs, c.seeds, secs
    );
    let _ = writeln!(s, "| family | claim | measured slope of ||d2f|| vs m |\n|---|---|---|");
    let _ = writeln!(s, "| uniform (in-degrees m and 2m) | -0.5 | {:+.3} |", res.slope_uniform);
    let _ = writeln!(s, "| bottleneck (k neurons feeding m) | 0 | {:+.3} |", res.slope_bottleneck);
    let _ = writeln!(s, "| skip (input into every layer) | -0.5 | {:+.3} |\n", res.slope_skip);
    let _ = writeln!(s, "| family | m | min in-degree | params | mean ||d2f|| | std |\n|---|---|---|---|---|---|");
    for p in &res.points {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {:.4e} | {:.2e} |",
            p.family.as_str(),
            p.width,
            p.min_in_degree,
            p.params,
            p.hessian_norm,
            p.hessian_norm_std
        );
    }
    let _ = writeln!(s, "\n![Hessian norm vs width](hessian_vs_in_degree.svg)");
    s
}

// ---------------------------------------------------------------------------------------------------------------
// linearity

fn run_linearity(cfg: &LinearityConfig, out: &Path) -> Result<()> {
    let (res, secs) = with_bar("linearity: widths x seeds", |p| linearity::run(cfg, p))?;
    write_json(&out.join("summary.json"), &res)?;
    linearity_plots(&res, out)?;
    let report = linearity_report(&res, secs);
    write_text(&out.join("report.md"), &report)?;
    println!(
        "transition to linearity ({:.1} s): {} activation, ntk parameterization, d = {}",
        secs, cfg.activation, cfg.input_dim
    );
    println!("{:>6} {:>7} {:>10} {:>13} {:>13}", "depth", "width", "params", "||d2f||", "dNTK (rel)");
    for p in &res.points {
        println!("{:>6} {:>7} {:>10} {:>13.5e} {:>13.5e}", p.depth, p.width, p.params, p.hessian_norm, p.ntk_change);
    }
    for f in &res.fits {
        println!(
            "depth {}: slope of ||d2f|| vs width {:+.3} (sqrt(ln m)-corrected {:+.3}); slope of NTK change {:+.3}",
            f.depth, f.hessian.exponent, f.hessian_log_corrected.exponent, f.ntk_change.exponent
        );
    }
    println!("theory: -0.5 for ||d2f|| (up to log factors); between -1 and -0.5 for the NTK change (see report.md)");
    Ok(())
}

fn linearity_plots(res: &LinearityResult, out: &Path) -> Result<()> {
    type Get = fn(&linearity::LinearityPoint) -> f64;
    type Fit = fn(&linearity::LinearityFit) -> ntklab::experiment::PowerLawFit;
    let panels: [(&str, &str, &str, Get, Fit); 2] = [
        (
            "hessian_vs_width",
            "Spectral norm of the output Hessian at init",
            "||d2f/dw2||",
            |p| p.hessian_norm,
            |f| f.hessian,
        ),
        (
            "ntk_change_vs_width",
            "Relative NTK change after GD",
            "||K_T - K_0||_F / ||K_0||_F",
            |p| p.ntk_change,
            |f| f.ntk_change,
        ),
    ];
    for (stem, title, ylabel, get, fit) in panels {
        let mut series = Vec::new();
        for f in &res.fits {
            let pts: Vec<(f64, f64)> =
                res.points.iter().filter(|p| p.depth == f.depth).map(|p| (p.width as f64, get(p))).collect();
            let ft = fit(f);
            series.push(Series::markers(format!("{}-layer net", f.depth), pts.clone()));
            let line: Vec<(f64, f64)> = pts.iter().map(|&(w, _)| (w, ft.eval(w))).collect();
            series.push(Series::line(format!("{}-layer fit: slope {:+.2}", f.depth, ft.exponent), line));
        }
        // A reference slope -1/2 through the first point of the first depth.
        if let Some(p0) = res.points.first() {
            let (w0, v0) = (p0.width as f64, get(p0));
            let ws: Vec<f64> = res.points.iter().filter(|p| p.depth == p0.depth).map(|p| p.width as f64).collect();
            series.push(Series::line("slope -1/2", ws.iter().map(|&w| (w, v0 * (w / w0).powf(-0.5))).collect()));
        }
        let chart = Chart {
            title: title.into(),
            x_label: "width m".into(),
            y_label: ylabel.into(),
            log_x: true,
            log_y: true,
            series,
            hlines: vec![],
        };
        plot::save(&chart, &out.join(stem))?;
    }
    Ok(())
}

fn linearity_report(res: &LinearityResult, secs: f64) -> String {
    let c = &res.config;
    let mut s = String::new();
    let _ = writeln!(s, "# Transition to linearity\n");
    let _ = writeln!(
        s,
        "Liu, Zhu & Belkin (NeurIPS 2020): in the NTK parameterization the Hessian of the network output w.r.t. the \
         parameters has spectral norm O~(1/sqrt(m)) at initialization, so wide networks are nearly linear in their \
         parameters and their NTK barely moves in training.\n"
    );
    let _ = writeln!(
        s,
        "Setup: MLPs with {} Dense layers, activation `{}`, ntk parameterization, no biases, d = {}; widths {:?} \
         (depth >= 3 up to {}); {} seeds. The Hessian norm ‖d²f/dw²‖₂ is measured by Lanczos (largest magnitude, {} steps, tol {:.0e}) \
         on exact Hessian-vector products of f at {} inputs per seed. The NTK change is \
         ||K_T - K_0||_F / ||K_0||_F on N = {} points (random ReLU teacher on the sphere) after {} GD steps on MSE \
         at eta = {} x 2N / lambda_max(K_0). Seed {}; {:.1} s.\n",
        c.depths.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(" / "),
        c.activation,
        c.input_dim,
        c.widths,
        c.deep_max_width,
        c.seeds,
        c.lanczos_max_iter,
        c.lanczos_tol,
        c.hessian_inputs,
        c.n_train,
        c.steps,
        c.lr_factor,
        c.seed,
        secs
    );
    let _ = writeln!(s, "## Fitted slopes (log-log vs width)\n");
    let _ = writeln!(s, "| depth | Hessian norm | Hessian norm / sqrt(ln m) | NTK change |");
    let _ = writeln!(s, "|---|---|---|---|");
    for f in &res.fits {
        let _ = writeln!(
            s,
            "| {} | {:+.3} (R^2 {:.3}) | {:+.3} | {:+.3} (R^2 {:.3}) |",
            f.depth,
            f.hessian.exponent,
            f.hessian.r2,
            f.hessian_log_corrected.exponent,
            f.ntk_change.exponent,
            f.ntk_change.r2
        );
    }
    let _ = writeln!(
        s,
        "\nReading: the Hessian slope should be close to -1/2; at moderate widths it sits a little above, because \
         for the two-layer net ||d2f|| is set by the largest of m Gaussian readout weights, ~ sqrt(2 ln m) / sqrt(m) \
         (the corrected column divides that out). The NTK change obeys Liu et al.'s bound O(||d2f|| R) = \
         O(1/sqrt(m)), but from a random initialization it is typically smaller, O(1/m) (Dyer & Gur-Ari 2019; \
         Huang & Yau 2020): first-order changes of the per-neuron terms have random signs and cancel. Slopes between \
         -1 and -1/2 are therefore expected for it; -1/2 is the worst case, not the typical one.\n"
    );
    let _ = writeln!(s, "## Measurements (means over seeds)\n");
    let _ = writeln!(
        s,
        "| depth | width | params | Hessian norm | std | NTK change | std | lr | loss 0 -> T | Lanczos converged |"
    );
    let _ = writeln!(s, "|---|---|---|---|---|---|---|---|---|---|");
    for p in &res.points {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {:.4e} | {:.1e} | {:.4e} | {:.1e} | {:.3} | {:.3e} -> {:.3e} | {} |",
            p.depth,
            p.width,
            p.params,
            p.hessian_norm,
            p.hessian_norm_std,
            p.ntk_change,
            p.ntk_change_std,
            p.lr,
            p.loss_initial,
            p.loss_final,
            p.lanczos_converged
        );
    }
    let _ = writeln!(
        s,
        "\nPlots: `hessian_vs_width.svg`, `ntk_change_vs_width.svg` (and .png). Full record: `summary.json`."
    );
    s
}

// ---------------------------------------------------------------------------------------------------------------
// catapult

fn run_catapult(cfg: &CatapultConfig, out: &Path) -> Result<()> {
    let (res, secs) = with_bar("catapult: learning rates", |p| catapult::run(cfg, p))?;
    write_json(&out.join("summary.json"), &res)?;
    catapult_plots(&res, out)?;
    write_text(&out.join("report.md"), &catapult_report(&res, secs))?;
    println!(
        "catapult ({:.1} s): two-layer ReLU net, width {}, N = {}, d = {}, {} GD steps",
        secs, cfg.width, cfg.n_train, cfg.input_dim, cfg.steps
    );
    println!(
        "lambda0 = lambda_max(NTK)/N = {:.6} -> eta_crit = 2/lambda0 = {:.6}; learning rates in units of eta_crit:",
        res.lambda0, res.eta_crit
    );
    println!(
        "{:>8} {:>11} {:>10} {:>12} {:>12} {:>12}",
        "eta/crit", "phase", "monotone", "peak/L0", "final/L0", "lam_T/lam_0"
    );
    for r in res.runs.iter().chain(&res.refinement) {
        println!(
            "{:>8.3} {:>11} {:>10} {:>12.3e} {:>12.3e} {:>12.4}",
            r.lr_factor,
            r.phase.to_string(),
            r.monotone,
            r.loss_peak / r.loss_initial,
            r.loss_final / r.loss_initial,
            r.ntk_max_final / r.ntk_max_initial
        );
    }
    println!("{}", eta_max_line(&res));
    Ok(())
}

fn eta_max_line(res: &CatapultResult) -> String {
    match (res.max_converging_factor, res.first_failing_factor) {
        (Some(a), Some(b)) => format!(
            "measured eta_max in [{a:.3}, {b:.3}] x 2/lambda0 (i.e. {:.2}/lambda0 .. {:.2}/lambda0); the uv model \
             of Lewkowycz et al. predicts 2 x 2/lambda0",
            2.0 * a,
            2.0 * b
        ),
        (Some(a), None) => format!("every rate converged: eta_max > {a:.3} x 2/lambda0 (extend lr_factors)"),
        (None, Some(b)) => format!("even the smallest rate ({b:.3} x 2/lambda0) failed to converge"),
        (None, None) => "no runs".into(),
    }
}

fn run_label(r: &catapult::CatapultRun) -> String {
    format!("{:.2} ({})", r.lr_factor, r.phase)
}

fn catapult_plots(res: &CatapultResult, out: &Path) -> Result<()> {
    // Curves of the converged runs and of the first one that did not converge (later ones only blow up faster).
    let first_fail = res.runs.iter().position(|r| !r.phase.converged()).map_or(res.runs.len(), |k| k + 1);
    let runs: Vec<&catapult::CatapultRun> = res.runs.iter().take(first_fail).collect();
    let loss = Chart {
        title: "Training loss / L0 (eta in units of 2/lambda0)".into(),
        x_label: "GD step".into(),
        y_label: "L_t / L_0".into(),
        log_x: false,
        log_y: true,
        series: runs
            .iter()
            .map(|r| {
                Series::line(
                    run_label(r),
                    r.losses.iter().enumerate().map(|(i, l)| (i as f64, l / r.loss_initial)).collect(),
                )
            })
            .collect(),
        hlines: vec![("L_0".into(), 1.0)],
    };
    plot::save(&loss, &out.join("loss_curves"))?;
    let ntk = Chart {
        title: "Top NTK eigenvalue / its initial value".into(),
        x_label: "GD step".into(),
        y_label: "lambda_max(K_t) / lambda_max(K_0)".into(),
        log_x: false,
        log_y: true,
        series: runs
            .iter()
            .map(|r| {
                Series::line(
                    run_label(r),
                    r.ntk_max.iter().enumerate().map(|(i, l)| (i as f64, l / r.ntk_max_initial)).collect(),
                )
            })
            .collect(),
        hlines: vec![("initial".into(), 1.0)],
    };
    plot::save(&ntk, &out.join("ntk_curves"))?;
    let all: Vec<&catapult::CatapultRun> = res.runs.iter().chain(&res.refinement).collect();
    let thr = res.config.divergence_factor;
    let mut series = Vec::new();
    for ph in [Phase::Lazy, Phase::Catapult, Phase::Unresolved, Phase::Divergent] {
        let pts: Vec<(f64, f64)> = all
            .iter()
            .filter(|r| r.phase == ph)
            .map(|r| (r.lr_factor, if ph == Phase::Divergent { thr } else { r.loss_peak / r.loss_initial }))
            .collect();
        if !pts.is_empty() {
            let name = if ph == Phase::Divergent { format!("divergent (drawn at {thr:.0e})") } else { ph.to_string() };
            series.push(Series::markers(name, pts));
        }
    }
    let phase = Chart {
        title: "Phase diagram: peak loss / L0 vs learning rate".into(),
        x_label: "eta / (2/lambda0)".into(),
        y_label: "max_t L_t / L_0".into(),
        log_x: false,
        log_y: true,
        series,
        hlines: vec![],
    };
    plot::save(&phase, &out.join("phase_diagram"))?;
    let conv: Vec<(f64, f64)> = all
        .iter()
        .filter(|r| r.phase.converged())
        .map(|r| (r.lr_factor, r.ntk_max_final / r.ntk_max_initial))
        .collect();
    let mut xs: Vec<f64> = all.iter().map(|r| r.lr_factor).collect();
    xs.sort_by(|a, b| a.total_cmp(b));
    let flat = Chart {
        title: "Final top NTK eigenvalue of converged runs".into(),
        x_label: "eta / (2/lambda0)".into(),
        y_label: "lambda_max(K_T) / lambda_max(K_0)".into(),
        log_x: false,
        log_y: false,
        series: vec![
            Series::markers("converged runs", conv),
            Series::line(
                "stability bound 2/eta (= 1/c)",
                xs.iter().filter(|&&c| c >= 0.5).map(|&c| (c, 1.0 / c)).collect(),
            ),
        ],
        hlines: vec![("initial".into(), 1.0)],
    };
    plot::save(&flat, &out.join("final_curvature"))?;
    Ok(())
}

fn catapult_report(res: &CatapultResult, secs: f64) -> String {
    let c = &res.config;
    let mut s = String::new();
    let _ = writeln!(s, "# Catapult phase of large-learning-rate gradient descent\n");
    let _ = writeln!(
        s,
        "Lewkowycz, Bahri, Dyer, Sohl-Dickstein & Gur-Ari (2020): with MSE loss, GD on a wide network is lazy for \
         eta < 2/lambda0; for larger rates the loss first grows, the top NTK eigenvalue drops until the run fits in \
         the new, flatter region (the catapult), and beyond eta_max training diverges. Their solvable two-layer \
         linear (uv) model has eta_max = 4/lambda0; they report larger maximal rates for ReLU networks.\n"
    );
    let _ = writeln!(
        s,
        "Setup: f(x) = (1/sqrt(m)) sum_i a_i relu(w_i . x / sqrt(d)), ntk parameterization, m = {}, d = {}; N = {} \
         points on the sphere with a random ReLU-teacher target; full-batch GD on L = 1/(2N) sum (f - y)^2 for {} \
         steps from the same initialization at every rate. lambda0 = lambda_max(K_0)/N = {:.6}, eta_crit = \
         2/lambda0 = {:.6}. Seed {}; {:.1} s.\n",
        c.width, c.input_dim, c.n_train, c.steps, res.lambda0, res.eta_crit, c.seed, secs
    );
    let _ = writeln!(
        s,
        "Phases: lazy = the loss never exceeds L0 and ends below it; catapult = it exceeds L0, then ends below it; \
         divergent = non-finite or above {:.0e} L0; unresolved = still >= L0 after all steps.\n",
        c.divergence_factor
    );
    let _ = writeln!(s, "## Result\n\n{}\n", eta_max_line(res));
    let _ = writeln!(s, "| eta / eta_crit | eta | phase | monotone | peak L / L0 (step) | final L / L0 | lambda_T / lambda_0 | status |");
    let _ = writeln!(s, "|---|---|---|---|---|---|---|---|");
    for r in res.runs.iter().chain(&res.refinement) {
        let _ = writeln!(
            s,
            "| {:.3} | {:.4} | {} | {} | {:.3e} ({}) | {:.3e} | {:.4} | {} |",
            r.lr_factor,
            r.lr,
            r.phase,
            r.monotone,
            r.loss_peak / r.loss_initial,
            r.peak_step,
            r.loss_final / r.loss_initial,
            r.ntk_max_final / r.ntk_max_initial,
            r.status
        );
    }
    if !res.refinement.is_empty() {
        let _ = writeln!(s, "\n(The last {} rows are the bisection for eta_max.)", res.refinement.len());
    }
    let _ = writeln!(
        s,
        "\nPlots: `loss_curves`, `ntk_curves`, `phase_diagram`, `final_curvature` (.svg and .png). In \
         `final_curvature` converged catapult runs should sit below the line 1/c, i.e. end with \
         lambda_max < 2/eta where GD at that rate is stable. Full record with every curve: `summary.json`."
    );
    s
}
