//! Finite networks with exact derivatives: forward, backward, JVP, Hessian-vector products (Pearlmutter's
//! R-operator), Gauss–Newton products and the empirical NTK, for MLPs in several parameterizations.
//!
//! All passes are batched: each Dense layer costs a few GEMMs on N x n matrices, never a per-example loop.
//! Derivatives are w.r.t. the raw variables (`weight`, `bias`), flattened in [`Mlp::params`] order.
//!
//! * [`Mlp::tape`]: the forward pass with caches; [`Mlp::vjp`], [`Mlp::loss_and_gradient`]: reverse mode;
//!   [`Mlp::jvp`]: forward mode.
//! * [`LossCurvature`]: loss value, gradient, Hessian- and Gauss–Newton-vector products at fixed data.
//! * [`Mlp::empirical_ntk`]: J(X1) J(X2)^T without the Jacobian; [`Mlp::jacobian`] for small nets.
//! * [`Mlp::deep_linear`], [`Mlp::two_layer`]: named special architectures.

mod backward;
mod entk;
mod families;
pub mod io;
mod jvp;
pub mod mlp;
mod ops;
mod rop;
mod tape;
#[cfg(test)]
pub(crate) mod testutil;

pub use entk::NtkOutputs;
pub use io::{load_mlp, save_mlp, LoadOptions, ModelFormat, Precision};
pub use mlp::{DenseParams, Mlp};
pub use rop::LossCurvature;
pub use tape::Tape;
