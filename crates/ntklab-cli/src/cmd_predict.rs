//! `ntklab predict`: closed-form infinite-width predictions from kernel matrices (.npy/.csv) or from an
//! architecture and inputs: kernel ridge regression, GP posterior (NNGP inference), and the outputs of the
//! linearized network after gradient flow for time t or after s steps of gradient descent (MSE loss,
//! L = 1/(2N) sum (f - y)^2).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use faer::{Mat, MatRef};
use ntklab::data::Array;
use ntklab::kernel::{kernel, Architecture, Parameterization};
use ntklab::predict::{gp_posterior, krr, LinearizedDynamics, Time};
use serde_json::json;

use crate::util::{ensure_dir, load_matrix, refuse_existing, spinner};

/// Which prediction to make.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// Kernel ridge regression K_*x (K + reg I)^{-1} y.
    Krr,
    /// Gaussian-process posterior mean and covariance (noise variance --noise).
    Gp,
    /// Linearized network after gradient flow dtheta/dt = -lr grad L for time --time (inf: converged).
    Flow,
    /// Linearized network after --steps steps of full-batch gradient descent with rate --lr.
    Gd,
}

/// Which infinite-width kernel to compute from `--arch`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum KernelKind {
    /// The neural tangent kernel (gradient-descent training).
    Ntk,
    /// The NNGP kernel (Bayesian inference).
    Nngp,
}

/// Arguments of `ntklab predict`.
#[derive(Args, Debug)]
pub struct PredictArgs {
    /// krr, gp, flow or gd.
    #[arg(long, value_enum)]
    pub mode: Mode,
    /// Train kernel K, n x n (.npy or .csv).
    #[arg(long, required_unless_present = "arch", conflicts_with = "arch")]
    pub kernel_train: Option<PathBuf>,
    /// Test-train kernel K_*x, t x n.
    #[arg(long, required_unless_present = "arch", conflicts_with = "arch")]
    pub kernel_test_train: Option<PathBuf>,
    /// Test-test kernel K_**, t x t (needed by --mode gp).
    #[arg(long, conflicts_with = "arch")]
    pub kernel_test_test: Option<PathBuf>,
    /// Instead of kernel files: an architecture whose infinite-width kernel is computed on --x-train / --x-test,
    /// e.g. "dense(512,w_std=1.5,b_std=0.1),relu,dense(1)".
    #[arg(long, requires_all = ["x_train", "x_test"])]
    pub arch: Option<String>,
    /// Dense-layer parameterization of --arch: ntk or standard.
    #[arg(long, default_value = "ntk", requires = "arch")]
    pub parameterization: String,
    /// Training inputs for --arch, n x d.
    #[arg(long, requires = "arch")]
    pub x_train: Option<PathBuf>,
    /// Test inputs for --arch, t x d.
    #[arg(long, requires = "arch")]
    pub x_test: Option<PathBuf>,
    /// Kernel to use with --arch (default: nngp for --mode gp, ntk otherwise).
    #[arg(long, value_enum, requires = "arch")]
    pub kernel: Option<KernelKind>,
    /// Training targets y, n x m or a vector of n (outputs then are vectors too).
    #[arg(long)]
    pub y: PathBuf,
    /// Ridge regularization reg >= 0 (--mode krr; default 0).
    #[arg(long, allow_negative_numbers = true)]
    pub reg: Option<f64>,
    /// Observation noise variance s2 >= 0 (--mode gp; default 0).
    #[arg(long, allow_negative_numbers = true)]
    pub noise: Option<f64>,
    /// Learning rate eta > 0 (--mode flow/gd; default 1, so that --time is the training time t = eta * steps).
    #[arg(long, allow_negative_numbers = true)]
    pub lr: Option<f64>,
    /// Gradient-flow time t >= 0 in units of steps of size --lr; `inf` for the converged limit (--mode flow).
    #[arg(long, allow_negative_numbers = true)]
    pub time: Option<f64>,
    /// Number of gradient-descent steps (--mode gd).
    #[arg(long)]
    pub steps: Option<u64>,
    /// Network outputs at initialization on the training points, n x m (--mode flow/gd; default 0).
    #[arg(long)]
    pub f0_train: Option<PathBuf>,
    /// Network outputs at initialization on the test points, t x m (--mode flow/gd; default 0).
    #[arg(long)]
    pub f0_test: Option<PathBuf>,
    /// Output folder: prediction.npy (t x m) and summary.json, plus covariance.npy (gp), coefficients.npy
    /// (krr) or train_prediction.npy (flow, gd).
    #[arg(long)]
    pub out: PathBuf,
    /// Overwrite existing outputs (refused otherwise).
    #[arg(long)]
    pub force: bool,
}

/// Reads a matrix; for .npy also reports whether it was a 1-D vector.
fn read_with_rank(path: &Path, what: &str) -> Result<(Mat<f64>, bool)> {
    let is_npy = path.extension().and_then(|e| e.to_str()).is_some_and(|e| e.eq_ignore_ascii_case("npy"));
    if is_npy {
        let a = ntklab::data::read_npy(path).with_context(|| format!("reading {what}"))?;
        let m = a.to_mat(what).map_err(|e| ntklab::Error::file(path, e)).with_context(|| format!("reading {what}"))?;
        Ok((m, a.shape.len() == 1))
    } else {
        Ok((load_matrix(path, what)?, false))
    }
}

fn dims(m: &Mat<f64>) -> String {
    format!("{} x {}", m.nrows(), m.ncols())
}

/// Writes `m` as .npy, as a 1-D array when `vector` (m has one column).
/// The files of one `predict` run, encoded as they are produced and committed together at the end, so a failure
/// anywhere leaves none of them.
#[derive(Default)]
struct Staged(Vec<(std::path::PathBuf, Vec<u8>)>);

impl Staged {
    /// A matrix as .npy (a 1-D array when `vector` and it has one column).
    fn mat(&mut self, path: std::path::PathBuf, m: MatRef<'_, f64>, vector: bool) -> Result<()> {
        let bytes = if vector && m.ncols() == 1 {
            let a = Array { shape: vec![m.nrows()], data: (0..m.nrows()).map(|i| m[(i, 0)]).collect() };
            ntklab::data::io::npy_bytes(&a)?
        } else {
            let mut b = Vec::new();
            ntklab::data::io::npy_mat_into(&mut b, m, None)?;
            b
        };
        self.0.push((path, bytes));
        Ok(())
    }

    /// All files at once (temporaries renamed together; none left on failure).
    fn commit(self) -> Result<()> {
        type Fill<'a> = Box<dyn FnOnce(&mut std::io::BufWriter<std::fs::File>) -> std::io::Result<()> + 'a>;
        let files: Vec<(&Path, Fill<'_>)> = self
            .0
            .iter()
            .map(|(p, b)| {
                (
                    p.as_path(),
                    Box::new(move |w: &mut std::io::BufWriter<std::fs::File>| std::io::Write::write_all(w, b))
                        as Fill<'_>,
                )
            })
            .collect();
        ntklab::data::io::write_all_atomic(files)?;
        Ok(())
    }
}

fn check_flags(a: &PredictArgs) -> Result<()> {
    let m = a.mode;
    let name = format!("{m:?}").to_lowercase();
    let only = |given: bool, flag: &str, modes: &str| -> Result<()> {
        if given {
            bail!("{flag} applies to --mode {modes}, not --mode {name}");
        }
        Ok(())
    };
    only(a.reg.is_some() && m != Mode::Krr, "--reg", "krr")?;
    only(a.noise.is_some() && m != Mode::Gp, "--noise", "gp")?;
    let dynamic = matches!(m, Mode::Flow | Mode::Gd);
    only(a.lr.is_some() && !dynamic, "--lr", "flow or gd")?;
    only(a.f0_train.is_some() && !dynamic, "--f0-train", "flow or gd")?;
    only(a.f0_test.is_some() && !dynamic, "--f0-test", "flow or gd")?;
    only(a.time.is_some() && m != Mode::Flow, "--time", "flow (gd takes --steps)")?;
    only(a.steps.is_some() && m != Mode::Gd, "--steps", "gd (flow takes --time)")?;
    only(a.kernel_test_test.is_some() && m != Mode::Gp, "--kernel-test-test", "gp")?;
    match m {
        Mode::Flow if a.time.is_none() => {
            bail!("--mode flow needs --time T (T >= 0, or `inf` for the converged limit)")
        }
        Mode::Gd if a.steps.is_none() => bail!("--mode gd needs --steps S"),
        Mode::Gp if a.arch.is_none() && a.kernel_test_test.is_none() => {
            bail!("--mode gp needs --kernel-test-test (t x t) for the posterior covariance")
        }
        _ => {}
    }
    if let Some(r) = a.reg {
        if !(r >= 0.0 && r.is_finite()) {
            bail!("--reg must be finite and >= 0, got {r}");
        }
    }
    if let Some(s) = a.noise {
        if !(s >= 0.0 && s.is_finite()) {
            bail!("--noise must be finite and >= 0, got {s}");
        }
    }
    if let Some(l) = a.lr {
        if !(l > 0.0 && l.is_finite()) {
            bail!("--lr must be finite and > 0, got {l}");
        }
    }
    if let Some(t) = a.time {
        if t.is_nan() || t < 0.0 {
            bail!("--time must be >= 0 (or `inf`), got {t}");
        }
    }
    Ok(())
}

/// The kernels (K, K_*x, K_** if gp) and a description of where they came from.
struct Kernels {
    train: Mat<f64>,
    test_train: Mat<f64>,
    test_test: Option<Mat<f64>>,
    source: serde_json::Value,
}

fn kernels_from_files(a: &PredictArgs) -> Result<Kernels> {
    let kp = a.kernel_train.as_ref().expect("clap requires --kernel-train without --arch");
    let ktp = a.kernel_test_train.as_ref().expect("clap requires --kernel-test-train without --arch");
    let train = load_matrix(kp, "--kernel-train")?;
    let test_train = load_matrix(ktp, "--kernel-test-train")?;
    let test_test = match &a.kernel_test_test {
        Some(p) => Some(load_matrix(p, "--kernel-test-test")?),
        None => None,
    };
    let source = json!({
        "kernel_train": kp, "kernel_test_train": ktp, "kernel_test_test": a.kernel_test_test,
    });
    Ok(Kernels { train, test_train, test_test, source })
}

fn kernels_from_arch(a: &PredictArgs) -> Result<Kernels> {
    let p = Parameterization::parse(&a.parameterization)?;
    let arch_s = a.arch.as_ref().expect("called with --arch");
    let arch = Architecture::parse(arch_s, p).context("in --arch")?;
    let (xtr, str_) =
        crate::cmd_kernel::load_inputs(a.x_train.as_ref().expect("clap requires --x-train"), "--x-train")?;
    let (xte, ste) = crate::cmd_kernel::load_inputs(a.x_test.as_ref().expect("clap requires --x-test"), "--x-test")?;
    if xtr.ncols() != xte.ncols() || str_ != ste {
        let show = |s: &Option<ntklab::kernel::Shape>, m: &Mat<f64>| {
            s.as_ref().map_or(format!("{} features", m.ncols()), |s| format!("shape {s}"))
        };
        bail!("--x-train has examples of {} but --x-test of {}", show(&str_, &xtr), show(&ste, &xte));
    }
    // Inputs with spatial axes (N x H x W x C) take the convolutional kernel.
    let kernel = |a1: &Mat<f64>, a2: Option<&Mat<f64>>| -> ntklab::Result<ntklab::kernel::Kernel<f64>> {
        match &str_ {
            None => kernel(&arch, a1.as_ref(), a2.map(|m| m.as_ref())),
            Some(shape) => ntklab::kernel::cnn::cnn_kernel(
                &arch,
                shape,
                a1.as_ref(),
                a2.map(|m| m.as_ref()),
                &ntklab::runs::no_progress,
            ),
        }
    };
    let kind = a.kernel.unwrap_or(if a.mode == Mode::Gp { KernelKind::Nngp } else { KernelKind::Ntk });
    let pick = |k: ntklab::kernel::Kernel<f64>| if kind == KernelKind::Ntk { k.ntk } else { k.nngp };
    // Both kernels of each block are computed before one is picked: 2 (n^2 + t n (+ t^2 for gp)) values.
    let (n, t) = (xtr.nrows(), xte.nrows());
    let blocks = n.saturating_mul(n).saturating_add(t.saturating_mul(n)).saturating_add(if a.mode == Mode::Gp {
        t.saturating_mul(t)
    } else {
        0
    });
    ntklab::data::memory::check_alloc(blocks.saturating_mul(16), "the train and test kernels")?;
    // The solve that follows needs its own copies (3 n^2 + t n): refused now rather than after the kernels.
    let solve = 3usize.saturating_mul(n).saturating_mul(n).saturating_add(t.saturating_mul(n));
    ntklab::data::memory::check_alloc(
        blocks.saturating_mul(8).saturating_add(solve).saturating_mul(8),
        "the kernels and the prediction's linear algebra",
    )?;
    let pb = spinner(&format!(
        "computing the infinite-width {kind:?} kernel ({} train, {} test points)",
        xtr.nrows(),
        xte.nrows()
    ));
    let res = (|| -> Result<Kernels> {
        let train = pick(kernel(&xtr, None)?);
        let test_train = pick(kernel(&xte, Some(&xtr))?);
        let test_test = if a.mode == Mode::Gp { Some(pick(kernel(&xte, None)?)) } else { None };
        Ok(Kernels { train, test_train, test_test, source: serde_json::Value::Null })
    })();
    pb.finish_and_clear();
    let mut k = res?;
    k.source = json!({
        "arch": arch.to_string(), "parameterization": p.to_string(), "kernel": format!("{kind:?}").to_lowercase(),
        "x_train": a.x_train, "x_test": a.x_test,
    });
    Ok(k)
}

/// Shape checks naming the flags (the library's own errors name the math objects).
fn check_shapes(k: &Kernels, y: &Mat<f64>, f0: (&Option<Mat<f64>>, &Option<Mat<f64>>), from_arch: bool) -> Result<()> {
    let (ktr, ktt) = if from_arch {
        ("the train kernel", "the test-train kernel")
    } else {
        ("--kernel-train", "--kernel-test-train")
    };
    let n = k.train.nrows();
    if k.train.ncols() != n {
        bail!("{ktr} must be square (n x n), got {}", dims(&k.train));
    }
    if n == 0 {
        bail!("{ktr} is empty");
    }
    if y.nrows() != n {
        bail!("--y has {} rows but {ktr} is {n} x {n}: one target row per training point", y.nrows());
    }
    if k.test_train.ncols() != n {
        bail!(
            "{ktt} is {} but {ktr} is {n} x {n}: it must be t x n (one column per training point)",
            dims(&k.test_train)
        );
    }
    let t = k.test_train.nrows();
    if let Some(kss) = &k.test_test {
        if kss.nrows() != t || kss.ncols() != t {
            bail!("--kernel-test-test is {} but {ktt} has {t} test rows: it must be {t} x {t}", dims(kss));
        }
    }
    if let Some(f) = f0.0 {
        if f.nrows() != n || f.ncols() != y.ncols() {
            bail!("--f0-train is {} but --y is {}: they must match", dims(f), dims(y));
        }
    }
    if let Some(f) = f0.1 {
        if f.nrows() != t || f.ncols() != y.ncols() {
            bail!("--f0-test is {} but expected {t} x {} (test points x outputs)", dims(f), y.ncols());
        }
    }
    Ok(())
}

/// Run `ntklab predict`.
pub fn run(a: PredictArgs) -> Result<()> {
    check_flags(&a)?;
    // Existing outputs are refused before any kernel is computed.
    refuse_existing(&[a.out.join("prediction.npy"), a.out.join("summary.json")], a.force)?;
    let from_arch = a.arch.is_some();
    let k = if from_arch { kernels_from_arch(&a)? } else { kernels_from_files(&a)? };
    let (y, y_vec) = read_with_rank(&a.y, "--y")?;
    let f0_train = a.f0_train.as_ref().map(|p| load_matrix(p, "--f0-train")).transpose()?;
    let f0_test = a.f0_test.as_ref().map(|p| load_matrix(p, "--f0-test")).transpose()?;
    check_shapes(&k, &y, (&f0_train, &f0_test), from_arch)?;
    let (n, t, m) = (k.train.nrows(), k.test_train.nrows(), y.ncols());
    // The solve works on copies: an eigendecomposition or Cholesky factor of the n x n kernel with its
    // workspace (3 n^2) and the test-train product (t n).
    let solve = 3usize.saturating_mul(n).saturating_mul(n).saturating_add(t.saturating_mul(n));
    ntklab::data::memory::check_alloc(solve.saturating_mul(8), "the prediction's linear algebra")?;
    let created = !a.out.exists();
    ensure_dir(&a.out)?;
    let res = predict_into(&a, &k, (&y, y_vec), (&f0_train, &f0_test), (n, t, m));
    if res.is_err() && created {
        // A failed run leaves no empty folder behind (remove_dir only removes an empty one).
        let _ = std::fs::remove_dir(&a.out);
    }
    res
}

/// The body of `predict` once inputs are checked and the output folder exists.
#[allow(clippy::type_complexity)]
fn predict_into(
    a: &PredictArgs,
    k: &Kernels,
    (y, y_vec): (&Mat<f64>, bool),
    (f0_train, f0_test): (&Option<Mat<f64>>, &Option<Mat<f64>>),
    (n, t, m): (usize, usize, usize),
) -> Result<()> {
    let pred_path = a.out.join("prediction.npy");
    let mut staged = Staged::default();
    let mut files = vec!["prediction.npy".to_string()];
    let mut summary = json!({
        "mode": format!("{:?}", a.mode).to_lowercase(),
        "n_train": n, "n_test": t, "outputs": m,
        "source": k.source,
    });
    let mut notes: Vec<String> = Vec::new();
    match a.mode {
        Mode::Krr => {
            let reg = a.reg.unwrap_or(0.0);
            let r = krr(k.train.as_ref(), y.as_ref(), k.test_train.as_ref(), reg).context("kernel ridge regression")?;
            staged.mat(pred_path.clone(), r.prediction.as_ref(), y_vec)?;
            staged.mat(a.out.join("coefficients.npy"), r.coefficients.as_ref(), y_vec)?;
            files.push("coefficients.npy".into());
            summary["reg"] = json!(reg);
            summary["jitter"] = json!(r.jitter);
            if r.jitter > 0.0 {
                notes.push(format!(
                    "jitter: K + reg I was numerically singular; added {:.3e} to the diagonal (effective reg {:.3e})",
                    r.jitter,
                    reg + r.jitter
                ));
            }
        }
        Mode::Gp => {
            let noise = a.noise.unwrap_or(0.0);
            let kss = k.test_test.as_ref().expect("checked: gp has a test-test kernel");
            let r = gp_posterior(k.train.as_ref(), y.as_ref(), k.test_train.as_ref(), kss.as_ref(), noise)
                .context("GP posterior")?;
            // Rounding makes a variance at a training point slightly negative (~eps x scale); a clearly negative
            // one means the test kernel does not belong with the training kernel (not jointly PSD).
            let scale = (0..t).map(|i| kss[(i, i)].abs()).fold(1.0f64, f64::max);
            if let Some(i) = (0..t).find(|&i| r.cov[(i, i)] < -1e-8 * scale) {
                bail!(
                    "the GP posterior variance at test point {i} is {:.4e} < 0: the kernels are not jointly positive \
                     semi-definite (is --k-test-test the kernel of the test inputs with themselves, from the same \
                     architecture as --k-train and --k-test-train?)",
                    r.cov[(i, i)]
                );
            }
            staged.mat(pred_path.clone(), r.mean.as_ref(), y_vec)?;
            staged.mat(a.out.join("covariance.npy"), r.cov.as_ref(), false)?;
            files.push("covariance.npy".into());
            summary["noise"] = json!(noise);
            summary["jitter"] = json!(r.jitter);
            let negative = (0..t).filter(|&i| r.cov[(i, i)] < 0.0).count();
            summary["negative_variances"] = json!(negative);
            if r.jitter > 0.0 {
                notes.push(format!(
                    "jitter: K + noise I was numerically singular; added {:.3e} to the diagonal (effective noise {:.3e})",
                    r.jitter,
                    noise + r.jitter
                ));
            }
            if negative > 0 {
                notes.push(format!(
                    "{negative} posterior variances are slightly negative (rounding at test points that coincide with training points)"
                ));
            }
        }
        Mode::Flow | Mode::Gd => {
            let lr = a.lr.unwrap_or(1.0);
            let time = match a.mode {
                Mode::Flow => Time::Flow(a.time.expect("checked")),
                _ => Time::Steps(a.steps.expect("checked")),
            };
            let dynamics = LinearizedDynamics::new(k.train.as_ref(), lr).context("linearized dynamics")?;
            let f0tr = f0_train.as_ref().map(|f| f.as_ref());
            let f0te = f0_test.as_ref().map(|f| f.as_ref());
            let test = dynamics.test(k.test_train.as_ref(), y.as_ref(), f0tr, f0te, time)?;
            let train = dynamics.train(y.as_ref(), f0tr, time)?;
            staged.mat(pred_path.clone(), test.as_ref(), y_vec)?;
            staged.mat(a.out.join("train_prediction.npy"), train.as_ref(), y_vec)?;
            files.push("train_prediction.npy".into());
            let crit = dynamics.critical_lr();
            summary["lr"] = json!(lr);
            summary["critical_lr"] = json!(crit);
            let lam = dynamics.eigenvalues();
            summary["ntk_max"] = json!(lam.last());
            match time {
                Time::Flow(tt) => summary["time"] = json!(if tt.is_finite() { json!(tt) } else { json!("inf") }),
                Time::Steps(s) => summary["steps"] = json!(s),
            }
            let train_loss = (0..n)
                .flat_map(|i| (0..m).map(move |j| (i, j)))
                .map(|(i, j)| (train[(i, j)] - y[(i, j)]).powi(2))
                .sum::<f64>()
                / (2.0 * n as f64);
            summary["train_loss"] = json!(if train_loss.is_finite() { json!(train_loss) } else { json!(null) });
            if a.mode == Mode::Gd && lr >= crit {
                notes.push(format!(
                    "--lr {lr} is at or above the GD stability edge 2N/lambda_max(K) = {crit:.6e}: the linearized \
                     dynamics diverge along the top eigendirection"
                ));
            }
        }
    }
    summary["files"] = json!(files);
    summary["notes"] = json!(notes);
    let sj = serde_json::to_string_pretty(&summary)?;
    staged.0.push((a.out.join("summary.json"), sj.into_bytes()));
    staged.commit()?;
    for note in &notes {
        eprintln!("note: {note}");
    }
    println!(
        "{} prediction: {n} training points, {t} test points, {m} output{}",
        format!("{:?}", a.mode).to_lowercase(),
        if m == 1 { "" } else { "s" }
    );
    if let Some(j) = summary.get("jitter").and_then(|v| v.as_f64()) {
        println!("jitter added: {j:.3e}");
    }
    if let Some(tl) = summary.get("train_loss").and_then(|v| v.as_f64()) {
        println!(
            "train loss of the linearized network: {tl:.6e} (critical lr 2N/lambda_max = {:.6e})",
            summary["critical_lr"].as_f64().unwrap_or(f64::NAN)
        );
    }
    println!(
        "wrote {} in {}",
        files.iter().chain(std::iter::once(&"summary.json".to_string())).cloned().collect::<Vec<_>>().join(", "),
        a.out.display()
    );
    Ok(())
}
