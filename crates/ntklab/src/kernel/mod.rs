//! Infinite-width NNGP and NTK of deep fully-connected networks, in neural-tangents' conventions.
//!
//! Inputs X (N x d), Sigma0(x, x') = x.x'/d. Layer rules (ARCHITECTURE.md, "Math conventions"):
//! * Dense, 'ntk': `Sigma' = W_std^2 K + b_std^2`, `Theta' = Sigma' + W_std^2 Theta`.
//! * Dense, 'standard': `Theta' = n_in K + [bias] 1 + W_std^2 Theta`, `Sigma' = W_std^2 K + b_std^2`.
//! * Activation: `K = T(Sigma)`, `Theta <- Theta * Tdot(Sigma)`.

pub mod activation;
pub mod arch;
pub mod cnn;
pub mod compute;
pub mod fastmath;
pub mod graph;
pub mod quadrature;
pub mod spatial;
pub mod spec;

pub use activation::{Activation, Dual};
pub use arch::{Architecture, Layer, Parameterization};
pub use compute::{kernel, kernel_f32, kernel_into, kernel_with_progress, Kernel};
pub use graph::{Graph, Node, Op};
pub use quadrature::GaussHermite;
pub use spatial::{Padding, Shape};

#[cfg(test)]
mod graph_tests;
#[cfg(test)]
mod tests;
