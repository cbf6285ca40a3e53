//! `ntklab run` (being implemented; see the open issue).

use anyhow::{bail, Result};
use clap::Args;

/// Arguments of `ntklab run`.
#[derive(Args, Debug)]
pub struct RunArgs {}

/// Run `ntklab run`.
pub fn run(_a: RunArgs) -> Result<()> {
    bail!("`ntklab run` is not implemented yet")
}
