//! Extreme eigenvalues of symmetric operators that are only available as matrix-vector products
//! (Hessian-vector products, NTK-vector products), plus thin wrappers for dense symmetric matrices.
//!
//! * [`SymOp`]: the operator abstraction (`dim` and `apply`), implemented for dense faer matrices and, through
//!   [`FnOp`], for closures.
//! * [`lanczos`] / [`lanczos_top_k`]: Lanczos with full reorthogonalization for a few extreme eigenpairs
//!   (largest algebraic for sharpness, smallest algebraic for negative curvature, largest magnitude).
//! * [`power_iteration`]: the top-magnitude eigenvalue, with its sign.
//! * [`sym_eigen`], [`sym_eigenvalues`], [`min_eigenvalue`], [`max_eigenvalue`]: dense symmetric helpers.

mod dense;
mod lanczos;
mod op;
mod power;
pub(crate) mod vec;

pub use dense::{max_eigenvalue, min_eigenvalue, sym_eigen, sym_eigenvalues, SymEigen};
pub use lanczos::{lanczos, lanczos_top_k, lanczos_watched, LanczosOptions, LanczosResult, Which};
pub(crate) use op::check_symmetric;
pub use op::{FnOp, SymOp};
pub use power::{power_iteration, PowerResult};

#[cfg(test)]
pub(crate) mod testutil;
