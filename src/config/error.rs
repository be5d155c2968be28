//! What goes wrong reading or building a description: [`ConfigError`],
//! naming where in the description it is.

use std::fmt;

use crate::error::BuildError;

/// A description that could not be read or built; [`path`](Self::path)
/// says where (`stages[2].after`), the message says what to fix.
#[derive(Debug)]
#[non_exhaustive]
pub enum ConfigError {
    /// The parser refused a field (wrong type, unknown name, missing field).
    Parse {
        /// Where, e.g. `stages[0].on_failure.then`.
        path: String,
        /// The parser's message.
        message: String,
    },
    /// A name does not resolve, or is given twice.
    Invalid {
        /// Where, e.g. `stages[1].after`.
        path: String,
        /// What is wrong and how to fix it.
        message: String,
    },
    /// The builder refused the bus.
    Build {
        /// Where, e.g. `capacity` or `stages[3].pin_core`.
        path: String,
        /// The builder's error.
        error: BuildError,
    },
}

impl ConfigError {
    /// Where in the description the error is.
    pub fn path(&self) -> &str {
        match self {
            Self::Parse { path, .. } | Self::Invalid { path, .. } | Self::Build { path, .. } => {
                path
            }
        }
    }

    pub(super) fn invalid(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Invalid {
            path: path.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Parse { path, message } | Self::Invalid { path, message } => {
                write!(f, "{path}: {message}")
            }
            Self::Build { path, error } => write!(f, "{path}: {error}"),
        }
    }
}

impl std::error::Error for ConfigError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Build { error, .. } => Some(error),
            _ => None,
        }
    }
}
