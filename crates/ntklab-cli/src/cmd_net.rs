//! `ntklab init`, `ntklab ntk`, `ntklab hessian` (finite networks).

use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::Args;

/// Arguments of `ntklab init`.
#[derive(Args, Debug)]
pub struct InitArgs {
    /// Architecture, e.g. "dense(512),relu,dense(1)".
    #[arg(long)]
    pub arch: String,
    /// Input dimension d.
    #[arg(long)]
    pub input_dim: usize,
    /// Output file (.safetensors or .npz).
    #[arg(long)]
    pub out: PathBuf,
}

/// Arguments of `ntklab ntk`.
#[derive(Args, Debug)]
pub struct NtkArgs {
    /// Saved model.
    #[arg(long)]
    pub model: PathBuf,
}

/// Arguments of `ntklab hessian`.
#[derive(Args, Debug)]
pub struct HessianArgs {
    /// Saved model.
    #[arg(long)]
    pub model: PathBuf,
}

/// Run `init`.
pub fn run_init(_a: InitArgs) -> Result<()> {
    bail!("`ntklab init` is not implemented yet")
}
/// Run `ntk`.
pub fn run_ntk(_a: NtkArgs) -> Result<()> {
    bail!("`ntklab ntk` is not implemented yet")
}
/// Run `hessian`.
pub fn run_hessian(_a: HessianArgs) -> Result<()> {
    bail!("`ntklab hessian` is not implemented yet")
}
