//! The SDXL pipeline: text encoding, the denoising loop and the VAE over the five Optimum ONNX
//! graphs; text-to-image and image-to-image equal to diffusers' `StableDiffusionXLPipeline` and
//! `StableDiffusionXLImg2ImgPipeline`.

pub mod components;
pub mod denoise;
pub mod graph;
pub mod request;
pub mod text;
pub mod tokenizer;
pub mod vae;

mod run;

use std::path::{Path, PathBuf};

pub use components::{Components, ModelSettings};
pub use denoise::StepEvent;
pub use request::{GenerateParams, SchedulerChoice};
pub use run::{GenerateOutput, Timings};
pub use vae::RgbImage;

use crate::registry::LookupError;
use crate::runtime::{RuntimeError, SessionOptions};
use crate::schedulers::SchedulerError;

/// Errors of loading a checkpoint or running a generation.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// A file the checkpoint needs is missing or unreadable.
    #[error("{}: {reason}", path.display())]
    MissingFile {
        /// The file.
        path: PathBuf,
        /// What it is for, or the OS error.
        reason: String,
    },
    /// A config file is malformed.
    #[error("{}: {message}", path.display())]
    Config {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A graph does not look like what the pipeline needs, or ONNX Runtime failed running it.
    #[error("ONNX graph {}: {message}", path.display())]
    Graph {
        /// The `.onnx` file.
        path: PathBuf,
        /// What is wrong (names the input or output).
        message: String,
    },
    /// A request field is out of range.
    #[error("invalid request field `{field}`: {message}")]
    InvalidRequest {
        /// The field.
        field: &'static str,
        /// What is wrong and what is valid.
        message: String,
    },
    /// NaN or infinity appeared.
    #[error("non-finite values in the {stage}: {hint}")]
    NonFinite {
        /// Where.
        stage: &'static str,
        /// Why it likely happened and what to do.
        hint: String,
    },
    /// The caller cancelled.
    #[error("cancelled after step {step} of {total}")]
    Cancelled {
        /// Steps done.
        step: usize,
        /// Steps planned.
        total: usize,
    },
    /// An unknown scheduler, sampler or schedule.
    #[error(transparent)]
    Lookup(#[from] LookupError),
    /// The scheduler cannot be built or stepped.
    #[error(transparent)]
    Scheduler(#[from] SchedulerError),
    /// ONNX Runtime could not be loaded or a session not created.
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    /// A bug: an invariant the pipeline maintains did not hold.
    #[error("internal error: {0}")]
    Internal(String),
}

impl PipelineError {
    /// A file that could not be read.
    pub fn missing(path: &Path, error: std::io::Error) -> Self {
        PipelineError::MissingFile {
            path: path.to_path_buf(),
            reason: error.to_string(),
        }
    }
}

/// A loaded SDXL checkpoint, ready to generate. `Send + Sync`: requests may run concurrently
/// (each graph's session is used by one request at a time).
#[derive(Debug)]
pub struct SdxlPipeline {
    /// The graphs, tokenizers and configs.
    pub components: Components,
}

impl SdxlPipeline {
    /// Loads the checkpoint in `root` (the Optimum layout).
    pub fn load(root: &Path, options: &SessionOptions) -> Result<Self, PipelineError> {
        Ok(Self {
            components: Components::load(root, options)?,
        })
    }
}
