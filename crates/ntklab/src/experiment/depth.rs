//! Implicit acceleration by depth (Arora, Cohen & Hazan 2018, "On the optimization of deep networks: implicit
//! acceleration by overparameterization").
//!
//! Linear regression on the bundled diabetes table (`data::bundled`, 442 x 10, standardized) with the l_p loss
//! L(w) = 1/(p N) sum_i |x_i.w - y_i|^p, fitted by a depth-1 model (w itself) and by depth-N linear networks
//! x -> W_N ... W_1 x (`dense(h), ..., dense(1)`, no bias, 'standard' parameterization: the raw weights are the
//! effective ones), trained by full-batch GD through the library's network (forward pass and VJP; the l_p
//! cotangent |r|^(p-2) r / N). Initialization is balanced and rank one: for a unit u_0 in R^d, units u_j in
//! R^h and c = s^(1/N), W_1 = c u_1 u_0^T, W_j = c u_j u_(j-1)^T, W_N = c u_(N-1)^T, so W_(j+1)^T W_(j+1) =
//! W_j W_j^T and the end-to-end vector is w_0 = s u_0 (s near zero).
//!
//! Each (p, depth) gets its best step size from a geometric grid: the one reaching the target relative excess
//! (L_t - L*)/(L_0 - L*) <= `target` in the fewest steps (ties and misses: the lowest final loss). L* is the
//! exact minimum (Newton's method on the convex l_p objective from the least-squares solution).
//!
//! The end-to-end dynamics (the paper's Theorem 1, scalar output): with balanced initialization the product
//! w = W_N ... W_1 of GD on the deep net follows, up to O(eta^2) per step,
//!   w <- w - eta ||w||^(2 - 2/N) (grad L(w) + (N - 1) Pr_w grad L(w)),  Pr_w = w w^T / ||w||^2.
//! Both are run over the same training time at eta, eta/2, eta/4: their largest distance falls like eta
//! (slope 1 on log-log axes).

use faer::linalg::solvers::Solve;
use faer::Mat;
use serde::{Deserialize, Serialize};

use super::{fit_power_law, Context, Reproduction};
use crate::data::bundled::Bundled;
use crate::data::synthetic::{derive_seed, rng};
use crate::kernel::{Architecture, Parameterization};
use crate::net::{Mlp, Workspace};
use crate::report::Report;
use crate::{Error, Result};
use rand_distr::{Distribution, StandardNormal};

/// What to run; see the module docs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DepthConfig {
    /// Loss exponents p (even or not: |r|^p).
    pub ps: Vec<u32>,
    /// Network depths (1 = the linear model itself).
    pub depths: Vec<usize>,
    /// Hidden width h of the deep nets.
    pub hidden: usize,
    /// Norm s of the end-to-end vector at initialization (near zero).
    #[serde(with = "crate::data::json_f64")]
    pub init_norm: f64,
    /// GD steps per run.
    pub steps: u64,
    /// Step-size grid: lr_min * 2^(k / per_octave) up to lr_max.
    #[serde(with = "crate::data::json_f64")]
    pub lr_min: f64,
    /// Largest step size of the grid.
    #[serde(with = "crate::data::json_f64")]
    pub lr_max: f64,
    /// Grid points per doubling.
    pub per_octave: u32,
    /// Target relative excess loss (L_t - L*)/(L_0 - L*).
    #[serde(with = "crate::data::json_f64")]
    pub target: f64,
    /// End-to-end dynamics: the deep net's depth N.
    pub dynamics_depth: usize,
    /// End-to-end dynamics: the loss exponent.
    pub dynamics_p: u32,
    /// End-to-end dynamics: the largest step size (then /2 and /4).
    #[serde(with = "crate::data::json_f64")]
    pub dynamics_eta: f64,
    /// End-to-end dynamics: training time (steps = time / eta).
    #[serde(with = "crate::data::json_f64")]
    pub dynamics_time: f64,
    /// End-to-end dynamics: initial norm s.
    #[serde(with = "crate::data::json_f64")]
    pub dynamics_init_norm: f64,
    /// Master seed.
    #[serde(with = "crate::data::seed")]
    pub seed: u64,
}

impl DepthConfig {
    /// The full run: p in {2, 4}, depths 1..3, 1500 steps, 4 grid points per doubling from 1/64 to 6.7.
    pub fn full() -> DepthConfig {
        DepthConfig {
            ps: vec![2, 4],
            depths: vec![1, 2, 3],
            hidden: 10,
            init_norm: 1e-3,
            steps: 1500,
            lr_min: 1.0 / 64.0,
            lr_max: 6.8,
            per_octave: 4,
            target: 1e-3,
            dynamics_depth: 3,
            dynamics_p: 4,
            dynamics_eta: 0.1,
            dynamics_time: 30.0,
            dynamics_init_norm: 0.05,
            seed: 0,
        }
    }

    /// A small instance for tests and CI (a coarser grid around the best step sizes, shorter dynamics).
    pub fn quick() -> DepthConfig {
        DepthConfig {
            steps: 700,
            lr_min: 0.125,
            lr_max: 1.0,
            per_octave: 4,
            dynamics_time: 10.0,
            ..DepthConfig::full()
        }
    }

    /// Checks every value, naming the key.
    pub fn validate(&self) -> Result<()> {
        if self.ps.is_empty() || self.ps.iter().any(|&p| !(2..=8).contains(&p)) {
            return Err(Error::Config("ps: at least one, each in 2..=8".into()));
        }
        if self.depths.is_empty() || self.depths.iter().any(|&n| !(1..=8).contains(&n)) {
            return Err(Error::Config("depths: at least one, each in 1..=8".into()));
        }
        if !(1..=1024).contains(&self.hidden) {
            return Err(Error::Config(format!("hidden must be in 1..=1024, got {}", self.hidden)));
        }
        for (k, v) in [("init_norm", self.init_norm), ("dynamics_init_norm", self.dynamics_init_norm)] {
            if !(v > 0.0 && v < 10.0) {
                return Err(Error::Config(format!("{k} must be in (0, 10), got {v}")));
            }
        }
        if self.steps == 0 || self.steps > 1_000_000 {
            return Err(Error::Config("steps must be in 1..=10^6".into()));
        }
        if !(self.lr_min > 0.0 && self.lr_max >= self.lr_min && self.lr_max.is_finite()) {
            return Err(Error::Config(format!("need 0 < lr_min <= lr_max, got {} and {}", self.lr_min, self.lr_max)));
        }
        if !(1..=16).contains(&self.per_octave) || self.grid().len() > 200 {
            return Err(Error::Config("per_octave must be in 1..=16 and the grid at most 200 step sizes".into()));
        }
        if !(self.target > 0.0 && self.target < 1.0) {
            return Err(Error::Config(format!("target must be in (0, 1), got {}", self.target)));
        }
        if !(2..=8).contains(&self.dynamics_depth) || !(2..=8).contains(&self.dynamics_p) {
            return Err(Error::Config("dynamics_depth and dynamics_p must be in 2..=8".into()));
        }
        // The comparison runs at eta, eta/2 and eta/4: 7 time/eta steps in all.
        let steps = 7.0 * self.dynamics_time / self.dynamics_eta;
        if !(self.dynamics_eta.is_finite()
            && self.dynamics_eta > 0.0
            && self.dynamics_time > 0.0
            && (4.0..=1e6).contains(&steps))
        {
            return Err(Error::Config(
                "dynamics_eta and dynamics_time must be finite and > 0, with 4 to 10^6 steps over the three step sizes"
                    .into(),
            ));
        }
        Ok(())
    }

    /// The step-size grid.
    pub fn grid(&self) -> Vec<f64> {
        let mut g = Vec::new();
        let mut k = 0;
        loop {
            let lr = self.lr_min * 2f64.powf(k as f64 / self.per_octave.max(1) as f64);
            if lr > self.lr_max * (1.0 + 1e-12) || g.len() > 200 {
                return g;
            }
            g.push(lr);
            k += 1;
        }
    }
}

/// The best run of one (p, depth).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DepthRun {
    /// Loss exponent.
    pub p: u32,
    /// Depth.
    pub depth: usize,
    /// The chosen step size.
    #[serde(with = "crate::data::json_f64")]
    pub lr: f64,
    /// Steps to the target relative excess (None: not reached).
    pub steps_to_target: Option<u64>,
    /// Final loss.
    #[serde(with = "crate::data::json_f64")]
    pub final_loss: f64,
    /// Step sizes of the grid that diverged.
    pub diverged: usize,
    /// Relative excess (L_t - L*)/(L_0 - L*) every `record_every` steps.
    #[serde(with = "crate::data::json_f64::vec")]
    pub excess: Vec<f64>,
    /// Spacing of `excess`.
    pub record_every: u64,
}

/// The record of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DepthResult {
    /// The configuration.
    pub config: DepthConfig,
    /// Loss exponents (rows of the tables below).
    pub ps: Vec<u32>,
    /// Depths (columns).
    pub depths: Vec<usize>,
    /// L* per p.
    #[serde(with = "crate::data::json_f64::vec")]
    pub optimal_loss: Vec<f64>,
    /// Final loss by p (row) and depth (column).
    pub final_loss: Vec<Vec<f64>>,
    /// Steps to the target by p and depth (null: not reached).
    pub steps_to_target: Vec<Vec<Option<u64>>>,
    /// Per p: steps of the shallowest depth over the fewest steps of a deeper one (> 1: depth accelerates; NaN
    /// with a single depth or when none reaches the target).
    #[serde(with = "crate::data::json_f64::vec")]
    pub speedup: Vec<f64>,
    /// The best run of each (p, depth), p-major.
    pub runs: Vec<DepthRun>,
    /// End-to-end dynamics: step sizes.
    #[serde(with = "crate::data::json_f64::vec")]
    pub etas: Vec<f64>,
    /// Largest ||w_deep(t) - w_e2e(t)|| over the training time, per step size.
    #[serde(with = "crate::data::json_f64::vec")]
    pub max_deviation: Vec<f64>,
    /// Log-log slope of max_deviation against eta (expected about 1).
    #[serde(with = "crate::data::json_f64")]
    pub deviation_slope: f64,
    /// Loss of the deep net and of the end-to-end recursion at the smallest eta (same time grid).
    #[serde(with = "crate::data::json_f64::vec")]
    pub dynamics_loss_deep: Vec<f64>,
    /// See `dynamics_loss_deep`.
    #[serde(with = "crate::data::json_f64::vec")]
    pub dynamics_loss_e2e: Vec<f64>,
    /// Training time of each entry of the two curves.
    #[serde(with = "crate::data::json_f64::vec")]
    pub dynamics_time: Vec<f64>,
}

/// The l_p objective on a fixed table.
struct Lp<'a> {
    x: &'a Mat<f64>,
    y: &'a Mat<f64>,
    p: i32,
}

impl Lp<'_> {
    fn n(&self) -> f64 {
        self.x.nrows() as f64
    }

    /// Loss of outputs f (N x 1) and the cotangent dL/df = |r|^(p-2) r / N.
    fn at_outputs(&self, f: &Mat<f64>) -> (f64, Mat<f64>) {
        let n = self.n();
        let mut loss = 0.0;
        let u = Mat::from_fn(f.nrows(), 1, |i, _| {
            let r = f[(i, 0)] - self.y[(i, 0)];
            let a = r.abs().powi(self.p - 2);
            loss += a * r * r;
            a * r / n
        });
        (loss / (self.p as f64 * n), u)
    }

    fn outputs(&self, w: &[f64]) -> Mat<f64> {
        Mat::from_fn(self.x.nrows(), 1, |i, _| (0..w.len()).map(|j| self.x[(i, j)] * w[j]).sum())
    }

    /// Loss and gradient X^T u of the linear model w.
    fn at(&self, w: &[f64]) -> (f64, Vec<f64>) {
        let (l, u) = self.at_outputs(&self.outputs(w));
        let g = (0..w.len()).map(|j| (0..self.x.nrows()).map(|i| self.x[(i, j)] * u[(i, 0)]).sum()).collect();
        (l, g)
    }

    /// The minimizer by Newton's method from w = 0 (the objective is convex and smooth for p >= 2; the first step
    /// is the least-squares solution when p = 2). Errors when 100 steps do not converge.
    fn minimize(&self) -> Result<(f64, Vec<f64>)> {
        let d = self.x.ncols();
        let mut w = vec![0.0; d];
        for _ in 0..100 {
            let (_, g) = self.at(&w);
            let f = self.outputs(&w);
            let wts: Vec<f64> = (0..self.x.nrows())
                .map(|i| {
                    (self.p - 1) as f64 * (f[(i, 0)] - self.y[(i, 0)]).abs().powi(self.p - 2).max(1e-12) / self.n()
                })
                .collect();
            let h = Mat::from_fn(d, d, |a, b| {
                (0..self.x.nrows()).map(|i| wts[i] * self.x[(i, a)] * self.x[(i, b)]).sum::<f64>()
            });
            let step = h.partial_piv_lu().solve(Mat::from_fn(d, 1, |j, _| g[j]));
            let mut norm = 0.0f64;
            for j in 0..d {
                w[j] -= step[(j, 0)];
                norm += step[(j, 0)] * step[(j, 0)];
            }
            if !norm.is_finite() {
                return Err(Error::Numerical("Newton's method for the l_p minimum diverged".into()));
            }
            if norm.sqrt() < 1e-14 * (1.0 + w.iter().map(|v| v * v).sum::<f64>().sqrt()) {
                return Ok((self.at(&w).0, w));
            }
        }
        Err(Error::Numerical(format!("Newton's method for the l_{} minimum did not converge in 100 steps", self.p)))
    }
}

fn unit(len: usize, seed: u64) -> Vec<f64> {
    let mut r = rng(seed);
    let v: Vec<f64> = (0..len).map(|_| StandardNormal.sample(&mut r)).collect();
    let n = v.iter().map(|a| a * a).sum::<f64>().sqrt();
    v.into_iter().map(|a| a / n).collect()
}

/// A depth-`depth` linear network (hidden width h, no bias, raw weights = effective weights) with the balanced
/// rank-one initialization of end-to-end vector `s u_0` (see the module docs).
fn balanced_net(d: usize, h: usize, depth: usize, s: f64, seed: u64) -> Result<(Mlp, Vec<f64>)> {
    let text = (0..depth).map(|j| if j + 1 < depth { format!("dense({h})") } else { "dense(1)".into() });
    let arch = Architecture::parse(&text.collect::<Vec<_>>().join(","), Parameterization::Standard)?;
    let mut net = Mlp::zeros(&arch, d, 1.0)?;
    let units: Vec<Vec<f64>> =
        (0..depth).map(|j| unit(if j == 0 { d } else { h }, derive_seed(seed, j as u64))).collect();
    let c = s.powf(1.0 / depth as f64);
    let mut p = Vec::with_capacity(net.num_params());
    for j in 0..depth {
        let (prev, next) = (&units[j], units.get(j + 1));
        let rows = next.map_or(1, |u| u.len());
        for r in 0..rows {
            let a = next.map_or(1.0, |u| u[r]);
            p.extend(prev.iter().map(|b| c * a * b));
        }
    }
    if p.len() != net.num_params() {
        return Err(Error::Numerical(format!("balanced init: {} values for {} parameters", p.len(), net.num_params())));
    }
    net.set_params(&p)?;
    let w0 = units[0].iter().map(|u| s * u).collect();
    Ok((net, w0))
}

/// The end-to-end vector of a linear net: its outputs on the identity.
fn end_to_end(net: &Mlp, eye: &Mat<f64>) -> Result<Vec<f64>> {
    let f = net.forward(eye.as_ref())?;
    Ok((0..eye.nrows()).map(|i| f[(i, 0)]).collect())
}

/// One GD run of a deep linear net: the loss after every step (step 0 first); None when it diverged. One forward
/// and one reverse pass per step ([`Mlp::vjp_into`] with the l_p cotangent), buffers from one workspace.
fn train_deep(obj: &Lp, mut net: Mlp, lr: f64, steps: u64) -> Result<Option<Vec<f64>>> {
    let mut losses = Vec::with_capacity(steps as usize + 1);
    let mut ws = Workspace::default();
    let mut g = vec![0.0; net.num_params()];
    for t in 0..=steps {
        let mut loss = f64::NAN;
        net.vjp_into(
            obj.x.as_ref(),
            |f| {
                let (l, u) = obj.at_outputs(&f.to_owned());
                loss = l;
                u
            },
            &mut g,
            &mut ws,
        )?;
        if !loss.is_finite() || (t > 0 && loss > 1e6 * losses[0]) {
            return Ok(None);
        }
        losses.push(loss);
        if t == steps {
            break;
        }
        for (p, gi) in net.params_mut().iter_mut().zip(&g) {
            *p -= lr * gi;
        }
    }
    Ok(Some(losses))
}

const INIT_STREAM: u64 = 1;
const DYN_STREAM: u64 = 2;

fn run_one(cfg: &DepthConfig, obj: &Lp, l_star: f64, p: u32, depth: usize, ctx_seed: u64) -> Result<DepthRun> {
    let d = obj.x.ncols();
    let mut best: Option<(u64, f64, f64, Vec<f64>)> = None;
    let mut diverged = 0;
    for lr in cfg.grid() {
        let (net, _) = balanced_net(d, cfg.hidden, depth, cfg.init_norm, ctx_seed)?;
        let Some(losses) = train_deep(obj, net, lr, cfg.steps)? else {
            diverged += 1;
            continue;
        };
        let l0 = losses[0];
        let excess: Vec<f64> = losses.iter().map(|l| (l - l_star) / (l0 - l_star)).collect();
        let hit = excess.iter().position(|e| *e <= cfg.target).map_or(u64::MAX, |k| k as u64);
        let fin = *losses.last().unwrap_or(&f64::INFINITY);
        if best.as_ref().is_none_or(|b| (hit, fin) < (b.0, b.1)) {
            best = Some((hit, fin, lr, excess));
        }
    }
    let (hit, fin, lr, excess) =
        best.ok_or_else(|| Error::Numerical(format!("p = {p}, depth {depth}: every step size of the grid diverged")))?;
    let every = (cfg.steps / 300).max(1);
    Ok(DepthRun {
        p,
        depth,
        lr,
        steps_to_target: (hit != u64::MAX).then_some(hit),
        final_loss: fin,
        diverged,
        excess: excess.iter().step_by(every as usize).copied().collect(),
        record_every: every,
    })
}

/// Deep GD and the end-to-end recursion side by side at one step size: (max deviation, deep losses, e2e losses).
fn dynamics(cfg: &DepthConfig, x: &Mat<f64>, y: &Mat<f64>, eta: f64) -> Result<(f64, Vec<f64>, Vec<f64>)> {
    let obj = Lp { x, y, p: cfg.dynamics_p as i32 };
    let d = x.ncols();
    let n = cfg.dynamics_depth;
    let eye = Mat::<f64>::identity(d, d);
    let (mut net, mut w) = balanced_net(d, cfg.hidden, n, cfg.dynamics_init_norm, derive_seed(cfg.seed, DYN_STREAM))?;
    let steps = (cfg.dynamics_time / eta).round() as u64;
    let mut params = net.params().to_vec();
    let (mut dev, mut ld, mut le) = (0.0f64, Vec::new(), Vec::new());
    for t in 0..=steps {
        let wd = end_to_end(&net, &eye)?;
        dev = dev.max(wd.iter().zip(&w).map(|(a, b)| (a - b) * (a - b)).sum::<f64>().sqrt());
        let f = net.forward(x.as_ref())?;
        let (l, u) = obj.at_outputs(&f);
        let (l_e, g) = obj.at(&w);
        if !(l.is_finite() && l_e.is_finite()) {
            return Err(Error::Numerical(format!("end-to-end dynamics diverged at eta = {eta}: lower dynamics_eta")));
        }
        ld.push(l);
        le.push(l_e);
        if t == steps {
            break;
        }
        let grad = net.vjp(x.as_ref(), u.as_ref())?;
        for (p, gi) in params.iter_mut().zip(&grad) {
            *p -= eta * gi;
        }
        net.set_params(&params)?;
        let nw2: f64 = w.iter().map(|a| a * a).sum();
        let wg: f64 = w.iter().zip(&g).map(|(a, b)| a * b).sum();
        let scale = nw2.sqrt().powf(2.0 - 2.0 / n as f64);
        for (wi, gi) in w.iter_mut().zip(&g) {
            *wi -= eta * scale * (gi + (n - 1) as f64 * *wi * wg / nw2);
        }
    }
    Ok((dev, ld, le))
}

/// Runs the grid for every (p, depth) and the end-to-end comparison; each is one checkpointed step.
pub fn run(cfg: &DepthConfig, ctx: &mut Context) -> Result<DepthResult> {
    cfg.validate()?;
    let (x, y, _) = Bundled::Diabetes.table()?;
    let total = cfg.ps.len() * cfg.depths.len() + 1;
    ctx.progress(0, total);
    let mut runs = Vec::new();
    let mut optimal = Vec::new();
    for &p in &cfg.ps {
        let obj = Lp { x: &x, y: &y, p: p as i32 };
        let (l_star, _) = obj.minimize()?;
        optimal.push(l_star);
        for &depth in &cfg.depths {
            let r: DepthRun = ctx.step(&format!("p={p},depth={depth}"), || {
                run_one(cfg, &obj, l_star, p, depth, derive_seed(cfg.seed, INIT_STREAM))
            })?;
            runs.push(r);
            ctx.progress(runs.len(), total);
        }
    }
    let etas: Vec<f64> = (0..3).map(|k| cfg.dynamics_eta / f64::from(1u32 << k)).collect();
    let dyn_out: Vec<(f64, Vec<f64>, Vec<f64>)> =
        ctx.step("dynamics", || etas.iter().map(|&e| dynamics(cfg, &x, &y, e)).collect::<Result<Vec<_>>>())?;
    ctx.progress(total, total);
    let max_deviation: Vec<f64> = dyn_out.iter().map(|o| o.0).collect();
    let deviation_slope = fit_power_law(&etas, &max_deviation).map_or(f64::NAN, |f| f.exponent);
    let last = dyn_out.last().cloned().unwrap_or_default();
    let eta_small = *etas.last().unwrap_or(&1.0);
    let nd = cfg.depths.len();
    let table = |f: &dyn Fn(&DepthRun) -> f64| -> Vec<Vec<f64>> {
        runs.chunks(nd).map(|c| c.iter().map(f).collect()).collect()
    };
    let steps_to_target: Vec<Vec<Option<u64>>> =
        runs.chunks(nd).map(|c| c.iter().map(|r| r.steps_to_target).collect()).collect();
    let shallow = cfg.depths.iter().enumerate().min_by_key(|(_, d)| **d).map_or(0, |(i, _)| i);
    let speedup = steps_to_target
        .iter()
        .map(|row| {
            let base = row[shallow].map_or(f64::INFINITY, |s| s as f64);
            let deep = row
                .iter()
                .enumerate()
                .filter(|(i, _)| cfg.depths[*i] > cfg.depths[shallow])
                .map(|(_, s)| s.map_or(f64::INFINITY, |s| s as f64))
                .fold(f64::INFINITY, f64::min);
            if (base.is_infinite() && deep.is_infinite()) || cfg.depths.iter().all(|d| *d <= cfg.depths[shallow]) {
                f64::NAN
            } else {
                base / deep
            }
        })
        .collect();
    Ok(DepthResult {
        config: cfg.clone(),
        ps: cfg.ps.clone(),
        depths: cfg.depths.clone(),
        optimal_loss: optimal,
        final_loss: table(&|r| r.final_loss),
        steps_to_target,
        speedup,
        runs: runs.clone(),
        dynamics_time: (0..last.1.len()).map(|t| t as f64 * eta_small).collect(),
        dynamics_loss_deep: last.1,
        dynamics_loss_e2e: last.2,
        etas,
        max_deviation,
        deviation_slope,
    })
}

/// `ntklab run depth`.
pub struct Depth;

impl Reproduction for Depth {
    const NAME: &'static str = "depth";
    const DESCRIPTION: &'static str =
        "Implicit acceleration by depth (Arora, Cohen & Hazan 2018): deep linear nets under l_2 and l_4 losses";
    type Config = DepthConfig;
    type Summary = DepthResult;

    fn full() -> DepthConfig {
        DepthConfig::full()
    }
    fn quick() -> DepthConfig {
        DepthConfig::quick()
    }
    fn seed(cfg: &DepthConfig) -> u64 {
        cfg.seed
    }
    fn set_seed(cfg: &mut DepthConfig, seed: u64) {
        cfg.seed = seed;
    }
    fn validate(cfg: &DepthConfig) -> Result<()> {
        cfg.validate()
    }
    fn run(cfg: &DepthConfig, ctx: &mut Context) -> Result<DepthResult> {
        run(cfg, ctx)
    }
    fn report(res: &DepthResult) -> Report {
        super::depth_report::report(res)
    }
    fn console(res: &DepthResult) -> String {
        let mut s = format!("depth: steps to {:.0e} relative excess loss (best step size)\n", res.config.target);
        for (i, p) in res.ps.iter().enumerate() {
            s += &format!("  l_{p}:");
            for (j, d) in res.depths.iter().enumerate() {
                let st = res.steps_to_target[i][j].map_or("-".to_string(), |v| v.to_string());
                s += &format!("  depth {d}: {st:>6}");
            }
            s += &format!("   speedup {:.2}\n", res.speedup[i]);
        }
        s += &format!(
            "end-to-end dynamics: max deviation {:?} at eta {:?}, slope {:.3}",
            res.max_deviation.iter().map(|v| format!("{v:.2e}")).collect::<Vec<_>>(),
            res.etas,
            res.deviation_slope
        );
        s
    }
}
