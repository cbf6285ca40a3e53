//! Transition to linearity of networks with DAG architecture (Zhu, Liu & Belkin 2022): for a network on any
//! directed acyclic graph, the spectral norm of the Hessian of the output w.r.t. the parameters at
//! initialization is O~(1/sqrt(m)), where m is the minimum in-degree of the neurons outside the input and first
//! layers; a single neuron whose in-degree stays fixed (a bottleneck) keeps it O(1).
//!
//! Three families of NTK-parameterized DAGs with `hidden_layers` hidden layers of width m are swept over m:
//! * `uniform`: layer l >= 3 reads the concatenation of layers l-1 and l-2 (in-degree 2m), layer 2 reads layer 1
//!   (in-degree m), and the readout reads the last two layers: every in-degree grows with m;
//! * `bottleneck`: the same plus a branch through a node of fixed width k (`bottleneck`): layer 1 -> k neurons ->
//!   m neurons of in-degree k, concatenated into layer 3: those neurons' in-degree does not grow;
//! * `skip`: a chain whose every hidden layer l >= 2 also reads the input: z_l = W_l h_{l-1} + U_l x (in-degree
//!   m + d).
//!
//! For each (family, m) the spectral norm ||d^2 f(x)/dw^2||_2 is measured at `hessian_inputs` inputs on the sphere
//! and `seeds` initializations, by Lanczos (largest magnitude) on exact output-Hessian products (one R-operator
//! pass each, [`OutputCurvature`]), and fitted against m on log-log axes. Expected slopes: about -1/2 for
//! `uniform` and `skip` (slightly above, from the sqrt(ln m) of the largest Gaussian weight), about 0 for
//! `bottleneck`.

use faer::Mat;
use serde::{Deserialize, Serialize};

use super::{fit_power_law, mean_std, Context, PowerLawFit, Reproduction};
use crate::data::synthetic::{derive_seed, sphere};
use crate::kernel::{Activation, Architecture, Parameterization};
use crate::net::{Network, OutputCurvature};
use crate::report::{Chart, Comparison, Report, Section, Series};
use crate::spectrum::{lanczos, LanczosOptions, Which};
use crate::{Error, Result};

/// One of the three DAG families of the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Family {
    /// Every in-degree grows with m.
    Uniform,
    /// Uniform plus m neurons of fixed in-degree k.
    Bottleneck,
    /// A chain with skip connections from the input into every hidden layer.
    Skip,
}

impl Family {
    /// All families, in report order.
    pub const ALL: [Family; 3] = [Family::Uniform, Family::Bottleneck, Family::Skip];

    /// Name in summaries and plots.
    pub fn as_str(self) -> &'static str {
        match self {
            Family::Uniform => "uniform",
            Family::Bottleneck => "bottleneck",
            Family::Skip => "skip",
        }
    }
}

/// What to sweep and how to measure; see the module docs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LinearityDagConfig {
    /// Widths m of the hidden layers.
    pub widths: Vec<usize>,
    /// Number of hidden layers (>= 3, so that the bottleneck branch has a layer to feed).
    pub hidden_layers: usize,
    /// Width k of the bottleneck node (the fixed in-degree).
    pub bottleneck: usize,
    /// Activation of every hidden layer; twice differentiable (e.g. `tanh`, `erf`, `gelu`).
    pub activation: String,
    /// Input dimension d.
    pub input_dim: usize,
    /// Inputs (on the sphere of radius sqrt(d)) at which the Hessian is measured, per initialization.
    pub hessian_inputs: usize,
    /// Independent initializations per (family, width).
    pub seeds: usize,
    /// Lanczos steps per Hessian norm.
    pub lanczos_max_iter: usize,
    /// Lanczos relative residual tolerance.
    #[serde(with = "crate::data::json_f64")]
    pub lanczos_tol: f64,
    /// Master seed.
    #[serde(with = "crate::data::seed")]
    pub seed: u64,
}

impl Default for LinearityDagConfig {
    fn default() -> Self {
        LinearityDagConfig::full()
    }
}

impl LinearityDagConfig {
    /// The full sweep: widths 64..1024, 3 hidden layers, one bottleneck neuron (k = 1), tanh, d = 8, 4 inputs x
    /// 4 seeds.
    pub fn full() -> LinearityDagConfig {
        LinearityDagConfig {
            widths: (6..=10).map(|k| 1usize << k).collect(),
            hidden_layers: 3,
            bottleneck: 1,
            activation: "tanh".into(),
            input_dim: 8,
            hessian_inputs: 4,
            seeds: 4,
            lanczos_max_iter: 60,
            lanczos_tol: 1e-4,
            seed: 0,
        }
    }

    /// A small instance for tests and CI (seconds): widths 64..512, 2 inputs x 3 seeds, Lanczos to 1e-3.
    pub fn quick() -> LinearityDagConfig {
        LinearityDagConfig {
            widths: (6..=9).map(|k| 1usize << k).collect(),
            hessian_inputs: 2,
            seeds: 3,
            lanczos_tol: 1e-3,
            ..LinearityDagConfig::full()
        }
    }

    /// Checks the configuration.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Config(format!("linearity-dag: {m}")));
        if self.widths.len() < 2 || self.widths.contains(&0) {
            return bad(format!("need at least two positive widths, got {:?}", self.widths));
        }
        if self.hidden_layers < 3 {
            return bad(format!("hidden_layers must be >= 3, got {}", self.hidden_layers));
        }
        if self.bottleneck == 0 || self.input_dim == 0 || self.hessian_inputs == 0 || self.seeds == 0 {
            return bad("bottleneck, input_dim, hessian_inputs and seeds must be positive".into());
        }
        Activation::parse(&self.activation).map_err(|e| Error::Config(format!("linearity-dag: activation: {e}")))?;
        if self.lanczos_max_iter == 0 || !(self.lanczos_tol >= 0.0 && self.lanczos_tol.is_finite()) {
            return bad("lanczos_max_iter must be >= 1 and lanczos_tol finite and >= 0".into());
        }
        // The largest network must fit: its parameters and the Lanczos basis.
        let biggest = self.widths.iter().max().copied().unwrap_or(0);
        for f in Family::ALL {
            let arch = architecture(f, biggest, self)?;
            let p = Network::<f64>::zeros(&arch, self.input_dim, 1.0).map(|n| n.num_params())?;
            crate::data::memory::check_alloc(
                p.saturating_mul(self.lanczos_max_iter + 8).saturating_mul(8),
                &format!("linearity-dag at width {biggest} ({} family, Lanczos basis)", f.as_str()),
            )?;
        }
        Ok(())
    }
}

/// The architecture of a family at width m (NTK parameterization, no biases, w_std = 1, scalar output).
pub fn architecture(family: Family, m: usize, cfg: &LinearityDagConfig) -> Result<Architecture> {
    let (act, layers, k) = (&cfg.activation, cfg.hidden_layers, cfg.bottleneck);
    let mut n: Vec<String> = vec![format!("node(h1,dense({m}),input)"), format!("node(a1,{act},h1)")];
    match family {
        Family::Uniform | Family::Bottleneck => {
            n.push(format!("node(h2,dense({m}),a1)"));
            n.push(format!("node(a2,{act},h2)"));
            if family == Family::Bottleneck {
                n.push(format!("node(b,dense({k}),a1)"));
                n.push(format!("node(ab,{act},b)"));
                n.push(format!("node(hb,dense({m}),ab)"));
                n.push(format!("node(abb,{act},hb)"));
            }
            for l in 3..=layers {
                let extra = if family == Family::Bottleneck && l == 3 { ",abb" } else { "" };
                n.push(format!("node(c{l},concat,a{},a{}{extra})", l - 1, l - 2));
                n.push(format!("node(h{l},dense({m}),c{l})"));
                n.push(format!("node(a{l},{act},h{l})"));
            }
            n.push(format!("node(cout,concat,a{layers},a{})", layers - 1));
            n.push("node(out,dense(1),cout)".into());
        }
        Family::Skip => {
            for l in 2..=layers {
                n.push(format!("node(z{l},dense({m}),a{})", l - 1));
                n.push(format!("node(u{l},dense({m}),input)"));
                n.push(format!("node(s{l},sum,z{l},u{l})"));
                n.push(format!("node(a{l},{act},s{l})"));
            }
            n.push(format!("node(out,dense(1),a{layers})"));
        }
    }
    Architecture::parse(&n.join(","), Parameterization::Ntk)
}

/// Measurements at one (family, width).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DagPoint {
    /// The family.
    pub family: Family,
    /// Width m.
    pub width: usize,
    /// Minimum in-degree of the neurons outside the input and first layers (m, or k with a bottleneck).
    pub min_in_degree: usize,
    /// Number of parameters P.
    pub params: usize,
    /// Mean of ||d^2 f(x)/dw^2||_2 over seeds and inputs.
    #[serde(with = "crate::data::json_f64")]
    pub hessian_norm: f64,
    /// Its sample standard deviation.
    #[serde(with = "crate::data::json_f64")]
    pub hessian_norm_std: f64,
    /// Every measured norm (seed-major).
    #[serde(with = "crate::data::json_f64::vec")]
    pub hessian_norms: Vec<f64>,
    /// Whether every Lanczos run met its tolerance.
    pub lanczos_converged: bool,
}

/// The outcome of [`run`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LinearityDagResult {
    /// The configuration that produced it.
    pub config: LinearityDagConfig,
    /// Log-log slope of the Hessian norm against m, uniform family (theory: about -1/2).
    #[serde(with = "crate::data::json_f64")]
    pub slope_uniform: f64,
    /// The same with a bottleneck (theory: about 0).
    #[serde(with = "crate::data::json_f64")]
    pub slope_bottleneck: f64,
    /// The same with skip connections from the input (theory: about -1/2).
    #[serde(with = "crate::data::json_f64")]
    pub slope_skip: f64,
    /// The full fits, in [`Family::ALL`] order.
    pub fits: Vec<(Family, PowerLawFit)>,
    /// One point per (family, width).
    pub points: Vec<DagPoint>,
}

/// Seed streams.
const DATA_STREAM: u64 = 0;
const NET_STREAM: u64 = 1;
const LANCZOS_STREAM: u64 = 2;

/// Runs the sweep; each (family, width, seed) is one checkpointed step of `ctx`.
pub fn run(cfg: &LinearityDagConfig, ctx: &mut Context) -> Result<LinearityDagResult> {
    cfg.validate()?;
    let d = cfg.input_dim;
    let xs = sphere(cfg.hessian_inputs, d, derive_seed(cfg.seed, DATA_STREAM));
    let total = Family::ALL.len() * cfg.widths.len() * cfg.seeds;
    let mut done = 0;
    ctx.progress(done, total);
    let one = Mat::from_fn(1, 1, |_, _| 1.0);
    let mut points = Vec::new();
    for (fi, family) in Family::ALL.into_iter().enumerate() {
        for &m in &cfg.widths {
            let arch = architecture(family, m, cfg)?;
            let (mut norms, mut converged, mut params, mut min_in) = (Vec::new(), true, 0, 0);
            for r in 0..cfg.seeds {
                let task = derive_seed(derive_seed(derive_seed(cfg.seed, fi as u64), m as u64), r as u64);
                // (params, min in-degree, norms, converged)
                let key = format!("family={},width={m},seed={r}", family.as_str());
                let t: (usize, usize, Vec<f64>, bool) = ctx.step(&key, || {
                    let net = Network::<f64>::init(&arch, d, 1.0, derive_seed(task, NET_STREAM))?;
                    let (mut ns, mut ok_all) = (Vec::new(), true);
                    for i in 0..cfg.hessian_inputs {
                        let oc = OutputCurvature::new(&net, xs.as_ref().subrows(i, 1), one.as_ref())?;
                        let opts = LanczosOptions::new(1)
                            .which(Which::LargestMagnitude)
                            .max_iter(cfg.lanczos_max_iter)
                            .tol(cfg.lanczos_tol)
                            .seed(derive_seed(derive_seed(task, LANCZOS_STREAM), i as u64));
                        let res = lanczos(&oc.op(), &opts)?;
                        ns.push(res.values[0].abs());
                        ok_all &= res.converged;
                    }
                    Ok((net.num_params(), net.graph.min_in_degree().unwrap_or(0), ns, ok_all))
                })?;
                params = t.0;
                min_in = t.1;
                norms.extend(t.2);
                converged &= t.3;
                done += 1;
                ctx.progress(done, total);
            }
            let (h, hs) = mean_std(&norms);
            points.push(DagPoint {
                family,
                width: m,
                min_in_degree: min_in,
                params,
                hessian_norm: h,
                hessian_norm_std: hs,
                hessian_norms: norms,
                lanczos_converged: converged,
            });
        }
    }
    let mut fits = Vec::new();
    for family in Family::ALL {
        let pts: Vec<&DagPoint> = points.iter().filter(|p| p.family == family).collect();
        let w: Vec<f64> = pts.iter().map(|p| p.width as f64).collect();
        let h: Vec<f64> = pts.iter().map(|p| p.hessian_norm).collect();
        fits.push((family, fit_power_law(&w, &h)?));
    }
    let slope = |f: Family| fits.iter().find(|(g, _)| *g == f).map_or(f64::NAN, |(_, p)| p.exponent);
    Ok(LinearityDagResult {
        config: cfg.clone(),
        slope_uniform: slope(Family::Uniform),
        slope_bottleneck: slope(Family::Bottleneck),
        slope_skip: slope(Family::Skip),
        fits,
        points,
    })
}

/// `ntklab run linearity-dag`.
pub struct LinearityDag;

impl Reproduction for LinearityDag {
    const NAME: &'static str = "linearity-dag";
    const DESCRIPTION: &'static str =
        "Transition to linearity on DAGs (Zhu, Liu & Belkin 2022): Hessian norm vs minimum in-degree, bottleneck";
    type Config = LinearityDagConfig;
    type Summary = LinearityDagResult;

    fn full() -> LinearityDagConfig {
        LinearityDagConfig::full()
    }
    fn quick() -> LinearityDagConfig {
        LinearityDagConfig::quick()
    }
    fn seed(cfg: &LinearityDagConfig) -> u64 {
        cfg.seed
    }
    fn set_seed(cfg: &mut LinearityDagConfig, seed: u64) {
        cfg.seed = seed;
    }
    fn validate(cfg: &LinearityDagConfig) -> Result<()> {
        cfg.validate()
    }
    fn run(cfg: &LinearityDagConfig, ctx: &mut Context) -> Result<LinearityDagResult> {
        run(cfg, ctx)
    }
    fn report(res: &LinearityDagResult) -> Report {
        report(res)
    }
    fn console(res: &LinearityDagResult) -> String {
        let c = &res.config;
        let mut s = format!(
            "transition to linearity on DAGs: {} activation, {} hidden layers\n{:>11} {:>7} {:>10} {:>10} {:>13}\n",
            c.activation, c.hidden_layers, "family", "width", "min in-deg", "params", "||d2f||"
        );
        for p in &res.points {
            s += &format!(
                "{:>11} {:>7} {:>10} {:>10} {:>13.5e}\n",
                p.family.as_str(),
                p.width,
                p.min_in_degree,
                p.params,
                p.hessian_norm
            );
        }
        s + &format!(
            "slopes of ||d2f|| vs m: uniform {:+.3}, bottleneck {:+.3}, skip {:+.3} (theory: -0.5, 0, -0.5)",
            res.slope_uniform, res.slope_bottleneck, res.slope_skip
        )
    }
}

fn report(res: &LinearityDagResult) -> Report {
    let c = &res.config;
    let mut series = Vec::new();
    for (family, fit) in &res.fits {
        let pts: Vec<(f64, f64)> =
            res.points.iter().filter(|p| p.family == *family).map(|p| (p.width as f64, p.hessian_norm)).collect();
        series.push(Series::markers(family.as_str(), pts.clone()));
        let line = pts.iter().map(|&(w, _)| (w, fit.eval(w))).collect();
        series.push(Series::line(format!("{} fit: slope {:+.2}", family.as_str(), fit.exponent), line));
    }
    if let Some(p0) = res.points.iter().find(|p| p.family == Family::Uniform) {
        let (w0, v0) = (p0.width as f64, p0.hessian_norm);
        series.push(Series::line(
            "slope -1/2",
            c.widths.iter().map(|&w| (w as f64, v0 * (w as f64 / w0).powf(-0.5))).collect(),
        ));
    }
    let chart = Chart {
        title: "Output Hessian of DAG networks at init".into(),
        x_label: "width m (minimum in-degree, except the bottleneck)".into(),
        y_label: "||d2f/dw2||".into(),
        log_x: true,
        log_y: true,
        series,
        hlines: vec![],
    };
    let cmp = |q: &str, e: &str, v: f64, ok: bool| Comparison {
        quantity: q.into(),
        expected: e.into(),
        measured: format!("{v:+.3}"),
        agrees: Some(ok),
    };
    let rows = res
        .points
        .iter()
        .map(|p| {
            vec![
                p.family.as_str().to_string(),
                p.width.to_string(),
                p.min_in_degree.to_string(),
                p.params.to_string(),
                format!("{:.4e}", p.hessian_norm),
                format!("{:.2e}", p.hessian_norm_std),
            ]
        })
        .collect();
    Report {
        title: "Transition to linearity of DAG networks".into(),
        claim: "Zhu, Liu & Belkin (2022): for a network on any directed acyclic graph the spectral norm of the \
                Hessian of the output w.r.t. the parameters is O~(1/sqrt(m)) at initialization, m the minimum \
                in-degree of the neurons outside the input and first layers; a neuron whose in-degree stays fixed \
                (a bottleneck) keeps it O(1)."
            .into(),
        setup: format!(
            "{} hidden layers of width m, {} activation, NTK parameterization, no biases, d = {}; bottleneck width \
             k = {}; ||d2f|| by Lanczos on exact output-Hessian products at {} inputs x {} seeds. Seed {}.",
            c.hidden_layers, c.activation, c.input_dim, c.bottleneck, c.hessian_inputs, c.seeds, c.seed
        ),
        comparisons: vec![
            cmp(
                "uniform (in-degrees m and 2m): slope vs m",
                "-0.5",
                res.slope_uniform,
                (-0.8..-0.3).contains(&res.slope_uniform),
            ),
            cmp("bottleneck (k neurons feeding m): slope vs m", "0", res.slope_bottleneck, res.slope_bottleneck > -0.2),
            cmp(
                "skip (input into every layer): slope vs m",
                "-0.5",
                res.slope_skip,
                (-0.8..-0.3).contains(&res.slope_skip),
            ),
        ],
        sections: vec![
            Section::Plot {
                stem: "hessian_vs_in_degree".into(),
                chart,
                caption: "Hessian norm vs width for the three families, log-log".into(),
            },
            Section::Table {
                caption: "Measurements (means over seeds)".into(),
                headers: ["family", "m", "min in-degree", "params", "mean ||d2f||", "std"].map(String::from).to_vec(),
                rows,
            },
        ],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_have_the_intended_in_degrees() {
        let cfg = LinearityDagConfig::quick();
        for (f, want) in [(Family::Uniform, 64), (Family::Bottleneck, 1), (Family::Skip, 64)] {
            let g = architecture(f, 64, &cfg).unwrap().graph(8).unwrap();
            assert_eq!(g.min_in_degree(), Some(want), "{}", f.as_str());
            assert!(!g.is_chain());
        }
    }

    #[test]
    fn quick_sweep_shows_the_transition_and_the_bottleneck() {
        let t0 = std::time::Instant::now();
        // Theory: slope -1/2 (up to the sqrt(ln m) factor, which flattens it at these widths) for uniform and
        // skip, 0 for the bottleneck. With 4 widths over a factor 8 and 6 samples per point the fitted slopes
        // scatter by about +-0.1 (a single bottleneck neuron makes its family the noisiest); the bands are wide
        // enough for that and still separate "decays like m^-1/2" from "does not decay".
        let cfg = LinearityDagConfig::quick();
        let res = run(&cfg, &mut Context::quiet()).unwrap();
        assert_eq!(res.points.len(), 12);
        for p in &res.points {
            assert!(p.lanczos_converged && p.hessian_norm > 0.0, "{} at m = {}", p.family.as_str(), p.width);
        }
        assert!((-0.8..-0.3).contains(&res.slope_uniform), "uniform slope {}", res.slope_uniform);
        assert!((-0.8..-0.2).contains(&res.slope_skip), "skip slope {}", res.slope_skip);
        assert!(res.slope_bottleneck > -0.2, "bottleneck slope {}", res.slope_bottleneck);
        assert!(res.slope_bottleneck > res.slope_uniform + 0.25, "{} vs {}", res.slope_bottleneck, res.slope_uniform);
        assert!(LinearityDagConfig { hidden_layers: 2, ..cfg }.validate().is_err());
        eprintln!("slopes {} {} {} in {:?}", res.slope_uniform, res.slope_bottleneck, res.slope_skip, t0.elapsed());
    }
}
