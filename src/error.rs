//! The crate's error type: one variant per module error.

use crate::model_loader::ModelLookupError;
use crate::output::OutputError;
use crate::pipeline::PipelineError;
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
    /// The model could not be found.
    #[error(transparent)]
    Model(#[from] ModelLookupError),
    /// Loading or running the pipeline failed (includes `Cancelled`).
    #[error(transparent)]
    Pipeline(Box<PipelineError>),
    /// Writing an output failed.
    #[error(transparent)]
    Output(#[from] OutputError),
    /// A request field is invalid.
    #[error("invalid request field `{field}`: {message}")]
    InvalidRequest {
        /// The field.
        field: &'static str,
        /// What is wrong and what is valid.
        message: String,
    },
    /// `generate` was called with no model loaded.
    #[error(
        "no model is loaded: call init_backend(model) first (after unload_backend the model must be loaded again)"
    )]
    NotLoaded,
}

impl Error {
    /// Whether this is a cancelled request.
    pub fn is_cancelled(&self) -> bool {
        matches!(self, Error::Pipeline(e) if matches!(**e, PipelineError::Cancelled { .. }))
    }
}

/// `Result` with the crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
