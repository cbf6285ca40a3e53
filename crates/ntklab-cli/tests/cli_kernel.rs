//! End-to-end tests of `ntklab kernel` on tiny data: outputs, agreement with the library, bad input.

use std::path::{Path, PathBuf};
use std::process::Command;

use faer::Mat;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_ntklab"))
}

fn tmp(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("ntklab-cli-kernel-{tag}-{}", std::process::id()));
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

const ARCH: &str = "dense(16,w_std=1.5,b_std=0.1),relu,dense(16,w_std=1.5),erf,dense(1)";

#[test]
fn writes_kernels_equal_to_the_library() {
    let d = tmp("ok");
    let x1 = ntklab::data::synthetic::gaussian(7, 3, 1);
    let x2 = ntklab::data::synthetic::gaussian(5, 3, 2);
    write_x(&d.join("a.npy"), &x1);
    // x2 as CSV with a header, to exercise the CSV route.
    let mut csv = String::from("f0,f1,f2\n");
    for i in 0..5 {
        csv.push_str(&format!("{:.17e},{:.17e},{:.17e}\n", x2[(i, 0)], x2[(i, 1)], x2[(i, 2)]));
    }
    std::fs::write(d.join("b.csv"), csv).unwrap();
    let out = d.join("out");
    let st = bin()
        .args(["kernel", "--arch", ARCH, "--parameterization", "standard", "--x1"])
        .arg(d.join("a.npy"))
        .arg("--x2")
        .arg(d.join("b.csv"))
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert!(st.status.success(), "{}", String::from_utf8_lossy(&st.stderr));
    let arch = ntklab::kernel::Architecture::parse(ARCH, ntklab::kernel::Parameterization::Standard).unwrap();
    let k = ntklab::kernel::kernel(&arch, x1.as_ref(), Some(x2.as_ref())).unwrap();
    let nngp = ntklab::data::read_matrix(&out.join("nngp.npy")).unwrap();
    let ntk = ntklab::data::read_matrix(&out.join("ntk.npy")).unwrap();
    assert_eq!((ntk.nrows(), ntk.ncols()), (7, 5));
    for i in 0..7 {
        for j in 0..5 {
            assert!((nngp[(i, j)] - k.nngp[(i, j)]).abs() < 1e-12 * (1.0 + k.nngp[(i, j)].abs()));
            assert!((ntk[(i, j)] - k.ntk[(i, j)]).abs() < 1e-12 * (1.0 + k.ntk[(i, j)].abs()));
        }
    }
    // f32 output and TOML architecture.
    std::fs::write(d.join("arch.toml"), format!("arch = \"{ARCH}\"\nparameterization = \"ntk\"\n")).unwrap();
    let out32 = d.join("out32");
    let st = bin()
        .args(["kernel", "--f32", "--arch-file"])
        .arg(d.join("arch.toml"))
        .arg("--x1")
        .arg(d.join("a.npy"))
        .arg("--out")
        .arg(&out32)
        .output()
        .unwrap();
    assert!(st.status.success(), "{}", String::from_utf8_lossy(&st.stderr));
    let bytes = std::fs::read(out32.join("ntk.npy")).unwrap();
    assert!(String::from_utf8_lossy(&bytes[..128]).contains("<f4"));
    std::fs::remove_dir_all(&d).ok();
}

#[test]
fn demo_writes_kernels_and_plots() {
    let d = tmp("demo");
    let st = bin().args(["kernel", "--demo", "--out"]).arg(&d).output().unwrap();
    assert!(st.status.success(), "{}", String::from_utf8_lossy(&st.stderr));
    assert_eq!(files_in(&d), vec!["kernel_vs_angle.png", "kernel_vs_angle.svg", "nngp.npy", "ntk.npy", "x.npy"]);
    let png = std::fs::read(d.join("kernel_vs_angle.png")).unwrap();
    assert_eq!(&png[1..4], b"PNG");
    std::fs::remove_dir_all(&d).ok();
}

/// Run a failing command: non-zero exit, the message contains `needle`, and `out` stays empty.
fn fails_cleanly(args: &[&str], extra: &[&Path], out: &Path, needle: &str) {
    let mut c = bin();
    c.args(args);
    for e in extra {
        c.arg(e);
    }
    c.arg("--out").arg(out);
    let o = c.output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "expected failure for {args:?}");
    assert!(err.contains(needle), "stderr for {args:?} lacks `{needle}`: {err}");
    assert!(!out.exists() || files_in(out).is_empty(), "partial output left in {}: {:?}", out.display(), files_in(out));
}

#[test]
fn bad_input_fails_with_a_clear_error_and_no_output() {
    let d = tmp("bad");
    write_x(&d.join("a.npy"), &ntklab::data::synthetic::gaussian(4, 3, 1));
    write_x(&d.join("b.npy"), &ntklab::data::synthetic::gaussian(4, 5, 1));
    let mut nan = ntklab::data::synthetic::gaussian(4, 3, 1);
    nan[(2, 1)] = f64::NAN;
    write_x(&d.join("nan.npy"), &nan);
    std::fs::write(d.join("junk.npy"), b"definitely not numpy").unwrap();
    let out = d.join("out");
    let a = d.join("a.npy");
    fails_cleanly(&["kernel", "--arch", ARCH, "--x1"], &[&a, Path::new("--x2"), &d.join("b.npy")], &out, "features");
    fails_cleanly(&["kernel", "--arch", ARCH, "--x1"], &[&d.join("nan.npy")], &out, "non-finite");
    fails_cleanly(&["kernel", "--arch", "dense(8),swish2,dense(1)", "--x1"], &[&a], &out, "swish2");
    fails_cleanly(&["kernel", "--arch", ARCH, "--x1"], &[&d.join("missing.npy")], &out, "missing.npy");
    fails_cleanly(&["kernel", "--arch", ARCH, "--x1"], &[&d.join("junk.npy")], &out, "junk.npy");
    fails_cleanly(&["kernel", "--arch", ARCH, "--parameterization", "lazy", "--x1"], &[&a], &out, "lazy");
    std::fs::remove_dir_all(&d).ok();
}

#[test]
fn non_finite_kernels_are_an_error_and_leave_nothing() {
    // w_std = 1e200 overflows Sigma: by default an error naming the output and entry, with neither file nor the
    // output folder left behind; --allow-nonfinite writes both.
    let d = tmp("nonfinite");
    write_x(&d.join("x.npy"), &ntklab::data::synthetic::gaussian(4, 3, 1));
    let out = d.join("k");
    let o = bin()
        .args(["kernel", "--arch", "dense(16,w_std=1e200),relu,dense(1)", "--x1"])
        .arg(d.join("x.npy"))
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("non-finite") && err.contains("row 0, column 0"), "{err}");
    assert!(!out.exists(), "the failed command left {}", out.display());
    let o = bin()
        .args(["kernel", "--arch", "dense(16,w_std=1e200),relu,dense(1)", "--allow-nonfinite", "--x1"])
        .arg(d.join("x.npy"))
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success());
    assert_eq!(files_in(&out), ["nngp.npy", "ntk.npy"]);
    std::fs::remove_dir_all(&d).ok();
}

#[test]
fn impossible_sizes_are_refused_before_allocating() {
    // 100,000 inputs: the two kernels would need 149 GiB; the command must refuse at once, naming the size.
    let x = faer::Mat::<f64>::from_fn(100_000, 1, |i, _| (i % 7) as f64);
    let e = ntklab::kernel::kernel(
        &ntklab::kernel::Architecture::parse("dense(4),relu,dense(1)", ntklab::kernel::Parameterization::Ntk).unwrap(),
        x.as_ref(),
        None,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("GiB") && e.contains("NNGP and NTK"), "{e}");
}

#[test]
fn absurd_thread_counts_are_capped_with_a_note() {
    let d = tmp("threads");
    write_x(&d.join("x.npy"), &ntklab::data::synthetic::gaussian(4, 3, 1));
    let o = bin()
        .args(["--threads", "100000", "kernel", "--arch", "dense(8),relu,dense(1)", "--x1"])
        .arg(d.join("x.npy"))
        .arg("--out")
        .arg(d.join("k"))
        .output()
        .unwrap();
    assert!(o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("capped at"));
    std::fs::remove_dir_all(&d).ok();
}

#[cfg(unix)]
#[test]
fn device_files_are_refused_not_read_forever() {
    // A .csv or model path that is /dev/zero used to be read until memory ran out.
    let d = tmp("devzero");
    std::os::unix::fs::symlink("/dev/zero", d.join("zero.csv")).unwrap();
    let o = bin()
        .args(["kernel", "--arch", "dense(4),relu,dense(1)", "--x1"])
        .arg(d.join("zero.csv"))
        .arg("--out")
        .arg(d.join("k"))
        .output()
        .unwrap();
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("not a regular file"));
    std::fs::remove_dir_all(&d).ok();
}

#[test]
fn image_inputs_give_the_convolutional_kernel() {
    use ntklab::data::io::Array;
    let d = tmp("cnn");
    let (n, h, w, c) = (3, 4, 3, 2);
    let data: Vec<f64> = (0..n * h * w * c).map(|i| ((i * 37 % 23) as f64 - 11.0) / 7.0).collect();
    ntklab::data::write_npy(&d.join("x.npy"), &Array { shape: vec![n, h, w, c], data: data.clone() }).unwrap();
    let arch = "conv(4,3x3,padding=same,w_std=1.3,b_std=0.2),relu,avg_pool(2x2,stride=1),global_avg_pool,dense(1)";
    let o = bin().args(["kernel", "--arch", arch, "--x1", "x.npy", "--out", "k"]).current_dir(&d).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let got = ntklab::data::read_npy(&d.join("k/ntk.npy")).unwrap();
    let x = Mat::from_fn(n, h * w * c, |i, j| data[i * h * w * c + j]);
    let want = ntklab::kernel::cnn::cnn_kernel(
        &ntklab::kernel::Architecture::parse(arch, ntklab::kernel::Parameterization::Ntk).unwrap(),
        &ntklab::kernel::Shape::image(&[h, w], c),
        x.as_ref(),
        None,
        &ntklab::runs::no_progress,
    )
    .unwrap();
    assert_eq!(got.shape, vec![n, n]);
    for i in 0..n {
        for j in 0..n {
            assert_eq!(got.data[i * n + j], want.ntk[(i, j)]);
        }
    }
    // --batch: the same bytes, written a few rows at a time; the memory needed is printed first.
    let o = bin()
        .args(["kernel", "--arch", arch, "--x1", "x.npy", "--out", "kb", "--batch", "2"])
        .current_dir(&d)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stderr).contains("memory: about"));
    for f in ["nngp.npy", "ntk.npy"] {
        let (one, batched) = (
            ntklab::data::read_npy(&d.join("k").join(f)).unwrap(),
            ntklab::data::read_npy(&d.join("kb").join(f)).unwrap(),
        );
        assert_eq!(one.shape, batched.shape);
        let bits = |a: &Array| a.data.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&one), bits(&batched), "{f}");
    }
    // --f32: f32 files, within single precision of the f64 kernel; --batch in f32 gives the same bytes.
    for (out, batch) in [("k32", None), ("k32b", Some("2"))] {
        let mut cmd = bin();
        cmd.args(["kernel", "--arch", arch, "--x1", "x.npy", "--out", out, "--f32"]).current_dir(&d);
        if let Some(b) = batch {
            cmd.args(["--batch", b]);
        }
        let o = cmd.output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    for f in ["nngp.npy", "ntk.npy"] {
        let raw = std::fs::read(d.join("k32").join(f)).unwrap();
        assert!(String::from_utf8_lossy(&raw[..128]).contains("<f4"), "{f}");
        let (one, batched) = (
            ntklab::data::read_npy(&d.join("k32").join(f)).unwrap(),
            ntklab::data::read_npy(&d.join("k32b").join(f)).unwrap(),
        );
        let bits = |a: &Array| a.data.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&one), bits(&batched), "{f}: --batch in f32");
        let (k32, k64) = (
            ntklab::data::read_npy(&d.join("k32").join(f)).unwrap(),
            ntklab::data::read_npy(&d.join("k").join(f)).unwrap(),
        );
        let scale = k64.data.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        for (a, b) in k32.data.iter().zip(&k64.data) {
            assert!((a - b).abs() < 2e-5 * scale && a.to_bits() != b.to_bits() || a == b, "{f}: {a} vs {b}");
        }
    }
    // A spatial net on feature rows is named.
    write_x(&d.join("flat.npy"), &Mat::from_fn(3, 24, |i, j| (i + j) as f64));
    let o = bin().args(["kernel", "--arch", arch, "--x1", "flat.npy", "--out", "k3"]).current_dir(&d).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("needs spatial inputs"), "{err}");
    assert!(!d.join("k3").exists());
    std::fs::remove_dir_all(&d).ok();
}

#[test]
fn a_network_that_ends_on_an_image_gives_covariances_between_positions() {
    // As the library's CnnKernel::spatial (bit for bit), in both layouts; --batch is refused by name.
    use ntklab::data::io::Array;
    use ntklab::kernel::cnn::{CnnKernel, Spatial};
    let d = tmp("spatial");
    let (n, h, w, c) = (3, 4, 3, 2);
    let data: Vec<f64> = (0..n * h * w * c).map(|i| ((i * 37 % 23) as f64 - 11.0) / 7.0).collect();
    ntklab::data::write_npy(&d.join("x.npy"), &Array { shape: vec![n, h, w, c], data: data.clone() }).unwrap();
    let arch = "conv(3,3x3,padding=same,w_std=1.3,b_std=0.2),relu,conv(2,3x3,padding=same,w_std=1.1)";
    let x = Mat::from_fn(n, h * w * c, |i, j| data[i * h * w * c + j]);
    let parsed = ntklab::kernel::Architecture::parse(arch, ntklab::kernel::Parameterization::Ntk).unwrap();
    let shape = ntklab::kernel::Shape::image(&[h, w], c);
    for (flag, what, dims) in [
        (None, Spatial::Full, vec![n, n, h, h, w, w]),
        (Some("--diagonal-spatial"), Spatial::Diagonal, vec![n, n, h, w]),
    ] {
        let out = format!("k{}", dims.len());
        let mut cmd = bin();
        cmd.args(["kernel", "--arch", arch, "--x1", "x.npy", "--out", &out]).current_dir(&d);
        if let Some(f) = flag {
            cmd.arg(f);
        }
        let o = cmd.output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let want = CnnKernel::<f64>::new_spatial(&parsed, &shape, x.as_ref(), None, what)
            .unwrap()
            .spatial(&ntklab::runs::no_progress)
            .unwrap();
        for (f, values) in [("nngp.npy", &want.nngp), ("ntk.npy", &want.ntk)] {
            let got = ntklab::data::read_npy(&d.join(&out).join(f)).unwrap();
            assert_eq!(got.shape, dims, "{f}");
            assert!(got.data.iter().zip(values.iter()).all(|(a, b)| a.to_bits() == b.to_bits()), "{f}");
        }
    }
    let o = bin()
        .args(["kernel", "--arch", arch, "--x1", "x.npy", "--out", "kb", "--batch", "2"])
        .current_dir(&d)
        .output()
        .unwrap();
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("ends on an image"));
    assert!(!d.join("kb").exists(), "nothing written");
    std::fs::remove_dir_all(&d).ok();
}
