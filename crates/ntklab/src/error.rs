//! The library's typed errors: each names the offending input.

use std::path::PathBuf;

/// Every way a library call can fail; messages name the problem and the offending value.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read, written or decoded.
    #[error("{}: {msg}", path.display())]
    File {
        /// The file in question.
        path: PathBuf,
        /// What went wrong.
        msg: String,
    },
    /// Arrays whose shapes do not fit together.
    #[error("shape mismatch: {0}")]
    Shape(String),
    /// Values that are not allowed (NaN, infinity, negative widths, ...).
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// A textual specification (architecture, activation, config) that does not parse.
    #[error("cannot parse `{token}`: {msg}")]
    Parse {
        /// The offending token.
        token: String,
        /// Why it is wrong.
        msg: String,
    },
    /// A configuration that is well-formed but impossible.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A numerical routine that failed (non-convergence, loss of definiteness, ...).
    #[error("numerical failure: {0}")]
    Numerical(String),
    /// The caller stopped the work (Ctrl-C in Python, through a [`Watch`](crate::runs::Watch)).
    #[error("stopped by the user")]
    Cancelled,
}

/// Result alias with the library's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A [`Error::File`] for `path` with message `msg`.
    pub fn file(path: impl Into<PathBuf>, msg: impl std::fmt::Display) -> Self {
        Error::File { path: path.into(), msg: msg.to_string() }
    }
    /// A [`Error::Parse`] naming `token`.
    pub fn parse(token: impl Into<String>, msg: impl std::fmt::Display) -> Self {
        Error::Parse { token: token.into(), msg: msg.to_string() }
    }
}
