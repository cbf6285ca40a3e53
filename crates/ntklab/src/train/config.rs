//! The TOML description of a training run (`ntklab train --config run.toml`), checked key by key.
//!
//! ```toml
//! seed = 0                     # master seed; data, model and batches derive their own unless given
//! out = "runs/basic"           # run folder (relative to the working directory); `--out` overrides
//!
//! [data]                       # either a built-in synthetic set ...
//! name = "teacher"             # linear | teacher | circle | blobs (see data::datasets)
//! n = 64                       # training points
//! d = 8                        # input dimension (circle: 2)
//! n_test = 64                  # optional test points (default 0)
//! noise = 0.1                  # optional (default 0; blobs: within-class std 1)
//! classes = 2                  # blobs only
//! seed = 1                     # optional
//! # ... or a bundled real set: name = "diabetes" | "digits" (data::bundled; n defaults to every row not in
//! # n_test; rows shuffled by the seed; digits are 8 x 8 x 1 images with one-hot targets)
//! # ... or image files on disk: name = "mnist" | "cifar10", path = "folder" (data::external; idx files or
//! # CIFAR-10 binary batches; n and n_test images drawn by the seed; never downloaded)
//! # ... or arrays (.npy / .csv, relative to this file): x = "x.npy", y = "y.npy", x_test = ..., y_test = ...
//!
//! [model]
//! arch = "dense(256,b_std=0.1),relu,dense(1)"
//! parameterization = "ntk"     # ntk | standard | mean-field | mup
//! alpha = 1.0                  # output scale
//! seed = 2                     # optional
//! init = "m.safetensors"       # optional: start from these weights (relative to this file; e.g. a PyTorch
//!                              # nn.Sequential state dict) instead of a random initialization
//! checkpoint_every = 100       # optional: save the weights every k steps (checkpoints/step_<k>.safetensors)
//!
//! [optimizer]
//! kind = "gd"                  # gd | sgd | momentum | nesterov | flow
//! loss = "mse"                 # mse | logistic | softmax-cross-entropy
//! lr = 0.5
//! steps = 1000
//! batch = 16                   # sgd (required) and momentum/nesterov (optional; default full batch)
//! momentum = 0.9               # momentum/nesterov (default 0.9); sgd (default 0)
//! schedule = "cosine"          # constant | step | cosine | linear (not for flow)
//! warmup = 0                   # linear warmup steps
//! step_every = 100             # step schedule: decay interval ...
//! step_factor = 0.5            # ... and factor
//! final_factor = 0.0           # cosine / linear: final lr / lr
//! rtol = 1e-6                  # flow: integrator tolerances
//! atol = 1e-9
//! divergence_factor = 1e10     # stop when loss > factor * initial loss
//! stop_loss = 1e-6             # optional early stop
//!
//! [probes]
//! every = 10
//! which = ["sharpness", "ntk-max", "ntk-change", "linearized"]   # or ["all"]
//! hessian_top_k = 1
//! ntk_subset = 64              # NTK probes on the first m training points
//! lanczos_max_iter = 100
//! lanczos_tol = 1e-7
//! ```
//! Unknown keys are errors (naming the key and its line); so are impossible values (named by their key).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::loss::Loss;
use super::ode::OdeOptions;
use super::optim::{Method, TrainConfig};
use super::probes::{Probe, ProbeConfig};
use super::schedule::{Decay, Schedule};
use crate::data::bundled::{load as load_bundled, Bundled};
use crate::data::datasets::{synthetic, Builtin, Dataset, SyntheticSpec};
use crate::data::external::{load as load_external, External};
use crate::data::read_matrix;
use crate::data::synthetic::derive_seed;
use crate::kernel::{Architecture, Parameterization};
use crate::net::{Mlp, Precision};
use crate::{Error, Result};

/// A whole run description (top level of the TOML file).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    /// Master seed (any u64; in TOML, above 2^63 - 1 as a string).
    #[serde(default, with = "crate::data::seed")]
    pub seed: u64,
    /// Run folder.
    #[serde(default)]
    pub out: Option<PathBuf>,
    /// `[data]`.
    pub data: DataSection,
    /// `[model]`.
    pub model: ModelSection,
    /// `[optimizer]`.
    pub optimizer: OptimizerSection,
    /// `[probes]`.
    #[serde(default)]
    pub probes: ProbesSection,
}

/// `[data]`: a built-in synthetic set by name, or array files.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataSection {
    /// Built-in set name.
    pub name: Option<String>,
    /// Training points (built-in).
    pub n: Option<usize>,
    /// Input dimension (built-in).
    pub d: Option<usize>,
    /// Test points (built-in).
    pub n_test: Option<usize>,
    /// Noise level (built-in).
    pub noise: Option<f64>,
    /// Classes (blobs).
    pub classes: Option<usize>,
    /// Data seed (built-in).
    #[serde(default, with = "crate::data::seed::option", skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// Folder holding the files of an image set read from disk (`name = "mnist"` or `"cifar10"`).
    pub path: Option<PathBuf>,
    /// Training inputs file (N x d).
    pub x: Option<PathBuf>,
    /// Training targets file (N x k or length N).
    pub y: Option<PathBuf>,
    /// Test inputs file.
    pub x_test: Option<PathBuf>,
    /// Test targets file.
    pub y_test: Option<PathBuf>,
}

/// `[model]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSection {
    /// Architecture text, e.g. `dense(512),relu,dense(1)`.
    pub arch: String,
    /// Parameterization (default ntk).
    pub parameterization: Option<String>,
    /// Output scale alpha (default 1).
    pub alpha: Option<f64>,
    /// Initialization seed.
    #[serde(default, with = "crate::data::seed::option", skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// Precision of the training passes: `f64` (default) or `f32` (f32 lanes; losses and optimizer state in f64).
    pub precision: Option<String>,
    /// Initial weights from a model file (safetensors or npz, relative to the config file) instead of `seed`.
    pub init: Option<PathBuf>,
    /// Save the weights every k steps.
    pub checkpoint_every: Option<u64>,
}

/// `[optimizer]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OptimizerSection {
    /// gd | sgd | momentum | nesterov | flow.
    pub kind: String,
    /// Loss (default mse).
    pub loss: Option<String>,
    /// Learning rate.
    pub lr: f64,
    /// Steps.
    pub steps: u64,
    /// Mini-batch size.
    pub batch: Option<usize>,
    /// Momentum coefficient.
    pub momentum: Option<f64>,
    /// constant | step | cosine | linear.
    pub schedule: Option<String>,
    /// Warmup steps.
    pub warmup: Option<u64>,
    /// Step schedule interval.
    pub step_every: Option<u64>,
    /// Step schedule factor.
    pub step_factor: Option<f64>,
    /// Cosine / linear final factor.
    pub final_factor: Option<f64>,
    /// Flow relative tolerance.
    pub rtol: Option<f64>,
    /// Flow absolute tolerance.
    pub atol: Option<f64>,
    /// Divergence factor.
    pub divergence_factor: Option<f64>,
    /// Early-stop loss.
    pub stop_loss: Option<f64>,
}

/// `[probes]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProbesSection {
    /// Record period (default 1).
    #[serde(default = "one")]
    pub every: u64,
    /// Probe names (or "all").
    #[serde(default)]
    pub which: Vec<String>,
    /// Top Hessian eigenvalues (default 1).
    pub hessian_top_k: Option<usize>,
    /// NTK subset size.
    pub ntk_subset: Option<usize>,
    /// Lanczos iterations.
    pub lanczos_max_iter: Option<usize>,
    /// Lanczos tolerance.
    pub lanczos_tol: Option<f64>,
}

fn one() -> u64 {
    1
}

impl Default for ProbesSection {
    fn default() -> Self {
        ProbesSection {
            every: 1,
            which: Vec::new(),
            hessian_top_k: None,
            ntk_subset: None,
            lanczos_max_iter: None,
            lanczos_tol: None,
        }
    }
}

/// A resolved run: data loaded or generated, network initialized, optimizer and probes checked.
#[derive(Debug, Clone)]
pub struct Run {
    /// The data.
    pub data: Dataset,
    /// The initialized network.
    pub net: Mlp,
    /// The optimizer.
    pub train: TrainConfig,
    /// The probes.
    pub probes: ProbeConfig,
    /// The precision the network trains in (`[model] precision`).
    pub precision: Precision,
    /// Save the weights every k steps (`[model] checkpoint_every`).
    pub checkpoint_every: Option<u64>,
}

impl Run {
    /// An upper estimate of the memory the run needs at its peak, from the shapes alone, so that an impossible
    /// run is refused before it starts instead of failing at its first probe. Counted in 8-byte words:
    /// * parameters: the vector, its gradient, the initial copy and the optimizer's and flow integrator's state
    ///   (Dormand–Prince keeps 7 stages) — at most 10 vectors of P;
    /// * network passes on all N training points at a record: node values, slopes and cotangents (3 per node
    ///   width), doubled for the second-order caches of the sharpness probe;
    /// * NTK probes on M points with k outputs: Theta (M k)^2, Theta_0 for `ntk-change`, and the eigensolver's
    ///   copy;
    /// * sharpness: the Lanczos basis, `lanczos_max_iter` vectors of P;
    /// * linearized: the tangent model's parameters, JVP outputs and state (4 P + 2 N k).
    ///
    /// Test-set passes reuse the same buffers at most N_test rows, counted like the training set.
    pub fn peak_bytes(&self) -> usize {
        let p = self.net.num_params();
        let k = self.net.output_dim();
        let n = self.data.n_train() + self.data.test.as_ref().map_or(0, |t| t.0.nrows());
        let widths: usize = self.net.graph.nodes.iter().map(|v| v.width).sum::<usize>() + self.net.input_dim;
        let second = if self.probes.has(Probe::Sharpness) { 2 } else { 1 };
        let mut words = 10usize.saturating_mul(p);
        words = words.saturating_add(n.saturating_mul(widths).saturating_mul(3 * second));
        if self.probes.needs_ntk() {
            let m = self.probes.ntk_subset.unwrap_or(self.data.n_train()).saturating_mul(k);
            // Theta and its accumulation scratch, a symmetrized copy and the eigensolver's, Theta_0 and the
            // difference for `ntk-change`; the reverse pass runs on k stacked copies of the M rows.
            let copies = if self.probes.has(Probe::NtkChange) { 6 } else { 4 };
            words = words.saturating_add(m.saturating_mul(m).saturating_mul(copies));
            words = words.saturating_add(m.saturating_mul(widths).saturating_mul(3));
            // Conv nodes' transposed Jacobian blocks (P_l x M, both sides), one node at a time.
            let conv = self.net.dense.iter().filter(|d| d.filter.is_some()).map(|d| d.num_params()).max();
            words = words.saturating_add(conv.unwrap_or(0).saturating_mul(m).saturating_mul(2));
        }
        if self.probes.has(Probe::Sharpness) {
            words = words.saturating_add(self.probes.lanczos_max_iter.saturating_mul(p));
        }
        if self.probes.has(Probe::Linearized) {
            words = words
                .saturating_add(4usize.saturating_mul(p))
                .saturating_add(2usize.saturating_mul(n).saturating_mul(k));
        }
        // f32 runs keep f64 losses and optimizer state: 8 bytes a word bounds both precisions.
        words.saturating_mul(8)
    }
}

fn key_err(key: &str, msg: impl std::fmt::Display) -> Error {
    Error::Config(format!("{key}: {msg}"))
}

fn positive(key: &str, v: f64) -> Result<f64> {
    if v > 0.0 && v.is_finite() {
        Ok(v)
    } else {
        Err(key_err(key, format!("must be finite and > 0, got {v}")))
    }
}

/// Seed streams derived from the master seed when a section gives none.
const DATA_STREAM: u64 = 101;
const MODEL_STREAM: u64 = 102;
const TRAIN_STREAM: u64 = 103;

impl RunConfig {
    /// Parses TOML text (unknown keys and wrong types are errors that name the key and line).
    pub fn from_toml_str(text: &str) -> Result<RunConfig> {
        toml::from_str(text).map_err(|e| {
            let mut msg = format!("run config: {}", e.to_string().trim_end());
            if msg.contains("number too large") {
                msg.push_str(&format!("\n(TOML integers stop at 2^63 - 1; a seed is {})", crate::data::seed::RANGE));
            }
            Error::Config(msg)
        })
    }

    /// Reads and parses a TOML file.
    pub fn from_file(path: &Path) -> Result<RunConfig> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::file(path, e))?;
        Self::from_toml_str(&text).map_err(|e| Error::file(path, e))
    }

    /// Loads or generates the data (array paths relative to `base_dir`), builds the network and checks every
    /// value, naming the offending key.
    pub fn resolve(&self, base_dir: &Path) -> Result<Run> {
        let data = self.resolve_data(base_dir)?;
        let mut net = self.resolve_model(&data, base_dir)?;
        let precision = match self.model.precision.as_deref().map(|p| p.trim().to_ascii_lowercase()) {
            None => Precision::F64,
            Some(p) if p == "f64" || p == "float64" => Precision::F64,
            Some(p) if p == "f32" || p == "float32" => Precision::F32,
            Some(p) => return Err(key_err("model.precision", format!("expected f64 or f32, got `{p}`"))),
        };
        if precision == Precision::F32 {
            // The run starts from the f32-rounded initialization, so model_init holds what was trained.
            net = net.cast::<f32>().cast();
        }
        let train = self.resolve_optimizer(&data)?;
        let probes = self.resolve_probes(&data, &net)?;
        train.validate(data.n_train())?;
        let run = Run { data, net, train, probes, precision, checkpoint_every: self.model.checkpoint_every };
        crate::data::memory::check_alloc(run.peak_bytes(), "this run (network passes, optimizer state and probes)")?;
        Ok(run)
    }

    fn resolve_data(&self, base: &Path) -> Result<Dataset> {
        let d = &self.data;
        match (&d.name, &d.x, &d.y) {
            (Some(name), None, None) => {
                for (k, set) in [("x_test", d.x_test.is_some()), ("y_test", d.y_test.is_some())] {
                    if set {
                        return Err(key_err(
                            &format!("data.{k}"),
                            "applies to array files only (built-in sets use n_test)",
                        ));
                    }
                }
                if let Some(set) = External::parse(name) {
                    for (k, on) in
                        [("d", d.d.is_some()), ("noise", d.noise.is_some()), ("classes", d.classes.is_some())]
                    {
                        if on {
                            return Err(key_err(&format!("data.{k}"), format!("does not apply to {name}")));
                        }
                    }
                    let dir = d.path.as_ref().ok_or_else(|| {
                        key_err(
                            "data.path",
                            format!("give the folder holding the {name} files (ntklab never downloads)"),
                        )
                    })?;
                    let seed = d.seed.unwrap_or_else(|| derive_seed(self.seed, DATA_STREAM));
                    return load_external(set, &base.join(dir), d.n, d.n_test.unwrap_or(0), seed)
                        .map_err(|e| key_err("data", e));
                }
                if d.path.is_some() {
                    return Err(key_err(
                        "data.path",
                        format!("applies to the image sets read from disk ({})", External::NAMES),
                    ));
                }
                if let Some(b) = Bundled::parse(name) {
                    for (k, set) in
                        [("d", d.d.is_some()), ("noise", d.noise.is_some()), ("classes", d.classes.is_some())]
                    {
                        if set {
                            return Err(key_err(
                                &format!("data.{k}"),
                                format!("does not apply to the real set {name}"),
                            ));
                        }
                    }
                    let seed = d.seed.unwrap_or_else(|| derive_seed(self.seed, DATA_STREAM));
                    return load_bundled(b, d.n, d.n_test.unwrap_or(0), seed).map_err(|e| key_err("data", e));
                }
                let b = Builtin::parse(name).map_err(|e| {
                    key_err(
                        "data.name",
                        format!("{e}; or a bundled real set: {}; or from disk: {}", Bundled::NAMES, External::NAMES),
                    )
                })?;
                let n = d.n.ok_or_else(|| key_err("data.n", "is required for a built-in data set"))?;
                if n == 0 {
                    return Err(key_err("data.n", "must be at least 1"));
                }
                let dim = match (b, d.d) {
                    (Builtin::Circle, None) => 2,
                    (Builtin::Circle, Some(2)) => 2,
                    (Builtin::Circle, Some(v)) => {
                        return Err(key_err("data.d", format!("the circle set has d = 2, got {v}")))
                    }
                    (_, Some(0)) => return Err(key_err("data.d", "must be at least 1")),
                    (_, Some(v)) => v,
                    (_, None) => return Err(key_err("data.d", "is required for a built-in data set")),
                };
                if let Some(v) = d.noise {
                    if !(v >= 0.0 && v.is_finite()) {
                        return Err(key_err("data.noise", format!("must be finite and >= 0, got {v}")));
                    }
                }
                if d.classes.is_some() && b != Builtin::Blobs {
                    return Err(key_err("data.classes", "applies to the blobs set only"));
                }
                let classes = d.classes.unwrap_or(2);
                if classes < 2 {
                    return Err(key_err("data.classes", format!("must be at least 2, got {classes}")));
                }
                let spec = SyntheticSpec {
                    name: b,
                    n,
                    n_test: d.n_test.unwrap_or(0),
                    d: dim,
                    noise: d.noise,
                    classes,
                    seed: d.seed.unwrap_or_else(|| derive_seed(self.seed, DATA_STREAM)),
                };
                synthetic(&spec).map_err(|e| key_err("data", e))
            }
            (None, Some(x), Some(y)) => {
                for (k, set) in [
                    ("n", d.n.is_some()),
                    ("path", d.path.is_some()),
                    ("d", d.d.is_some()),
                    ("n_test", d.n_test.is_some()),
                    ("noise", d.noise.is_some()),
                    ("classes", d.classes.is_some()),
                    ("seed", d.seed.is_some()),
                ] {
                    if set {
                        return Err(key_err(
                            &format!("data.{k}"),
                            "applies to built-in data sets only (not with x/y files)",
                        ));
                    }
                }
                let load =
                    |p: &Path, key: &str| read_matrix(&base.join(p)).map_err(|e| key_err(&format!("data.{key}"), e));
                let load_x = |p: &Path, key: &str| {
                    crate::data::read_examples(&base.join(p)).map_err(|e| key_err(&format!("data.{key}"), e))
                };
                let (xm, shape) = load_x(x, "x")?;
                let ds = Dataset::new(xm, load(y, "y")?)
                    .and_then(|d| d.with_shape(shape.clone()))
                    .map_err(|e| key_err("data", e))?;
                match (&d.x_test, &d.y_test) {
                    (Some(xt), Some(yt)) => {
                        let (xtm, tshape) = load_x(xt, "x_test")?;
                        if tshape != shape {
                            let show = |s: &Option<crate::kernel::spatial::Shape>| {
                                s.as_ref().map_or("feature rows".to_string(), |s| format!("examples of shape {s}"))
                            };
                            return Err(key_err(
                                "data.x_test",
                                format!("holds {} but data.x holds {}", show(&tshape), show(&shape)),
                            ));
                        }
                        ds.with_test(xtm, load(yt, "y_test")?).map_err(|e| key_err("data", e))
                    }
                    (None, None) => Ok(ds),
                    _ => Err(key_err("data", "give both x_test and y_test, or neither")),
                }
            }
            (Some(_), _, _) => {
                Err(key_err("data", "give either `name` (a built-in set) or `x` and `y` files, not both"))
            }
            (None, Some(_), None) | (None, None, Some(_)) => Err(key_err("data", "give both `x` and `y` files")),
            (None, None, None) => Err(key_err(
                "data",
                format!("give `name` (one of {}, {}) or `x` and `y` files", Builtin::NAMES, Bundled::NAMES),
            )),
        }
    }

    fn resolve_model(&self, data: &Dataset, base: &Path) -> Result<Mlp> {
        let m = &self.model;
        let param = match &m.parameterization {
            Some(p) => Parameterization::parse(p).map_err(|e| key_err("model.parameterization", e))?,
            None => Parameterization::Ntk,
        };
        let arch = Architecture::parse(&m.arch, param).map_err(|e| key_err("model.arch", e))?;
        let alpha = m.alpha.unwrap_or(1.0);
        if !(alpha.is_finite() && alpha != 0.0) {
            return Err(key_err("model.alpha", format!("must be finite and non-zero, got {alpha}")));
        }
        if m.checkpoint_every == Some(0) {
            return Err(key_err("model.checkpoint_every", "must be at least 1"));
        }
        let net = match &m.init {
            Some(path) => {
                if m.seed.is_some() {
                    return Err(key_err(
                        "model.seed",
                        "has no effect with model.init (the weights come from the file)",
                    ));
                }
                let full = base.join(path);
                let opts = crate::net::LoadOptions {
                    layers: Some(arch.layers.clone()),
                    parameterization: Some(param),
                    alpha: Some(alpha),
                    activation: None,
                    input_shape: data.input_shape.clone(),
                };
                let net = crate::net::load_mlp(&full, &opts).map_err(|e| key_err("model.init", e))?;
                if net.input_shape.is_spatial() && net.input_shape != data.example_shape() {
                    return Err(key_err(
                        "model.init",
                        format!(
                            "{} takes examples of shape {} but the data hold {}",
                            full.display(),
                            net.input_shape,
                            data.example_shape()
                        ),
                    ));
                }
                if net.input_dim != data.input_dim() {
                    return Err(key_err(
                        "model.init",
                        format!(
                            "{} takes {} input features but the data have {}",
                            full.display(),
                            net.input_dim,
                            data.input_dim()
                        ),
                    ));
                }
                net
            }
            None => {
                let seed = m.seed.unwrap_or_else(|| derive_seed(self.seed, MODEL_STREAM));
                Mlp::init_for(&arch, &data.example_shape(), alpha, seed).map_err(|e| key_err("model.arch", e))?
            }
        };
        if net.output_dim() != data.output_dim() {
            let out = &net.graph.nodes[net.graph.output()].shape;
            let hint = if out.is_spatial() {
                format!(
                    " (its output is {out}, positions x channels: a dense layer on an image maps the channels at \
                     every position; put flatten or global_avg_pool before the last dense layer)"
                )
            } else {
                String::new()
            };
            return Err(key_err(
                "model.arch",
                format!(
                    "the network has {} outputs but the targets have {} columns{hint}",
                    net.output_dim(),
                    data.output_dim()
                ),
            ));
        }
        Ok(net)
    }

    fn resolve_optimizer(&self, data: &Dataset) -> Result<TrainConfig> {
        let o = &self.optimizer;
        let n = data.n_train();
        let loss = match &o.loss {
            Some(l) => Loss::parse(l).map_err(|e| key_err("optimizer.loss", e))?,
            None => Loss::Mse,
        };
        let lr = positive("optimizer.lr", o.lr)?;
        let kind = o.kind.trim().to_lowercase();
        let discrete_only = |k: &str, set: bool| -> Result<()> {
            if set && kind == "flow" {
                Err(key_err(&format!("optimizer.{k}"), "does not apply to gradient flow"))
            } else {
                Ok(())
            }
        };
        discrete_only("batch", o.batch.is_some())?;
        discrete_only("momentum", o.momentum.is_some())?;
        for k in ["schedule", "warmup", "step_every", "step_factor", "final_factor"] {
            let set = match k {
                "schedule" => o.schedule.is_some(),
                "warmup" => o.warmup.is_some(),
                "step_every" => o.step_every.is_some(),
                "step_factor" => o.step_factor.is_some(),
                _ => o.final_factor.is_some(),
            };
            discrete_only(k, set)?;
        }
        if kind != "flow" {
            for (k, set) in [("rtol", o.rtol.is_some()), ("atol", o.atol.is_some())] {
                if set {
                    return Err(key_err(&format!("optimizer.{k}"), "applies to kind = \"flow\" only"));
                }
            }
        }
        if let Some(b) = o.batch {
            if b == 0 || b > n {
                return Err(key_err(
                    "optimizer.batch",
                    format!("must be in 1..={n} (the number of training points), got {b}"),
                ));
            }
        }
        let momentum = |default: f64| -> Result<f64> {
            let m = o.momentum.unwrap_or(default);
            if (0.0..1.0).contains(&m) {
                Ok(m)
            } else {
                Err(key_err("optimizer.momentum", format!("must be in [0, 1), got {m}")))
            }
        };
        let method = match kind.as_str() {
            "gd" => {
                if o.batch.is_some_and(|b| b < n) {
                    return Err(key_err("optimizer.batch", "gd is full-batch; use kind = \"sgd\" for mini-batches"));
                }
                if o.momentum.is_some() {
                    return Err(key_err("optimizer.momentum", "use kind = \"momentum\" or \"nesterov\" for momentum"));
                }
                Method::Discrete { batch: None, momentum: 0.0, nesterov: false }
            }
            "sgd" => {
                let b = o.batch.ok_or_else(|| key_err("optimizer.batch", "is required for kind = \"sgd\""))?;
                Method::Discrete { batch: Some(b), momentum: momentum(0.0)?, nesterov: false }
            }
            "momentum" | "heavy-ball" | "nesterov" => {
                Method::Discrete { batch: o.batch, momentum: momentum(0.9)?, nesterov: kind == "nesterov" }
            }
            "flow" | "gradient-flow" => {
                let mut ode = OdeOptions::default();
                if let Some(r) = o.rtol {
                    ode.rtol = positive("optimizer.rtol", r)?;
                }
                if let Some(a) = o.atol {
                    if !(a >= 0.0 && a.is_finite()) {
                        return Err(key_err("optimizer.atol", format!("must be finite and >= 0, got {a}")));
                    }
                    ode.atol = a;
                }
                Method::Flow(ode)
            }
            other => {
                return Err(key_err(
                    "optimizer.kind",
                    format!("unknown optimizer `{other}` (expected gd, sgd, momentum, nesterov or flow)"),
                ))
            }
        };
        let schedule = self.resolve_schedule()?;
        let divergence_factor = match o.divergence_factor {
            Some(f) if f.is_nan() || f <= 1.0 => {
                return Err(key_err("optimizer.divergence_factor", format!("must be > 1, got {f}")))
            }
            Some(f) => f,
            None => 1e10,
        };
        if let Some(s) = o.stop_loss {
            if !(s >= 0.0 && s.is_finite()) {
                return Err(key_err("optimizer.stop_loss", format!("must be finite and >= 0, got {s}")));
            }
        }
        Ok(TrainConfig {
            loss,
            method,
            lr,
            steps: o.steps,
            schedule,
            seed: derive_seed(self.seed, TRAIN_STREAM),
            divergence_factor,
            stop_loss: o.stop_loss,
        })
    }

    fn resolve_schedule(&self) -> Result<Schedule> {
        let o = &self.optimizer;
        let name = o.schedule.as_deref().unwrap_or("constant").trim().to_lowercase();
        let only = |key: &str, set: bool, kinds: &str| -> Result<()> {
            if set {
                Err(key_err(&format!("optimizer.{key}"), format!("applies to schedule = {kinds} only")))
            } else {
                Ok(())
            }
        };
        let unit = |key: &str, v: f64| -> Result<f64> {
            if (0.0..=1.0).contains(&v) {
                Ok(v)
            } else {
                Err(key_err(key, format!("must be in [0, 1], got {v}")))
            }
        };
        let decay = match name.as_str() {
            "constant" => {
                only("step_every", o.step_every.is_some(), "\"step\"")?;
                only("step_factor", o.step_factor.is_some(), "\"step\"")?;
                only("final_factor", o.final_factor.is_some(), "\"cosine\" or \"linear\"")?;
                Decay::Constant
            }
            "step" => {
                only("final_factor", o.final_factor.is_some(), "\"cosine\" or \"linear\"")?;
                let every = o
                    .step_every
                    .ok_or_else(|| key_err("optimizer.step_every", "is required for schedule = \"step\""))?;
                if every == 0 {
                    return Err(key_err("optimizer.step_every", "must be at least 1"));
                }
                let factor = o.step_factor.unwrap_or(0.1);
                if !(factor > 0.0 && factor <= 1.0) {
                    return Err(key_err("optimizer.step_factor", format!("must be in (0, 1], got {factor}")));
                }
                Decay::Step { every, factor }
            }
            "cosine" | "linear" => {
                only("step_every", o.step_every.is_some(), "\"step\"")?;
                only("step_factor", o.step_factor.is_some(), "\"step\"")?;
                let f = unit("optimizer.final_factor", o.final_factor.unwrap_or(0.0))?;
                if name == "cosine" {
                    Decay::Cosine { final_factor: f }
                } else {
                    Decay::Linear { final_factor: f }
                }
            }
            other => {
                return Err(key_err(
                    "optimizer.schedule",
                    format!("unknown schedule `{other}` (expected constant, step, cosine or linear)"),
                ))
            }
        };
        Ok(Schedule { decay, warmup: o.warmup.unwrap_or(0) })
    }

    fn resolve_probes(&self, data: &Dataset, net: &Mlp) -> Result<ProbeConfig> {
        let p = &self.probes;
        if p.every == 0 {
            return Err(key_err("probes.every", "must be at least 1"));
        }
        let mut cfg = ProbeConfig::loss_only(p.every);
        for name in &p.which {
            if name.trim().eq_ignore_ascii_case("all") {
                cfg.probes.extend(Probe::ALL);
            } else if name.trim().eq_ignore_ascii_case("loss") {
                // Always recorded.
            } else {
                cfg.probes.insert(Probe::parse(name).map_err(|e| key_err("probes.which", e))?);
            }
        }
        let n = data.n_train();
        if let Some(m) = p.ntk_subset {
            if m == 0 || m > n {
                return Err(key_err(
                    "probes.ntk_subset",
                    format!("must be in 1..={n} (the number of training points), got {m}"),
                ));
            }
            cfg.ntk_subset = Some(m);
        }
        if let Some(k) = p.hessian_top_k {
            let np = net.num_params();
            if k == 0 || k > np {
                return Err(key_err(
                    "probes.hessian_top_k",
                    format!("must be in 1..={np} (the number of parameters), got {k}"),
                ));
            }
            cfg.hessian_top_k = k;
        }
        if let Some(it) = p.lanczos_max_iter {
            if it < cfg.hessian_top_k {
                return Err(key_err(
                    "probes.lanczos_max_iter",
                    format!("must be at least hessian_top_k = {}", cfg.hessian_top_k),
                ));
            }
            cfg.lanczos_max_iter = it;
        }
        if let Some(t) = p.lanczos_tol {
            if !(t >= 0.0 && t.is_finite()) {
                return Err(key_err("probes.lanczos_tol", format!("must be finite and >= 0, got {t}")));
            }
            cfg.lanczos_tol = t;
        }
        cfg.validate(n, net.num_params())?;
        Ok(cfg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = r#"
seed = 3
[data]
name = "teacher"
n = 12
d = 3
n_test = 5
[model]
arch = "dense(8,b_std=0.1),relu,dense(1)"
[optimizer]
kind = "sgd"
lr = 0.5
steps = 20
batch = 4
schedule = "cosine"
warmup = 2
[probes]
every = 5
which = ["sharpness", "ntk-max", "linearized"]
"#;

    fn err(text: &str) -> String {
        match RunConfig::from_toml_str(text).and_then(|c| c.resolve(Path::new("."))) {
            Ok(_) => panic!("expected an error for\n{text}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn resolves_a_valid_config() {
        let run = RunConfig::from_toml_str(BASE).unwrap().resolve(Path::new(".")).unwrap();
        assert_eq!((run.data.n_train(), run.data.input_dim()), (12, 3));
        assert_eq!(run.data.test.as_ref().unwrap().0.nrows(), 5);
        assert_eq!(run.net.num_params(), 8 * 3 + 8 + 8);
        assert_eq!(run.train.method, Method::Discrete { batch: Some(4), momentum: 0.0, nesterov: false });
        assert_eq!(run.train.schedule, Schedule { decay: Decay::Cosine { final_factor: 0.0 }, warmup: 2 });
        assert!(run.probes.has(Probe::Sharpness) && run.probes.has(Probe::Linearized) && !run.probes.has(Probe::Pl));
        // Same config, same data and weights.
        let again = RunConfig::from_toml_str(BASE).unwrap().resolve(Path::new(".")).unwrap();
        assert_eq!(again.net, run.net);
        assert_eq!(again.data, run.data);
    }

    #[test]
    fn every_u64_seed_is_accepted_and_written_back() {
        let big = BASE.replace("seed = 3", "seed = \"18446744073709551615\"");
        let cfg = RunConfig::from_toml_str(&big).unwrap();
        assert_eq!(cfg.seed, u64::MAX);
        let run = cfg.resolve(Path::new(".")).unwrap();
        let other = RunConfig::from_toml_str(&BASE.replace("seed = 3", "seed = \"18446744073709551614\""))
            .unwrap()
            .resolve(Path::new("."))
            .unwrap();
        assert_ne!(run.net, other.net, "neighbouring large seeds give different networks");
        // What ntklab writes into summaries reads back.
        let text = serde_json::to_string(&cfg).unwrap();
        assert_eq!(serde_json::from_str::<RunConfig>(&text).unwrap(), cfg);
        // A bare integer above TOML's range gets the hint.
        let e = err(&BASE.replace("seed = 3", "seed = 18446744073709551615"));
        assert!(e.contains("write it as a string"), "{e}");
        let e = err(&BASE.replace("seed = 3", "seed = -2"));
        assert!(e.contains("negative"), "{e}");
    }

    #[test]
    fn impossible_runs_are_refused_before_they_start() {
        // The base run is small: its estimate is in kilobytes.
        let run = RunConfig::from_toml_str(BASE).unwrap().resolve(Path::new(".")).unwrap();
        assert!(run.peak_bytes() < 1 << 20, "{}", run.peak_bytes());
        // 200k points through a 100k-wide layer: ~480 GB of node values at the first record.
        let e = err(&BASE.replace("n = 12", "n = 200000").replace("dense(8,b_std=0.1)", "dense(100000)"));
        assert!(e.contains("would need") && e.contains("this run"), "{e}");
        // An NTK probe on 100k points: a 80 GB Gram matrix, though the network is tiny.
        let e = err(&BASE
            .replace("n = 12", "n = 100000")
            .replace("batch = 4", "batch = 100")
            .replace("\"ntk-max\"", "\"ntk-change\""));
        assert!(e.contains("would need"), "{e}");
        // Sharpness keeps a Lanczos basis of lanczos_max_iter parameter vectors.
        let wide = BASE.replace("dense(8,b_std=0.1)", "dense(200000)");
        let ok = RunConfig::from_toml_str(&wide).unwrap().resolve(Path::new(".")).unwrap();
        let with_more = RunConfig::from_toml_str(&wide.replace("every = 5", "every = 5\nlanczos_max_iter = 400"))
            .unwrap()
            .resolve(Path::new("."))
            .unwrap();
        assert!(with_more.peak_bytes() >= ok.peak_bytes() + 300 * ok.net.num_params() * 8);
    }

    #[test]
    fn bundled_real_sets_resolve_by_name() {
        let text = BASE.replace("\"teacher\"", "\"digits\"").replace("\nd = 3\n", "\n").replace("n = 12", "n = 40");
        let text = text
            .replace("dense(1)", "dense(10)")
            .replace("\"dense(8", "\"flatten,dense(8")
            .replace("\"ntk-max\", ", "");
        let run = RunConfig::from_toml_str(&text).unwrap().resolve(Path::new(".")).unwrap();
        assert_eq!((run.data.n_train(), run.data.input_dim(), run.data.output_dim()), (40, 64, 10));
        assert_eq!(run.data.input_shape.as_ref().unwrap().compact(), "8x8x1");
        assert_eq!(run.data.test.as_ref().unwrap().0.nrows(), 5);
        // Without flatten the dense layers map the 8 x 8 images' channels per position: 640 outputs, and the
        // message says why.
        let e = err(&text.replace("\"flatten,dense(8", "\"dense(8"));
        assert!(e.contains("640 outputs") && e.contains("put flatten or global_avg_pool"), "{e}");
        let e = err(&BASE.replace("\"teacher\"", "\"diabetes\""));
        assert!(e.contains("data.d") && e.contains("diabetes"), "{e}");
        let e =
            err(&BASE.replace("\"teacher\"", "\"diabetes\"").replace("\nd = 3\n", "\n").replace("n = 12", "n = 440"));
        assert!(e.contains("do not fit") && e.contains("442"), "{e}");
        let e = err(&BASE.replace("\"teacher\"", "\"mnist\"").replace("\nd = 3\n", "\n"));
        assert!(e.contains("data.path") && e.contains("never downloads"), "{e}");
        let e = err(&BASE.replace("\"teacher\"", "\"mnist\"").replace("\nd = 3\n", "\npath = \"/nonexistent\"\n"));
        assert!(e.contains("holds none of"), "{e}");
        let e = err(&BASE.replace("\"teacher\"", "\"mnist2\""));
        assert!(e.contains("diabetes, digits") && e.contains("cifar10"), "{e}");
        let e = err(&BASE.replace("\nd = 3\n", "\nd = 3\npath = \"x\"\n"));
        assert!(e.contains("data.path"), "{e}");
    }

    #[test]
    fn the_bundled_example_is_valid() {
        let text = include_str!("../../../../examples/train_basic.toml");
        RunConfig::from_toml_str(text).unwrap().resolve(Path::new(".")).unwrap();
    }

    #[test]
    fn bad_values_name_their_key() {
        let cases = [
            (BASE.replace("lr = 0.5", "lr = -1.0"), "optimizer.lr"),
            (BASE.replace("lr = 0.5", "lrr = 0.5"), "lrr"),
            (BASE.replace("batch = 4", "batch = 13"), "optimizer.batch"),
            (BASE.replace("batch = 4", ""), "optimizer.batch"),
            (BASE.replace("\"sgd\"", "\"adam\""), "optimizer.kind"),
            (BASE.replace("\"cosine\"", "\"step\""), "optimizer.step_every"),
            (BASE.replace("\"teacher\"", "\"mnist2\""), "data.name"),
            (BASE.replace("n = 12", ""), "data.n"),
            (BASE.replace("dense(1)", "dense(2)"), "model.arch"),
            (BASE.replace("relu", "relux"), "model.arch"),
            (BASE.replace("\"ntk-max\"", "\"ntk-maximum\""), "probes.which"),
            (BASE.replace("every = 5", "every = 0"), "probes.every"),
            (BASE.replace("every = 5", "every = 5\nntk_subset = 100"), "probes.ntk_subset"),
            (BASE.replace("[probes]", "[probes]\nhessian_top_k = 0"), "probes.hessian_top_k"),
            (BASE.replace("kind = \"sgd\"", "kind = \"flow\""), "optimizer.batch"),
            (BASE.replace("seed = 3", "seed = 3\nthreads = 2"), "threads"),
            (BASE.replace("[data]", "[data]\nx = \"x.npy\""), "data"),
        ];
        for (text, key) in cases {
            let e = err(&text);
            assert!(e.contains(key), "error for `{key}` does not name it: {e}");
        }
    }
}
