//! Finite networks with exact derivatives: forward, backward, JVP, Hessian-vector products (Pearlmutter's
//! R-operator), Gauss–Newton products and the empirical NTK, for MLPs in several parameterizations.

pub mod mlp;

pub use mlp::{DenseParams, Mlp};
