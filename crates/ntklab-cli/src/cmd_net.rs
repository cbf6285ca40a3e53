//! `ntklab init`, `ntklab ntk`, `ntklab hessian` (finite networks).
//!
//! Models are safetensors or .npz files with PyTorch `nn.Sequential` names holding effective weights (see
//! `ntklab::net::io`); files made by PyTorch load with `--activation` (or `--arch`) and `--parameterization`.

use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Args;
use faer::{Mat, MatRef};
use ntklab::kernel::{Activation, Architecture, Parameterization, Shape};
use ntklab::net::{cast, load_mlp, save_mlp, Float, LoadOptions, LossCurvature, Mlp, Network, NtkOutputs, Precision};
use ntklab::spectrum::{lanczos, FnOp, LanczosOptions, LanczosResult, SymOp, Which};
use ntklab::train::loss::Loss;

use crate::util::{load_matrix, refuse_existing, spinner};

/// Arguments of `ntklab init`.
#[derive(Args, Debug)]
pub struct InitArgs {
    /// Architecture, e.g. "dense(512,w_std=1.5,b_std=0.1),relu,dense(1)" (no b_std: no bias).
    #[arg(long)]
    pub arch: String,
    /// Input dimension d (feature vectors).
    #[arg(long, required_unless_present = "input_shape", conflicts_with = "input_shape")]
    pub input_dim: Option<usize>,
    /// Shape of one input example for convolutional networks: HxWxC (NHWC images, as neural-tangents) or WxC.
    #[arg(long)]
    pub input_shape: Option<String>,
    /// Parameterization: ntk, standard, mean-field or mup.
    #[arg(long, default_value = "ntk")]
    pub parameterization: String,
    /// Output scale alpha: f(x) = alpha z_L(x) (lazy training for large alpha).
    #[arg(long, default_value_t = 1.0)]
    pub alpha: f64,
    /// Seed of the initialization (same seed, same weights, whatever the thread count).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Output file (.safetensors or .npz).
    #[arg(long)]
    pub out: PathBuf,
    /// Store float32 weights (default float64).
    #[arg(long)]
    pub f32: bool,
    /// Overwrite existing outputs (refused otherwise).
    #[arg(long)]
    pub force: bool,
}

/// How to read a model file (flattened into `ntk` and `hessian`).
#[derive(Args, Debug)]
pub struct ModelArgs {
    /// Saved model (.safetensors or .npz; ntklab's own or a PyTorch nn.Sequential state dict).
    #[arg(long)]
    pub model: PathBuf,
    /// Architecture of a file without ntklab metadata (overrides the file's own), e.g. "dense(512,b_std=1),relu,dense(1,b_std=1)".
    #[arg(long)]
    pub arch: Option<String>,
    /// For a file without ntklab metadata: the activation between its Linear layers (e.g. relu); widths come
    /// from the tensor shapes.
    #[arg(long)]
    pub activation: Option<String>,
    /// Parameterization used to read the stored (effective) weights; default: the file's, else standard. The
    /// function is the same under all; the raw coordinates (and so Hessian and empirical NTK) differ.
    #[arg(long)]
    pub parameterization: Option<String>,
    /// Output scale alpha (default: the file's, else 1).
    #[arg(long)]
    pub alpha: Option<f64>,
    /// Precision of the computation: f64 (default) or f32 (f32 lanes; parameters and inputs rounded to f32).
    #[arg(long, default_value = "f64")]
    pub precision: String,
    /// Shape of one input example (HxWxC) for a convolutional model in a file without ntklab metadata.
    #[arg(long)]
    pub input_shape: Option<String>,
}

/// f64 or f32 from `--precision`.
fn parse_precision(s: &str) -> Result<Precision> {
    match s.trim().to_ascii_lowercase().as_str() {
        "f64" | "float64" => Ok(Precision::F64),
        "f32" | "float32" => Ok(Precision::F32),
        other => bail!("--precision: expected f64 or f32, got `{other}`"),
    }
}

/// Arguments of `ntklab ntk`.
#[derive(Args, Debug)]
pub struct NtkArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Inputs, N1 x d (.npy or .csv).
    #[arg(long)]
    pub x: PathBuf,
    /// Second inputs, N2 x d; without it the symmetric kernel of --x.
    #[arg(long)]
    pub x2: Option<PathBuf>,
    /// Output .npy: N1 x N2 (trace over the k outputs), or (N1 k) x (N2 k) with --full.
    #[arg(long)]
    pub out: PathBuf,
    /// All output blocks: entry (i k + a, j k + b) = <dF_a(x_i)/dtheta, dF_b(x'_j)/dtheta>.
    #[arg(long)]
    pub full: bool,
    /// Store the kernel as float32 (computed in the --precision, f64 by default).
    #[arg(long)]
    pub f32: bool,
    /// Write the kernel even when an entry is NaN or infinite (by default that is an error naming the entry).
    #[arg(long)]
    pub allow_nonfinite: bool,
    /// Overwrite existing outputs (refused otherwise).
    #[arg(long)]
    pub force: bool,
}

/// Arguments of `ntklab hessian`.
#[derive(Args, Debug)]
pub struct HessianArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Inputs, N x d (.npy or .csv).
    #[arg(long)]
    pub x: PathBuf,
    /// Targets, N x k (.npy or .csv; a 1-D array is N x 1).
    #[arg(long)]
    pub y: PathBuf,
    /// Loss: mse (1/(2N) sum (f - y)^2), logistic (labels +-1) or ce (softmax cross-entropy, probability rows).
    #[arg(long, default_value = "mse")]
    pub loss: String,
    /// Number of top eigenvalues (largest algebraic).
    #[arg(long, default_value_t = 5)]
    pub top: usize,
    /// Maximum Lanczos steps (= Hessian-vector products) per matrix.
    #[arg(long, default_value_t = 300)]
    pub max_iter: usize,
    /// Relative residual tolerance of Lanczos.
    #[arg(long, default_value_t = 1e-8)]
    pub tol: f64,
    /// Seed of the Lanczos start vector.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Skip the Gauss-Newton part (only the Hessian's eigenvalues are computed and reported).
    #[arg(long)]
    pub no_gauss_newton: bool,
    /// Also write the results as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Overwrite existing outputs (refused otherwise).
    #[arg(long)]
    pub force: bool,
}

/// Run `init`.
pub fn run_init(a: InitArgs) -> Result<()> {
    ntklab::net::ModelFormat::from_path(&a.out)?;
    refuse_existing(std::slice::from_ref(&a.out), a.force)?;
    let p = Parameterization::parse(&a.parameterization).context("in --parameterization")?;
    let arch = Architecture::parse(&a.arch, p).context("in --arch")?;
    let shape = match (&a.input_shape, a.input_dim) {
        (Some(s), _) => Shape::parse(s).context("in --input-shape")?,
        (None, Some(d)) => Shape::flat(d),
        (None, None) => bail!("give --input-dim d (feature vectors) or --input-shape HxWxC (images)"),
    };
    let net = Mlp::init_for(&arch, &shape, a.alpha, a.seed)?;
    let precision = if a.f32 { Precision::F32 } else { Precision::F64 };
    save_mlp(&net, &a.out, precision)?;
    println!(
        "wrote {}: {arch} [{p}], input {}, {} parameters, alpha = {}, seed {} ({})",
        a.out.display(),
        if shape.is_spatial() { format!("shape {shape}") } else { format!("dim {}", net.input_dim) },
        net.num_params(),
        net.alpha,
        a.seed,
        if a.f32 { "f32" } else { "f64" }
    );
    if net.alpha != 1.0 {
        println!(
            "note: the file holds z_L's effective weights; a PyTorch nn.Sequential loaded from it computes f / alpha \
             (alpha = {} is in the metadata)",
            net.alpha
        );
    }
    Ok(())
}

/// Load the model described by `m`, naming the file in errors.
fn load_model(m: &ModelArgs) -> Result<Mlp> {
    let parameterization =
        m.parameterization.as_deref().map(Parameterization::parse).transpose().context("in --parameterization")?;
    let layers = match &m.arch {
        // The parameterization is resolved by the loader; parse only the layer list here.
        Some(s) => Some(Architecture::parse(s, Parameterization::Ntk).context("in --arch")?.layers),
        None => None,
    };
    let activation = m.activation.as_deref().map(Activation::parse).transpose().context("in --activation")?;
    if m.arch.is_some() && activation.is_some() {
        bail!("give either --arch or --activation, not both");
    }
    let input_shape = m.input_shape.as_deref().map(Shape::parse).transpose().context("in --input-shape")?;
    let opts = LoadOptions { layers, parameterization, activation, alpha: m.alpha, input_shape };
    load_mlp(&m.model, &opts).context("loading --model")
}

/// Load an input matrix and check it against the network.
fn load_inputs(net: &Mlp, path: &Path, what: &str) -> Result<Mat<f64>> {
    let (x, shape) = crate::cmd_kernel::load_inputs(path, what)?;
    match shape {
        Some(s) if s != net.input_shape => bail!(
            "{what} {} holds examples of shape {s}, but the model takes {}",
            path.display(),
            if net.input_shape.is_spatial() {
                format!("examples of shape {}", net.input_shape)
            } else {
                format!("{} features per row", net.input_dim)
            }
        ),
        _ => {}
    }
    net.check_input(x.as_ref()).with_context(|| format!("{what} {}", path.display()))?;
    Ok(x)
}

/// Run `ntk`.
pub fn run_ntk(a: NtkArgs) -> Result<()> {
    let ext = a.out.extension().and_then(|e| e.to_str()).unwrap_or("").to_lowercase();
    if ext != "npy" {
        bail!("--out {}: the kernel is written as .npy; give a file name ending in .npy", a.out.display());
    }
    refuse_existing(std::slice::from_ref(&a.out), a.force)?;
    let net = load_model(&a.model)?;
    let x = load_inputs(&net, &a.x, "--x")?;
    let x2 = a.x2.as_ref().map(|p| load_inputs(&net, p, "--x2")).transpose()?;
    let outputs = if a.full { NtkOutputs::Full } else { NtkOutputs::Trace };
    let k = net.output_dim();
    let (n1, n2) = (x.nrows(), x2.as_ref().map_or(x.nrows(), |m| m.nrows()));
    let precision = parse_precision(&a.model.precision)?;
    let pb = spinner(&format!("empirical NTK ({n1} x {n2}, {} parameters)", net.num_params()));
    let t0 = Instant::now();
    let res = match precision {
        Precision::F64 => net.empirical_ntk(x.as_ref(), x2.as_ref().map(|m| m.as_ref()), outputs),
        Precision::F32 => {
            let (n32, x32) = (net.cast::<f32>(), cast::<f64, f32>(x.as_ref()));
            let x2_32 = x2.as_ref().map(|m| cast::<f64, f32>(m.as_ref()));
            n32.empirical_ntk(x32.as_ref(), x2_32.as_ref().map(|m| m.as_ref()), outputs).map(|k| cast(k.as_ref()))
        }
    };
    let secs = t0.elapsed().as_secs_f64();
    pb.finish_and_clear();
    let ntk: Mat<f64> = res?;
    eprintln!("compute: {secs:.4} s ({} lanes)", if precision == Precision::F32 { "f32" } else { "f64" });
    let check = (!a.allow_nonfinite).then_some("the empirical NTK");
    let written = if a.f32 || precision == Precision::F32 {
        let m = Mat::from_fn(ntk.nrows(), ntk.ncols(), |i, j| ntk[(i, j)] as f32);
        ntklab::data::io::write_atomic(&a.out, |w| ntklab::data::io::npy_mat_into(w, m.as_ref(), check))
    } else {
        ntklab::data::io::write_atomic(&a.out, |w| ntklab::data::io::npy_mat_into(w, ntk.as_ref(), check))
    };
    if let Err(e) = written {
        let hint = if a.allow_nonfinite { "" } else { " (pass --allow-nonfinite to write non-finite values anyway)" };
        bail!("{e}{hint}");
    }
    let what = if a.full {
        format!("all {k} x {k} output blocks, row i*{k}+a")
    } else if k > 1 {
        format!("trace over {k} outputs")
    } else {
        "1 output".to_string()
    };
    println!(
        "wrote {} ({} x {}, {what}, {})",
        a.out.display(),
        ntk.nrows(),
        ntk.ncols(),
        if a.f32 || precision == Precision::F32 { "f32" } else { "f64" }
    );
    Ok(())
}

/// One spectrum in the JSON report.
#[derive(serde::Serialize)]
struct SpectrumJson {
    /// Top eigenvalues, descending.
    eigenvalues: Vec<f64>,
    /// Lanczos residual norms ||A y - theta y|| (an eigenvalue lies within each of its Ritz value).
    residuals: Vec<f64>,
    /// Operator products used.
    products: usize,
    /// Whether every residual met the tolerance.
    converged: bool,
}

impl SpectrumJson {
    fn new(r: &LanczosResult, products: usize) -> Self {
        SpectrumJson { eigenvalues: r.values.clone(), residuals: r.residuals.clone(), products, converged: r.converged }
    }
}

/// The JSON report of `ntklab hessian` (no timings, so equal inputs give equal bytes).
#[derive(serde::Serialize)]
struct HessianJson {
    model: String,
    loss: String,
    loss_value: f64,
    gradient_norm: f64,
    num_params: usize,
    num_examples: usize,
    num_outputs: usize,
    parameterization: String,
    hessian: SpectrumJson,
    #[serde(skip_serializing_if = "Option::is_none")]
    gauss_newton: Option<SpectrumJson>,
}

/// Lanczos on `op`, counting products and showing the count on the spinner.
fn top_eigs(
    op: &impl SymOp,
    opts: &LanczosOptions,
    pb: &crate::util::Progress,
    what: &str,
) -> Result<(LanczosResult, usize)> {
    let count = Cell::new(0usize);
    let counted = FnOp::new(op.dim(), |v: &[f64], out: &mut [f64]| {
        op.apply(v, out);
        count.set(count.get() + 1);
        if count.get().is_multiple_of(5) {
            pb.set_message(format!("Lanczos on the {what}: {} products", count.get()));
        }
    });
    pb.set_message(format!("Lanczos on the {what}"));
    let r = lanczos(&counted, opts).with_context(|| format!("Lanczos on the {what}"))?;
    Ok((r, count.get()))
}

/// The loss value, gradient norm and the Lanczos results of the Hessian and (unless skipped) the Gauss-Newton
/// matrix, in precision T; `times` gets the seconds of the three phases.
#[allow(clippy::too_many_arguments, clippy::type_complexity)]
fn hessian_parts<T: Float>(
    net: &Network<T>,
    x: MatRef<'_, T>,
    y: MatRef<'_, f64>,
    loss: Loss,
    opts: &LanczosOptions,
    a: &HessianArgs,
    pb: &crate::util::Progress,
    t0: Instant,
    times: &mut [f64; 3],
) -> Result<(f64, f64, LanczosResult, usize, Option<(LanczosResult, usize)>)> {
    let lc = LossCurvature::new(net, x, y, loss).map_err(|e| match e {
        ntklab::Error::Numerical(_) => {
            let wmax = net.params().iter().fold(0.0f64, |m, v| m.max(v.wide().abs()));
            anyhow::anyhow!("{e} (largest |raw parameter| {wmax:e})")
        }
        e => anyhow::Error::new(e).context("--y does not fit the loss"),
    })?;
    times[0] = t0.elapsed().as_secs_f64();
    let (h, nh) = top_eigs(&lc.hessian_op(), opts, pb, "Hessian")?;
    times[1] = t0.elapsed().as_secs_f64() - times[0];
    let g =
        if a.no_gauss_newton { None } else { Some(top_eigs(&lc.gauss_newton_op(), opts, pb, "Gauss-Newton matrix")?) };
    times[2] = t0.elapsed().as_secs_f64() - times[0] - times[1];
    let gnorm = lc.gradient().iter().map(|v| v.wide() * v.wide()).sum::<f64>().sqrt();
    Ok((lc.value(), gnorm, h, nh, g))
}

/// Run `hessian`.
pub fn run_hessian(a: HessianArgs) -> Result<()> {
    let loss = Loss::parse(&a.loss).context("in --loss")?;
    if let Some(j) = &a.json {
        if j.extension().and_then(|e| e.to_str()).map(|e| e.to_lowercase()).as_deref() != Some("json") {
            bail!("--json {}: give a file name ending in .json", j.display());
        }
        refuse_existing(std::slice::from_ref(j), a.force)?;
    }
    let net = load_model(&a.model)?;
    let x = load_inputs(&net, &a.x, "--x")?;
    let y = load_matrix(&a.y, "--y")?;
    let (n, k, p) = (x.nrows(), net.output_dim(), net.num_params());
    if y.nrows() != n {
        bail!(
            "--y {} has {} rows but --x {} has {n}: one target row per example",
            a.y.display(),
            y.nrows(),
            a.x.display()
        );
    }
    if y.ncols() != k {
        bail!("--y {} has {} columns but the network has {k} output(s)", a.y.display(), y.ncols());
    }
    ntklab::net::check_hessian_job(&net, n, loss, (a.top, a.max_iter), ("--top", "--max-iter"))?;
    let opts = LanczosOptions::new(a.top).which(Which::LargestAlgebraic).max_iter(a.max_iter).tol(a.tol).seed(a.seed);

    let pb = spinner(&format!("loss, gradient and curvature caches ({n} examples, {p} parameters)"));
    let t0 = Instant::now();
    let mut times = [0.0f64; 3];
    let precision = parse_precision(&a.model.precision)?;
    let res = match precision {
        Precision::F64 => hessian_parts(&net, x.as_ref(), y.as_ref(), loss, &opts, &a, &pb, t0, &mut times),
        Precision::F32 => {
            let x32 = cast::<f64, f32>(x.as_ref());
            hessian_parts(&net.cast::<f32>(), x32.as_ref(), y.as_ref(), loss, &opts, &a, &pb, t0, &mut times)
        }
    };
    let secs = t0.elapsed().as_secs_f64();
    pb.finish_and_clear();
    let (value, gnorm, h, nh, g) = res?;
    if !value.is_finite() || !gnorm.is_finite() || h.values.iter().any(|v| !v.is_finite()) {
        let wmax = net.params().iter().fold(0.0f64, |m, v| m.max(v.abs()));
        bail!(
            "the loss, gradient or Hessian is not finite at this model (loss {value:e}, gradient norm {gnorm:e}; largest \
             |raw parameter| {wmax:e}): its outputs overflow, as after a diverged run"
        );
    }
    let ng = g.as_ref().map_or(0, |g| g.1);
    eprintln!(
        "compute: {secs:.4} s (loss, gradient and caches {:.4} s; Hessian {:.4} s; Gauss-Newton {:.4} s)",
        times[0], times[1], times[2]
    );
    eprintln!("Hessian-vector products: {nh} (+ {ng} Gauss-Newton products)");
    let g = g.map(|g| g.0);
    for (r, what) in [(Some(&h), "Hessian"), (g.as_ref(), "Gauss-Newton")] {
        let Some(r) = r else { continue };
        if !r.converged {
            let worst = r.residuals.iter().cloned().fold(0.0, f64::max);
            eprintln!(
                "warning: {what} Lanczos did not reach tol {} in {} steps (largest residual {worst:.3e}); raise --max-iter",
                a.tol, r.iterations
            );
        }
    }

    println!("model: {} ({}, {p} parameters), data: {n} examples", a.model.model.display(), net.arch.parameterization);
    println!("loss ({loss}): {value:.10e}");
    println!("gradient norm: {gnorm:.10e}");
    match &g {
        Some(g) => {
            println!("{:>4}  {:>20}  {:>20}", "i", "Hessian", "Gauss-Newton");
            for i in 0..a.top {
                println!("{:>4}  {:>20.12e}  {:>20.12e}", i + 1, h.values[i], g.values[i]);
            }
        }
        None => {
            println!("{:>4}  {:>20}", "i", "Hessian");
            for i in 0..a.top {
                println!("{:>4}  {:>20.12e}", i + 1, h.values[i]);
            }
        }
    }
    if let Some(path) = &a.json {
        let report = HessianJson {
            model: a.model.model.display().to_string(),
            loss: loss.to_string(),
            loss_value: value,
            gradient_norm: gnorm,
            num_params: p,
            num_examples: n,
            num_outputs: k,
            parameterization: net.arch.parameterization.to_string(),
            hessian: SpectrumJson::new(&h, nh),
            gauss_newton: g.as_ref().map(|g| SpectrumJson::new(g, ng)),
        };
        let text = serde_json::to_string_pretty(&report)?;
        ntklab::data::io::write_atomic(path, |w| {
            use std::io::Write;
            w.write_all(text.as_bytes())?;
            w.write_all(b"\n")
        })?;
        println!("wrote {}", path.display());
    }
    Ok(())
}
