//! Finite networks with exact derivatives: forward, backward, JVP, Hessian-vector products (Pearlmutter's
//! R-operator), Gauss–Newton products, the output Hessian and the empirical NTK, for any DAG of Dense, Conv,
//! pooling, flatten, activation and fan-in nodes ([`crate::kernel::Graph`]) in several parameterizations.
//!
//! Every algorithm is one generic traversal of the graph over one flat parameter vector. All passes are
//! batched: each Dense node costs a few GEMMs on N x n matrices, never a per-example loop. Derivatives are
//! w.r.t. the raw variables (`weight`, `bias`), flattened in [`Network::params`] order.
//!
//! * [`Network::tape`]: the forward pass with caches; [`Network::vjp`], [`Network::loss_and_gradient`]:
//!   reverse mode; [`Network::jvp`]: forward mode.
//! * [`LossCurvature`]: loss value, gradient, Hessian- and Gauss–Newton-vector products at fixed data;
//!   [`OutputCurvature`]: the Hessian of the outputs themselves.
//! * [`Network::empirical_ntk`]: J(X1) J(X2)^T without the Jacobian; [`Network::jacobian`] for small nets.
//! * [`Network::deep_linear`], [`Network::two_layer`]: named special architectures.

pub(crate) mod backward;
mod entk;
mod entk_sliced;
mod families;
pub mod io;
mod jvp;
pub mod network;
pub(crate) mod ops;
mod rop;
#[cfg(target_arch = "x86_64")]
mod syrk16;
pub(crate) mod tape;
#[cfg(test)]
pub(crate) mod testutil;

pub use backward::Workspace;
pub use entk::NtkOutputs;
pub use io::{load_mlp, save_mlp, LoadOptions, ModelFormat, Precision};
pub use network::{DenseParams, Mlp, Network};
pub(crate) use ops::Pool;
pub use ops::{cast, column_major, Float};
pub use rop::{check_hessian_job, LossCurvature, OutputCurvature};
pub(crate) use tape::Caches;
pub use tape::Tape;
#[cfg(test)]
mod conv_tests;
#[cfg(test)]
mod f32_tests;
