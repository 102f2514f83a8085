//! An opt-in on-disk cache of ONNX Runtime-optimised graphs, to cut session creation time.
//!
//! ONNX Runtime rewrites every graph when a session opens (constant folding, node fusions,
//! layout changes). Saving the rewritten graph (`SessionOptions.optimized_model_filepath`) and
//! opening that instead skips most of the work: on the tiny test model a pipeline load went from
//! ~650 ms to ~450 ms (2-core machine, measurements in the model-loader issue notes).
//!
//! Graphs are saved at the *extended* level: ONNX Runtime warns that graphs saved at the *all*
//! level contain layout rewrites specific to the CPU they were made on, while extended-level
//! graphs are portable; sessions then still apply the caller's level on top. The cache is only
//! used for CPU sessions (fusions are assigned to an execution provider, so a CPU-optimised graph
//! must not be handed to CUDA).
//!
//! Layout: `<root>/<key>/` mirrors the checkpoint, with optimised `*/model.onnx` (external data in
//! `model.onnx_data` when the source graph had external data) and symlinks to every other file.
//! The key hashes the crate version, the ONNX Runtime build, the checkpoint's canonical path and
//! every file's path, size and modification time, so an edited checkpoint gets a new entry. A
//! mirror is built in a temporary directory and renamed into place, so a half-built one is
//! never used.

use std::path::{Path, PathBuf};

use ort::session::Session;
use ort::session::builder::GraphOptimizationLevel;
use sha2::{Digest, Sha256};

use super::details::is_external_data;
use crate::runtime::{DevicePreference, RuntimeError, SessionOptions, ensure_runtime, environment};

/// Errors building a cache entry.
#[derive(Debug, thiserror::Error)]
pub enum GraphCacheError {
    /// ONNX Runtime is unavailable.
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    /// Optimising one graph failed.
    #[error("cannot optimise ONNX graph {}: {reason}", graph.display())]
    Optimize {
        /// The source graph.
        graph: PathBuf,
        /// ONNX Runtime's reason.
        reason: String,
    },
    /// A file operation failed.
    #[error("optimised-graph cache {}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

/// A directory of optimised checkpoint mirrors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GraphCache {
    root: PathBuf,
}

impl GraphCache {
    /// A cache in `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// `$SDXL_BACKEND_CACHE_DIR/optimized-graphs`, else `<user cache dir>/sdxl-backend/optimized-graphs`.
    pub fn default_location() -> Option<Self> {
        let root = super::hf_cache::env_path(crate::runtime::dylib_source::CACHE_DIR_ENV)
            .or_else(|| dirs::cache_dir().map(|dir| dir.join("sdxl-backend")))?;
        Some(Self::new(root.join("optimized-graphs")))
    }

    /// The cache directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Whether sessions opened with `options` may use cached graphs (CPU only).
    pub fn applies_to(options: &SessionOptions) -> bool {
        match options.device {
            DevicePreference::Cpu => true,
            DevicePreference::Auto => !cfg!(feature = "cuda"),
            DevicePreference::CudaStrict => false,
        }
    }

    /// The mirror of `checkpoint_dir` with optimised graphs, built on first use.
    pub fn prepare(&self, checkpoint_dir: &Path) -> Result<PathBuf, GraphCacheError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| GraphCacheError::Io { path, source }
        };
        let source = checkpoint_dir.canonicalize().map_err(io(checkpoint_dir))?;
        let files = layout_files(&source);
        let key = cache_key(&source, &files)?;
        let target = self.root.join(&key);
        if target.is_dir() {
            return Ok(target);
        }
        std::fs::create_dir_all(&self.root).map_err(io(&self.root))?;
        let building = self
            .root
            .join(format!(".{key}.building-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&building);
        let built = build_mirror(&source, &files, &building);
        if let Err(error) = built {
            let _ = std::fs::remove_dir_all(&building);
            return Err(error);
        }
        if let Err(error) = std::fs::rename(&building, &target) {
            let _ = std::fs::remove_dir_all(&building);
            // Another process finished the same entry first: use it.
            if !target.is_dir() {
                return Err(GraphCacheError::Io {
                    path: target,
                    source: error,
                });
            }
        }
        Ok(target)
    }
}

/// Every regular file under `dir` (relative, `/`-separated, sorted), symlinks followed.
fn layout_files(dir: &Path) -> Vec<String> {
    fn walk(dir: &Path, prefix: &str, out: &mut Vec<String>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let relative = if prefix.is_empty() {
                name
            } else {
                format!("{prefix}/{name}")
            };
            let path = entry.path();
            if path.is_dir() {
                walk(&path, &relative, out);
            } else if path.is_file() {
                out.push(relative);
            }
        }
    }
    let mut files = Vec::new();
    walk(dir, "", &mut files);
    files.sort();
    files
}

fn cache_key(source: &Path, files: &[String]) -> Result<String, GraphCacheError> {
    let runtime = ensure_runtime()?;
    let mut hasher = Sha256::new();
    hasher.update(env!("CARGO_PKG_VERSION"));
    hasher.update(runtime.build_info.as_bytes());
    hasher.update(source.to_string_lossy().as_bytes());
    for file in files {
        let metadata = std::fs::metadata(source.join(file)).map_err(|e| GraphCacheError::Io {
            path: source.join(file),
            source: e,
        })?;
        let modified = metadata
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos());
        hasher.update(format!("\n{file}\0{}\0{modified}", metadata.len()));
    }
    let digest = hasher.finalize();
    Ok(digest[..16].iter().map(|b| format!("{b:02x}")).collect())
}

fn build_mirror(source: &Path, files: &[String], target: &Path) -> Result<(), GraphCacheError> {
    for file in files {
        let from = source.join(file);
        let to = target.join(file);
        let parent = to.parent().unwrap_or(target);
        std::fs::create_dir_all(parent).map_err(|e| GraphCacheError::Io {
            path: parent.to_path_buf(),
            source: e,
        })?;
        let name = file_name(file);
        if name == "model.onnx" {
            let external = files
                .iter()
                .any(|f| parent_of(f) == parent_of(file) && is_external_data(file_name(f)));
            optimize_graph(&from, &to, external)?;
        } else if !is_external_data(name) {
            link_or_copy(&from, &to)?;
        }
    }
    Ok(())
}

fn file_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

fn parent_of(path: &str) -> &str {
    path.rsplit_once('/').map_or("", |(parent, _)| parent)
}

fn optimize_graph(from: &Path, to: &Path, external_data: bool) -> Result<(), GraphCacheError> {
    let error = |reason: String| GraphCacheError::Optimize {
        graph: from.to_path_buf(),
        reason,
    };
    let builder = Session::builder(environment()?)
        .map_err(|e| error(e.to_string()))?
        .with_optimization_level(GraphOptimizationLevel::Level2)
        .map_err(|e| error(e.to_string()))?
        .with_optimized_model_path(to)
        .map_err(|e| error(e.to_string()))?;
    let mut builder = if external_data {
        builder
            .with_config_entry(
                "session.optimized_model_external_initializers_file_name",
                "model.onnx_data",
            )
            .map_err(|e| error(e.to_string()))?
            .with_config_entry(
                "session.optimized_model_external_initializers_min_size_in_bytes",
                "1024",
            )
            .map_err(|e| error(e.to_string()))?
    } else {
        builder
    };
    builder
        .commit_from_file(from)
        .map_err(|e| error(e.to_string()))?;
    Ok(())
}

fn link_or_copy(from: &Path, to: &Path) -> Result<(), GraphCacheError> {
    let io = |source| GraphCacheError::Io {
        path: to.to_path_buf(),
        source,
    };
    #[cfg(unix)]
    {
        std::os::unix::fs::symlink(from, to).map_err(io)
    }
    #[cfg(not(unix))]
    {
        std::fs::copy(from, to).map(|_| ()).map_err(io)
    }
}
