//! ONNX Runtime: finding the shared library, the one process-wide environment, and sessions.
//!
//! The crate links ONNX Runtime dynamically (`ort`'s `load-dynamic`). `ort` panics on its first
//! API call when no library can be loaded, so every entry point goes through [`ensure_runtime`],
//! which locates the library first and turns every failure into a [`RuntimeError`] that says how
//! to fix it. Only one ONNX Runtime environment may exist per process; it lives in a `OnceLock`.

pub mod dylib_source;
mod session;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

pub use session::{
    ActiveProvider, DevicePreference, GraphOptimization, OpenedSession, SessionOptions,
    create_session,
};

/// Environment variable naming the ONNX Runtime library to load, before any other place.
pub const ORT_DYLIB_PATH_ENV: &str = "ORT_DYLIB_PATH";

/// Errors from locating or initialising ONNX Runtime and from creating sessions.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RuntimeError {
    /// `ORT_DYLIB_PATH` names a file that does not exist.
    #[error(
        "ORT_DYLIB_PATH is set to {path}, but no file exists there. Point ORT_DYLIB_PATH at a libonnxruntime.so of version >= 1.31 (for example onnxruntime/capi/libonnxruntime.so.* from the PyPI wheel {requirement}), or unset it to use the copy cached by the build ({cache})."
    )]
    DylibPathMissing {
        /// The value of the variable.
        path: PathBuf,
        /// The pinned wheel.
        requirement: &'static str,
        /// Where the cached copy would be.
        cache: String,
    },
    /// No library was found in any of the places searched.
    #[error(
        "ONNX Runtime library not found. Searched, in order: {searched}. Fix: run `cargo build` with network access so the build script caches {requirement} from PyPI, or fetch the wheel yourself (`pip download --no-deps {requirement}`), unzip onnxruntime/capi/libonnxruntime.so.* and set ORT_DYLIB_PATH to that file."
    )]
    DylibNotFound {
        /// The places searched, in order.
        searched: String,
        /// The pinned wheel.
        requirement: &'static str,
    },
    /// The library exists but could not be loaded (wrong file, too old, missing dependencies).
    #[error("cannot load ONNX Runtime from {path}: {reason}")]
    DylibLoad {
        /// The library that was tried.
        path: PathBuf,
        /// ort's reason.
        reason: String,
    },
    /// Creating the process-wide environment failed.
    #[error("cannot create the ONNX Runtime environment: {0}")]
    Environment(String),
    /// CUDA was required (strict) but cannot be used.
    #[error("the CUDA execution provider was required but is unavailable: {0}")]
    CudaUnavailable(String),
    /// Opening a graph failed.
    #[error("cannot open ONNX graph {path}: {reason}")]
    Session {
        /// The graph file.
        path: PathBuf,
        /// ONNX Runtime's reason.
        reason: String,
    },
}

/// What was loaded: shown by `sdxl info` and in results.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RuntimeInfo {
    /// The library file that was loaded.
    pub dylib_path: PathBuf,
    /// Which rule found it (`ORT_DYLIB_PATH`, `cache`, `next to the executable`).
    pub found_by: &'static str,
    /// ONNX Runtime's own build string.
    pub build_info: String,
}

struct Runtime {
    info: RuntimeInfo,
    // Kept alive for the whole process: every session is built from it.
    environment: ort::environment::Environment,
}

static RUNTIME: OnceLock<Result<Runtime, RuntimeError>> = OnceLock::new();

/// Locates, loads and initialises ONNX Runtime once per process; later calls return the same
/// outcome. Call before any other `ort` API.
pub fn ensure_runtime() -> Result<&'static RuntimeInfo, RuntimeError> {
    runtime().map(|runtime| &runtime.info)
}

fn runtime() -> Result<&'static Runtime, RuntimeError> {
    match RUNTIME.get_or_init(init_runtime) {
        Ok(runtime) => Ok(runtime),
        Err(err) => Err(err.clone()),
    }
}

/// The process-wide environment, initialising ONNX Runtime on first use.
pub(crate) fn environment() -> Result<&'static ort::environment::Environment, RuntimeError> {
    runtime().map(|runtime| &runtime.environment)
}

fn init_runtime() -> Result<Runtime, RuntimeError> {
    let (path, found_by) = locate_dylib()?;
    let builder = ort::init_from(&path).map_err(|e| RuntimeError::DylibLoad {
        path: path.clone(),
        reason: e.to_string(),
    })?;
    let environment = builder
        .with_name("sdxl-backend")
        .with_telemetry(false)
        .build()
        .map_err(|e| RuntimeError::Environment(e.to_string()))?;
    tracing::debug!(path = %path.display(), found_by, "loaded ONNX Runtime");
    Ok(Runtime {
        info: RuntimeInfo {
            dylib_path: path,
            found_by,
            build_info: ort::info().to_string(),
        },
        environment,
    })
}

/// Finds the library: `ORT_DYLIB_PATH`, then the build script's cached copy, then next to the
/// running executable.
pub fn locate_dylib() -> Result<(PathBuf, &'static str), RuntimeError> {
    let distribution = dylib_source::distribution(cfg!(feature = "cuda"));
    let cached =
        dylib_source::ort_cache_dir(distribution).map(|dir| dir.join(distribution.dylib_file()));
    let describe_cache = || {
        cached.as_ref().map_or_else(
            || "no user cache directory".to_string(),
            |p| p.display().to_string(),
        )
    };
    if let Some(value) = std::env::var_os(ORT_DYLIB_PATH_ENV).filter(|v| !v.is_empty()) {
        let path = PathBuf::from(value);
        if path.is_file() {
            return Ok((path, "ORT_DYLIB_PATH"));
        }
        return Err(RuntimeError::DylibPathMissing {
            path,
            requirement: distribution.requirement,
            cache: describe_cache(),
        });
    }
    if let Some(path) = cached.as_ref().filter(|p| p.is_file()) {
        return Ok((path.clone(), "cache"));
    }
    let beside_exe = executable_dir().map(|dir| {
        [distribution.dylib_file(), "libonnxruntime.so"]
            .iter()
            .map(|name| dir.join(name))
            .collect::<Vec<_>>()
    });
    if let Some(path) = beside_exe.iter().flatten().find(|p| p.is_file()) {
        return Ok((path.clone(), "next to the executable"));
    }
    let beside = beside_exe
        .map(|paths| {
            paths
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(" or ")
        })
        .unwrap_or_else(|| "the executable's directory (unknown)".to_string());
    Err(RuntimeError::DylibNotFound {
        searched: format!(
            "(1) ORT_DYLIB_PATH (not set), (2) the build cache {}, (3) next to the executable: {beside}",
            describe_cache()
        ),
        requirement: distribution.requirement,
    })
}

fn executable_dir() -> Option<PathBuf> {
    std::env::current_exe()
        .ok()?
        .parent()
        .map(Path::to_path_buf)
}
