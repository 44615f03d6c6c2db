//! The one error type of the core. Each variant maps to one `devrig_status`
//! in the C API and to one exception class in Python.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// A value the caller passed is unusable; the message names it.
    InvalidArgument(String),
    /// The service could not be started at all.
    Spawn(String),
    /// The call is not allowed in the handle's current state.
    State(String),
    /// A file-system or system-call failure.
    Io(String),
    /// The named process, file or directory does not exist.
    NotFound(String),
    /// A bounded wait ran out.
    Timeout(String),
    /// A panic was caught at a boundary.
    Panic(String),
}

impl Error {
    pub fn message(&self) -> &str {
        match self {
            Error::InvalidArgument(m)
            | Error::Spawn(m)
            | Error::State(m)
            | Error::Io(m)
            | Error::NotFound(m)
            | Error::Timeout(m)
            | Error::Panic(m) => m,
        }
    }

    pub(crate) fn invalid(msg: impl Into<String>) -> Self {
        Error::InvalidArgument(msg.into())
    }

    pub(crate) fn state(msg: impl Into<String>) -> Self {
        Error::State(msg.into())
    }

    /// An I/O error with the path or action it concerns in front.
    pub(crate) fn io(context: impl fmt::Display, err: std::io::Error) -> Self {
        if err.kind() == std::io::ErrorKind::NotFound {
            Error::NotFound(format!("{context}: {err}"))
        } else {
            Error::Io(format!("{context}: {err}"))
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message())
    }
}

impl std::error::Error for Error {}

pub type Result<T> = std::result::Result<T, Error>;
