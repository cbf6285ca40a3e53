//! ntklab: an exact, reproducible laboratory for the optimization theory of neural networks.
//!
//! * [`kernel`]: infinite-width NNGP and NTK of deep fully-connected networks (neural-tangents conventions).
//! * [`net`]: finite networks with exact forward, backward, JVP and Hessian-vector products; empirical NTK.
//! * [`train`]: losses, optimizers and the training loop with per-step diagnostics.
//! * [`spectrum`]: Lanczos and power iteration on matrix-free symmetric operators.
//! * [`predict`]: kernel regression, GP inference and closed-form gradient-flow / GD predictions.
//! * [`data`]: .npy/.npz/.csv/safetensors readers and writers, synthetic data sets.
//! * [`experiment`]: named reproductions of results from the literature.
//! * [`runs`]: run folders of training runs and reproductions (written whole or not at all), progress, stopping.

pub mod data;
pub mod error;
pub mod experiment;
pub mod kernel;
pub(crate) mod layers;
pub mod net;
pub mod predict;
pub mod report;
pub mod runs;
pub mod spectrum;
pub mod train;

pub use error::{Error, Result};
