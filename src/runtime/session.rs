//! Opening one ONNX graph as an ORT session on the requested execution provider.

use std::path::{Path, PathBuf};

use ort::session::Session;
use ort::session::builder::{GraphOptimizationLevel, SessionBuilder};
use serde::{Deserialize, Serialize};

use super::{RuntimeError, environment};

/// Where the caller wants graphs to run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DevicePreference {
    /// CUDA when this build has the `cuda` feature and the provider registers (a failure is
    /// logged and reported as a fallback); CPU in builds without the feature.
    #[default]
    Auto,
    /// CPU only.
    Cpu,
    /// CUDA or an error: never falls back.
    CudaStrict,
}

/// Graph optimisation level, as ONNX Runtime names them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GraphOptimization {
    /// No graph rewrites.
    Disable,
    /// Semantics-preserving rewrites (constant folding, redundant node removal).
    Basic,
    /// Basic plus node fusions.
    Extended,
    /// Everything, including layout optimisations.
    #[default]
    All,
}

impl From<GraphOptimization> for GraphOptimizationLevel {
    fn from(level: GraphOptimization) -> Self {
        match level {
            GraphOptimization::Disable => GraphOptimizationLevel::Disable,
            GraphOptimization::Basic => GraphOptimizationLevel::Level1,
            GraphOptimization::Extended => GraphOptimizationLevel::Level2,
            GraphOptimization::All => GraphOptimizationLevel::Level3,
        }
    }
}

/// How sessions are opened.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SessionOptions {
    /// Execution provider preference.
    pub device: DevicePreference,
    /// Threads inside one operator; `None` lets ONNX Runtime choose (one per physical core).
    pub intra_threads: Option<usize>,
    /// Graph optimisation level.
    pub optimization: GraphOptimization,
}

/// The execution provider a session actually runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActiveProvider {
    /// ONNX Runtime's CPU provider.
    Cpu,
    /// The CUDA provider.
    Cuda,
}

/// A session plus how it was opened; `fallback` says why CUDA was not used when it was wanted.
#[derive(Debug)]
pub struct OpenedSession {
    /// The ORT session.
    pub session: Session,
    /// Where it runs.
    pub provider: ActiveProvider,
    /// Set when CUDA was wanted (`Auto`) but the session fell back to CPU, with the reason.
    pub fallback: Option<String>,
}

/// Opens `path` as a session. With `Auto`, a CUDA registration failure is logged as a warning and
/// reported in `fallback`; with `CudaStrict` it is an error.
pub fn create_session(
    path: &Path,
    options: &SessionOptions,
) -> Result<OpenedSession, RuntimeError> {
    let wants_cuda = match options.device {
        DevicePreference::Cpu => false,
        DevicePreference::Auto => cfg!(feature = "cuda"),
        DevicePreference::CudaStrict => true,
    };
    let cuda_failure = match wants_cuda {
        false => None,
        true => match open_cuda(path, options) {
            Ok(session) => {
                return Ok(OpenedSession {
                    session,
                    provider: ActiveProvider::Cuda,
                    fallback: None,
                });
            }
            Err(reason) => Some(reason),
        },
    };
    if let Some(reason) = &cuda_failure {
        if options.device == DevicePreference::CudaStrict {
            return Err(RuntimeError::CudaUnavailable(reason.clone()));
        }
        tracing::warn!(graph = %path.display(), %reason, "CUDA execution provider unavailable; running on CPU");
    }
    let mut builder = base_builder(path, options)?;
    let session = builder
        .commit_from_file(path)
        .map_err(|e| session_error(path, e))?;
    Ok(OpenedSession {
        session,
        provider: ActiveProvider::Cpu,
        fallback: cuda_failure,
    })
}

#[cfg(feature = "cuda")]
fn open_cuda(path: &Path, options: &SessionOptions) -> Result<Session, String> {
    let provider = ort::ep::CUDA::default().build().error_on_failure();
    let builder = base_builder(path, options).map_err(|e| e.to_string())?;
    let mut builder = builder
        .with_execution_providers([provider])
        .map_err(|e| e.to_string())?;
    builder.commit_from_file(path).map_err(|e| e.to_string())
}

#[cfg(not(feature = "cuda"))]
fn open_cuda(_path: &Path, _options: &SessionOptions) -> Result<Session, String> {
    Err(
        "this build of sdxl-backend has no CUDA support (rebuild with `--features cuda`)"
            .to_string(),
    )
}

fn base_builder(path: &Path, options: &SessionOptions) -> Result<SessionBuilder, RuntimeError> {
    let env = environment()?;
    let builder = Session::builder(env).map_err(|e| session_error(path, e))?;
    let builder = builder
        .with_optimization_level(options.optimization.into())
        .map_err(|e| session_error(path, e))?;
    match options.intra_threads {
        Some(threads) => builder
            .with_intra_threads(threads)
            .map_err(|e| session_error(path, e)),
        None => Ok(builder),
    }
}

fn session_error<R>(path: &Path, error: ort::Error<R>) -> RuntimeError {
    RuntimeError::Session {
        path: PathBuf::from(path),
        reason: error.to_string(),
    }
}
