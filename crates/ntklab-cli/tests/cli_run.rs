//! End-to-end tests of `ntklab run <name> --quick`: the report folder, the qualitative results read back from
//! summary.json, determinism under a fixed seed, config overrides and errors.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_ntklab"))
}

fn tmp(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("ntklab-cli-run-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn run_ok(args: &[&str], dir: &Path) -> Output {
    let o = bin().args(args).current_dir(dir).output().unwrap();
    assert!(o.status.success(), "{:?} failed: {}", args, String::from_utf8_lossy(&o.stderr));
    o
}

fn summary(dir: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json")).unwrap()).unwrap()
}

/// The page is one self-contained file: every plot inlined as SVG, no script, stylesheet link, image source or
/// URL other than XML namespace names (which browsers never fetch).
pub fn assert_self_contained_html(dir: &Path, stems: &[&str]) {
    let html = std::fs::read_to_string(dir.join("report.html")).unwrap();
    assert!(html.starts_with("<!DOCTYPE html>") && html.trim_end().ends_with("</html>"));
    for s in stems {
        let at = html.find(&format!("<figure id=\"plot-{s}\">")).unwrap_or_else(|| panic!("no figure for {s}"));
        let end = at + html[at..].find("</figure>").unwrap();
        assert!(html[at..end].contains("<svg") && html[at..end].contains("</svg>"), "plot {s} not inlined");
    }
    assert_eq!(html.matches("<figure").count(), stems.len(), "unexpected figures");
    for bad in ["<script", "<link", "<img", "src=", "url("] {
        assert!(!html.contains(bad), "{bad} in report.html");
    }
    for (i, _) in html.match_indices("http") {
        let before = &html[i.saturating_sub(16)..i];
        assert!(before.contains("xmlns"), "external URL in report.html: {}", &html[i..(i + 60).min(html.len())]);
    }
    assert!(html.contains("Provenance") && html.contains("Claim and measurement") || stems.is_empty());
}

fn assert_files(dir: &Path, stems: &[&str]) {
    for f in ["summary.json", "report.md", "report.html", "provenance.json"] {
        assert!(dir.join(f).is_file(), "missing {f}");
    }
    assert!(!dir.join("checkpoint.jsonl").exists(), "a finished run keeps no checkpoint");
    assert_self_contained_html(dir, stems);
    for s in stems {
        for ext in ["svg", "png"] {
            let p = dir.join(format!("{s}.{ext}"));
            assert!(std::fs::metadata(&p).map(|m| m.len() > 100).unwrap_or(false), "missing or empty {}", p.display());
        }
    }
}

#[test]
fn linearity_quick_shows_width_to_the_minus_half() {
    let d = tmp("lin");
    // Default folder runs/linearity under the working directory.
    let o = run_ok(&["run", "linearity", "--quick"], &d);
    let out = d.join("runs/linearity");
    assert_files(&out, &["hessian_vs_width", "ntk_change_vs_width"]);
    let s = summary(&out);
    let fits = s["fits"].as_array().unwrap();
    assert_eq!(fits.len(), 2);
    for f in fits {
        let h = f["hessian"]["exponent"].as_f64().unwrap();
        let c = f["ntk_change"]["exponent"].as_f64().unwrap();
        assert!((-0.65..=-0.35).contains(&h), "Hessian slope {h}");
        assert!((-1.3..=-0.35).contains(&c), "NTK-change slope {c}");
    }
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.contains("slope of ||d2f||"), "{stdout}");
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(report.contains("Claim and measurement") && report.contains("slope of ||d2f|| vs width"));
    let prov: Value = serde_json::from_str(&std::fs::read_to_string(out.join("provenance.json")).unwrap()).unwrap();
    assert_eq!(prov["kind"], "run:linearity");
    assert!(prov["command"].as_array().unwrap().iter().any(|a| a == "--quick"));
    assert!(prov["wall_seconds"].as_f64().unwrap() > 0.0);
}

#[test]
fn catapult_quick_shows_the_three_phases() {
    let d = tmp("cat");
    run_ok(&["run", "catapult", "--quick", "--seed", "0", "--out", "a"], &d);
    let out = d.join("a");
    assert_files(&out, &["loss_curves", "eta_max_by_depth", "ntk_curves", "phase_diagram", "final_curvature"]);
    let s = summary(&out);
    let runs = s["runs"].as_array().unwrap();
    let cmax = s["max_converging_factor"].as_f64().expect("some rate converges");
    for r in runs {
        let c = r["lr_factor"].as_f64().unwrap();
        if c < 1.0 {
            assert_eq!(r["phase"], "lazy", "c = {c}");
            assert_eq!(r["monotone"], true, "c = {c}");
        }
    }
    // A catapult in (1, eta_max]: the loss rises above L0, comes back down, and the NTK top eigenvalue drops.
    let cat = runs.iter().filter(|r| {
        let c = r["lr_factor"].as_f64().unwrap();
        c > 1.0 && c <= cmax && r["phase"] == "catapult"
    });
    let mut any = false;
    for r in cat {
        let (l0, peak, fin) =
            (r["loss_initial"].as_f64().unwrap(), r["loss_peak"].as_f64().unwrap(), r["loss_final"].as_f64().unwrap());
        assert!(peak > l0 && fin < l0);
        any |= r["ntk_max_final"].as_f64().unwrap() < r["ntk_max_initial"].as_f64().unwrap();
    }
    assert!(any, "no catapult run with a lower final NTK eigenvalue");
    // The uv model's eta_max lambda0 is 4 to the bisection's precision; one value per ReLU depth.
    let uv = s["uv_eta_max_lambda0"].as_f64().expect("uv key");
    assert!((uv - 4.0).abs() < 1e-3, "uv eta_max lambda0 = {uv}");
    assert_eq!(
        s["eta_max_lambda0_by_depth"].as_array().unwrap().len(),
        s["config"]["depths"].as_array().unwrap().len()
    );
    // The largest rate diverges (reported, not a crash).
    assert_eq!(runs.last().unwrap()["phase"], "divergent");

    // Same seed, same bytes.
    run_ok(&["run", "catapult", "--quick", "--seed", "0", "--out", "b"], &d);
    assert_eq!(std::fs::read(out.join("summary.json")).unwrap(), std::fs::read(d.join("b/summary.json")).unwrap());
}

#[test]
fn config_overrides_and_errors() {
    let d = tmp("cfg");
    std::fs::write(d.join("c.toml"), "width = 64\nsteps = 20\nlr_factors = [0.5, 8.0]\n").unwrap();
    run_ok(&["run", "catapult", "--quick", "--config", "c.toml", "--seed", "5", "--out", "o"], &d);
    let s = summary(&d.join("o"));
    assert_eq!(s["config"]["width"], 64);
    assert_eq!(s["config"]["seed"], 5);
    assert_eq!(s["runs"].as_array().unwrap().len(), 2);

    std::fs::write(d.join("bad.toml"), "widht = 64\n").unwrap();
    let o = bin()
        .args(["run", "catapult", "--quick", "--config", "bad.toml", "--out", "x"])
        .current_dir(&d)
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("widht"));

    std::fs::write(d.join("bad2.toml"), "lr_factors = []\n").unwrap();
    let o = bin()
        .args(["run", "catapult", "--quick", "--config", "bad2.toml", "--out", "x"])
        .current_dir(&d)
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("lr_factors"));

    let o = bin().args(["run", "nope"]).current_dir(&d).output().unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("linearity"));
}

#[test]
fn linearity_dag_quick_writes_slopes_and_points() {
    let d = tmp("lindag");
    let o = run_ok(&["run", "linearity-dag", "--quick", "--out", "rep"], &d);
    let out = d.join("rep");
    assert_files(&out, &["hessian_vs_in_degree"]);
    let s = summary(&out);
    let (u, b, k) = (
        s["slope_uniform"].as_f64().unwrap(),
        s["slope_bottleneck"].as_f64().unwrap(),
        s["slope_skip"].as_f64().unwrap(),
    );
    assert!(u < -0.3 && k < -0.2 && b > u + 0.25, "slopes {u} {b} {k}");
    let points = s["points"].as_array().unwrap();
    assert_eq!(points.len(), 3 * s["config"]["widths"].as_array().unwrap().len());
    assert!(points
        .iter()
        .all(|p| p["min_in_degree"].as_u64().unwrap() > 0 && p["hessian_norm"].as_f64().unwrap() > 0.0));
    assert!(String::from_utf8_lossy(&o.stdout).contains("slopes of ||d2f|| vs m"));
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(report.contains("bottleneck") && report.contains("hessian_vs_in_degree.svg"));
    std::fs::remove_dir_all(&d).ok();
}

#[test]
fn depth_quick_writes_the_issue_keys() {
    let d = tmp("depth");
    let o = run_ok(&["run", "depth", "--quick", "--out", "rep"], &d);
    let out = d.join("rep");
    assert_files(&out, &["loss_l2", "loss_l4", "deviation", "dynamics_loss"]);
    let s = summary(&out);
    let (ps, depths) = (s["ps"].as_array().unwrap().len(), s["depths"].as_array().unwrap().len());
    for key in ["final_loss", "steps_to_target"] {
        let t = s[key].as_array().unwrap();
        assert!(t.len() == ps && t.iter().all(|row| row.as_array().unwrap().len() == depths), "{key}: {t:?}");
    }
    assert_eq!(s["etas"].as_array().unwrap().len(), s["max_deviation"].as_array().unwrap().len());
    let slope = s["deviation_slope"].as_f64().unwrap();
    assert!((0.8..=1.25).contains(&slope), "{slope}");
    assert!(String::from_utf8_lossy(&o.stdout).contains("speedup"));
    std::fs::remove_dir_all(&d).ok();
}

#[test]
fn lazy_quick_writes_the_issue_keys() {
    let d = tmp("lazy");
    let o = run_ok(&["run", "lazy", "--quick", "--out", "rep"], &d);
    let out = d.join("rep");
    assert_files(
        &out,
        &["test_loss_vs_scale", "kappa", "init_vs_width", "displacement_vs_width", "particles_0", "particles_1"],
    );
    let s = summary(&out);
    let n = s["scales"].as_array().unwrap().len();
    for key in ["test_loss_final", "test_loss_best", "tangent_test_loss", "kappa"] {
        assert_eq!(s[key].as_array().unwrap().len(), n, "{key}");
    }
    let slope = |k: &str| s[k].as_f64().unwrap();
    assert!((slope("slope_init_meanfield") + 0.5).abs() < 0.1 && slope("slope_init_lazy").abs() < 0.1);
    assert!(slope("slope_displacement_meanfield").abs() < 0.15 && (slope("slope_displacement_lazy") + 0.5).abs() < 0.1);
    assert!(String::from_utf8_lossy(&o.stdout).contains("slopes vs width"));
    std::fs::remove_dir_all(&d).ok();
}

#[test]
fn eos_quick_writes_the_issue_keys() {
    let d = tmp("eos");
    // One step size and a short flow keep the CLI test short; the library test runs the whole quick instance.
    std::fs::write(d.join("c.toml"), "etas = [0.125]\nsteps = 400\nflow_time = 8.0\n").unwrap();
    let o = run_ok(&["run", "eos", "--quick", "--config", "c.toml", "--out", "rep"], &d);
    let out = d.join("rep");
    assert_files(&out, &["sharpness", "loss", "sharpness_by_time"]);
    let s = summary(&out);
    let r = &s["runs"][0];
    assert_eq!(r["eta"].as_f64(), Some(0.125));
    assert!(r["first_crossing_step"].as_u64().is_some(), "{r}");
    let ratio = r["sharpness_after_over_2_over_eta"].as_f64().unwrap();
    assert!((0.85..=1.2).contains(&ratio), "{ratio}");
    assert!(r["loss_nonmonotone"].as_bool().unwrap());
    assert!(s["seconds_per_probe"].as_f64().unwrap() > 0.0);
    assert!(String::from_utf8_lossy(&o.stdout).contains("per sharpness probe"));
    std::fs::remove_dir_all(&d).ok();
}

#[test]
fn double_descent_and_spectral_bias_quick_write_the_issue_keys() {
    let d = tmp("dd");
    run_ok(&["run", "double-descent", "--quick", "--out", "dd"], &d);
    assert_files(&d.join("dd"), &["least_squares", "random_features"]);
    let s = summary(&d.join("dd"));
    assert!(s["n"].as_u64().is_some() && s["noise_variance"].as_f64().is_some() && s["signal_r2"].as_f64().is_some());
    let g = s["gamma"].as_array().unwrap().len();
    assert!(g > 0 && s["test_error"].as_array().unwrap().len() == g && s["theory"].as_array().unwrap().len() == g);
    let r = s["rf_ratio"].as_array().unwrap().len();
    for key in ["rf_test_error_ridgeless", "rf_test_error_ridge"] {
        assert_eq!(s[key].as_array().unwrap().len(), r, "{key}");
    }
    run_ok(&["run", "spectral-bias", "--quick", "--out", "sb"], &d);
    assert_files(&d.join("sb"), &["iterations", "eigenvalues", "sphere_spectra"]);
    let s = summary(&d.join("sb"));
    let k = s["k"].as_array().unwrap().len();
    assert!(
        k > 0 && s["iterations"].as_array().unwrap().len() == k && s["ntk_eigenvalues"].as_array().unwrap().len() == k
    );
    assert!(s["slope_iterations"].as_f64().unwrap() > 1.5);
    let dims = s["slope_eigenvalues_by_dim"].as_array().unwrap();
    assert_eq!(dims.len(), 3);
    std::fs::remove_dir_all(&d).ok();
}

#[test]
fn every_u64_seed_is_accepted() {
    // Seeds >= 2^63 used to be read back as negative TOML integers and rejected.
    let d = tmp("seed");
    run_ok(&["run", "catapult", "--quick", "--seed", "18446744073709551615", "--out", "rep"], &d);
    assert_eq!(summary(&d.join("rep"))["config"]["seed"].as_u64(), Some(u64::MAX));
    std::fs::remove_dir_all(&d).ok();
}

#[test]
fn impossible_sizes_fail_before_allocating_and_leave_no_folder() {
    let d = tmp("huge");
    std::fs::write(d.join("w.toml"), "widths = [64, 1000000000]\n").unwrap();
    let o = bin()
        .args(["run", "linearity", "--quick", "--config", "w.toml", "--out", "rep"])
        .current_dir(&d)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("would need") && err.contains("available"), "{err}");
    assert!(!d.join("rep").exists(), "the failed run left its report folder");
    std::fs::remove_dir_all(&d).ok();
}

#[test]
fn list_names_every_reproduction() {
    let d = tmp("list");
    let o = run_ok(&["run", "--list"], &d);
    let text = String::from_utf8_lossy(&o.stdout);
    for n in [
        "linearity",
        "linearity-dag",
        "catapult",
        "nngp-prior",
        "pl",
        "depth",
        "lazy",
        "eos",
        "double-descent",
        "spectral-bias",
    ] {
        assert!(text.lines().any(|l| l.starts_with(n)), "{n} missing from:\n{text}");
    }
    let o = run_ok(&["run", "catapult", "--quick", "--print-config"], &d);
    let cfg: toml::Table = String::from_utf8_lossy(&o.stdout).parse().unwrap();
    assert!(cfg.contains_key("lr_factors") && cfg.contains_key("seed"));
    std::fs::remove_dir_all(&d).ok();
}

#[test]
fn an_interrupted_run_resumes_from_its_completed_steps_to_the_same_result() {
    let d = tmp("resume");
    // Reference: uninterrupted.
    run_ok(&["run", "linearity-dag", "--quick", "--out", "whole"], &d);
    // Killed (SIGKILL: nothing can be cleaned up) once at least two steps are in the checkpoint.
    let mut child = bin()
        .args(["run", "linearity-dag", "--quick", "--out", "cut"])
        .current_dir(&d)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let ckpt = d.join("cut.partial/checkpoint.jsonl");
    loop {
        let lines = std::fs::read_to_string(&ckpt).map_or(0, |t| t.lines().count());
        if lines >= 3 {
            break;
        }
        if let Some(st) = child.try_wait().unwrap() {
            panic!("the run ended ({st}) before it could be interrupted");
        }
        std::thread::yield_now();
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(!d.join("cut").exists(), "an interrupted run has no report folder");
    let o = run_ok(&["run", "linearity-dag", "--quick", "--out", "cut", "--resume"], &d);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("resumed:"), "{text}");
    assert!(!d.join("cut.partial").exists());
    // Same numbers as the uninterrupted run (the summary; provenance differs in wall time).
    assert_eq!(
        std::fs::read(d.join("whole/summary.json")).unwrap(),
        std::fs::read(d.join("cut/summary.json")).unwrap()
    );
    // A checkpoint of another configuration is refused.
    std::fs::create_dir_all(d.join("other.partial")).unwrap();
    std::fs::write(d.join("other.partial/.ntklab-output"), "x").unwrap();
    std::fs::write(d.join("other.partial/checkpoint.jsonl"), "{\"ntklab_checkpoint\":1,\"config_hash\":\"0\"}\n")
        .unwrap();
    let o =
        bin().args(["run", "linearity-dag", "--quick", "--out", "other", "--resume"]).current_dir(&d).output().unwrap();
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("different configuration"));
    std::fs::remove_dir_all(&d).ok();
}

#[test]
fn report_remakes_pages_and_writes_an_index() {
    let d = tmp("report");
    run_ok(&["run", "catapult", "--quick", "--out", "runs/a"], &d);
    std::fs::remove_file(d.join("runs/a/report.html")).unwrap();
    std::fs::remove_file(d.join("runs/a/loss_curves.svg")).unwrap();
    let o = run_ok(&["report", "runs"], &d);
    assert!(String::from_utf8_lossy(&o.stdout).contains("remade 1 report"));
    assert_files(
        &d.join("runs/a"),
        &["loss_curves", "eta_max_by_depth", "ntk_curves", "phase_diagram", "final_curvature"],
    );
    let index = std::fs::read_to_string(d.join("runs/index.html")).unwrap();
    assert!(index.contains("href=\"a/report.html\"") && index.contains("run:catapult"), "{index}");
    std::fs::remove_dir_all(&d).ok();
}
