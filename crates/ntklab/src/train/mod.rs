//! Training finite networks with exact diagnostics: losses, optimizers, learning-rate schedules, gradient
//! flow by an adaptive ODE integrator, and the training loop with per-record probes (sharpness, NTK spectrum
//! and drift, PL ratio, distance to the linearized model).
//!
//! * [`loss`]: MSE, logistic and softmax cross-entropy on network outputs.
//! * [`optim`]: [`TrainConfig`] (GD, SGD, heavy-ball / Nesterov momentum, gradient flow) and mini-batching.
//! * [`schedule`]: constant, step, cosine and linear decay with linear warmup.
//! * [`ode`]: Dormand–Prince 5(4) with error control, for gradient flow.
//! * [`probes`]: [`ProbeConfig`] and the [`Record`] written every k steps (JSON Lines).
//! * [`train()`]: the loop; [`TrainResult`] with [`Status`] (completed / converged / diverged at step s).
//! * [`config`]: the TOML run description of `ntklab train`.
//!
//! Time convention: t = sum of the learning rates used (t = eta * steps at constant rate); gradient flow is
//! dw/dt = -grad L(w) on the same clock, so GD after s steps compares with the flow at t = eta s.

pub mod config;
pub mod loss;
pub mod ode;
pub mod optim;
pub mod probes;
pub mod report;
pub mod schedule;
pub mod sweep;
mod trainer;

#[cfg(test)]
mod tests;

pub use config::{Run, RunConfig};
pub use loss::Loss;
pub use ode::{Dopri5, OdeOptions, OdeStats};
pub use optim::{BatchSampler, Method, TrainConfig};
pub use probes::{Probe, ProbeConfig, Record};
pub use report::TrainSummary;
pub use schedule::{Decay, Schedule};
pub use trainer::{train, train_streaming, train_with_progress, Status, TrainResult};
