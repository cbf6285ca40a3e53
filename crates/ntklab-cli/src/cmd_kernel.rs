//! `ntklab kernel`: infinite-width NNGP and NTK on data files, or a demo on built-in data.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Args;
use faer::Mat;
use ntklab::kernel::{kernel_with_progress, Architecture, Kernel, Parameterization};

use crate::util::{bar, ensure_dir, mark_dir, refuse_existing, MARKER};
use ntklab::report::plot::{self, Chart, Series};

const DEMO_ARCH: &str =
    "dense(512,w_std=1.5,b_std=0.1),relu,dense(512,w_std=1.5,b_std=0.1),relu,dense(1,w_std=1.5,b_std=0.1)";

/// Arguments of `ntklab kernel`.
#[derive(Args, Debug)]
pub struct KernelArgs {
    /// Architecture, e.g. "dense(512,w_std=1.5,b_std=0.1),relu,dense(512),relu,dense(1)".
    #[arg(long, conflicts_with = "arch_file")]
    pub arch: Option<String>,
    /// Architecture as a TOML file (`arch = "..."` or `layers = [...]`, optional `parameterization`).
    #[arg(long)]
    pub arch_file: Option<PathBuf>,
    /// Dense-layer parameterization: ntk or standard (a TOML file's own setting wins).
    #[arg(long, default_value = "ntk")]
    pub parameterization: String,
    /// Inputs, N1 x d (.npy or .csv).
    #[arg(long, required_unless_present = "demo")]
    pub x1: Option<PathBuf>,
    /// Second inputs, N2 x d; without it the symmetric kernel of x1 is computed.
    #[arg(long)]
    pub x2: Option<PathBuf>,
    /// Output folder: nngp.npy and ntk.npy (N1 x N2) are written there.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Compute and store in f32 (default f64).
    #[arg(long)]
    pub f32: bool,
    /// Run a demo on built-in data (points on a circle) and plot the kernels against the angle.
    #[arg(long)]
    pub demo: bool,
    /// Write the kernels even when an entry is NaN or infinite (by default that is an error naming the entry,
    /// and nothing is written).
    #[arg(long)]
    pub allow_nonfinite: bool,
    /// Overwrite existing outputs (refused otherwise).
    #[arg(long)]
    pub force: bool,
    /// Convolutional kernels: compute and write B rows at a time, so the N1 x N2 outputs need not fit in memory
    /// (the result is bit-identical to one shot).
    #[arg(long)]
    pub batch: Option<usize>,
    /// A network that ends on an image gives the covariances between its output positions, N1 x N2 x H x H' x W
    /// x W' (neural-tangents' layout, spatial axes in input order); with this flag only each position with
    /// itself, N1 x N2 x H x W.
    #[arg(long)]
    pub diagonal_spatial: bool,
}

/// NNGP and NTK matrices.
type KernelPair = (Mat<f64>, Mat<f64>);

fn resolve_arch(a: &KernelArgs, default_arch: Option<&str>) -> Result<Architecture> {
    let p = Parameterization::parse(&a.parameterization)?;
    match (&a.arch, &a.arch_file, default_arch) {
        (Some(s), None, _) => Ok(Architecture::parse(s, p).context("in --arch")?),
        (None, Some(f), _) => Ok(Architecture::from_toml_file(f, p)?),
        (None, None, Some(s)) => Ok(Architecture::parse(s, p)?),
        (None, None, None) => {
            bail!("give the architecture with --arch \"dense(512),relu,dense(1)\" or --arch-file arch.toml")
        }
        (Some(_), Some(_), _) => bail!("give only one of --arch and --arch-file"),
    }
}

fn to_f32(m: &Mat<f64>) -> Mat<f32> {
    let mut out = Mat::<f32>::zeros(m.nrows(), m.ncols());
    for j in 0..m.ncols() {
        let dst = out.col_mut(j).try_as_col_major_mut().expect("column-major storage").as_slice_mut();
        for (d, &s) in dst.iter_mut().zip(m.col_as_slice(j)) {
            *d = s as f32;
        }
    }
    out
}

/// Write `out/nngp.npy` and `out/ntk.npy` in the kernel's own precision, both or neither: a non-finite entry
/// (unless allowed) or a failed write leaves no file, and no output folder that this call created.
fn write_kernel<T: ntklab::data::io::NpyElem + ntklab::kernel::compute::KernelScalar>(
    out: &Path,
    k: &Kernel<T>,
    allow_nonfinite: bool,
) -> Result<()> {
    write_pair(out, allow_nonfinite, |w, name, check| {
        let m = if name == "nngp" { &k.nngp } else { &k.ntk };
        ntklab::data::io::npy_mat_into(w, m.as_ref(), check)
    })
}

/// [`write_kernel`]'s two files from `fill(writer, "nngp" or "ntk", finiteness check)`: both or neither, and
/// no output folder that this call created when they fail.
fn write_pair(
    out: &Path,
    allow_nonfinite: bool,
    fill: impl Fn(&mut std::io::BufWriter<std::fs::File>, &'static str, Option<&str>) -> std::io::Result<()>,
) -> Result<()> {
    let created = !out.exists();
    ensure_dir(out)?;
    let check = |name: &'static str| (!allow_nonfinite).then_some(name);
    let (p1, p2) = (out.join("nngp.npy"), out.join("ntk.npy"));
    let res = ntklab::data::io::write_all_atomic(vec![
        (p1.as_path(), Box::new(|w: &mut _| fill(w, "nngp", check("nngp")))),
        (p2.as_path(), Box::new(|w: &mut _| fill(w, "ntk", check("ntk")))),
    ]);
    if let Err(e) = res {
        if created {
            let _ = std::fs::remove_dir(out);
        }
        let hint = if allow_nonfinite { "" } else { " (pass --allow-nonfinite to write non-finite values anyway)" };
        bail!("{e}{hint}");
    }
    Ok(())
}

/// Compute and write nngp.npy / ntk.npy; returns the seconds spent computing and, when `values` is set,
/// the two matrices widened to f64 (only the demo needs them, so the hot path skips the copy).
fn compute_and_write(
    arch: &Architecture,
    x1: &Mat<f64>,
    x2: Option<&Mat<f64>>,
    out: &Path,
    (f32, allow_nonfinite): (bool, bool),
    values: bool,
) -> Result<(f64, Option<KernelPair>)> {
    let pb = bar(1, &format!("NNGP and NTK ({} x {})", x1.nrows(), x2.map_or(x1.nrows(), |m| m.nrows())));
    let progress = |done: usize, total: usize| {
        pb.set_length(total as u64);
        pb.set_position(done as u64);
        Ok(())
    };
    let t0 = Instant::now();
    if f32 {
        let a = to_f32(x1);
        let b = x2.map(to_f32);
        let k = kernel_with_progress::<f32>(arch, a.as_ref(), b.as_ref().map(|m| m.as_ref()), &progress);
        let secs = t0.elapsed().as_secs_f64();
        pb.finish_and_clear();
        let k = k?;
        write_kernel(out, &k, allow_nonfinite)?;
        let up = |m: &Mat<f32>| Mat::from_fn(m.nrows(), m.ncols(), |i, j| m[(i, j)] as f64);
        Ok((secs, values.then(|| (up(&k.nngp), up(&k.ntk)))))
    } else {
        let k = kernel_with_progress::<f64>(arch, x1.as_ref(), x2.map(|m| m.as_ref()), &progress);
        let secs = t0.elapsed().as_secs_f64();
        pb.finish_and_clear();
        let k = k?;
        write_kernel(out, &k, allow_nonfinite)?;
        Ok((secs, values.then_some((k.nngp, k.ntk))))
    }
}

/// The convolutional kernel into `out`: one shot, or `--batch` rows at a time streamed into the .npy files. The
/// memory the job needs is printed first; a job that cannot fit is refused before computing.
fn cnn_into<T: ntklab::data::io::NpyElem + ntklab::kernel::compute::KernelScalar>(
    arch: &Architecture,
    shape: &ntklab::kernel::Shape,
    x1: &Mat<f64>,
    x2: Option<&Mat<f64>>,
    out: &Path,
    a: &KernelArgs,
) -> Result<f64> {
    use ntklab::data::memory::{available_bytes, fmt_bytes};
    let (n1, n2) = (x1.nrows(), x2.map_or(x1.nrows(), |m| m.nrows()));
    use ntklab::kernel::cnn::Spatial;
    let what = if a.diagonal_spatial { Spatial::Diagonal } else { Spatial::Full };
    let job = ntklab::kernel::cnn::CnnKernel::<T>::new_spatial(arch, shape, x1.as_ref(), x2.map(|m| m.as_ref()), what)?;
    if !job.output_extents().is_empty() {
        if a.batch.is_some() {
            bail!("--batch applies to networks that end on feature vectors; this one ends on an image");
        }
        let per: usize = job.output_extents().iter().map(|&e| if a.diagonal_spatial { e } else { e * e }).product();
        let bytes = n1.saturating_mul(n2).saturating_mul(per).saturating_mul(2 * std::mem::size_of::<T>());
        eprintln!(
            "memory: about {} needed{}",
            fmt_bytes(bytes as u64),
            available_bytes().map_or(String::new(), |v| format!(", {} available", fmt_bytes(v)))
        );
        let pb = bar(n1 as u64, &format!("covariances between output positions ({n1} x {n2} pairs)"));
        let t0 = Instant::now();
        let k = job.spatial(&|d: usize, _| {
            pb.set_position(d as u64);
            Ok(())
        })?;
        pb.finish_and_clear();
        let secs = t0.elapsed().as_secs_f64();
        write_pair(out, a.allow_nonfinite, |w, name, check| {
            let v = if name == "nngp" { &k.nngp } else { &k.ntk };
            ntklab::data::io::npy_array_into(w, &k.shape, v, check)
        })?;
        eprintln!(
            "covariances between output positions: shape {:?} (N1, N2, then each spatial axis of x1, x2)",
            k.shape
        );
        return Ok(secs);
    }
    let rows = match a.batch {
        Some(0) => bail!("--batch must be at least 1"),
        Some(b) => b.min(n1),
        None => n1,
    };
    let need = job.bytes_for_rows(rows) as u64;
    eprintln!(
        "memory: about {} needed{}{}",
        fmt_bytes(need),
        available_bytes().map_or(String::new(), |v| format!(", {} available", fmt_bytes(v))),
        if a.batch.is_some() { format!(" ({rows} rows at a time)") } else { String::new() }
    );
    let pb = bar(1, &format!("CNN-GP and CNTK ({n1} x {n2})"));
    let t0 = Instant::now();
    let created = !out.exists();
    let res = (|| -> Result<()> {
        if a.batch.is_none() {
            let k = job.full(&|d: usize, t: usize| {
                pb.set_length(t as u64);
                pb.set_position(d as u64);
                Ok(())
            })?;
            pb.finish_and_clear();
            return write_kernel(out, &k, a.allow_nonfinite);
        }
        ensure_dir(out)?;
        let check = |n: &'static str| (!a.allow_nonfinite).then_some(n);
        let mut wn = ntklab::data::io::NpyRowWriter::<T>::create(&out.join("nngp.npy"), n1, n2, check("nngp"))?;
        let mut wt = ntklab::data::io::NpyRowWriter::<T>::create(&out.join("ntk.npy"), n1, n2, check("ntk"))?;
        pb.set_length(n1 as u64);
        let mut r0 = 0;
        while r0 < n1 {
            let r1 = (r0 + rows).min(n1);
            let base = r0;
            let k = job.rows(r0, r1, &|d: usize, _| {
                pb.set_position((base + d) as u64);
                Ok(())
            })?;
            wn.push(k.nngp.as_ref())?;
            wt.push(k.ntk.as_ref())?;
            r0 = r1;
        }
        pb.finish_and_clear();
        ntklab::data::io::NpyRowWriter::commit_all(vec![wn, wt])?;
        Ok(())
    })();
    if res.is_err() && created {
        let _ = std::fs::remove_dir(out);
    }
    res?;
    Ok(t0.elapsed().as_secs_f64())
}

/// Inputs from a file: N x d feature rows (.npy of rank 2, .csv), or N x W x C / N x H x W x C (/ N x D x H x W x
/// C) examples with spatial axes (.npy), returned as N rows of their values in C order with the example shape.
pub fn load_inputs(path: &Path, what: &str) -> Result<(Mat<f64>, Option<ntklab::kernel::Shape>)> {
    ntklab::data::read_examples(path).with_context(|| format!("reading {what}"))
}

/// Run `ntklab kernel`.
pub fn run(a: KernelArgs) -> Result<()> {
    if a.demo {
        return demo(&a);
    }
    let arch = resolve_arch(&a, None)?;
    let out = a.out.clone().context("--out DIR is required (nngp.npy and ntk.npy are written there)")?;
    refuse_existing(&[out.join("nngp.npy"), out.join("ntk.npy")], a.force)?;
    let t_load = Instant::now();
    let (x1, shape1) = load_inputs(a.x1.as_ref().expect("clap requires --x1 without --demo"), "--x1")?;
    let x2 = match &a.x2 {
        Some(p) => Some(load_inputs(p, "--x2")?),
        None => None,
    };
    if let Some((_, s2)) = &x2 {
        if *s2 != shape1 {
            bail!(
                "--x1 has examples of shape {} but --x2 of shape {}",
                shape1.as_ref().map_or("(features)".into(), |s| s.to_string()),
                s2.as_ref().map_or("(features)".into(), |s| s.to_string())
            );
        }
    }
    let x2 = x2.map(|(m, _)| m);
    let load_secs = t_load.elapsed().as_secs_f64();
    let t_all = Instant::now();
    let secs = match &shape1 {
        None => {
            if a.batch.is_some() {
                bail!(
                    "--batch applies to convolutional kernels (inputs with spatial axes); for dense kernels pass \
                       row blocks as --x1 with --x2"
                );
            }
            compute_and_write(&arch, &x1, x2.as_ref(), &out, (a.f32, a.allow_nonfinite), false)?.0
        }
        Some(shape) => {
            if a.f32 {
                cnn_into::<f32>(&arch, shape, &x1, x2.as_ref(), &out, &a)?
            } else {
                cnn_into::<f64>(&arch, shape, &x1, x2.as_ref(), &out, &a)?
            }
        }
    };
    if std::env::var_os("NTKLAB_PROFILE").is_some() {
        eprintln!(
            "[profile] read inputs: {load_secs:.4} s; write outputs: {:.4} s",
            t_all.elapsed().as_secs_f64() - secs
        );
    }
    eprintln!("compute: {secs:.4} s");
    println!(
        "wrote {} and {} ({} x {}, {})",
        out.join("nngp.npy").display(),
        out.join("ntk.npy").display(),
        x1.nrows(),
        x2.as_ref().map_or(x1.nrows(), |m| m.nrows()),
        if a.f32 { "f32" } else { "f64" }
    );
    Ok(())
}

fn demo(a: &KernelArgs) -> Result<()> {
    let arch = resolve_arch(a, Some(DEMO_ARCH))?;
    let out = a.out.clone().unwrap_or_else(|| PathBuf::from("ntklab-demo"));
    // The demo folder is ntklab's own (marked): running the demo again refreshes it; anything else is protected
    // by the usual rule.
    let ours = out.join(MARKER).is_file();
    let outputs: Vec<PathBuf> = ["nngp.npy", "ntk.npy", "x.npy", "kernel_vs_angle.svg", "kernel_vs_angle.png"]
        .iter()
        .map(|f| out.join(f))
        .collect();
    refuse_existing(&outputs, a.force || ours)?;
    let fresh = !out.exists();
    let n = 181;
    // Points on the unit circle scaled to norm sqrt(2) so that Sigma0(x, x) = 1; angles 0..pi from x_0.
    let x = Mat::from_fn(n, 2, |i, j| {
        let t = std::f64::consts::PI * i as f64 / (n - 1) as f64;
        2f64.sqrt() * if j == 0 { t.cos() } else { t.sin() }
    });
    println!("ntklab kernel demo: {n} points on a circle (angles 0..180 deg), architecture");
    println!("  {arch}  [{}]", arch.parameterization);
    let (secs, values) = compute_and_write(&arch, &x, None, &out, (a.f32, a.allow_nonfinite), true)?;
    if fresh {
        mark_dir(&out, "kernel")?;
    }
    let (nngp, ntk) = values.expect("requested");
    ntklab::data::write_npy_mat(&out.join("x.npy"), x.as_ref())?;
    println!("computed the {n} x {n} NNGP and NTK in {secs:.4} s");
    println!("{:>8} {:>14} {:>14}", "angle", "NNGP(x0, x)", "NTK(x0, x)");
    for i in (0..n).step_by(30) {
        println!("{:>7}° {:>14.6} {:>14.6}", i, nngp[(0, i)], ntk[(0, i)]);
    }
    let deg = |i: usize| 180.0 * i as f64 / (n - 1) as f64;
    let chart = Chart {
        title: "Infinite-width kernels vs angle".into(),
        x_label: "angle between inputs (degrees)".into(),
        y_label: "kernel value".into(),
        series: vec![
            Series::line("NNGP", (0..n).map(|i| (deg(i), nngp[(0, i)])).collect()),
            Series::line("NTK", (0..n).map(|i| (deg(i), ntk[(0, i)])).collect()),
        ],
        ..Default::default()
    };
    plot::save(&chart, &out.join("kernel_vs_angle"))?;
    println!("wrote {}/{{nngp,ntk,x}}.npy and kernel_vs_angle.{{svg,png}}", out.display());
    Ok(())
}
