//! End-to-end tests of `ntklab predict` on tiny data: every mode against the library functions, the
//! `--arch` route against `kernel` + `krr`, jitter reporting and clear errors for bad shapes and flags.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use faer::Mat;
use ntklab::predict::{gp_posterior, krr, LinearizedDynamics, Time};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_ntklab"))
}

fn tmp(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("ntklab-cli-predict-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn write(path: &Path, m: &Mat<f64>) {
    ntklab::data::write_npy_mat(path, m.as_ref()).unwrap();
}

fn read(path: &Path) -> Mat<f64> {
    ntklab::data::read_matrix(path).unwrap()
}

fn max_diff(a: &Mat<f64>, b: &Mat<f64>) -> f64 {
    assert_eq!((a.nrows(), a.ncols()), (b.nrows(), b.ncols()));
    let mut m: f64 = 0.0;
    for i in 0..a.nrows() {
        for j in 0..a.ncols() {
            m = m.max((a[(i, j)] - b[(i, j)]).abs());
        }
    }
    m
}

fn run_ok(args: &[&str], dir: &Path) -> Output {
    let o = bin().args(args).current_dir(dir).output().unwrap();
    assert!(o.status.success(), "{:?} failed: {}", args, String::from_utf8_lossy(&o.stderr));
    o
}

fn run_err(args: &[&str], dir: &Path) -> String {
    let o = bin().args(args).current_dir(dir).output().unwrap();
    assert!(!o.status.success(), "{:?} should fail", args);
    String::from_utf8_lossy(&o.stderr).to_string()
}

/// A PSD kernel on n + t points from 4 random features plus a small ridge: (K, K_*x, K_**), and targets y (n x 2).
fn problem(n: usize, t: usize) -> (Mat<f64>, Mat<f64>, Mat<f64>, Mat<f64>) {
    let z = ntklab::data::synthetic::gaussian(n + t, 4, 11);
    let full = Mat::from_fn(n + t, n + t, |i, j| {
        let dot: f64 = (0..4).map(|c| z[(i, c)] * z[(j, c)]).sum();
        (dot / 4.0).exp() + if i == j { 0.1 } else { 0.0 }
    });
    let k = full.submatrix(0, 0, n, n).to_owned();
    let kt = full.submatrix(n, 0, t, n).to_owned();
    let ktt = full.submatrix(n, n, t, t).to_owned();
    let y = ntklab::data::synthetic::gaussian(n, 2, 12);
    (k, kt, ktt, y)
}

#[test]
fn every_mode_matches_the_library() {
    let d = tmp("modes");
    let (k, kt, ktt, y) = problem(6, 4);
    write(&d.join("K.npy"), &k);
    write(&d.join("Kt.npy"), &kt);
    write(&d.join("Ktt.npy"), &ktt);
    write(&d.join("y.npy"), &y);
    let f0 = ntklab::data::synthetic::gaussian(10, 2, 13);
    write(&d.join("f0tr.npy"), &f0.submatrix(0, 0, 6, 2).to_owned());
    write(&d.join("f0te.npy"), &f0.submatrix(6, 0, 4, 2).to_owned());
    let base = ["predict", "--kernel-train", "K.npy", "--kernel-test-train", "Kt.npy", "--y", "y.npy"];
    fn cat<'a>(base: &[&'a str], extra: &[&'a str]) -> Vec<&'a str> {
        base.iter().chain(extra).copied().collect()
    }
    let with = |extra: &[&'static str]| cat(&base, extra);

    // krr
    run_ok(&with(&["--mode", "krr", "--reg", "0.01", "--out", "krr"]), &d);
    let want = krr(k.as_ref(), y.as_ref(), kt.as_ref(), 0.01).unwrap();
    assert!(max_diff(&read(&d.join("krr/prediction.npy")), &want.prediction) < 1e-12);
    assert!(max_diff(&read(&d.join("krr/coefficients.npy")), &want.coefficients) < 1e-12);
    let s: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(d.join("krr/summary.json")).unwrap()).unwrap();
    assert_eq!(s["mode"], "krr");
    assert_eq!(s["jitter"], 0.0);

    // gp
    run_ok(&with(&["--mode", "gp", "--kernel-test-test", "Ktt.npy", "--noise", "0.05", "--out", "gp"]), &d);
    let want = gp_posterior(k.as_ref(), y.as_ref(), kt.as_ref(), ktt.as_ref(), 0.05).unwrap();
    assert!(max_diff(&read(&d.join("gp/prediction.npy")), &want.mean) < 1e-12);
    assert!(max_diff(&read(&d.join("gp/covariance.npy")), &want.cov) < 1e-12);

    // flow at a finite time with initial outputs, and at t = inf (= ridgeless kernel regression from f0 = 0)
    run_ok(
        &with(&[
            "--mode",
            "flow",
            "--lr",
            "0.5",
            "--time",
            "3",
            "--f0-train",
            "f0tr.npy",
            "--f0-test",
            "f0te.npy",
            "--out",
            "flow",
        ]),
        &d,
    );
    let dy = LinearizedDynamics::new(k.as_ref(), 0.5).unwrap();
    let (f0tr, f0te) = (read(&d.join("f0tr.npy")), read(&d.join("f0te.npy")));
    let want = dy.test(kt.as_ref(), y.as_ref(), Some(f0tr.as_ref()), Some(f0te.as_ref()), Time::Flow(3.0)).unwrap();
    assert!(max_diff(&read(&d.join("flow/prediction.npy")), &want) < 1e-12);
    let want_tr = dy.train(y.as_ref(), Some(f0tr.as_ref()), Time::Flow(3.0)).unwrap();
    assert!(max_diff(&read(&d.join("flow/train_prediction.npy")), &want_tr) < 1e-12);
    run_ok(&with(&["--mode", "flow", "--time", "inf", "--out", "flow_inf"]), &d);
    let ridgeless = krr(k.as_ref(), y.as_ref(), kt.as_ref(), 0.0).unwrap().prediction;
    assert!(max_diff(&read(&d.join("flow_inf/prediction.npy")), &ridgeless) < 1e-8);

    // gd
    run_ok(&with(&["--mode", "gd", "--lr", "0.3", "--steps", "25", "--out", "gd"]), &d);
    let want = LinearizedDynamics::new(k.as_ref(), 0.3)
        .unwrap()
        .test(kt.as_ref(), y.as_ref(), None, None, Time::Steps(25))
        .unwrap();
    assert!(max_diff(&read(&d.join("gd/prediction.npy")), &want) < 1e-12);
    let s: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(d.join("gd/summary.json")).unwrap()).unwrap();
    let crit = s["critical_lr"].as_f64().unwrap();
    assert!((crit - LinearizedDynamics::new(k.as_ref(), 0.3).unwrap().critical_lr()).abs() < 1e-12 * crit);
}

#[test]
fn vector_targets_give_vector_outputs_and_jitter_is_reported() {
    let d = tmp("vec");
    // Rank-one kernel: K + 0 I is singular, so the library adds (and the CLI reports) jitter.
    let v = [1.0, 2.0, 3.0];
    let k = Mat::from_fn(3, 3, |i, j| v[i] * v[j]);
    let kt = Mat::from_fn(2, 3, |i, j| (i + 1) as f64 * v[j]);
    write(&d.join("K.npy"), &k);
    write(&d.join("Kt.npy"), &kt);
    let y = ntklab::data::Array { shape: vec![3], data: vec![1.0, 2.0, 3.0] };
    ntklab::data::write_npy(&d.join("y.npy"), &y).unwrap();
    let o = run_ok(
        &[
            "predict",
            "--mode",
            "krr",
            "--kernel-train",
            "K.npy",
            "--kernel-test-train",
            "Kt.npy",
            "--y",
            "y.npy",
            "--out",
            "o",
        ],
        &d,
    );
    let stdout = String::from_utf8_lossy(&o.stdout);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(stderr.contains("jitter"), "no jitter note: {stderr}");
    assert!(stdout.contains("jitter added"), "{stdout}");
    let p = ntklab::data::read_npy(&d.join("o/prediction.npy")).unwrap();
    assert_eq!(p.shape, vec![2]);
    // y = v lies in the range of K = v v^T: prediction_i = (i + 1) v.(v v^T + j I)^{-1} v = (i + 1) |v|^2 / (|v|^2 + j).
    assert!((p.data[0] - 1.0).abs() < 1e-4 && (p.data[1] - 2.0).abs() < 1e-4, "{:?}", p.data);
    let s: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(d.join("o/summary.json")).unwrap()).unwrap();
    assert!(s["jitter"].as_f64().unwrap() > 0.0);
}

#[test]
fn arch_route_matches_kernel_then_krr() {
    let d = tmp("arch");
    let xtr = ntklab::data::synthetic::sphere(5, 3, 1);
    let xte = ntklab::data::synthetic::sphere(3, 3, 2);
    let y = ntklab::data::synthetic::gaussian(5, 1, 3);
    write(&d.join("xtr.npy"), &xtr);
    write(&d.join("xte.npy"), &xte);
    write(&d.join("y.npy"), &y);
    let arch_s = "dense(32,w_std=1.5,b_std=0.1),relu,dense(1,w_std=1.5,b_std=0.1)";
    run_ok(
        &[
            "predict",
            "--mode",
            "krr",
            "--arch",
            arch_s,
            "--x-train",
            "xtr.npy",
            "--x-test",
            "xte.npy",
            "--y",
            "y.npy",
            "--reg",
            "1e-3",
            "--out",
            "o",
        ],
        &d,
    );
    let arch = ntklab::kernel::Architecture::parse(arch_s, ntklab::kernel::Parameterization::Ntk).unwrap();
    let k = ntklab::kernel::kernel(&arch, xtr.as_ref(), None).unwrap().ntk;
    let kt = ntklab::kernel::kernel(&arch, xte.as_ref(), Some(xtr.as_ref())).unwrap().ntk;
    let want = krr(k.as_ref(), y.as_ref(), kt.as_ref(), 1e-3).unwrap().prediction;
    assert!(max_diff(&read(&d.join("o/prediction.npy")), &want) < 1e-12);
    // gp defaults to the NNGP and computes the test-test kernel itself.
    run_ok(
        &[
            "predict",
            "--mode",
            "gp",
            "--arch",
            arch_s,
            "--x-train",
            "xtr.npy",
            "--x-test",
            "xte.npy",
            "--y",
            "y.npy",
            "--noise",
            "0.01",
            "--out",
            "g",
        ],
        &d,
    );
    let kn = ntklab::kernel::kernel(&arch, xtr.as_ref(), None).unwrap().nngp;
    let ktn = ntklab::kernel::kernel(&arch, xte.as_ref(), Some(xtr.as_ref())).unwrap().nngp;
    let kttn = ntklab::kernel::kernel(&arch, xte.as_ref(), None).unwrap().nngp;
    let want = gp_posterior(kn.as_ref(), y.as_ref(), ktn.as_ref(), kttn.as_ref(), 0.01).unwrap();
    assert!(max_diff(&read(&d.join("g/prediction.npy")), &want.mean) < 1e-12);
    assert!(max_diff(&read(&d.join("g/covariance.npy")), &want.cov) < 1e-12);
}

#[test]
fn bad_shapes_and_flags_are_explained() {
    let d = tmp("bad");
    let (k, kt, ktt, y) = problem(5, 3);
    write(&d.join("K.npy"), &k);
    write(&d.join("Kt.npy"), &kt);
    write(&d.join("Ktt.npy"), &ktt);
    write(&d.join("y.npy"), &y);
    write(&d.join("Kwide.npy"), &Mat::<f64>::zeros(5, 4));
    write(&d.join("Kt_bad.npy"), &Mat::<f64>::zeros(3, 4));
    write(&d.join("y_bad.npy"), &Mat::<f64>::zeros(4, 2));
    let run = |extra: &[&str]| -> String {
        let mut a = vec!["predict", "--out", "o"];
        a.extend_from_slice(extra);
        run_err(&a, &d)
    };
    let e = run(&["--mode", "krr", "--kernel-train", "Kwide.npy", "--kernel-test-train", "Kt.npy", "--y", "y.npy"]);
    assert!(e.contains("--kernel-train") && e.contains("square"), "{e}");
    let e = run(&["--mode", "krr", "--kernel-train", "K.npy", "--kernel-test-train", "Kt_bad.npy", "--y", "y.npy"]);
    assert!(e.contains("--kernel-test-train") && e.contains("3 x 4"), "{e}");
    let e = run(&["--mode", "krr", "--kernel-train", "K.npy", "--kernel-test-train", "Kt.npy", "--y", "y_bad.npy"]);
    assert!(e.contains("--y") && e.contains("4 rows"), "{e}");
    let e = run(&[
        "--mode",
        "gp",
        "--kernel-train",
        "K.npy",
        "--kernel-test-train",
        "Kt.npy",
        "--kernel-test-test",
        "K.npy",
        "--y",
        "y.npy",
    ]);
    assert!(e.contains("--kernel-test-test"), "{e}");
    let e = run(&["--mode", "gp", "--kernel-train", "K.npy", "--kernel-test-train", "Kt.npy", "--y", "y.npy"]);
    assert!(e.contains("--kernel-test-test"), "{e}");
    let e = run(&["--mode", "flow", "--kernel-train", "K.npy", "--kernel-test-train", "Kt.npy", "--y", "y.npy"]);
    assert!(e.contains("--time"), "{e}");
    let e = run(&[
        "--mode",
        "gd",
        "--kernel-train",
        "K.npy",
        "--kernel-test-train",
        "Kt.npy",
        "--y",
        "y.npy",
        "--time",
        "3",
    ]);
    assert!(e.contains("--time") && e.contains("--steps"), "{e}");
    let e = run(&[
        "--mode",
        "krr",
        "--kernel-train",
        "K.npy",
        "--kernel-test-train",
        "Kt.npy",
        "--y",
        "y.npy",
        "--noise",
        "0.1",
    ]);
    assert!(e.contains("--noise"), "{e}");
    let e = run(&[
        "--mode",
        "krr",
        "--kernel-train",
        "K.npy",
        "--kernel-test-train",
        "Kt.npy",
        "--y",
        "y.npy",
        "--reg",
        "-1",
    ]);
    assert!(e.contains("--reg"), "{e}");
    let e = run(&["--mode", "krr", "--kernel-train", "missing.npy", "--kernel-test-train", "Kt.npy", "--y", "y.npy"]);
    assert!(e.contains("missing.npy"), "{e}");
    let e = run(&["--mode", "svm", "--kernel-train", "K.npy", "--kernel-test-train", "Kt.npy", "--y", "y.npy"]);
    assert!(e.contains("svm"), "{e}");
    // Not a PSD kernel: the library's error comes through.
    write(&d.join("Kneg.npy"), &Mat::from_fn(5, 5, |i, j| if i == j { -1.0 } else { 0.0 }));
    let e = run(&[
        "--mode",
        "flow",
        "--time",
        "1",
        "--kernel-train",
        "Kneg.npy",
        "--kernel-test-train",
        "Kt.npy",
        "--y",
        "y.npy",
    ]);
    assert!(e.contains("positive semi-definite"), "{e}");
    assert!(!d.join("o/prediction.npy").exists());
}

#[test]
fn an_indefinite_test_kernel_is_an_error_with_no_output() {
    // K_** scaled down by 10 is not the kernel of the test points: posterior variances go clearly negative. That is
    // an error naming the point (not "rounding"), and the failed command leaves no folder.
    let d = tmp("indef");
    let (k, kt, ktt, y) = problem(6, 4);
    write(&d.join("K.npy"), &k);
    write(&d.join("Kt.npy"), &kt);
    write(&d.join("Ktt.npy"), &(&ktt * faer::Scale(0.1)));
    write(&d.join("y.npy"), &y);
    let e = run_err(
        &[
            "predict",
            "--mode",
            "gp",
            "--kernel-train",
            "K.npy",
            "--kernel-test-train",
            "Kt.npy",
            "--y",
            "y.npy",
            "--kernel-test-test",
            "Ktt.npy",
            "--out",
            "gp",
        ],
        &d,
    );
    assert!(e.contains("not jointly positive") && e.contains("test point"), "{e}");
    assert!(!d.join("gp").exists(), "the failed command left its output folder");
    std::fs::remove_dir_all(&d).ok();
}

#[test]
fn kernels_too_large_for_memory_are_refused_before_computing() {
    // 200k training points: the two train kernels alone are 640 GB. Refused at once, with no output folder.
    let d = tmp("huge");
    let n = 200_000;
    write(&d.join("xtr.npy"), &Mat::from_fn(n, 1, |i, _| i as f64 / n as f64));
    write(&d.join("ytr.npy"), &Mat::from_fn(n, 1, |i, _| (i % 7) as f64));
    write(&d.join("xte.npy"), &Mat::from_fn(3, 1, |i, _| i as f64));
    let err = run_err(
        &[
            "predict",
            "--arch",
            "dense(8),relu,dense(1)",
            "--x-train",
            "xtr.npy",
            "--x-test",
            "xte.npy",
            "--y",
            "ytr.npy",
            "--mode",
            "krr",
            "--out",
            "out",
        ],
        &d,
    );
    assert!(err.contains("would need") && err.contains("kernels"), "{err}");
    assert!(!d.join("out").exists());
    std::fs::remove_dir_all(&d).ok();
}

#[test]
fn image_inputs_predict_with_the_convolutional_kernel() {
    use ntklab::data::io::Array;
    let d = tmp("cnn");
    let (n, t, h, w, c) = (6, 2, 4, 4, 2);
    let xtr = ntklab::data::synthetic::gaussian(n, h * w * c, 4);
    let xte = ntklab::data::synthetic::gaussian(t, h * w * c, 5);
    let y = ntklab::data::synthetic::gaussian(n, 1, 6);
    let as_images = |m: &Mat<f64>, rows: usize| Array {
        shape: vec![rows, h, w, c],
        data: (0..rows).flat_map(|i| (0..h * w * c).map(move |j| (i, j))).map(|(i, j)| m[(i, j)]).collect(),
    };
    ntklab::data::write_npy(&d.join("xtr.npy"), &as_images(&xtr, n)).unwrap();
    ntklab::data::write_npy(&d.join("xte.npy"), &as_images(&xte, t)).unwrap();
    write(&d.join("y.npy"), &y);
    let arch_s = "conv(4,3x3,padding=same,w_std=1.4,b_std=0.1),relu,global_avg_pool,dense(1,w_std=1.4,b_std=0.1)";
    run_ok(
        &[
            "predict",
            "--mode",
            "krr",
            "--arch",
            arch_s,
            "--x-train",
            "xtr.npy",
            "--x-test",
            "xte.npy",
            "--y",
            "y.npy",
            "--reg",
            "1e-3",
            "--out",
            "o",
        ],
        &d,
    );
    let arch = ntklab::kernel::Architecture::parse(arch_s, ntklab::kernel::Parameterization::Ntk).unwrap();
    let shape = ntklab::kernel::Shape::image(&[h, w], c);
    let k = ntklab::kernel::cnn::cnn_kernel(&arch, &shape, xtr.as_ref(), None, &ntklab::runs::no_progress).unwrap().ntk;
    let kt =
        ntklab::kernel::cnn::cnn_kernel(&arch, &shape, xte.as_ref(), Some(xtr.as_ref()), &ntklab::runs::no_progress)
            .unwrap()
            .ntk;
    let want = krr(k.as_ref(), y.as_ref(), kt.as_ref(), 1e-3).unwrap().prediction;
    assert!(max_diff(&read(&d.join("o/prediction.npy")), &want) < 1e-12);
    // Train and test of different shapes are named.
    ntklab::data::write_npy(&d.join("bad.npy"), &Array { shape: vec![t, h * w, c], data: as_images(&xte, t).data })
        .unwrap();
    let err = run_err(
        &[
            "predict",
            "--mode",
            "krr",
            "--arch",
            arch_s,
            "--x-train",
            "xtr.npy",
            "--x-test",
            "bad.npy",
            "--y",
            "y.npy",
            "--out",
            "b",
        ],
        &d,
    );
    assert!(err.contains("shape"), "{err}");
    std::fs::remove_dir_all(&d).ok();
}
