//! Kernel predictions, the infinite-width side of NTK theory.
//!
//! * [`krr`]: kernel ridge regression (K + reg I)^{-1} y, via Cholesky with reported jitter.
//! * [`gp_posterior`]: Gaussian-process posterior mean and covariance (NNGP inference).
//! * [`LinearizedDynamics`]: closed-form outputs of a network trained by gradient flow or gradient descent on
//!   MSE in the NTK (linearized / infinite-width) regime, at any time including t = infinity.
//!
//! Loss convention (ARCHITECTURE.md): L = 1/(2N) sum_i (f(x_i) - y_i)^2 over the N training points.

mod dynamics;
mod gp;
pub(crate) mod jitter;
mod krr;
#[cfg(test)]
mod wide_net_tests;

pub use dynamics::{predict_linearized, LinearizedDynamics, Time};
pub use gp::{gp_posterior, GpPosterior};
pub use jitter::{JITTER_GROWTH, JITTER_MAX_REL, JITTER_START_REL};
pub use krr::{krr, KrrPrediction};

#[cfg(test)]
mod testutil;
