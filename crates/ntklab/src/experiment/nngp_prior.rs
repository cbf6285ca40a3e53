//! The NNGP prior (Neal 1994; Lee et al. 2018): a random network of width m converges, as m grows, to a Gaussian
//! process whose covariance is the NNGP kernel. On a 1-D slice of inputs (points on a circle) this samples functions
//! from the GP (Cholesky of the NNGP, jitter reported) and from random finite networks of growing width, for a deep
//! ReLU net (L = 10 hidden layers, the lecture's "realization for a ReLU NN") and an erf net, and measures:
//! * the covariance of the finite nets' outputs against the NNGP, ||C_m - K||_F / ||K||_F;
//! * the excess kurtosis of the outputs, which falls like 1/m (the first non-Gaussian correction).
//!
//! Both use the readout's conditional Gaussianity (a Rao-Blackwell estimate): given the last hidden layer h, the
//! output f = W_std/sqrt(m) w.h + b_std b is Gaussian with variance s = W_std^2 |h|^2/m + b_std^2 and covariance
//! S(x, x') = W_std^2 h(x).h(x')/m + b_std^2. So E[f f^T] = E[S] and the excess kurtosis of f(x) is
//! 3 Var(s)/E[s]^2: no readout sampling noise, so the 1/m law is visible with a few hundred draws.

use faer::Mat;
use serde::{Deserialize, Serialize};

use super::{fit_power_law, Context, PowerLawFit, Reproduction};
use crate::data::synthetic::{derive_seed, gaussian};
use crate::kernel::{kernel, Activation, Architecture, Parameterization};
use crate::net::Mlp;
use crate::report::{Chart, Comparison, Report, Section, Series};
use crate::{Error, Result};

/// One network family.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FamilyConfig {
    /// Name in the report.
    pub name: String,
    /// Activation (any of the activation table).
    pub activation: String,
    /// Hidden layers.
    pub depth: usize,
    /// Weight scale of every dense layer.
    #[serde(with = "crate::data::json_f64")]
    pub w_std: f64,
    /// Bias scale of every dense layer.
    #[serde(with = "crate::data::json_f64")]
    pub b_std: f64,
}

/// What to run; see the module docs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NngpPriorConfig {
    /// The network families.
    pub families: Vec<FamilyConfig>,
    /// Hidden widths of the finite networks.
    pub widths: Vec<usize>,
    /// Random networks per width.
    pub draws: usize,
    /// Inputs: points on the circle of radius sqrt(2) at angles 0 .. pi (so Sigma0(x, x) = 1).
    pub points: usize,
    /// GP sample functions drawn for the plot.
    pub gp_samples: usize,
    /// Master seed.
    #[serde(with = "crate::data::seed")]
    pub seed: u64,
}

impl NngpPriorConfig {
    /// The full run: widths 16 .. 4096, 400 draws each, 48 points.
    /// (The kurtosis slope is fitted on the widths m >= 8 L, where the 1/m term dominates its (L/m)^2
    /// correction; the covariance error on all widths.)
    pub fn full() -> NngpPriorConfig {
        NngpPriorConfig {
            families: Self::default_families(),
            widths: vec![16, 64, 256, 1024, 4096],
            draws: 400,
            points: 48,
            gp_samples: 5,
            seed: 0,
        }
    }

    /// A small instance for tests and CI.
    pub fn quick() -> NngpPriorConfig {
        NngpPriorConfig { widths: vec![32, 64, 128, 256, 512], draws: 300, points: 12, ..NngpPriorConfig::full() }
    }

    fn default_families() -> Vec<FamilyConfig> {
        vec![
            FamilyConfig {
                name: "relu, L = 10".into(),
                activation: "relu".into(),
                depth: 10,
                w_std: 2f64.sqrt(),
                b_std: 0.1,
            },
            FamilyConfig { name: "erf, L = 3".into(), activation: "erf".into(), depth: 3, w_std: 1.5, b_std: 0.1 },
        ]
    }

    /// Checks every value, naming the key.
    pub fn validate(&self) -> Result<()> {
        if self.families.is_empty() {
            return Err(Error::Config("families: at least one".into()));
        }
        for f in &self.families {
            Activation::parse(&f.activation)?;
            if f.depth == 0 || f.depth > 100 {
                return Err(Error::Config(format!("families.depth must be in 1..=100, got {}", f.depth)));
            }
            if !(f.w_std > 0.0 && f.w_std.is_finite() && f.b_std >= 0.0 && f.b_std.is_finite()) {
                return Err(Error::Config("families: w_std > 0 and b_std >= 0, finite".into()));
            }
        }
        if self.widths.len() < 2 || self.widths.iter().any(|&w| w == 0 || w > 1 << 16) {
            return Err(Error::Config("widths: at least two, each in 1..=65536".into()));
        }
        if !(2..=1_000_000).contains(&self.draws) {
            return Err(Error::Config(format!("draws must be in 2..=1000000, got {}", self.draws)));
        }
        if !(2..=2000).contains(&self.points) {
            return Err(Error::Config(format!("points must be in 2..=2000, got {}", self.points)));
        }
        if self.gp_samples > 100 {
            return Err(Error::Config("gp_samples must be at most 100".into()));
        }
        let (m, d) =
            (*self.widths.iter().max().unwrap_or(&1), self.families.iter().map(|f| f.depth).max().unwrap_or(1));
        crate::data::memory::check_alloc(
            m.saturating_mul(m).saturating_mul(d).saturating_mul(16),
            "the widest network",
        )?;
        Ok(())
    }
}

/// One family's measurements.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FamilyResult {
    /// Its name.
    pub name: String,
    /// The architecture (width m of the last measured network).
    pub arch: String,
    /// ||C_m - K||_F / ||K||_F per width.
    #[serde(with = "crate::data::json_f64::vec")]
    pub cov_error: Vec<f64>,
    /// Excess kurtosis of f(x), averaged over the points, per width.
    #[serde(with = "crate::data::json_f64::vec")]
    pub kurtosis: Vec<f64>,
    /// Log-log fit of the kurtosis against the width (expected slope -1).
    pub kurtosis_fit: PowerLawFit,
    /// Log-log fit of the covariance error against the width.
    pub cov_error_fit: PowerLawFit,
    /// Diagonal jitter the GP samples needed (the NNGP on a smooth slice is nearly singular).
    #[serde(with = "crate::data::json_f64")]
    pub jitter: f64,
    /// GP sample functions (one per row, at the points).
    pub gp_samples: Vec<Vec<f64>>,
    /// One finite-network sample function per width (the readout drawn too), for the plot.
    pub net_samples: Vec<Vec<f64>>,
}

/// The record of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NngpPriorResult {
    /// The configuration.
    pub config: NngpPriorConfig,
    /// Widths (as configured).
    pub widths: Vec<usize>,
    /// Angles of the points.
    #[serde(with = "crate::data::json_f64::vec")]
    pub angles: Vec<f64>,
    /// Per family.
    pub families: Vec<FamilyResult>,
    /// Family name -> covariance error per width.
    pub cov_error: std::collections::BTreeMap<String, Vec<f64>>,
    /// Family name -> excess kurtosis per width.
    pub kurtosis: std::collections::BTreeMap<String, Vec<f64>>,
    /// Family name -> fitted slope of the kurtosis against the width.
    pub slope_kurtosis: std::collections::BTreeMap<String, f64>,
}

fn arch_text(f: &FamilyConfig, m: usize, readout: bool) -> String {
    let mut parts = Vec::new();
    for _ in 0..f.depth {
        parts.push(format!("dense({m},w_std={},b_std={})", f.w_std, f.b_std));
        parts.push(f.activation.clone());
    }
    if readout {
        parts.push(format!("dense(1,w_std={},b_std={})", f.w_std, f.b_std));
    }
    parts.join(",")
}

const NET_STREAM: u64 = 1;
const GP_STREAM: u64 = 2;

/// Runs every family and width; each (family, width) is one checkpointed step.
pub fn run(cfg: &NngpPriorConfig, ctx: &mut Context) -> Result<NngpPriorResult> {
    cfg.validate()?;
    let n = cfg.points;
    let angles: Vec<f64> = (0..n).map(|i| std::f64::consts::PI * i as f64 / (n - 1) as f64).collect();
    let x = Mat::from_fn(n, 2, |i, j| 2f64.sqrt() * if j == 0 { angles[i].cos() } else { angles[i].sin() });
    let total = cfg.families.len() * cfg.widths.len();
    let mut done = 0;
    ctx.progress(0, total);
    let mut families = Vec::new();
    for (fi, f) in cfg.families.iter().enumerate() {
        let inf = Architecture::parse(&arch_text(f, 1, true), Parameterization::Ntk)?;
        let k = kernel(&inf, x.as_ref(), None)?.nngp;
        let (llt, jitter) = crate::predict::jitter::cholesky_with_jitter(k.as_ref(), 0.0, "the NNGP")?;
        let z = gaussian(n, cfg.gp_samples, derive_seed(derive_seed(cfg.seed, GP_STREAM), fi as u64));
        let l = llt.L();
        let gp_samples: Vec<Vec<f64>> = (0..cfg.gp_samples)
            .map(|s| (0..n).map(|i| (0..=i).map(|j| l[(i, j)] * z[(j, s)]).sum()).collect())
            .collect();
        let knorm =
            (0..n).flat_map(|i| (0..n).map(move |j| (i, j))).map(|(i, j)| k[(i, j)].powi(2)).sum::<f64>().sqrt();
        let (mut cov_error, mut kurtosis, mut net_samples) = (Vec::new(), Vec::new(), Vec::new());
        for &m in &cfg.widths {
            // (covariance error, kurtosis, one sample function)
            let key = format!("family={},width={m}", f.name);
            let (ce, ku, sample): (f64, f64, Vec<f64>) = ctx.step(&key, || {
                let hidden = Architecture::parse(&arch_text(f, m, false), Parameterization::Ntk)?;
                let (w2, b2) = (f.w_std * f.w_std, f.b_std * f.b_std);
                let mut mean_s = Mat::<f64>::zeros(n, n);
                let (mut s1, mut s2) = (vec![0.0; n], vec![0.0; n]);
                let mut sample = Vec::new();
                for r in 0..cfg.draws {
                    let seed = derive_seed(
                        derive_seed(derive_seed(cfg.seed, NET_STREAM), fi as u64),
                        (m as u64) << 32 | r as u64,
                    );
                    let net = Mlp::init(&hidden, 2, 1.0, seed)?;
                    let h = net.forward(x.as_ref())?;
                    let s = Mat::from_fn(n, n, |i, j| {
                        w2 * (0..m).map(|c| h[(i, c)] * h[(j, c)]).sum::<f64>() / m as f64 + b2
                    });
                    for i in 0..n {
                        s1[i] += s[(i, i)];
                        s2[i] += s[(i, i)] * s[(i, i)];
                    }
                    mean_s += &s;
                    if r == 0 {
                        // One function: the readout drawn as well (f | h is Gaussian with covariance S).
                        let zr = gaussian(n, 1, seed ^ 0x5eed);
                        let lr = crate::predict::jitter::cholesky_with_jitter(
                            s.as_ref(),
                            0.0,
                            "a network's output covariance",
                        )?
                        .0;
                        let lr = lr.L();
                        sample = (0..n).map(|i| (0..=i).map(|j| lr[(i, j)] * zr[(j, 0)]).sum()).collect();
                    }
                }
                let rd = cfg.draws as f64;
                mean_s *= faer::Scale(1.0 / rd);
                let err = (0..n)
                    .flat_map(|i| (0..n).map(move |j| (i, j)))
                    .map(|(i, j)| (mean_s[(i, j)] - k[(i, j)]).powi(2))
                    .sum::<f64>()
                    .sqrt()
                    / knorm;
                let ku = (0..n)
                    .map(|i| {
                        let e = s1[i] / rd;
                        let var = (s2[i] / rd - e * e) * rd / (rd - 1.0);
                        3.0 * var / (e * e)
                    })
                    .sum::<f64>()
                    / n as f64;
                Ok((err, ku, sample))
            })?;
            cov_error.push(ce);
            kurtosis.push(ku);
            net_samples.push(sample);
            done += 1;
            ctx.progress(done, total);
        }
        let w: Vec<f64> = cfg.widths.iter().map(|&m| m as f64).collect();
        // The 1/m law is the leading term for m >> L (corrections ~ (L/m)^2): fit where m >= 8 L when two
        // widths qualify.
        let wide: Vec<usize> = (0..w.len()).filter(|&k| cfg.widths[k] >= 8 * f.depth).collect();
        let sel = if wide.len() >= 2 { wide } else { (0..w.len()).collect() };
        let kurtosis_fit = fit_power_law(
            &sel.iter().map(|&k| w[k]).collect::<Vec<_>>(),
            &sel.iter().map(|&k| kurtosis[k]).collect::<Vec<_>>(),
        )?;
        families.push(FamilyResult {
            name: f.name.clone(),
            arch: arch_text(f, *cfg.widths.last().unwrap_or(&1), true),
            kurtosis_fit,
            cov_error_fit: fit_power_law(&w, &cov_error)?,
            cov_error,
            kurtosis,
            jitter,
            gp_samples,
            net_samples,
        });
    }
    let by = |g: &dyn Fn(&FamilyResult) -> Vec<f64>| families.iter().map(|f| (f.name.clone(), g(f))).collect();
    Ok(NngpPriorResult {
        config: cfg.clone(),
        widths: cfg.widths.clone(),
        angles,
        cov_error: by(&|f| f.cov_error.clone()),
        kurtosis: by(&|f| f.kurtosis.clone()),
        slope_kurtosis: families.iter().map(|f| (f.name.clone(), f.kurtosis_fit.exponent)).collect(),
        families,
    })
}

/// `ntklab run nngp-prior`.
pub struct NngpPrior;

impl Reproduction for NngpPrior {
    const NAME: &'static str = "nngp-prior";
    const DESCRIPTION: &'static str =
        "NNGP prior (Neal 1994; Lee et al. 2018): random nets of growing width converge to the NNGP Gaussian process";
    type Config = NngpPriorConfig;
    type Summary = NngpPriorResult;

    fn full() -> NngpPriorConfig {
        NngpPriorConfig::full()
    }
    fn quick() -> NngpPriorConfig {
        NngpPriorConfig::quick()
    }
    fn seed(cfg: &NngpPriorConfig) -> u64 {
        cfg.seed
    }
    fn set_seed(cfg: &mut NngpPriorConfig, seed: u64) {
        cfg.seed = seed;
    }
    fn validate(cfg: &NngpPriorConfig) -> Result<()> {
        cfg.validate()
    }
    fn run(cfg: &NngpPriorConfig, ctx: &mut Context) -> Result<NngpPriorResult> {
        run(cfg, ctx)
    }
    fn report(res: &NngpPriorResult) -> Report {
        report(res)
    }
    fn console(res: &NngpPriorResult) -> String {
        let mut s = format!("NNGP prior: widths {:?}, {} draws each\n", res.widths, res.config.draws);
        for f in &res.families {
            s += &format!(
                "{}: covariance error {:?}; excess kurtosis {:?}; kurtosis slope {:+.3} (theory -1); GP jitter {:.1e}\n",
                f.name,
                f.cov_error.iter().map(|v| format!("{v:.2e}")).collect::<Vec<_>>(),
                f.kurtosis.iter().map(|v| format!("{v:.2e}")).collect::<Vec<_>>(),
                f.kurtosis_fit.exponent,
                f.jitter
            );
        }
        s.trim_end().to_string()
    }
}

fn report(res: &NngpPriorResult) -> Report {
    let c = &res.config;
    let deg: Vec<f64> = res.angles.iter().map(|a| a.to_degrees()).collect();
    let mut sections = Vec::new();
    for f in &res.families {
        let mut series: Vec<Series> = f
            .gp_samples
            .iter()
            .enumerate()
            .map(|(s, v)| {
                Series::line(format!("GP sample {}", s + 1), deg.iter().copied().zip(v.iter().copied()).collect())
            })
            .collect();
        for (k, &m) in res.widths.iter().enumerate().filter(|(k, _)| *k == 0 || *k + 1 == res.widths.len()) {
            series.push(Series::markers(
                format!("network, width {m}"),
                deg.iter().copied().zip(f.net_samples[k].iter().copied()).collect(),
            ));
        }
        sections.push(Section::Plot {
            stem: format!("samples_{}", f.name.split(',').next().unwrap_or("net").trim()),
            chart: Chart {
                title: format!("Prior functions, {}", f.name),
                x_label: "angle of the input (degrees)".into(),
                y_label: "f(x)".into(),
                log_x: false,
                log_y: false,
                series,
                hlines: vec![],
            },
            caption: format!("Sample functions of the NNGP (lines) and of random networks (markers), {}", f.name),
        });
    }
    let w: Vec<f64> = res.widths.iter().map(|&m| m as f64).collect();
    let mut ks = Vec::new();
    let mut cs = Vec::new();
    for f in &res.families {
        ks.push(Series::markers(
            format!("{}: slope {:+.2}", f.name, f.kurtosis_fit.exponent),
            w.iter().copied().zip(f.kurtosis.iter().copied()).collect(),
        ));
        ks.push(Series::line(format!("{} fit", f.name), w.iter().map(|&x| (x, f.kurtosis_fit.eval(x))).collect()));
        cs.push(Series::markers(
            format!("{}: slope {:+.2}", f.name, f.cov_error_fit.exponent),
            w.iter().copied().zip(f.cov_error.iter().copied()).collect(),
        ));
    }
    if let Some(f) = res.families.first() {
        ks.push(Series::line("slope -1", w.iter().map(|&x| (x, f.kurtosis[0] * w[0] / x)).collect()));
    }
    let loglog = |title: &str, y: &str, series: Vec<Series>| Chart {
        title: title.into(),
        x_label: "width m".into(),
        y_label: y.into(),
        log_x: true,
        log_y: true,
        series,
        hlines: vec![],
    };
    sections.push(Section::Plot {
        stem: "kurtosis_vs_width".into(),
        chart: loglog("Excess kurtosis of the outputs", "excess kurtosis", ks),
        caption: "The first non-Gaussian correction falls like 1/width".into(),
    });
    sections.push(Section::Plot {
        stem: "cov_error_vs_width".into(),
        chart: loglog("Distance of the networks' covariance to the NNGP", "||C_m - K||_F / ||K||_F", cs),
        caption: format!("Finite-width bias plus the sampling error of {} draws", c.draws),
    });
    let mut rows = Vec::new();
    for f in &res.families {
        for (k, &m) in res.widths.iter().enumerate() {
            rows.push(vec![
                f.name.clone(),
                m.to_string(),
                format!("{:.3e}", f.cov_error[k]),
                format!("{:.3e}", f.kurtosis[k]),
            ]);
        }
    }
    sections.push(Section::Table {
        caption: "Measurements".into(),
        headers: ["family", "width", "covariance error", "excess kurtosis"].map(String::from).to_vec(),
        rows,
    });
    Report {
        title: "The NNGP prior of wide random networks".into(),
        claim: "Neal (1994); Lee et al. (2018): as the width grows, a randomly initialized network converges to a \
                Gaussian process whose covariance is the NNGP kernel; the outputs' excess kurtosis, the leading \
                non-Gaussian correction, vanishes like 1/width."
            .into(),
        setup: format!(
            "{} points on the circle of radius sqrt(2) at angles 0..180 degrees; NTK parameterization; families: {}. \
             For each width, {} random networks; the readout is integrated out exactly (given the last hidden layer \
             the output is Gaussian), so covariance and kurtosis carry no readout noise. GP samples by Cholesky of \
             the NNGP with the smallest diagonal jitter that works (reported). Seed {}.",
            c.points,
            res.families
                .iter()
                .map(|f| {
                    let c = c.families.iter().find(|g| g.name == f.name);
                    c.map_or(f.name.clone(), |g| {
                        format!(
                            "{}: {} x [`dense(m, w_std={:.4}, b_std={})`, `{}`], then `dense(1)` alike",
                            f.name, g.depth, g.w_std, g.b_std, g.activation
                        )
                    })
                })
                .collect::<Vec<_>>()
                .join("; "),
            c.draws,
            c.seed
        ),
        comparisons: res
            .families
            .iter()
            .flat_map(|f| {
                let dec = f.cov_error.windows(2).filter(|w| w[1] < w[0]).count();
                [
                    Comparison {
                        quantity: format!("{}: slope of the excess kurtosis vs width (m >= 8 L)", f.name),
                        expected: "-1".into(),
                        measured: format!("{:+.3} (R^2 {:.3})", f.kurtosis_fit.exponent, f.kurtosis_fit.r2),
                        agrees: Some((-1.3..=-0.7).contains(&f.kurtosis_fit.exponent)),
                    },
                    Comparison {
                        quantity: format!("{}: covariance error vs width", f.name),
                        expected: "falls towards 0".into(),
                        measured: format!(
                            "{:.2e} -> {:.2e} (slope {:+.2})",
                            f.cov_error[0],
                            f.cov_error[f.cov_error.len() - 1],
                            f.cov_error_fit.exponent
                        ),
                        agrees: Some(dec * 2 >= f.cov_error.len() - 1 && f.cov_error_fit.exponent < 0.0),
                    },
                ]
            })
            .collect(),
        sections,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quick_instance_shows_the_gaussian_limit() {
        let res = run(&NngpPriorConfig::quick(), &mut Context::quiet()).unwrap();
        for f in &res.families {
            // Excess kurtosis ~ c / m (Rao-Blackwell estimate; fitted on m >= 8 L of the quick widths 32..512).
            assert!((-1.35..=-0.65).contains(&f.kurtosis_fit.exponent), "{}: {}", f.name, f.kurtosis_fit.exponent);
            assert!(f.kurtosis.iter().all(|&k| k > 0.0), "{}: {:?}", f.name, f.kurtosis);
            // The covariance approaches the NNGP.
            assert!(f.cov_error.last().unwrap() < &f.cov_error[0], "{}: {:?}", f.name, f.cov_error);
            assert!(f.cov_error.last().unwrap() < &0.1, "{}: {:?}", f.name, f.cov_error);
            assert_eq!(f.gp_samples.len(), 5);
        }
        assert_eq!(res.slope_kurtosis.len(), 2);
    }
}
