//! `ntklab predict` (being implemented; see the open issue).

use anyhow::{bail, Result};
use clap::Args;

/// Arguments of `ntklab predict`.
#[derive(Args, Debug)]
pub struct PredictArgs {}

/// Run `ntklab predict`.
pub fn run(_a: PredictArgs) -> Result<()> {
    bail!("`ntklab predict` is not implemented yet")
}
