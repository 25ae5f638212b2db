//! One error type for the library: every variant names the file or field at fault and how to fix it.
use std::path::PathBuf;

/// Errors raised by cellsentence stages.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file or directory that does not exist.
    #[error("{path}: file not found{hint}")]
    NotFound { path: PathBuf, hint: String },
    /// A file that exists but cannot be parsed as the expected format.
    #[error("{path}: {what}; fix: {fix}")]
    Format {
        path: PathBuf,
        what: String,
        fix: String,
    },
    /// A required field (HDF5 group, obs column, config key...) is missing.
    #[error("{path}: missing field `{field}`; fix: {fix}")]
    MissingField {
        path: PathBuf,
        field: String,
        fix: String,
    },
    /// Values that violate a stage's contract (non-finite, negative counts...).
    #[error("{path}: field `{field}`: {what}; fix: {fix}")]
    BadValue {
        path: PathBuf,
        field: String,
        what: String,
        fix: String,
    },
    /// A stage produced nothing usable (e.g. every cell removed by QC).
    #[error("{path}: {what}; fix: {fix}")]
    Empty {
        path: PathBuf,
        what: String,
        fix: String,
    },
    /// Invalid parameters passed to a stage.
    #[error("invalid parameter `{name}`: {what}")]
    Param { name: String, what: String },
    /// A stage failed on one dataset of an experiment file.
    #[error("{file}: dataset `{dataset}`: {source}")]
    InExperiment {
        file: PathBuf,
        dataset: String,
        #[source]
        source: Box<Error>,
    },
    /// I/O error with the path it concerns.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Result alias for the library.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Wraps an I/O error with its path.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        use std::io::ErrorKind as K;
        let (what, fix) = match source.kind() {
            K::NotFound => {
                return Error::NotFound {
                    path: path.into(),
                    hint: String::new(),
                }
            }
            K::IsADirectory => (
                "is a folder where a file is expected",
                "give a file path (a file inside the folder, or a new file name)",
            ),
            K::NotADirectory => (
                "a part of this path is a file where a folder is expected",
                "check the path: every part before the last must be a folder",
            ),
            K::InvalidData => (
                "is not UTF-8 text (a binary file?)",
                "give the text file this option reads",
            ),
            _ => {
                return Error::Io {
                    path: path.into(),
                    source,
                }
            }
        };
        Error::Format {
            path: path.into(),
            what: format!("{what} ({source})"),
            fix: fix.into(),
        }
    }
    /// Builds a `Format` error.
    pub fn format(
        path: impl Into<PathBuf>,
        what: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        Error::Format {
            path: path.into(),
            what: what.into(),
            fix: fix.into(),
        }
    }
    /// Builds a `BadValue` error.
    pub fn bad_value(
        path: impl Into<PathBuf>,
        field: impl Into<String>,
        what: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        Error::BadValue {
            path: path.into(),
            field: field.into(),
            what: what.into(),
            fix: fix.into(),
        }
    }
    /// Builds a `MissingField` error.
    pub fn missing(
        path: impl Into<PathBuf>,
        field: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        Error::MissingField {
            path: path.into(),
            field: field.into(),
            fix: fix.into(),
        }
    }
    /// Builds a `Param` error.
    pub fn param(name: impl Into<String>, what: impl Into<String>) -> Self {
        Error::Param {
            name: name.into(),
            what: what.into(),
        }
    }
}
