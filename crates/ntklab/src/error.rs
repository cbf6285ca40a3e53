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
    /// The same error with `note` appended to its message (a [`Error::Cancelled`] stays as it is).
    pub fn noted(self, note: &str) -> Self {
        let add = |m: String| format!("{m}; {note}");
        match self {
            Error::File { path, msg } => Error::File { path, msg: add(msg) },
            Error::Shape(m) => Error::Shape(add(m)),
            Error::InvalidInput(m) => Error::InvalidInput(add(m)),
            Error::Parse { token, msg } => Error::Parse { token, msg: add(msg) },
            Error::Config(m) => Error::Config(add(m)),
            Error::Numerical(m) => Error::Numerical(add(m)),
            Error::Cancelled => Error::Cancelled,
        }
    }
    /// A [`Error::Parse`] naming `token`.
    pub fn parse(token: impl Into<String>, msg: impl std::fmt::Display) -> Self {
        Error::Parse { token: token.into(), msg: msg.to_string() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_note_joins_the_message_and_keeps_the_kind() {
        let e = Error::file("a/b.npy", "cannot read").noted("steps kept in c.partial");
        assert_eq!(e.to_string(), "a/b.npy: cannot read; steps kept in c.partial");
        assert!(matches!(Error::Numerical("x".into()).noted("n"), Error::Numerical(m) if m == "x; n"));
        assert!(matches!(Error::Cancelled.noted("n"), Error::Cancelled));
    }
}
