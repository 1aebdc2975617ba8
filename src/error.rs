//! One error type for the library. Every error carries a message that names the file,
//! image or platform it concerns and says what to do; its kind decides the exit code.

use std::path::Path;

/// What went wrong, coarsely: decides the process exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Bad command-line usage or configuration (exit 2).
    Usage,
    /// A build, push, engine or registry failure (exit 1).
    Failure,
    /// The user interrupted the run (exit 130).
    Interrupted,
}

#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Error {
    kind: Kind,
    message: String,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Bad input from the user: a flag, a config file, a recipe, an image folder.
    pub fn usage(message: impl Into<String>) -> Self {
        Error { kind: Kind::Usage, message: message.into() }
    }

    /// Something that should have worked did not: a build, an engine, a registry.
    pub fn failure(message: impl Into<String>) -> Self {
        Error { kind: Kind::Failure, message: message.into() }
    }

    pub fn interrupted() -> Self {
        Error { kind: Kind::Interrupted, message: "interrupted".into() }
    }

    /// An I/O error on a path, with what archfarm was doing.
    pub fn io(doing: &str, path: &Path, err: std::io::Error) -> Self {
        Error::failure(format!("{doing} {}: {err}", path.display()))
    }

    pub fn kind(&self) -> Kind {
        self.kind
    }

    pub fn message(&self) -> &str {
        &self.message
    }

    /// The process exit code for this error: 2 usage/configuration, 1 failure.
    pub fn exit_code(&self) -> i32 {
        match self.kind {
            Kind::Usage => 2,
            Kind::Failure => 1,
            Kind::Interrupted => 130,
        }
    }

    /// Prefixes the message with where it happened, keeping the kind.
    pub fn context(self, context: impl std::fmt::Display) -> Self {
        Error { kind: self.kind, message: format!("{context}: {}", self.message) }
    }
}

/// Adds context to any `Result` whose error converts to ours.
pub trait ResultExt<T> {
    fn context(self, context: impl std::fmt::Display) -> Result<T>;
}

impl<T> ResultExt<T> for Result<T> {
    fn context(self, context: impl std::fmt::Display) -> Result<T> {
        self.map_err(|e| e.context(context))
    }
}
