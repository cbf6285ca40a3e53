//! Optimizers on the flat parameter vector w ([`crate::net::Mlp::params`] order) and their configuration.
//!
//! Discrete methods, step s = 0..S-1 with learning rate eta_s (see [`Schedule`]) and gradient g_s of the loss
//! on batch B_s (PyTorch `torch.optim.SGD` conventions, dampening 0):
//! * plain (S)GD (beta = 0): w <- w - eta_s g_s;
//! * heavy ball (Polyak 1964): v <- beta v + g_s, w <- w - eta_s v;
//! * Nesterov (Sutskever et al. 2013 form): v <- beta v + g_s, w <- w - eta_s (g_s + beta v).
//!
//! Gradient flow dw/dt = -grad L(w) (full batch) is integrated by Dormand–Prince 5(4) ([`super::ode`]).
//! Time convention: t = sum_{s'<s} eta_{s'}, i.e. t = eta s for a constant rate, so GD with rate eta after s
//! steps and gradient flow at t = eta s are comparable (GD is the Euler discretization of the flow with dt = eta).
//! (`crate::predict` writes the flow as dw/dt' = -eta grad L with t' in steps; t = eta t'.)
//!
//! Mini-batches: each epoch e shuffles 0..N with the seed derive_seed(seed, e) (Fisher–Yates) and cuts it into
//! ceil(N / B) consecutive batches, the last one possibly smaller (PyTorch `drop_last=False`).

use serde::{Deserialize, Serialize};

use super::loss::Loss;
use super::ode::OdeOptions;
use super::schedule::Schedule;
use crate::data::synthetic::{derive_seed, rng};
use crate::{Error, Result};

/// How parameters move.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum Method {
    /// Discrete steps: (S)GD with optional heavy-ball or Nesterov momentum (module docs).
    Discrete {
        /// Mini-batch size B (None: full batch).
        batch: Option<usize>,
        /// Momentum coefficient beta in [0, 1) (0: plain (S)GD).
        momentum: f64,
        /// Nesterov instead of heavy-ball momentum.
        nesterov: bool,
    },
    /// Gradient flow dw/dt = -grad L(w) on the full batch, by an adaptive Dormand–Prince 5(4) integrator.
    Flow(OdeOptions),
}

/// Everything that defines a training run apart from the network, the data and the probes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    /// The loss on the network outputs.
    pub loss: Loss,
    /// The optimizer.
    pub method: Method,
    /// Base learning rate eta > 0 (for gradient flow: the time unit, t = eta * steps).
    #[serde(with = "crate::data::json_f64")]
    pub lr: f64,
    /// Number of steps S (for gradient flow: integrate to t = eta S, records every `every` steps of length eta).
    pub steps: u64,
    /// Learning-rate schedule (discrete methods only).
    pub schedule: Schedule,
    /// Seed of the mini-batch shuffling and of the Lanczos start vectors.
    pub seed: u64,
    /// Divergence: training stops when a loss exceeds `divergence_factor` times the initial loss (or is not finite).
    #[serde(with = "crate::data::json_f64")]
    pub divergence_factor: f64,
    /// Stop early (status `Converged`) once the full training loss at a record is <= this value.
    #[serde(default, with = "crate::data::json_f64::opt")]
    pub stop_loss: Option<f64>,
}

impl TrainConfig {
    fn base(method: Method, lr: f64, steps: u64) -> TrainConfig {
        TrainConfig {
            loss: Loss::Mse,
            method,
            lr,
            steps,
            schedule: Schedule::constant(),
            seed: 0,
            divergence_factor: 1e10,
            stop_loss: None,
        }
    }

    /// Full-batch gradient descent with rate `lr` for `steps` steps, MSE loss.
    pub fn gd(lr: f64, steps: u64) -> TrainConfig {
        Self::base(Method::Discrete { batch: None, momentum: 0.0, nesterov: false }, lr, steps)
    }

    /// Mini-batch SGD with batch size `batch`.
    pub fn sgd(lr: f64, steps: u64, batch: usize) -> TrainConfig {
        Self::base(Method::Discrete { batch: Some(batch), momentum: 0.0, nesterov: false }, lr, steps)
    }

    /// Full-batch heavy-ball momentum with coefficient `beta`.
    pub fn momentum(lr: f64, steps: u64, beta: f64) -> TrainConfig {
        Self::base(Method::Discrete { batch: None, momentum: beta, nesterov: false }, lr, steps)
    }

    /// Gradient flow to time t = lr * steps with the given integrator settings.
    pub fn flow(lr: f64, steps: u64, ode: OdeOptions) -> TrainConfig {
        Self::base(Method::Flow(ode), lr, steps)
    }

    /// Sets the loss.
    pub fn with_loss(mut self, loss: Loss) -> Self {
        self.loss = loss;
        self
    }

    /// Sets the schedule.
    pub fn with_schedule(mut self, schedule: Schedule) -> Self {
        self.schedule = schedule;
        self
    }

    /// Sets the seed.
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Learning rate at step s: eta * schedule.factor(s, S).
    pub fn lr_at(&self, step: u64) -> f64 {
        self.lr * self.schedule.factor(step, self.steps)
    }

    /// Checks the configuration against a training set of `n` points.
    pub fn validate(&self, n: usize) -> Result<()> {
        if !(self.lr > 0.0 && self.lr.is_finite()) {
            return Err(Error::Config(format!("learning rate must be finite and > 0, got {}", self.lr)));
        }
        if self.divergence_factor.is_nan() || self.divergence_factor <= 1.0 {
            return Err(Error::Config(format!("divergence factor must be > 1, got {}", self.divergence_factor)));
        }
        if let Some(s) = self.stop_loss {
            if !(s >= 0.0 && s.is_finite()) {
                return Err(Error::Config(format!("stop loss must be finite and >= 0, got {s}")));
            }
        }
        self.schedule.validate()?;
        match self.method {
            Method::Discrete { batch, momentum, .. } => {
                if let Some(b) = batch {
                    if b == 0 || b > n {
                        return Err(Error::Config(format!(
                            "batch size must be in 1..={n} (the training set size), got {b}"
                        )));
                    }
                }
                if !(0.0..1.0).contains(&momentum) {
                    return Err(Error::Config(format!("momentum must be in [0, 1), got {momentum}")));
                }
            }
            Method::Flow(o) => {
                o.validate()?;
                if !self.schedule.is_constant() {
                    return Err(Error::Config("gradient flow takes no learning-rate schedule (t = lr * steps)".into()));
                }
            }
        }
        Ok(())
    }
}

/// The batch of each step: per-epoch seeded shuffles of 0..N cut into consecutive batches of size B.
#[derive(Debug, Clone)]
pub struct BatchSampler {
    n: usize,
    batch: usize,
    seed: u64,
    epoch: Option<u64>,
    perm: Vec<usize>,
}

impl BatchSampler {
    /// Batches of size `batch` (1..=n) from 0..n, shuffled per epoch from `seed`.
    pub fn new(n: usize, batch: usize, seed: u64) -> BatchSampler {
        BatchSampler { n, batch: batch.clamp(1, n.max(1)), seed, epoch: None, perm: Vec::new() }
    }

    /// Batches per epoch, ceil(N / B).
    pub fn batches_per_epoch(&self) -> u64 {
        self.n.div_ceil(self.batch) as u64
    }

    /// Indices of the batch used at `step` (epoch step / nb, position step mod nb).
    pub fn batch(&mut self, step: u64) -> &[usize] {
        let nb = self.batches_per_epoch();
        let (epoch, pos) = (step / nb, (step % nb) as usize);
        if self.epoch != Some(epoch) {
            self.perm = (0..self.n).collect();
            let mut r = rng(derive_seed(self.seed, epoch));
            for i in (1..self.n).rev() {
                let j = rand::Rng::random_range(&mut r, 0..=i);
                self.perm.swap(i, j);
            }
            self.epoch = Some(epoch);
        }
        let lo = pos * self.batch;
        let hi = (lo + self.batch).min(self.n);
        &self.perm[lo..hi]
    }
}

/// Momentum state and the update rule of a discrete method.
#[derive(Debug, Clone)]
pub(crate) struct Stepper {
    momentum: f64,
    nesterov: bool,
    velocity: Vec<f64>,
}

impl Stepper {
    pub(crate) fn new(p: usize, momentum: f64, nesterov: bool) -> Stepper {
        Stepper { momentum, nesterov, velocity: if momentum > 0.0 { vec![0.0; p] } else { Vec::new() } }
    }

    /// One update of w with gradient g and rate eta (module docs).
    /// Updates are formed in f64 and rounded once into the parameters' precision.
    pub(crate) fn step<T: crate::net::Float>(&mut self, w: &mut [T], g: &[T], eta: f64) {
        if self.momentum == 0.0 {
            for (wi, gi) in w.iter_mut().zip(g) {
                *wi = T::of(wi.wide() - eta * gi.wide());
            }
            return;
        }
        let b = self.momentum;
        for ((wi, vi), gi) in w.iter_mut().zip(self.velocity.iter_mut()).zip(g) {
            let gi = gi.wide();
            *vi = b * *vi + gi;
            let dir = if self.nesterov { gi + b * *vi } else { *vi };
            *wi = T::of(wi.wide() - eta * dir);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sampler_covers_each_epoch_once_and_is_seeded() {
        let mut s = BatchSampler::new(10, 4, 7);
        assert_eq!(s.batches_per_epoch(), 3);
        for epoch in 0..3u64 {
            let mut seen: Vec<usize> = (0..3).flat_map(|b| s.batch(epoch * 3 + b).to_vec()).collect();
            assert_eq!(s.batch(epoch * 3 + 2).len(), 2);
            seen.sort();
            assert_eq!(seen, (0..10).collect::<Vec<_>>());
        }
        let a: Vec<usize> = BatchSampler::new(10, 4, 7).batch(5).to_vec();
        assert_eq!(a, s.batch(5).to_vec());
        assert_ne!(BatchSampler::new(10, 10, 7).batch(0), BatchSampler::new(10, 10, 7).batch(1));
    }

    #[test]
    fn momentum_rules_on_a_quadratic() {
        // One-dimensional L = w^2/2 (g = w): heavy ball w_{s+1} = w_s - eta (beta v_{s-1} + w_s).
        let mut hb = Stepper::new(1, 0.5, false);
        let mut w = [1.0f64];
        hb.step(&mut w, &[1.0], 0.1); // v = 1, w = 0.9
        hb.step(&mut w, &[0.9], 0.1); // v = 0.5 + 0.9 = 1.4, w = 0.76
        assert!((w[0] - 0.76).abs() < 1e-15);
        let mut ne = Stepper::new(1, 0.5, true);
        let mut w = [1.0f64];
        ne.step(&mut w, &[1.0], 0.1); // v = 1, w = 1 - 0.1 (1 + 0.5) = 0.85
        assert!((w[0] - 0.85).abs() < 1e-15);
        let bad = TrainConfig::sgd(0.1, 10, 11);
        assert!(bad.validate(10).is_err());
        assert!(TrainConfig::gd(-1.0, 10).validate(10).is_err());
        assert!(TrainConfig::momentum(0.1, 10, 1.0).validate(10).is_err());
    }
}
