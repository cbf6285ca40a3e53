//! End-to-end tests of `ntklab init`, `ntklab ntk` and `ntklab hessian` on tiny networks: agreement with the
//! library through independent routes, PyTorch-style files, and bad input.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use faer::Mat;
use ntklab::kernel::{Architecture, Parameterization};
use ntklab::net::{load_mlp, LoadOptions, LossCurvature, Mlp, NtkOutputs};
use ntklab::train::loss::Loss;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_ntklab"))
}

fn tmp(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("ntklab-cli-net-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn write_x(path: &Path, m: &Mat<f64>) {
    ntklab::data::write_npy_mat(path, m.as_ref()).unwrap();
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().to_string()).collect();
    v.sort();
    v
}

/// Runs a command; these tests rewrite their outputs on purpose, so `--force` is passed (the overwrite rule
/// itself is tested in `existing_outputs_need_force`).
fn run(args: &[&str], paths: &[(&str, &Path)]) -> Output {
    run_exact(&[args, &["--force"]].concat(), paths)
}

fn run_exact(args: &[&str], paths: &[(&str, &Path)]) -> Output {
    let mut c = bin();
    c.args(args);
    for (flag, p) in paths {
        c.arg(flag).arg(p);
    }
    c.output().unwrap()
}

fn ok(o: &Output) -> String {
    assert!(o.status.success(), "command failed: {}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).to_string()
}

/// max |a - b| / max |b|.
fn rel(a: &Mat<f64>, b: &Mat<f64>) -> f64 {
    assert_eq!((a.nrows(), a.ncols()), (b.nrows(), b.ncols()));
    (a - b).norm_max() / b.norm_max()
}

const ARCH: &str = "dense(6,w_std=1.3,b_std=0.2),tanh,dense(5,b_std=0.1),relu,dense(2,b_std=0.3)";

#[test]
fn init_then_ntk_equals_the_library_empirical_ntk() {
    // Reference: the same network built in-process by `Mlp::init` (not read from the file) and its
    // `empirical_ntk`. The file stores w_mult * W and the loader divides by w_mult, two roundings per weight,
    // so kernels agree to ~1e-15 relative; 1e-12 is far below any real error.
    let d = tmp("ntk");
    let (x1, x2) = (ntklab::data::synthetic::gaussian(7, 3, 1), ntklab::data::synthetic::gaussian(4, 3, 2));
    write_x(&d.join("x1.npy"), &x1);
    write_x(&d.join("x2.npy"), &x2);
    for (param, file) in [("ntk", "m.safetensors"), ("mup", "m.npz"), ("standard", "s.safetensors")] {
        let model = d.join(file);
        ok(&run(
            &["init", "--arch", ARCH, "--input-dim", "3", "--parameterization", param, "--alpha", "1.5", "--seed", "9"],
            &[("--out", &model)],
        ));
        let arch = Architecture::parse(ARCH, Parameterization::parse(param).unwrap()).unwrap();
        let net = Mlp::init(&arch, 3, 1.5, 9).unwrap();
        // Symmetric, trace over the 2 outputs.
        let out = d.join("k.npy");
        let o = run(&["ntk"], &[("--model", &model), ("--x", &d.join("x1.npy")), ("--out", &out)]);
        ok(&o);
        assert!(String::from_utf8_lossy(&o.stderr).contains("compute: "), "no timing on stderr");
        let want = net.empirical_ntk(x1.as_ref(), None, NtkOutputs::Trace).unwrap();
        assert!(rel(&ntklab::data::read_matrix(&out).unwrap(), &want) < 1e-12, "{param} trace");
        // Cross kernel, all output blocks.
        let o = run(
            &["ntk", "--full"],
            &[("--model", &model), ("--x", &d.join("x1.npy")), ("--x2", &d.join("x2.npy")), ("--out", &out)],
        );
        ok(&o);
        let want = net.empirical_ntk(x1.as_ref(), Some(x2.as_ref()), NtkOutputs::Full).unwrap();
        let got = ntklab::data::read_matrix(&out).unwrap();
        assert_eq!((got.nrows(), got.ncols()), (14, 8));
        assert!(rel(&got, &want) < 1e-12, "{param} full");
    }
    // Same seed, same bytes; the model reads back with its metadata.
    ok(&run(
        &["init", "--arch", ARCH, "--input-dim", "3", "--parameterization", "ntk", "--alpha", "1.5", "--seed", "9"],
        &[("--out", &d.join("again.safetensors"))],
    ));
    assert_eq!(std::fs::read(d.join("again.safetensors")).unwrap(), std::fs::read(d.join("m.safetensors")).unwrap());
    let back = load_mlp(&d.join("m.npz"), &LoadOptions::default()).unwrap();
    assert_eq!((back.arch.parameterization, back.alpha, back.input_dim), (Parameterization::Mup, 1.5, 3));
    // f32 weights: the kernel equals the library kernel of the network as read back.
    let m32 = d.join("m32.safetensors");
    ok(&run(&["init", "--arch", ARCH, "--input-dim", "3", "--f32"], &[("--out", &m32)]));
    let net32 = load_mlp(&m32, &LoadOptions::default()).unwrap();
    let out = d.join("k32.npy");
    ok(&run(&["ntk"], &[("--model", &m32), ("--x", &d.join("x1.npy")), ("--out", &out)]));
    let want = net32.empirical_ntk(x1.as_ref(), None, NtkOutputs::Trace).unwrap();
    assert!(rel(&ntklab::data::read_matrix(&out).unwrap(), &want) < 1e-13);
    std::fs::remove_dir_all(&d).ok();
}

/// Dense matrix of a linear map from its action on unit vectors, symmetrized (rounding only).
fn dense_from_products(p: usize, f: impl Fn(&[f64]) -> Vec<f64>) -> Mat<f64> {
    let mut m = Mat::<f64>::zeros(p, p);
    for j in 0..p {
        let mut e = vec![0.0; p];
        e[j] = 1.0;
        let col = f(&e);
        for i in 0..p {
            m[(i, j)] = col[i];
        }
    }
    Mat::from_fn(p, p, |i, j| 0.5 * (m[(i, j)] + m[(j, i)]))
}

fn json_vec(v: &serde_json::Value) -> Vec<f64> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect()
}

#[test]
fn hessian_top_eigenvalues_match_the_dense_hessian() {
    // Reference: the full P x P Hessian (and Gauss-Newton matrix) from P exact products on unit vectors and
    // faer's dense symmetric eigensolver. Lanczos with full reorthogonalization on P = 26 reaches the whole
    // Krylov space, so the top eigenvalues agree to ~1e-12 of the spectral scale; 1e-8 is asserted.
    let d = tmp("hess");
    let arch = "dense(4,b_std=0.2),tanh,dense(2,b_std=0.1)";
    let model = d.join("m.safetensors");
    ok(&run(&["init", "--arch", arch, "--input-dim", "3", "--seed", "4"], &[("--out", &model)]));
    let x = ntklab::data::synthetic::gaussian(6, 3, 5);
    write_x(&d.join("x.npy"), &x);
    for (loss, y) in [
        ("mse", ntklab::data::synthetic::gaussian(6, 2, 6)),
        ("ce", Mat::from_fn(6, 2, |i, a| if a == i % 2 { 1.0 } else { 0.0 })),
    ] {
        write_x(&d.join("y.npy"), &y);
        let json = d.join("h.json");
        let o = run(
            &["hessian", "--loss", loss, "--top", "3"],
            &[("--model", &model), ("--x", &d.join("x.npy")), ("--y", &d.join("y.npy")), ("--json", &json)],
        );
        let stdout = ok(&o);
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert!(stderr.contains("compute: ") && stderr.contains("Hessian-vector products: "), "{stderr}");
        assert!(
            stdout.contains("Hessian") && stdout.contains("Gauss-Newton") && stdout.contains("gradient norm"),
            "{stdout}"
        );
        let rep: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();

        let net = load_mlp(&model, &LoadOptions::default()).unwrap();
        let p = net.num_params();
        assert_eq!(p, 4 * 3 + 4 + 2 * 4 + 2);
        let lossv = Loss::parse(loss).unwrap();
        let lc = LossCurvature::new(&net, x.as_ref(), y.as_ref(), lossv).unwrap();
        let h = dense_from_products(p, |v| lc.hvp(v).unwrap());
        let g = dense_from_products(p, |v| lc.gnvp(v).unwrap());
        for (key, m) in [("hessian", &h), ("gauss_newton", &g)] {
            let mut ev = ntklab::spectrum::sym_eigenvalues(m.as_ref()).unwrap();
            ev.reverse();
            let scale = ev.iter().fold(0.0f64, |s, v| s.max(v.abs()));
            let got = json_vec(&rep[key]["eigenvalues"]);
            assert_eq!(got.len(), 3);
            for i in 0..3 {
                assert!((got[i] - ev[i]).abs() < 1e-8 * scale, "{loss} {key} #{i}: {} vs dense {}", got[i], ev[i]);
            }
            assert!(rep[key]["converged"].as_bool().unwrap());
            assert!(rep[key]["products"].as_u64().unwrap() >= 3);
        }
        assert!((rep["loss_value"].as_f64().unwrap() - lc.value()).abs() < 1e-14 * lc.value().abs().max(1.0));
        let gnorm = lc.gradient().iter().map(|v| v * v).sum::<f64>().sqrt();
        assert!((rep["gradient_norm"].as_f64().unwrap() - gnorm).abs() < 1e-13 * gnorm.max(1.0));
        assert_eq!(rep["num_params"].as_u64().unwrap() as usize, p);
        // Deterministic report.
        let first = std::fs::read(&json).unwrap();
        ok(&run(
            &["hessian", "--loss", loss, "--top", "3"],
            &[("--model", &model), ("--x", &d.join("x.npy")), ("--y", &d.join("y.npy")), ("--json", &json)],
        ));
        assert_eq!(std::fs::read(&json).unwrap(), first);
        // Hessian only: the same eigenvalues, no Gauss-Newton column or JSON entry.
        let json2 = d.join("h2.json");
        let o = run(
            &["hessian", "--loss", loss, "--top", "3", "--no-gauss-newton"],
            &[("--model", &model), ("--x", &d.join("x.npy")), ("--y", &d.join("y.npy")), ("--json", &json2)],
        );
        let stdout = ok(&o);
        assert!(stdout.contains("Hessian") && !stdout.contains("Gauss-Newton"), "{stdout}");
        assert!(String::from_utf8_lossy(&o.stderr).contains("(+ 0 Gauss-Newton products)"));
        let rep2: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json2).unwrap()).unwrap();
        assert!(rep2.get("gauss_newton").is_none());
        assert_eq!(rep2["hessian"], rep["hessian"]);
    }
    std::fs::remove_dir_all(&d).ok();
}

/// A safetensors file as PyTorch writes it for `nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 1))`:
/// float32, no ntklab metadata. Built byte by byte from the format description (8-byte header length, JSON
/// header, little-endian data), independently of the library's writer.
fn torch_safetensors(w0: &[f32], b0: &[f32], w2: &[f32], b2: &[f32]) -> Vec<u8> {
    let mut data = Vec::new();
    let mut header = serde_json::Map::new();
    for (name, shape, v) in
        [("0.weight", vec![4, 3], w0), ("0.bias", vec![4], b0), ("2.weight", vec![1, 4], w2), ("2.bias", vec![1], b2)]
    {
        let start = data.len();
        data.extend(v.iter().flat_map(|x| x.to_le_bytes()));
        header.insert(
            name.into(),
            serde_json::json!({"dtype": "F32", "shape": shape, "data_offsets": [start, data.len()]}),
        );
    }
    let mut h = serde_json::to_vec(&serde_json::Value::Object(header)).unwrap();
    while !h.len().is_multiple_of(8) {
        h.push(b' ');
    }
    let mut out = (h.len() as u64).to_le_bytes().to_vec();
    out.extend(h);
    out.extend(data);
    out
}

#[test]
fn pytorch_file_without_metadata_works_with_activation_or_arch() {
    let d = tmp("torch");
    let w0: Vec<f32> = (0..12).map(|i| ((i * 5 % 7) as f32 - 3.0) * 0.25).collect();
    let b0 = [0.5f32, -0.25, 0.125, 0.0];
    let w2 = [0.75f32, -0.5, 1.0, 0.25];
    let b2 = [0.1f32];
    let model = d.join("torch.safetensors");
    std::fs::write(&model, torch_safetensors(&w0, &b0, &w2, &b2)).unwrap();
    let x = ntklab::data::synthetic::gaussian(5, 3, 3);
    write_x(&d.join("x.npy"), &x);
    // Reference: the explicit Jacobian of f(x) = w2 . relu(W0 x + b0) + b2 w.r.t. (W0, b0, w2, b2), the
    // PyTorch (standard) coordinates, and J J^T.
    let jac = Mat::from_fn(5, 12 + 4 + 4 + 1, |n, c| {
        let z = |i: usize| b0[i] as f64 + (0..3).map(|j| w0[i * 3 + j] as f64 * x[(n, j)]).sum::<f64>();
        let on = |i: usize| if z(i) > 0.0 { 1.0 } else { 0.0 };
        match c {
            c if c < 12 => w2[c / 3] as f64 * on(c / 3) * x[(n, c % 3)],
            c if c < 16 => w2[c - 12] as f64 * on(c - 12),
            c if c < 20 => z(c - 16).max(0.0),
            _ => 1.0,
        }
    });
    let want = &jac * jac.transpose();
    let out = d.join("k.npy");
    ok(&run(&["ntk", "--activation", "relu"], &[("--model", &model), ("--x", &d.join("x.npy")), ("--out", &out)]));
    assert!(rel(&ntklab::data::read_matrix(&out).unwrap(), &want) < 1e-12);
    ok(&run(
        &["ntk", "--arch", "dense(4,b_std=1),relu,dense(1,b_std=1)", "--parameterization", "standard"],
        &[("--model", &model), ("--x", &d.join("x.npy")), ("--out", &out)],
    ));
    assert!(rel(&ntklab::data::read_matrix(&out).unwrap(), &want) < 1e-12);
    // Under 'ntk' the same function has raw coordinates W = sqrt(n_in) W_eff, so the kernel changes:
    // layer contributions are scaled by 1/n_in.
    ok(&run(
        &["ntk", "--activation", "relu", "--parameterization", "ntk"],
        &[("--model", &model), ("--x", &d.join("x.npy")), ("--out", &out)],
    ));
    assert!(rel(&ntklab::data::read_matrix(&out).unwrap(), &want) > 1e-3);
    // Without --activation the gap between the Linear layers is explained.
    let o = run(&["ntk"], &[("--model", &model), ("--x", &d.join("x.npy")), ("--out", &d.join("none.npy"))]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("activation"));
    assert!(!d.join("none.npy").exists());
    std::fs::remove_dir_all(&d).ok();
}

/// A failing command: non-zero exit, stderr contains every needle, and `out` was not created.
fn fails_cleanly(args: &[&str], paths: &[(&str, &Path)], out: &Path, needles: &[&str]) {
    let o = run(args, paths);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "expected failure for {args:?} {paths:?}");
    for n in needles {
        assert!(err.contains(n), "stderr for {args:?} lacks `{n}`: {err}");
    }
    assert!(!out.exists(), "{} was created", out.display());
}

#[test]
fn bad_input_fails_with_a_clear_error_and_no_output() {
    let d = tmp("bad");
    let model = d.join("m.safetensors");
    ok(&run(&["init", "--arch", "dense(4,b_std=0.1),relu,dense(1)", "--input-dim", "3"], &[("--out", &model)]));
    write_x(&d.join("x.npy"), &ntklab::data::synthetic::gaussian(5, 3, 1));
    write_x(&d.join("x4.npy"), &ntklab::data::synthetic::gaussian(5, 4, 1));
    write_x(&d.join("y.npy"), &ntklab::data::synthetic::gaussian(5, 1, 2));
    write_x(&d.join("y6.npy"), &ntklab::data::synthetic::gaussian(6, 1, 2));
    write_x(&d.join("y2.npy"), &ntklab::data::synthetic::gaussian(5, 2, 2));
    std::fs::write(d.join("corrupt.safetensors"), b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all").unwrap();
    let full = std::fs::read(&model).unwrap();
    std::fs::write(d.join("trunc.safetensors"), &full[..full.len() - 8]).unwrap();
    let (x, x4, y) = (d.join("x.npy"), d.join("x4.npy"), d.join("y.npy"));
    let out = d.join("out.npy");
    let json = d.join("out.json");

    // ntk
    fails_cleanly(
        &["ntk"],
        &[("--model", &model), ("--x", &x4), ("--out", &out)],
        &out,
        &["x4.npy", "4 features", "expects 3"],
    );
    fails_cleanly(
        &["ntk"],
        &[("--model", &model), ("--x", &x), ("--x2", &x4), ("--out", &out)],
        &out,
        &["--x2", "4 features"],
    );
    fails_cleanly(
        &["ntk"],
        &[("--model", &d.join("missing.safetensors")), ("--x", &x), ("--out", &out)],
        &out,
        &["missing.safetensors"],
    );
    fails_cleanly(
        &["ntk"],
        &[("--model", &d.join("corrupt.safetensors")), ("--x", &x), ("--out", &out)],
        &out,
        &["corrupt.safetensors", "not a valid safetensors"],
    );
    fails_cleanly(
        &["ntk"],
        &[("--model", &d.join("trunc.safetensors")), ("--x", &x), ("--out", &out)],
        &out,
        &["trunc.safetensors"],
    );
    fails_cleanly(&["ntk"], &[("--model", &model), ("--x", &d.join("nox.npy")), ("--out", &out)], &out, &["nox.npy"]);
    fails_cleanly(
        &["ntk", "--arch", "dense(5,b_std=1),relu,dense(1)"],
        &[("--model", &model), ("--x", &x), ("--out", &out)],
        &out,
        &["0.weight", "[4, 3]", "[5, 3]"],
    );
    fails_cleanly(
        &["ntk", "--parameterization", "lazy"],
        &[("--model", &model), ("--x", &x), ("--out", &out)],
        &out,
        &["lazy"],
    );
    // hessian
    let h = |extra: &[&str], x: &Path, y: &Path, needles: &[&str]| {
        let mut args = vec!["hessian"];
        args.extend_from_slice(extra);
        fails_cleanly(&args, &[("--model", &model), ("--x", x), ("--y", y), ("--json", &json)], &json, needles);
    };
    h(&[], &x4, &y, &["x4.npy", "4 features"]);
    h(&[], &x, &d.join("y6.npy"), &["y6.npy", "6 rows", "5"]);
    h(&[], &x, &d.join("y2.npy"), &["y2.npy", "2 columns", "1 output"]);
    h(&["--top", "100"], &x, &y, &["--top 100", "(20)"]);
    h(&["--loss", "hinge"], &x, &y, &["hinge"]);
    h(&["--loss", "ce"], &x, &y, &["at least 2 outputs"]);
    let o =
        run(&["hessian"], &[("--model", &d.join("corrupt.safetensors")), ("--x", &x), ("--y", &y), ("--json", &json)]);
    assert!(
        !o.status.success() && String::from_utf8_lossy(&o.stderr).contains("corrupt.safetensors") && !json.exists()
    );
    // init
    let bad = d.join("m.pt");
    fails_cleanly(
        &["init", "--arch", "dense(4),relu,dense(1)", "--input-dim", "3"],
        &[("--out", &bad)],
        &bad,
        &["m.pt", ".safetensors"],
    );
    let m2 = d.join("m2.safetensors");
    fails_cleanly(
        &["init", "--arch", "dense(4),swish2,dense(1)", "--input-dim", "3"],
        &[("--out", &m2)],
        &m2,
        &["swish2"],
    );
    fails_cleanly(
        &["init", "--arch", "node(a,dense(4),input),node(b,dense(5),input),node(s,sum,a,b)", "--input-dim", "3"],
        &[("--out", &m2)],
        &m2,
        &["node `s`", "equal width"],
    );
    fails_cleanly(
        &["init", "--arch", "dense(4),relu,dense(1)", "--input-dim", "0"],
        &[("--out", &m2)],
        &m2,
        &["input dimension"],
    );
    // No temporary files left behind by any of the failures.
    assert_eq!(
        files_in(&d),
        vec![
            "corrupt.safetensors",
            "m.safetensors",
            "trunc.safetensors",
            "x.npy",
            "x4.npy",
            "y.npy",
            "y2.npy",
            "y6.npy"
        ]
    );
    std::fs::remove_dir_all(&d).ok();
}

#[test]
fn residual_and_dag_models_round_trip_and_match_the_library() {
    // init writes node-named tensors plus the architecture text (and the raw parameters): loading gives back the
    // same parameters bit for bit, from .safetensors and .npz alike; `ntk` equals the in-process empirical NTK
    // of the same seeded network.
    let d = tmp("dag");
    let x = ntklab::data::synthetic::gaussian(5, 3, 2);
    write_x(&d.join("x.npy"), &x);
    for (tag, arch) in [
        ("res", "dense(6,b_std=0.2),residual(tanh,dense(6,b_std=0.1)),relu,dense(2)"),
        ("dag", "node(h,dense(5),input),node(a,gelu,h),node(s,dense(5,b_std=0.3),input),node(t,sum,a,s),node(out,dense(1),t)"),
    ] {
        let model = d.join(format!("{tag}.safetensors"));
        ok(&run(&["init", "--arch", arch, "--input-dim", "3", "--seed", "4", "--alpha", "1.5"], &[("--out", &model)]));
        let net = Mlp::init(&Architecture::parse(arch, Parameterization::Ntk).unwrap(), 3, 1.5, 4).unwrap();
        let back = load_mlp(&model, &LoadOptions::default()).unwrap();
        assert_eq!(back.graph, net.graph);
        assert_eq!(back.params(), net.params(), "{tag}: safetensors round trip is not bit-identical");
        let npz = d.join(format!("{tag}.npz"));
        ntklab::net::save_mlp(&net, &npz, ntklab::net::Precision::F64).unwrap();
        assert_eq!(load_mlp(&npz, &LoadOptions::default()).unwrap().params(), net.params(), "{tag}: npz");
        let out = d.join(format!("{tag}-ntk.npy"));
        ok(&run(&["ntk"], &[("--model", &model), ("--x", &d.join("x.npy")), ("--out", &out)]));
        let want = net.empirical_ntk(x.as_ref(), None, NtkOutputs::Trace).unwrap();
        assert!(rel(&ntklab::data::read_matrix(&out).unwrap(), &want) < 1e-13, "{tag}");
        if tag == "res" {
            // The loader reads exactly `{node}.weight` / `{node}.bias` and refuses any other tensor.
            let names: Vec<String> = ntklab::net::io::effective_tensors(&back).into_iter().map(|t| t.0).collect();
            assert!(names.contains(&"1.1.weight".to_string()) && names.contains(&"3.weight".to_string()), "{names:?}");
        }
    }
    // The infinite-width kernel of a residual architecture from the CLI.
    let kdir = d.join("k");
    ok(&run(
        &["kernel", "--arch", "dense(16,w_std=1.3,b_std=0.1),residual(relu,dense(16)),relu,dense(1)"],
        &[("--x1", &d.join("x.npy")), ("--out", &kdir)],
    ));
    let k = ntklab::data::read_matrix(&kdir.join("ntk.npy")).unwrap();
    assert_eq!((k.nrows(), k.ncols()), (5, 5));
    std::fs::remove_dir_all(&d).ok();
}

#[test]
fn precision_f32_agrees_with_f64_for_ntk_and_hessian() {
    // f32 lanes on the same file: kernels and top eigenvalues within f32 accuracy (~1e-6 relative; 1e-4 asserted).
    let d = tmp("prec");
    let model = d.join("m.safetensors");
    ok(&run(&["init", "--arch", ARCH, "--input-dim", "3", "--seed", "2"], &[("--out", &model)]));
    let x = ntklab::data::synthetic::gaussian(6, 3, 4);
    let y = ntklab::data::synthetic::gaussian(6, 2, 5);
    write_x(&d.join("x.npy"), &x);
    write_x(&d.join("y.npy"), &y);
    let mut kernels = Vec::new();
    let mut eigs = Vec::new();
    for p in ["f64", "f32"] {
        let out = d.join(format!("k{p}.npy"));
        ok(&run(&["ntk", "--precision", p], &[("--model", &model), ("--x", &d.join("x.npy")), ("--out", &out)]));
        kernels.push(ntklab::data::read_matrix(&out).unwrap());
        let json = d.join(format!("h{p}.json"));
        ok(&run(
            &["hessian", "--top", "2", "--precision", p],
            &[("--model", &model), ("--x", &d.join("x.npy")), ("--y", &d.join("y.npy")), ("--json", &json)],
        ));
        let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
        eigs.push(v["hessian"]["eigenvalues"][0].as_f64().unwrap());
    }
    assert!(rel(&kernels[1], &kernels[0]) < 1e-4, "ntk f32 vs f64: {:e}", rel(&kernels[1], &kernels[0]));
    assert!((eigs[1] - eigs[0]).abs() < 1e-4 * eigs[0].abs(), "top eigenvalue {} vs {}", eigs[1], eigs[0]);
    let o = run(
        &["ntk", "--precision", "f16"],
        &[("--model", &model), ("--x", &d.join("x.npy")), ("--out", &d.join("bad.npy"))],
    );
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("--precision"));
    assert!(!d.join("bad.npy").exists());
    std::fs::remove_dir_all(&d).ok();
}

#[test]
fn overflowing_models_are_an_error_not_an_infinite_report() {
    // A model with 1e150 weights: the loss overflows; `hessian` must fail (it used to exit 0 with an infinite
    // gradient norm) and `ntk` must refuse to write infinities.
    let d = tmp("overflow");
    let net = Mlp::init(
        &Architecture::parse("dense(4),relu,dense(4),relu,dense(1)", Parameterization::Ntk).unwrap(),
        3,
        1.0,
        1,
    )
    .unwrap();
    let mut big = net.clone();
    let p: Vec<f64> = net.params().iter().map(|v| v * 1e150).collect();
    big.set_params(&p).unwrap();
    let model = d.join("big.safetensors");
    ntklab::net::save_mlp(&big, &model, ntklab::net::Precision::F64).unwrap();
    write_x(&d.join("x.npy"), &ntklab::data::synthetic::gaussian(5, 3, 1));
    write_x(&d.join("y.npy"), &ntklab::data::synthetic::gaussian(5, 1, 2));
    let o =
        run(&["hessian", "--top", "1"], &[("--model", &model), ("--x", &d.join("x.npy")), ("--y", &d.join("y.npy"))]);
    assert!(
        !o.status.success() && String::from_utf8_lossy(&o.stderr).contains("not finite"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let out = d.join("k.npy");
    let o = run(&["ntk"], &[("--model", &model), ("--x", &d.join("x.npy")), ("--out", &out)]);
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("non-finite"));
    assert!(!out.exists());
    std::fs::remove_dir_all(&d).ok();
}

#[test]
fn existing_outputs_need_force() {
    // One overwrite rule for every command: an existing output is refused without --force and kept intact.
    let d = tmp("force");
    let model = d.join("m.safetensors");
    ok(&run_exact(&["init", "--arch", ARCH, "--input-dim", "3"], &[("--out", &model)]));
    let before = std::fs::read(&model).unwrap();
    let o = run_exact(&["init", "--arch", ARCH, "--input-dim", "3", "--seed", "9"], &[("--out", &model)]);
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("--force"));
    assert_eq!(std::fs::read(&model).unwrap(), before);
    ok(&run_exact(&["init", "--arch", ARCH, "--input-dim", "3", "--seed", "9", "--force"], &[("--out", &model)]));
    assert_ne!(std::fs::read(&model).unwrap(), before);
    write_x(&d.join("x.npy"), &ntklab::data::synthetic::gaussian(4, 3, 1));
    let out = d.join("k.npy");
    ok(&run_exact(&["ntk"], &[("--model", &model), ("--x", &d.join("x.npy")), ("--out", &out)]));
    let o = run_exact(&["ntk"], &[("--model", &model), ("--x", &d.join("x.npy")), ("--out", &out)]);
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("already exists"));
    let kdir = d.join("kern");
    let kargs = ["kernel", "--arch", "dense(8),relu,dense(1)"];
    ok(&run_exact(&kargs, &[("--x1", &d.join("x.npy")), ("--out", &kdir)]));
    let o = run_exact(&kargs, &[("--x1", &d.join("x.npy")), ("--out", &kdir)]);
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("nngp.npy"));
    std::fs::remove_dir_all(&d).ok();
}
