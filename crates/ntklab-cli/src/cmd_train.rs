//! `ntklab train` (being implemented; see the open issue).

use anyhow::{bail, Result};
use clap::Args;

/// Arguments of `ntklab train`.
#[derive(Args, Debug)]
pub struct TrainArgs {}

/// Run `ntklab train`.
pub fn run(_a: TrainArgs) -> Result<()> {
    bail!("`ntklab train` is not implemented yet")
}
