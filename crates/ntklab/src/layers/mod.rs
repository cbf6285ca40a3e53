//! One module per layer family, holding everything the family does in both views (ARCHITECTURE.md, "How to add
//! a layer"): its output width and parameters, its forward, reverse (VJP), forward-mode (JVP) and second-order
//! (R-operator) passes on batches, and its infinite-width NNGP/NTK rule in neural-tangents' conventions. The
//! generic traversals (`net::tape`, `net::backward`, `net::jvp`, `net::rop`, `kernel::compute`) walk the graph
//! and dispatch to these functions; they hold no layer arithmetic of their own.
//!
//! * [`dense`]: affine maps with the parameterization multipliers (the only family with parameters).
//! * [`activation`]: pointwise nonlinearities (the functions and their duals live in `kernel::activation`).
//! * [`fan_in`]: sums and concatenations of several nodes (fan-out needs no code: a node read twice).
//! * [`conv`]: convolution and pooling on N x (P C) activations (tested math; not yet called by the traversals,
//!   whose spatial arms `Network::zeros` keeps unreachable).

pub(crate) mod activation;
pub(crate) mod conv;
pub(crate) mod dense;
pub(crate) mod fan_in;
