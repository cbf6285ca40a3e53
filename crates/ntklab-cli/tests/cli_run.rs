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

fn assert_files(dir: &Path, stems: &[&str]) {
    for f in ["summary.json", "report.md"] {
        assert!(dir.join(f).is_file(), "missing {f}");
    }
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
    assert!(report.contains("Fitted slopes"));
}

#[test]
fn catapult_quick_shows_the_three_phases() {
    let d = tmp("cat");
    run_ok(&["run", "catapult", "--quick", "--seed", "0", "--out", "a"], &d);
    let out = d.join("a");
    assert_files(&out, &["loss_curves", "ntk_curves", "phase_diagram", "final_curvature"]);
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
