//! Library error type. Every message names the file, the field or value, and what to do.

use std::path::PathBuf;

/// Errors raised by the lamella library.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad input data (exit code 3): a file whose content is wrong.
    #[error("{path}: {field}: {msg}")]
    BadInput {
        path: PathBuf,
        field: String,
        msg: String,
    },
    /// Bad configuration or usage (exit code 2).
    #[error("configuration error: {0}")]
    Config(String),
    /// I/O failure with the file named (exit code 4).
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// HDF5 failure (exit code 4).
    #[error("{path}: HDF5 error: {msg}")]
    Hdf5 { path: PathBuf, msg: String },
    /// Runtime / resource failure (exit code 4).
    #[error("{0}")]
    Runtime(String),
}

impl Error {
    /// Construct a [`Error::BadInput`] naming the file, the field and the problem (with the fix).
    pub fn bad_input(
        path: impl Into<PathBuf>,
        field: impl Into<String>,
        msg: impl Into<String>,
    ) -> Self {
        Error::BadInput {
            path: path.into(),
            field: field.into(),
            msg: msg.into(),
        }
    }

    /// Wrap an I/O error with the path it concerns.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    /// Process exit code for this error (DESIGN §6): 2 usage/config, 3 bad input, 4 runtime.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Config(_) => 2,
            Error::BadInput { .. } => 3,
            Error::Io { .. } | Error::Hdf5 { .. } | Error::Runtime(_) => 4,
        }
    }
}

/// Library result type.
pub type Result<T> = std::result::Result<T, Error>;
