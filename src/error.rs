//! The crate's error type: one variant per module error.

use crate::registry::{LookupError, RegistryError};
use crate::runtime::RuntimeError;

/// Every error the library returns.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A registry file is malformed or inconsistent.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// A request named an unknown scheduler, sampler or schedule.
    #[error(transparent)]
    Lookup(#[from] LookupError),
    /// ONNX Runtime could not be found, loaded or used.
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
}

/// `Result` with the crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
