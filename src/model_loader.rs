//! Finding a checkpoint on disk: an explicit directory, the search roots, the Hugging Face cache
//! (shared with Python's huggingface_hub), or the copy bundled with this crate.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::registry::{ModelEntry, ModelRegistry};

/// Environment variable with extra model directories (a `:`-separated path list).
pub const MODELS_DIR_ENV: &str = "SDXL_MODELS_DIR";
/// Directory under the working directory searched for models.
pub const LOCAL_MODELS_DIR: &str = "models";

/// One place searched for checkpoints, in order.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SearchRoot {
    /// Why it is searched (`explicit`, `SDXL_MODELS_DIR`, `./models`, `user data`, `hf cache`).
    pub kind: &'static str,
    /// The directory.
    pub path: PathBuf,
}

/// The Hugging Face hub cache: `$HF_HUB_CACHE`, else `$HF_HOME/hub`, else `~/.cache/huggingface/hub`.
pub fn hf_hub_cache() -> Option<PathBuf> {
    let var = |name: &str| {
        std::env::var_os(name)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    var("HF_HUB_CACHE")
        .or_else(|| var("HF_HOME").map(|home| home.join("hub")))
        .or_else(|| dirs::cache_dir().map(|cache| cache.join("huggingface").join("hub")))
}

/// The search roots in order: `explicit`, `SDXL_MODELS_DIR` entries, `./models`, the user data
/// dir, the Hugging Face cache.
pub fn search_roots(explicit: Option<&Path>) -> Vec<SearchRoot> {
    let mut roots = Vec::new();
    if let Some(dir) = explicit {
        roots.push(SearchRoot {
            kind: "explicit",
            path: dir.to_path_buf(),
        });
    }
    if let Some(list) = std::env::var_os(MODELS_DIR_ENV) {
        roots.extend(
            std::env::split_paths(&list)
                .filter(|p| !p.as_os_str().is_empty())
                .map(|path| SearchRoot {
                    kind: "SDXL_MODELS_DIR",
                    path,
                }),
        );
    }
    roots.push(SearchRoot {
        kind: "./models",
        path: PathBuf::from(LOCAL_MODELS_DIR),
    });
    if let Some(data) = dirs::data_dir() {
        roots.push(SearchRoot {
            kind: "user data",
            path: data.join("sdxl-backend").join("models"),
        });
    }
    if let Some(cache) = hf_hub_cache() {
        roots.push(SearchRoot {
            kind: "hf cache",
            path: cache,
        });
    }
    roots
}

/// Whether `dir` holds an Optimum SDXL layout (recognised by its files, not its name).
pub fn is_checkpoint_dir(dir: &Path) -> bool {
    dir.join("model_index.json").is_file() && dir.join("unet").join("model.onnx").is_file()
}

/// `models--org--name/snapshots/<commit>` for `revision` in a hub cache (a branch or tag is
/// resolved through `refs/`, a commit hash is used directly).
pub fn hf_snapshot_dir(cache: &Path, repo: &str, revision: &str) -> Option<PathBuf> {
    let repo_dir = cache.join(format!("models--{}", repo.replace('/', "--")));
    let commit = std::fs::read_to_string(repo_dir.join("refs").join(revision))
        .map(|text| text.trim().to_string())
        .unwrap_or_else(|_| revision.to_string());
    let snapshot = repo_dir.join("snapshots").join(commit);
    snapshot.is_dir().then_some(snapshot)
}

/// The directory holding `model`'s layout, searching `roots` in order, then the bundled copy.
pub fn find_local_checkpoint(model: &ModelEntry, roots: &[SearchRoot]) -> Option<PathBuf> {
    let with_subfolder = |dir: PathBuf| {
        if model.subfolder.is_empty() {
            dir
        } else {
            dir.join(&model.subfolder)
        }
    };
    for root in roots {
        let mut candidates = vec![root.path.join(&model.id)];
        if let Some(repo) = &model.repo {
            candidates.push(with_subfolder(root.path.join(repo)));
            if let Some(name) = repo.split('/').nth(1) {
                candidates.push(with_subfolder(root.path.join(name)));
            }
            if root.kind == "hf cache" {
                candidates
                    .extend(hf_snapshot_dir(&root.path, repo, &model.revision).map(with_subfolder));
            }
        }
        if let Some(found) = candidates.into_iter().find(|dir| has_all_files(dir, model)) {
            return Some(found);
        }
    }
    bundled_dir(model).filter(|dir| has_all_files(dir, model))
}

/// The bundled copy of a model, resolved against the crate root, then the working directory.
pub fn bundled_dir(model: &ModelEntry) -> Option<PathBuf> {
    let relative = model.bundled.as_ref()?;
    let in_crate = Path::new(env!("CARGO_MANIFEST_DIR")).join(relative);
    if in_crate.is_dir() {
        Some(in_crate)
    } else {
        Some(PathBuf::from(relative))
    }
}

/// Whether every file the entry lists exists under `dir`.
pub fn has_all_files(dir: &Path, model: &ModelEntry) -> bool {
    model.files.iter().all(|file| dir.join(file).is_file())
}

/// Errors resolving a `--model` argument.
#[derive(Debug, thiserror::Error)]
pub enum ModelLookupError {
    /// Neither a checkpoint directory nor a known id.
    #[error(
        "unknown model \"{name}\"{suggestion}: not a directory in the Optimum layout (model_index.json + unet/model.onnx) and not an id in models.toml; known ids: {known}"
    )]
    Unknown {
        /// What was asked for.
        name: String,
        /// `; did you mean ...`.
        suggestion: String,
        /// Known ids.
        known: String,
    },
    /// A known id with no complete local copy.
    #[error(
        "model \"{id}\" is not downloaded: no complete copy in {searched}; run `sdxl models download {id}`"
    )]
    NotDownloaded {
        /// The id.
        id: String,
        /// The places searched.
        searched: String,
    },
}

/// A `--model` argument resolved to a directory (and its registry entry when it has one).
#[derive(Debug, Clone)]
pub struct ResolvedModel {
    /// The checkpoint directory.
    pub dir: PathBuf,
    /// The registry entry, when the argument was an id (or a directory of a known model).
    pub entry: Option<ModelEntry>,
}

/// Resolves a registry id (or alias) or a checkpoint directory.
pub fn resolve_model(
    name: &str,
    registry: &ModelRegistry,
    roots: &[SearchRoot],
) -> Result<ResolvedModel, ModelLookupError> {
    let as_path = Path::new(name);
    if is_checkpoint_dir(as_path) {
        return Ok(ResolvedModel {
            dir: as_path.to_path_buf(),
            entry: None,
        });
    }
    let entry = registry
        .model(name)
        .ok_or_else(|| ModelLookupError::Unknown {
            name: name.to_string(),
            suggestion: registry.suggest(name),
            known: registry.ids().join(", "),
        })?;
    let dir =
        find_local_checkpoint(entry, roots).ok_or_else(|| ModelLookupError::NotDownloaded {
            id: entry.id.clone(),
            searched: roots
                .iter()
                .map(|r| r.path.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
        })?;
    Ok(ResolvedModel {
        dir,
        entry: Some(entry.clone()),
    })
}
