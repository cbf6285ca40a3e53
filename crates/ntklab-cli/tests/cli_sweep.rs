//! End-to-end tests of `ntklab sweep`: a grid over config keys and seeds, one folder per run, the table and the
//! page, and resumption (completed runs skipped, incomplete ones redone).

use std::path::{Path, PathBuf};
use std::process::Command;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_ntklab"))
}

fn tmp(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("ntklab-cli-sweep-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

const BASE: &str = r#"
seed = 1
[data]
name = "teacher"
n = 24
d = 3
n_test = 6
[model]
arch = "dense(16),relu,dense(1)"
[optimizer]
kind = "gd"
lr = 0.5
steps = 20
[probes]
every = 10
"#;

fn sweep(d: &Path, extra: &[&str]) -> std::process::Output {
    bin()
        .args(["sweep", "--config", "base.toml", "--grid", "optimizer.lr=0.1,0.4", "--seeds", "0..2", "--out", "sw"])
        .args(extra)
        .current_dir(d)
        .output()
        .unwrap()
}

fn csv_rows(d: &Path) -> Vec<Vec<String>> {
    std::fs::read_to_string(d.join("sw/sweep.csv"))
        .unwrap()
        .lines()
        .skip(1)
        .map(|l| l.split(',').map(String::from).collect())
        .collect()
}

#[test]
fn grid_times_seeds_runs_each_once_and_resumes() {
    let d = tmp("grid");
    std::fs::write(d.join("base.toml"), BASE).unwrap();
    let o = sweep(&d, &["--jobs", "2"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let rows = csv_rows(&d);
    assert_eq!(rows.len(), 4);
    let mut seen: Vec<(String, String)> = rows.iter().map(|r| (r[1].clone(), r[2].clone())).collect();
    seen.sort();
    assert_eq!(seen, [("0.1", "0"), ("0.1", "1"), ("0.4", "0"), ("0.4", "1")].map(|(a, b)| (a.into(), b.into())));
    for r in &rows {
        assert_eq!(r[3], "completed");
        let run = d.join("sw/runs").join(&r[0]);
        assert!(run.join("report.html").is_file() && run.join("summary.json").is_file());
        // Each run's config is the base with its settings.
        let cfg: toml::Table = std::fs::read_to_string(run.join("config.toml")).unwrap().parse().unwrap();
        assert_eq!(cfg["optimizer"]["lr"].as_float().unwrap().to_string(), r[1]);
        assert_eq!(cfg["seed"].as_integer().unwrap().to_string(), r[2]);
        assert!(r[5].parse::<f64>().unwrap() > 0.0, "final loss");
    }
    // Different seeds, different runs: the final losses are not all equal.
    assert_ne!(rows[0][5], rows[1][5]);
    let html = std::fs::read_to_string(d.join("sw/report.html")).unwrap();
    assert!(html.contains("<figure id=\"plot-sweep\"><svg") && !html.contains("<script"));
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(d.join("sw/sweep.json")).unwrap()).unwrap();
    assert_eq!(json["runs"].as_array().unwrap().len(), 4);

    // Again: nothing to do.
    let o = sweep(&d, &[]);
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("4 already complete"),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    // An interrupted run (left as <id>.partial, its finished folder absent) is redone, the others skipped.
    let victim = d.join("sw/runs").join(&rows[2][0]);
    let before = std::fs::read(victim.join("summary.json")).unwrap();
    std::fs::rename(&victim, victim.with_file_name(format!("{}.partial", rows[2][0]))).unwrap();
    std::fs::remove_file(victim.with_file_name(format!("{}.partial", rows[2][0])).join("summary.json")).unwrap();
    let o = sweep(&d, &[]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success() && out.contains("3 already complete"), "{out}");
    assert_eq!(std::fs::read(victim.join("summary.json")).unwrap(), before, "a redone run gives the same numbers");
    assert_eq!(csv_rows(&d).len(), 4);
    std::fs::remove_dir_all(&d).ok();
}

#[test]
fn bad_grids_fail_before_any_run() {
    let d = tmp("bad");
    std::fs::write(d.join("base.toml"), BASE).unwrap();
    for (grid, want) in [
        ("optimizer.lrr=0.1,0.2", "lrr"),
        ("optimizer.lr=-1", "optimizer.lr"),
        ("optimizer.lr", "key=v1,v2"),
        ("seed=1,2", "--seeds"),
    ] {
        let o = bin()
            .args(["sweep", "--config", "base.toml", "--grid", grid, "--out", "sw"])
            .current_dir(&d)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success() && err.contains(want), "{grid}: {err}");
        assert!(!d.join("sw").exists(), "{grid}: a failed sweep made its folder");
    }
    std::fs::remove_dir_all(&d).ok();
}

#[test]
fn an_interrupt_keeps_finished_runs_and_the_next_call_completes_the_sweep() {
    // Slow enough runs, and enough of them, that the sweep is still busy when interrupted after its first
    // finished run even on a loaded 2-core machine (with four runs the other three once finished first).
    let d = tmp("sigint");
    let slow =
        BASE.replace("steps = 20", "steps = 4000").replace("n = 24", "n = 200").replace("dense(16)", "dense(64)");
    std::fs::write(d.join("base.toml"), slow).unwrap();
    let args = [
        "sweep",
        "--config",
        "base.toml",
        "--grid",
        "optimizer.lr=0.01,0.02,0.03,0.04,0.05,0.06,0.07,0.08",
        "--jobs",
        "1",
        "--out",
        "sw",
    ];
    let mut child = bin().args(args).current_dir(&d).stdout(std::process::Stdio::null()).spawn().unwrap();
    loop {
        if std::fs::read_to_string(d.join("sw/sweep.csv")).map_or(0, |t| t.lines().count()) >= 2 {
            break;
        }
        if let Some(st) = child.try_wait().unwrap() {
            panic!("the sweep ended ({st}) before it could be interrupted");
        }
        std::thread::yield_now();
    }
    // Ctrl-C's default action ends the process on the spot, as SIGKILL does. SIGKILL is sent because a test harness
    // started from a background job inherits SIGINT as ignored, and the sweep would then run to its end.
    child.kill().unwrap();
    let st = child.wait().unwrap();
    assert!(!st.success(), "interrupted");
    let runs: Vec<String> = std::fs::read_dir(d.join("sw/runs"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    let finished: Vec<&String> = runs.iter().filter(|r| !r.ends_with(".partial")).collect();
    assert!(!finished.is_empty() && finished.len() < 8, "{runs:?}");
    for r in &finished {
        assert!(d.join("sw/runs").join(r).join("summary.json").is_file(), "{r} finished without a summary");
    }
    for r in runs.iter().filter(|r| r.ends_with(".partial")) {
        assert!(!d.join("sw/runs").join(r).join("summary.json").exists(), "{r}: an incomplete run has no summary");
    }
    // The table lists exactly the finished runs and parses.
    let rows = csv_rows(&d);
    assert_eq!(rows.len(), finished.len());
    let o = bin().args(args).current_dir(&d).output().unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success() && out.contains(&format!("{} already complete", finished.len())), "{out}");
    assert_eq!(csv_rows(&d).len(), 8);
    assert!(std::fs::read_dir(d.join("sw/runs")).unwrap().all(|e| !e
        .unwrap()
        .file_name()
        .to_string_lossy()
        .ends_with(".partial")));
    std::fs::remove_dir_all(&d).ok();
}

#[test]
fn a_sweep_folder_is_not_a_train_folder_and_has_one_writer() {
    let d = tmp("kinds");
    std::fs::write(d.join("base.toml"), BASE).unwrap();
    assert!(sweep(&d, &[]).status.success());
    // train --force will not delete a sweep folder.
    let o = bin().args(["train", "--config", "base.toml", "--out", "sw", "--force"]).current_dir(&d).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("sweep folder"), "{err}");
    assert!(d.join("sw/sweep.csv").is_file());
    // A lock held (here by this test) keeps a second sweep out; a lock file left by a process that is gone
    // holds no lock and is taken over.
    let held = ntklab::runs::FolderLock::take(&d.join("sw/sweep.lock"), &d.join("sw")).unwrap();
    let o = sweep(&d, &[]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("another ntklab run is writing to"), "{err}");
    drop(held);
    std::fs::write(d.join("sw/sweep.lock"), "pid 999999999\n").unwrap();
    let o = sweep(&d, &[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(!d.join("sw/sweep.lock").exists());
    std::fs::remove_dir_all(&d).ok();
}

#[test]
fn changed_data_files_are_not_done() {
    let d = tmp("data");
    let x = ntklab::data::synthetic::gaussian(10, 3, 1);
    let y = ntklab::data::synthetic::gaussian(10, 1, 2);
    ntklab::data::write_npy_mat(&d.join("x.npy"), x.as_ref()).unwrap();
    ntklab::data::write_npy_mat(&d.join("y.npy"), y.as_ref()).unwrap();
    let cfg = "[data]\nx = \"x.npy\"\ny = \"y.npy\"\n[model]\narch = \"dense(8),relu,dense(1)\"\n[optimizer]\nkind = \"gd\"\nlr = 0.1\nsteps = 5\n";
    std::fs::write(d.join("base.toml"), cfg).unwrap();
    let run = || {
        let o = bin()
            .args(["sweep", "--config", "base.toml", "--grid", "optimizer.lr=0.1,0.2", "--out", "sw"])
            .current_dir(&d)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stdout).to_string()
    };
    assert!(run().contains("0 already complete"));
    assert!(run().contains("2 already complete"));
    let y2 = ntklab::data::synthetic::gaussian(10, 1, 3);
    ntklab::data::write_npy_mat(&d.join("y.npy"), y2.as_ref()).unwrap();
    assert!(run().contains("0 already complete"), "new targets, new runs");
    std::fs::remove_dir_all(&d).ok();
}
