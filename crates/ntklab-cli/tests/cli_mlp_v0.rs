//! The graph engine reproduces the MLP-only implementation it replaced: fixtures made once by the binary of
//! commit cc65eac (`tools/make_mlp_v0_fixtures.sh`) for a 3-16-8-2 tanh/ReLU net in muP with alpha = 1.3:
//! init bytes, the full empirical NTK, loss-Hessian and Gauss-Newton eigenvalues, and 40 momentum steps with
//! probes. Same arithmetic in the same order up to GEMM blocking, so agreement is to rounding (1e-12 relative).

use std::path::{Path, PathBuf};
use std::process::Command;

use faer::Mat;
use ntklab::net::{load_mlp, LoadOptions};
use serde_json::Value;

const ARCH: &str = "dense(16,w_std=1.3,b_std=0.1),tanh,dense(8),relu,dense(2,b_std=0.2)";

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/mlp_v0")
}

fn tmp() -> PathBuf {
    let d = std::env::temp_dir().join(format!("ntklab-cli-mlp-v0-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn ntklab(args: &[&str]) {
    let o = Command::new(env!("CARGO_BIN_EXE_ntklab")).args(args).output().unwrap();
    assert!(o.status.success(), "{args:?}: {}", String::from_utf8_lossy(&o.stderr));
}

fn rel(a: &Mat<f64>, b: &Mat<f64>) -> f64 {
    assert_eq!((a.nrows(), a.ncols()), (b.nrows(), b.ncols()));
    (a - b).norm_max() / b.norm_max()
}

fn close(a: f64, b: f64, tol: f64, what: &str) {
    assert!((a - b).abs() <= tol * b.abs().max(1e-300), "{what}: {a} vs reference {b}");
}

#[test]
fn graph_engine_reproduces_the_mlp_implementation() {
    let (f, d) = (fixtures(), tmp());
    let p = |s: &str| f.join(s).to_string_lossy().to_string();
    let q = |s: &str| d.join(s).to_string_lossy().to_string();
    // Initialization: the same file, byte for byte.
    ntklab(&[
        "init",
        "--arch",
        ARCH,
        "--input-dim",
        "3",
        "--parameterization",
        "mup",
        "--alpha",
        "1.3",
        "--seed",
        "5",
        "--out",
        &q("m.safetensors"),
    ]);
    assert_eq!(std::fs::read(q("m.safetensors")).unwrap(), std::fs::read(p("model.safetensors")).unwrap());
    // Empirical NTK, all output blocks.
    ntklab(&["ntk", "--model", &p("model.safetensors"), "--x", &p("x.npy"), "--full", "--out", &q("ntk.npy")]);
    let (got, want) = (
        ntklab::data::read_matrix(&d.join("ntk.npy")).unwrap(),
        ntklab::data::read_matrix(&f.join("ntk_full.npy")).unwrap(),
    );
    assert!(rel(&got, &want) < 1e-12, "empirical NTK differs by {:e}", rel(&got, &want));
    // Loss, gradient norm, Hessian and Gauss-Newton eigenvalues.
    ntklab(&[
        "hessian",
        "--model",
        &p("model.safetensors"),
        "--x",
        &p("x.npy"),
        "--y",
        &p("y.npy"),
        "--top",
        "3",
        "--json",
        &q("h.json"),
    ]);
    let read = |path: PathBuf| -> Value { serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap() };
    let (h, h0) = (read(d.join("h.json")), read(f.join("hessian.json")));
    close(h["loss_value"].as_f64().unwrap(), h0["loss_value"].as_f64().unwrap(), 1e-12, "loss");
    close(h["gradient_norm"].as_f64().unwrap(), h0["gradient_norm"].as_f64().unwrap(), 1e-12, "gradient norm");
    for part in ["hessian", "gauss_newton"] {
        let (a, b) = (h[part]["eigenvalues"].as_array().unwrap(), h0[part]["eigenvalues"].as_array().unwrap());
        assert_eq!(a.len(), b.len());
        // Lanczos stops at a 1e-8 residual; Ritz values are then accurate to ~residual^2 and both runs take the
        // same path (same start vector, same products to rounding).
        for (x, y) in a.iter().zip(b) {
            close(x.as_f64().unwrap(), y.as_f64().unwrap(), 1e-10, part);
        }
    }
    // Training: 40 momentum steps with probes.
    ntklab(&["train", "--config", &p("train.toml"), "--out", &q("run")]);
    let (a, b) = (
        load_mlp(&d.join("run/model.safetensors"), &LoadOptions::default()).unwrap(),
        load_mlp(&f.join("trained.safetensors"), &LoadOptions::default()).unwrap(),
    );
    let scale = b.params().iter().fold(0.0f64, |m, v| m.max(v.abs()));
    let diff = a.params().iter().zip(b.params()).fold(0.0f64, |m, (x, y)| m.max((x - y).abs()));
    assert!(diff <= 1e-12 * scale, "trained parameters differ by {diff:e} (scale {scale})");
    let lines = |path: PathBuf| -> Vec<Value> {
        std::fs::read_to_string(path).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    };
    let (r, r0) = (lines(d.join("run/records.jsonl")), lines(f.join("records.jsonl")));
    assert_eq!(r.len(), r0.len());
    for (x, y) in r.iter().zip(&r0) {
        for key in ["loss", "sharpness", "ntk_max"] {
            if let (Some(u), Some(v)) = (x[key].as_f64(), y[key].as_f64()) {
                close(u, v, 1e-10, key);
            } else {
                assert_eq!(x[key], y[key], "{key}");
            }
        }
    }
    std::fs::remove_dir_all(&d).ok();
}
