//! The training loop: optimizer steps on a [`Dataset`] with records every k steps ([`super::probes`]), a
//! linearized (tangent) model trained alongside on request, and divergence handling that never panics.
//!
//! Determinism: batches and Lanczos start vectors come from seeds derived from [`TrainConfig::seed`] and the
//! step; all reductions here run sequentially in a fixed order, so records do not depend on the thread count
//! (given that the network passes are deterministic, which `net` guarantees).

use faer::{Mat, MatRef};
use serde::{Deserialize, Serialize};

use super::loss::Loss;
use super::ode::{Dopri5, OdeStats};
use super::optim::{BatchSampler, Method, Stepper, TrainConfig};
use super::probes::{accuracy, norm, rms_distance, symmetrized, Probe, ProbeConfig, Record};
use crate::data::synthetic::derive_seed;
use crate::data::Dataset;
use crate::net::{cast, Caches, Float, LossCurvature, Network, NtkOutputs, Pool, Tape};
use crate::spectrum::{lanczos, sym_eigenvalues, LanczosOptions, Which};
use crate::{Error, Result};

/// Overwrite the network's parameters with f64 values rounded to its precision.
fn set_from_f64<T: Float>(net: &mut Network<T>, w: &[f64]) {
    for (p, v) in net.params_mut().iter_mut().zip(w) {
        *p = T::of(*v);
    }
}

/// Seed streams derived from [`TrainConfig::seed`].
const SHUFFLE_STREAM: u64 = 0;
const LANCZOS_STREAM: u64 = 1;

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum Status {
    /// All steps were taken.
    Completed,
    /// The full training loss reached `stop_loss` at a record after `step` updates.
    Converged {
        /// Updates performed.
        step: u64,
    },
    /// A loss or gradient became non-finite or exceeded `divergence_factor` times the initial loss while taking
    /// step `step` (0-based; gradient flow: t / eta), or the ODE integrator failed.
    Diverged {
        /// The step at which divergence was detected.
        step: u64,
        /// What was detected.
        reason: String,
    },
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Status::Completed => f.write_str("completed"),
            Status::Converged { step } => write!(f, "converged at step {step}"),
            Status::Diverged { step, reason } => write!(f, "diverged at step {step}: {reason}"),
        }
    }
}

/// The outcome of [`train`]; the trained parameters are left in the network.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainResult {
    /// How the run ended.
    pub status: Status,
    /// Updates performed (gradient flow: t / eta).
    pub steps: u64,
    /// Final time t = sum of the learning rates used.
    pub t: f64,
    /// Full training loss at initialization.
    pub initial_loss: f64,
    /// The last record (None only if the run diverged before the first record).
    pub last: Option<Record>,
    /// Step at which the linearized model diverged (it is then no longer trained or reported); None if it did
    /// not (or was not trained).
    pub linearized_diverged_at: Option<u64>,
    /// Integrator statistics (gradient flow).
    pub ode: Option<OdeStats>,
    /// All records in order.
    #[serde(skip)]
    pub records: Vec<Record>,
    /// Final parameters of the linearized model, w_0 + delta ([`Mlp::params`] order), if it was trained.
    #[serde(skip)]
    pub linearized_params: Option<Vec<f64>>,
}

/// Loss, gradient and outputs (in f64) of a network on a batch; Err(reason) when something is not finite.
struct Eval<T: Float> {
    loss: f64,
    grad: Vec<T>,
    outputs: Mat<f64>,
}

fn first_non_finite(m: MatRef<'_, f64>) -> Option<(usize, usize)> {
    (0..m.ncols()).flat_map(|j| (0..m.nrows()).map(move |i| (i, j))).find(|&(i, j)| !m[(i, j)].is_finite())
}

/// L, dL/dtheta = J^T dL/dF (written into `grad`, resized to P) and F from a tape (targets already validated for
/// this loss), with scratch matrices from `pool`.
fn eval_tape<T: Float>(
    net: &Network<T>,
    tape: &Tape<T>,
    outputs: Mat<f64>,
    (y, loss): (MatRef<'_, f64>, Loss),
    mut grad: Vec<T>,
    pool: &mut Pool<T>,
) -> std::result::Result<Eval<T>, String> {
    if let Some((i, a)) = first_non_finite(outputs.as_ref()) {
        return Err(format!("network output is {} at row {i}, column {a}", outputs[(i, a)]));
    }
    let value = loss.value_unchecked(outputs.as_ref(), y);
    if !value.is_finite() {
        return Err(format!("loss is {value}"));
    }
    let gf: Mat<T> = cast(loss.gradient_unchecked(outputs.as_ref(), y).as_ref());
    grad.resize(net.num_params(), T::ZERO);
    net.backprop_into(tape, gf.as_ref(), &mut grad, false, pool);
    if let Some(i) = grad.iter().position(|g| !g.wide().is_finite()) {
        return Err(format!("gradient is {} at parameter {i}", grad[i].wide()));
    }
    Ok(Eval { loss: value, grad, outputs })
}

/// Buffers reused by every full-batch evaluation of a training run (no allocation after the first step).
struct EvalBuffers<T: Float> {
    pool: Pool<T>,
    grad: Vec<T>,
}

impl<T: Float> Default for EvalBuffers<T> {
    fn default() -> Self {
        EvalBuffers { pool: Pool::default(), grad: Vec::new() }
    }
}

/// As [`eval`], with the tape and the gradient in reused buffers (hand `grad` back to `bufs.grad` when done).
fn eval_in<T: Float>(
    net: &Network<T>,
    x: MatRef<'_, T>,
    y: MatRef<'_, f64>,
    loss: Loss,
    bufs: &mut EvalBuffers<T>,
) -> std::result::Result<Eval<T>, String> {
    let tape = net.build_tape_in(x, Caches::First, &mut bufs.pool).map_err(|e| e.to_string())?;
    let outputs: Mat<f64> = cast(tape.output.as_ref());
    let res = eval_tape(net, &tape, outputs, (y, loss), std::mem::take(&mut bufs.grad), &mut bufs.pool);
    tape.recycle(&mut bufs.pool);
    res
}

fn eval<T: Float>(
    net: &Network<T>,
    x: MatRef<'_, T>,
    y: MatRef<'_, f64>,
    loss: Loss,
) -> std::result::Result<Eval<T>, String> {
    let tape = net.tape(x).map_err(|e| e.to_string())?;
    let out: Mat<f64> = cast(tape.output.as_ref());
    eval_tape(net, &tape, out, (y, loss), Vec::new(), &mut Pool::default())
}

/// Rows `idx` of `m`.
fn rows<T: Float>(m: MatRef<'_, T>, idx: &[usize]) -> Mat<T> {
    Mat::from_fn(idx.len(), m.ncols(), |i, j| m[(idx[i], j)])
}

/// The tangent model f_lin(x; w_0 + delta) = f(x; w_0) + J(w_0) delta, evaluated by JVPs/VJPs at w_0.
struct Tangent<T: Float> {
    net0: Network<T>,
    tape_train: Tape<T>,
    tape_test: Option<Tape<T>>,
}

impl<T: Float> Tangent<T> {
    fn new(net0: Network<T>, xs: &Inputs<T>) -> Result<Tangent<T>> {
        let tape_train = net0.tape(xs.train.as_ref())?;
        let tape_test = xs.test.as_ref().map(|xt| net0.tape(xt.as_ref())).transpose()?;
        Ok(Tangent { net0, tape_train, tape_test })
    }

    fn outputs(&self, tape: &Tape<T>, delta: &[T]) -> std::result::Result<Mat<f64>, String> {
        let jd = self.net0.jvp_at(tape, delta).map_err(|e| format!("linearized model: {e}"))?;
        Ok(cast((&tape.output + &jd).as_ref()))
    }

    /// Loss, gradient J_0^T dL/df_lin and outputs on a taped batch at w_0.
    fn eval(
        &self,
        tape: &Tape<T>,
        y: MatRef<'_, f64>,
        loss: Loss,
        delta: &[T],
    ) -> std::result::Result<Eval<T>, String> {
        let f = self.outputs(tape, delta)?;
        eval_tape(&self.net0, tape, f, (y, loss), Vec::new(), &mut Pool::default())
    }

    fn eval_batch(
        &self,
        x: MatRef<'_, T>,
        y: MatRef<'_, f64>,
        loss: Loss,
        delta: &[T],
    ) -> std::result::Result<Eval<T>, String> {
        let tape = self.net0.tape(x).map_err(|e| e.to_string())?;
        self.eval(&tape, y, loss, delta)
    }
}

/// State shared by all records of a run.
struct Prober<'a, T: Float> {
    cfg: &'a ProbeConfig,
    data: &'a Dataset,
    xs: &'a Inputs<T>,
    loss: Loss,
    seed: u64,
    w0: Vec<T>,
    w0_norm: f64,
    subset: Mat<T>,
    k0: Option<Mat<f64>>,
}

/// The inputs of a run in the network's precision.
struct Inputs<T: Float> {
    train: Mat<T>,
    test: Option<Mat<T>>,
}

impl<T: Float> Inputs<T> {
    fn new(data: &Dataset) -> Inputs<T> {
        Inputs { train: cast(data.x.as_ref()), test: data.test.as_ref().map(|(xt, _)| cast(xt.as_ref())) }
    }
}

/// ||v|| accumulated in f64.
fn norm_t<T: Float>(v: &[T]) -> f64 {
    v.iter().map(|x| x.wide() * x.wide()).sum::<f64>().sqrt()
}

impl<'a, T: Float> Prober<'a, T> {
    fn new(
        cfg: &'a ProbeConfig,
        data: &'a Dataset,
        xs: &'a Inputs<T>,
        loss: Loss,
        seed: u64,
        net: &Network<T>,
    ) -> Result<Prober<'a, T>> {
        let m = cfg.ntk_subset.unwrap_or(data.n_train());
        let subset = xs.train.as_ref().subrows(0, m).to_owned();
        let w0 = net.params().to_vec();
        let w0_norm = norm_t(&w0);
        let k0 = if cfg.has(Probe::NtkChange) {
            Some(symmetrized(&cast(net.empirical_ntk(subset.as_ref(), None, NtkOutputs::Full)?.as_ref())))
        } else {
            None
        };
        Ok(Prober { cfg, data, xs, loss, seed, w0, w0_norm, subset, k0 })
    }

    /// The record at the network's current parameters `w`, given its full-training-set evaluation.
    #[allow(clippy::too_many_arguments)]
    fn record(
        &self,
        net: &Network<T>,
        w: &[T],
        full: &Eval<T>,
        step: u64,
        t: f64,
        lr: f64,
        lin: Option<(&Tangent<T>, &[T])>,
    ) -> Result<Record> {
        let c = self.cfg;
        let (x, y) = (self.xs.train.as_ref(), self.data.y.as_ref());
        let gnorm = norm_t(&full.grad);
        let mut r = Record::new(step, t, lr, full.loss, gnorm);
        let test_out = match &self.data.test {
            Some((_, yt)) => {
                let xt = self.xs.test.as_ref().expect("test inputs are cast with the data");
                let f: Mat<f64> = cast(net.forward(xt.as_ref())?.as_ref());
                r.test_loss = if first_non_finite(f.as_ref()).is_none() {
                    Some(self.loss.value_unchecked(f.as_ref(), yt.as_ref()))
                } else {
                    Some(f64::INFINITY)
                };
                if c.has(Probe::Accuracy) {
                    r.test_accuracy = Some(accuracy(f.as_ref(), yt.as_ref()));
                }
                Some(f)
            }
            None => None,
        };
        if c.has(Probe::Accuracy) {
            r.accuracy = Some(accuracy(full.outputs.as_ref(), y));
        }
        if c.has(Probe::Pl) {
            r.pl_ratio = Some(gnorm * gnorm / (2.0 * full.loss));
        }
        if c.has(Probe::WeightChange) {
            let d: Vec<f64> = w.iter().zip(&self.w0).map(|(a, b)| a.wide() - b.wide()).collect();
            let dn = norm(&d);
            r.weight_change = Some(if self.w0_norm > 0.0 { dn / self.w0_norm } else { dn });
        }
        if c.needs_ntk() {
            let k = symmetrized(&cast(net.empirical_ntk(self.subset.as_ref(), None, NtkOutputs::Full)?.as_ref()));
            if c.has(Probe::NtkMax) || c.has(Probe::NtkMin) {
                let ev = sym_eigenvalues(k.as_ref())?;
                if c.has(Probe::NtkMax) {
                    r.ntk_max = ev.last().copied();
                }
                if c.has(Probe::NtkMin) {
                    r.ntk_min = ev.first().copied();
                }
            }
            if let Some(k0) = &self.k0 {
                r.ntk_change = Some((&k - k0).norm_l2() / k0.norm_l2());
            }
        }
        if c.has(Probe::Sharpness) {
            let lc = LossCurvature::new(net, x, y, self.loss)?;
            let opts = LanczosOptions::new(c.hessian_top_k)
                .which(Which::LargestAlgebraic)
                .max_iter(c.lanczos_max_iter)
                .tol(c.lanczos_tol)
                .seed(derive_seed(derive_seed(self.seed, LANCZOS_STREAM), step));
            let res = lanczos(&lc.hessian_op(), &opts)?;
            r.sharpness = res.values.first().copied();
            r.hessian_top = Some(res.values);
            r.hessian_converged = Some(res.converged);
        }
        if let Some((tg, delta)) = lin {
            match tg.outputs(&tg.tape_train, delta) {
                Ok(fl) if first_non_finite(fl.as_ref()).is_none() => {
                    r.lin_loss = Some(self.loss.value_unchecked(fl.as_ref(), y));
                    r.lin_distance = Some(rms_distance(full.outputs.as_ref(), fl.as_ref()));
                    if let (Some(tt), Some(ft)) = (&tg.tape_test, &test_out) {
                        if let Ok(flt) = tg.outputs(tt, delta) {
                            r.lin_test_distance = Some(rms_distance(ft.as_ref(), flt.as_ref()));
                        }
                    }
                }
                _ => {}
            }
        }
        Ok(r)
    }
}

/// The divergence threshold factor * L_0 (no threshold when L_0 = 0).
fn threshold(cfg: &TrainConfig, l0: f64) -> f64 {
    if l0 > 0.0 {
        cfg.divergence_factor * l0
    } else {
        f64::INFINITY
    }
}

fn too_large(loss: f64, thr: f64) -> Option<String> {
    (loss > thr).then(|| format!("loss {loss:.3e} exceeds the divergence threshold {thr:.3e}"))
}

/// The divergence guard of a run: the first full-batch loss L_0 fixes the threshold (see [`threshold`]).
struct Guard {
    initial_loss: f64,
    thr: f64,
}

impl Guard {
    fn new() -> Self {
        Guard { initial_loss: f64::NAN, thr: f64::INFINITY }
    }

    /// Full-batch evaluation; the `first` one sets L_0 and the threshold. Err: why training must stop.
    fn eval<T: Float>(
        &mut self,
        cfg: &TrainConfig,
        net: &Network<T>,
        (x, y): (MatRef<'_, T>, MatRef<'_, f64>),
        first: bool,
        bufs: &mut EvalBuffers<T>,
    ) -> std::result::Result<Eval<T>, String> {
        let e = eval_in(net, x, y, cfg.loss, bufs)?;
        if first {
            self.initial_loss = e.loss;
            self.thr = threshold(cfg, e.loss);
        }
        too_large(e.loss, self.thr).map_or(Ok(e), Err)
    }
}

/// Trains `net` in place on `data` with optimizer `cfg`, recording diagnostics `probes` every `probes.every`
/// steps (and at step 0 and the last step); `on_record` sees each record as it is made (e.g. to stream it to
/// disk) and may abort the run by returning an error.
///
/// Divergence (a non-finite loss/gradient/output, or a loss above `divergence_factor` x initial) ends the run
/// with [`Status::Diverged`], never a panic or an error; the network then holds the parameters at which it
/// was detected. Errors: invalid configuration, data/network shape mismatch, targets outside the loss's domain,
/// a failing probe, or an error from `on_record`.
pub fn train<T: Float>(
    net: &mut Network<T>,
    data: &Dataset,
    cfg: &TrainConfig,
    probes: &ProbeConfig,
    on_record: impl FnMut(&Record) -> Result<()>,
) -> Result<TrainResult> {
    train_inner(net, data, cfg, probes, on_record, |_, _| Ok(()), true)
}

/// [`train`] that also calls `on_step(s, w_s)` after each update s = 1..S with the parameters after it
/// (gradient flow: at each record), e.g. for a progress bar or checkpoints; an error from it stops the run.
pub fn train_with_progress<T: Float>(
    net: &mut Network<T>,
    data: &Dataset,
    cfg: &TrainConfig,
    probes: &ProbeConfig,
    on_record: impl FnMut(&Record) -> Result<()>,
    on_step: impl FnMut(u64, &[T]) -> Result<()>,
) -> Result<TrainResult> {
    train_inner(net, data, cfg, probes, on_record, on_step, true)
}

/// [`train_with_progress`] that keeps no records in memory (`TrainResult::records` is empty; `last` is kept):
/// `on_record` is their only destination, e.g. a file streamed to disk, so memory does not grow with the run.
pub fn train_streaming<T: Float>(
    net: &mut Network<T>,
    data: &Dataset,
    cfg: &TrainConfig,
    probes: &ProbeConfig,
    on_record: impl FnMut(&Record) -> Result<()>,
    on_step: impl FnMut(u64, &[T]) -> Result<()>,
) -> Result<TrainResult> {
    train_inner(net, data, cfg, probes, on_record, on_step, false)
}

fn train_inner<T: Float>(
    net: &mut Network<T>,
    data: &Dataset,
    cfg: &TrainConfig,
    probes: &ProbeConfig,
    mut on_record: impl FnMut(&Record) -> Result<()>,
    mut on_step: impl FnMut(u64, &[T]) -> Result<()>,
    keep: bool,
) -> Result<TrainResult> {
    let n = data.n_train();
    cfg.validate(n)?;
    probes.validate(n, net.num_params())?;
    if data.input_dim() != net.input_dim {
        return Err(Error::Shape(format!(
            "data have {} input features but the network expects {}",
            data.input_dim(),
            net.input_dim
        )));
    }
    if data.output_dim() != net.output_dim() {
        return Err(Error::Shape(format!(
            "targets have {} columns but the network has {} outputs",
            data.output_dim(),
            net.output_dim()
        )));
    }
    let loss = cfg.loss;
    let xs = Inputs::<T>::new(data);
    let f0: Mat<f64> = cast(net.forward(xs.train.as_ref())?.as_ref());
    loss.check(f0.as_ref(), data.y.as_ref()).map_err(|e| match e {
        Error::InvalidInput(m) => Error::InvalidInput(format!("training targets do not suit the {loss} loss: {m}")),
        e => e,
    })?;
    if let (Some((_, yt)), Some(xt)) = (&data.test, &xs.test) {
        let ft: Mat<f64> = cast(net.forward(xt.as_ref())?.as_ref());
        loss.check(ft.as_ref(), yt.as_ref()).map_err(|e| Error::InvalidInput(format!("test targets: {e}")))?;
    }
    let prober = Prober::new(probes, data, &xs, loss, cfg.seed, net)?;
    let tangent = if probes.has(Probe::Linearized) { Some(Tangent::new(net.clone(), &xs)?) } else { None };
    match cfg.method {
        Method::Discrete { batch, momentum, nesterov } => {
            let opt = (batch, momentum, nesterov);
            run_discrete(net, data, cfg, probes, &prober, tangent.as_ref(), opt, &mut on_record, &mut on_step, keep)
        }
        Method::Flow(opts) => {
            run_flow(net, data, cfg, probes, &prober, tangent.as_ref(), opts, &mut on_record, &mut on_step, keep)
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn run_discrete<T: Float>(
    net: &mut Network<T>,
    data: &Dataset,
    cfg: &TrainConfig,
    probes: &ProbeConfig,
    prober: &Prober<'_, T>,
    tangent: Option<&Tangent<T>>,
    (batch, momentum, nesterov): (Option<usize>, f64, bool),
    on_record: &mut impl FnMut(&Record) -> Result<()>,
    on_step: &mut impl FnMut(u64, &[T]) -> Result<()>,
    keep: bool,
) -> Result<TrainResult> {
    let (n, loss) = (data.n_train(), cfg.loss);
    let (x, y) = (prober.xs.train.as_ref(), data.y.as_ref());
    let p = net.num_params();
    let mut bufs = EvalBuffers::default();
    let mut sampler = batch.filter(|&b| b < n).map(|b| BatchSampler::new(n, b, derive_seed(cfg.seed, SHUFFLE_STREAM)));
    let mut stepper = Stepper::new(p, momentum, nesterov);
    let mut lin_stepper = Stepper::new(p, momentum, nesterov);
    let mut delta = vec![T::ZERO; p];
    let mut lin_alive = tangent.is_some();
    let mut lin_diverged_at = None;
    let mut records = Vec::new();
    let mut last: Option<Record> = None;
    let mut status = Status::Completed;
    let (mut t, mut done) = (0.0, 0u64);
    let mut guard = Guard::new();
    for s in 0..=cfg.steps {
        let is_record = s % probes.every == 0 || s == cfg.steps;
        let full_batch = sampler.is_none();
        let mut full = if is_record || (full_batch && s < cfg.steps) {
            match guard.eval(cfg, net, (x, y), s == 0, &mut bufs) {
                Ok(e) => Some(e),
                Err(reason) => {
                    status = Status::Diverged { step: s, reason };
                    break;
                }
            }
        } else {
            None
        };
        if is_record {
            let full = full.as_ref().expect("evaluated at records");
            let lin = if lin_alive { tangent.map(|tg| (tg, delta.as_slice())) } else { None };
            let rec =
                prober.record(net, net.params(), full, s, t, cfg.lr_at(s.min(cfg.steps.saturating_sub(1))), lin)?;
            on_record(&rec)?;
            last = Some(rec.clone());
            if keep {
                records.push(rec);
            }
            if let Some(target) = cfg.stop_loss {
                if full.loss <= target {
                    status = Status::Converged { step: s };
                    break;
                }
            }
        }
        if s == cfg.steps {
            break;
        }
        let eta = cfg.lr_at(s);
        let idx: Option<Vec<usize>> = sampler.as_mut().map(|sm| sm.batch(s).to_vec());
        let (xb, yb) = match &idx {
            Some(ix) => (Some(rows(x, ix)), Some(rows(y, ix))),
            None => (None, None),
        };
        let g = match (&mut full, &xb, &yb) {
            (Some(e), None, None) => std::mem::take(&mut e.grad),
            (_, Some(xb), Some(yb)) => match eval(net, xb.as_ref(), yb.as_ref(), loss) {
                Ok(e) => {
                    if let Some(reason) = too_large(e.loss, guard.thr) {
                        status = Status::Diverged { step: s, reason: format!("batch {reason}") };
                        break;
                    }
                    e.grad
                }
                Err(reason) => {
                    status = Status::Diverged { step: s, reason };
                    break;
                }
            },
            _ => unreachable!("full batch is evaluated every step"),
        };
        // The update writes the network's own parameter vector: no copy per step.
        stepper.step(net.params_mut(), &g, eta);
        bufs.grad = g;
        if lin_alive {
            let tg = tangent.expect("alive implies present");
            let le = match (&xb, &yb) {
                (Some(xb), Some(yb)) => tg.eval_batch(xb.as_ref(), yb.as_ref(), loss, &delta),
                _ => tg.eval(&tg.tape_train, y, loss, &delta),
            };
            match le.and_then(|e| too_large(e.loss, guard.thr).map_or(Ok(e), Err)) {
                Ok(e) => lin_stepper.step(&mut delta, &e.grad, eta),
                Err(_) => {
                    lin_alive = false;
                    lin_diverged_at = Some(s);
                }
            }
        }
        t += eta;
        done += 1;
        on_step(done, net.params())?;
    }
    let linearized_params =
        tangent.filter(|_| lin_alive).map(|_| prober.w0.iter().zip(&delta).map(|(a, b)| a.wide() + b.wide()).collect());
    Ok(TrainResult {
        status,
        steps: done,
        t,
        initial_loss: guard.initial_loss,
        last,
        linearized_diverged_at: lin_diverged_at,
        ode: None,
        records,
        linearized_params,
    })
}

#[allow(clippy::too_many_arguments)]
fn run_flow<T: Float>(
    net: &mut Network<T>,
    data: &Dataset,
    cfg: &TrainConfig,
    probes: &ProbeConfig,
    prober: &Prober<'_, T>,
    tangent: Option<&Tangent<T>>,
    opts: super::ode::OdeOptions,
    on_record: &mut impl FnMut(&Record) -> Result<()>,
    on_step: &mut impl FnMut(u64, &[T]) -> Result<()>,
    keep: bool,
) -> Result<TrainResult> {
    let loss = cfg.loss;
    let (x, y) = (prober.xs.train.as_ref(), data.y.as_ref());
    let p = net.num_params();
    let lin = tangent.is_some();
    // State: [w; delta] (delta = w_lin - w_0 when the tangent model is trained alongside).
    let mut state: Vec<f64> = net.params().iter().map(|v| v.wide()).collect();
    if lin {
        state.extend(std::iter::repeat_n(0.0, p));
    }
    let mut work = net.clone();
    let mut delta_t = vec![T::ZERO; if lin { p } else { 0 }];
    let mut rhs = |s: &[f64], out: &mut [f64]| -> bool {
        for (w, v) in work.params_mut().iter_mut().zip(&s[..p]) {
            *w = T::of(*v);
        }
        let e = match eval(&work, x, y, loss) {
            Ok(e) => e,
            Err(_) => return false,
        };
        for (o, g) in out[..p].iter_mut().zip(&e.grad) {
            *o = -g.wide();
        }
        if let Some(tg) = tangent {
            for (d, v) in delta_t.iter_mut().zip(&s[p..]) {
                *d = T::of(*v);
            }
            match tg.eval(&tg.tape_train, y, loss, &delta_t) {
                Ok(le) => {
                    for (o, g) in out[p..].iter_mut().zip(&le.grad) {
                        *o = -g.wide();
                    }
                }
                Err(_) => return false,
            }
        }
        true
    };
    let mut ode = Dopri5::new(super::ode::OdeOptions { h0: opts.h0.or(Some(cfg.lr)), ..opts })?;
    let mut records = Vec::new();
    let mut last: Option<Record> = None;
    let mut status = Status::Completed;
    let mut t = 0.0;
    let mut done = 0u64;
    let mut guard = Guard::new();
    let n_rec = cfg.steps.div_ceil(probes.every);
    for k in 0..=n_rec {
        let s = (k * probes.every).min(cfg.steps);
        let t_end = s as f64 * cfg.lr;
        if let Err(e) = ode.integrate(&mut rhs, &mut t, &mut state, t_end) {
            set_from_f64(net, &state[..p]);
            status = Status::Diverged { step: (t / cfg.lr).floor() as u64, reason: e.to_string() };
            done = (t / cfg.lr).floor() as u64;
            break;
        }
        set_from_f64(net, &state[..p]);
        done = s;
        on_step(s, net.params())?;
        let full = match guard.eval(cfg, net, (x, y), k == 0, &mut EvalBuffers::default()) {
            Ok(e) => e,
            Err(reason) => {
                status = Status::Diverged { step: s, reason };
                break;
            }
        };
        let state_t: Vec<T> = state.iter().map(|v| T::of(*v)).collect();
        let lin_arg = tangent.map(|tg| (tg, &state_t[p..]));
        let mut rec = prober.record(net, &state_t[..p], &full, s, t, cfg.lr, lin_arg)?;
        rec.ode = Some(ode.stats());
        on_record(&rec)?;
        last = Some(rec.clone());
        if keep {
            records.push(rec);
        }
        if let Some(target) = cfg.stop_loss {
            if full.loss <= target {
                status = Status::Converged { step: s };
                break;
            }
        }
    }
    let linearized_params = lin.then(|| prober.w0.iter().zip(&state[p..]).map(|(a, b)| a.wide() + b).collect());
    Ok(TrainResult {
        status,
        steps: done,
        t,
        initial_loss: guard.initial_loss,
        last,
        linearized_diverged_at: None,
        ode: Some(ode.stats()),
        records,
        linearized_params,
    })
}
