//! Data: array file formats (.npy, .npz, .csv; safetensors lives with the networks) and synthetic data sets.

pub mod bundled;
pub mod datasets;
pub mod external;
pub mod io;
pub mod json_f64;
pub mod synthetic;

pub use bundled::Bundled;
pub use datasets::{Builtin, Dataset, SyntheticSpec};
pub use io::{read_examples, read_matrix, read_npy, read_npz, write_npy, write_npy_mat, write_npz, Array};
pub mod memory;
pub mod seed;
