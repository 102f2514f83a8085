//! Finding a checkpoint on disk: the search roots in order, the Hugging Face cache layout inside
//! any of them, then the copy bundled with this crate; and resolving a `--model` argument.

use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::hf_cache::{hf_hub_cache, hf_snapshot_dir};
use crate::registry::{ModelEntry, ModelRegistry};

/// Environment variable with extra model directories (a `:`-separated path list).
pub const MODELS_DIR_ENV: &str = "SDXL_MODELS_DIR";
/// Directory under the working directory searched for models.
pub const LOCAL_MODELS_DIR: &str = "models";

/// Why a directory is searched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RootKind {
    /// Given by the caller.
    Explicit,
    /// An entry of `SDXL_MODELS_DIR`.
    ModelsDirEnv,
    /// `./models` under the working directory.
    LocalModels,
    /// `<user data dir>/sdxl-backend/models`.
    UserData,
    /// The Hugging Face hub cache (shared with Python's huggingface_hub).
    HfCache,
}

impl fmt::Display for RootKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RootKind::Explicit => "explicit",
            RootKind::ModelsDirEnv => MODELS_DIR_ENV,
            RootKind::LocalModels => "./models",
            RootKind::UserData => "user data",
            RootKind::HfCache => "hf cache",
        })
    }
}

/// One place searched for checkpoints, in order.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SearchRoot {
    /// Why it is searched.
    pub kind: RootKind,
    /// The directory.
    pub path: PathBuf,
}

impl SearchRoot {
    /// A root of `kind` at `path`.
    pub fn new(kind: RootKind, path: impl Into<PathBuf>) -> Self {
        Self {
            kind,
            path: path.into(),
        }
    }
}

/// The search roots in order: `explicit`, `SDXL_MODELS_DIR` entries, `./models`, the user data
/// dir, the Hugging Face cache (`HF_HUB_CACHE`, `HF_HOME/hub`, `~/.cache/huggingface/hub`).
pub fn search_roots(explicit: Option<&Path>) -> Vec<SearchRoot> {
    search_roots_from(
        explicit,
        std::env::var_os(MODELS_DIR_ENV),
        dirs::data_dir(),
        hf_hub_cache(),
    )
}

/// [`search_roots`] with every input given explicitly (no environment reads).
pub fn search_roots_from(
    explicit: Option<&Path>,
    models_dir_list: Option<OsString>,
    user_data_dir: Option<PathBuf>,
    hf_cache: Option<PathBuf>,
) -> Vec<SearchRoot> {
    let mut roots = Vec::new();
    roots.extend(explicit.map(|dir| SearchRoot::new(RootKind::Explicit, dir)));
    if let Some(list) = models_dir_list {
        roots.extend(
            std::env::split_paths(&list)
                .filter(|p| !p.as_os_str().is_empty())
                .map(|path| SearchRoot::new(RootKind::ModelsDirEnv, path)),
        );
    }
    roots.push(SearchRoot::new(RootKind::LocalModels, LOCAL_MODELS_DIR));
    roots.extend(
        user_data_dir.map(|data| {
            SearchRoot::new(RootKind::UserData, data.join("sdxl-backend").join("models"))
        }),
    );
    roots.extend(hf_cache.map(|cache| SearchRoot::new(RootKind::HfCache, cache)));
    roots
}

/// The files every Optimum SDXL layout needs, whatever the registry lists.
pub const REQUIRED_FILES: [&str; 5] = [
    "model_index.json",
    "scheduler/scheduler_config.json",
    "text_encoder_2/model.onnx",
    "unet/model.onnx",
    "vae_decoder/model.onnx",
];

/// Whether `dir` holds an Optimum SDXL layout (recognised by its files, not its name).
pub fn is_checkpoint_dir(dir: &Path) -> bool {
    dir.join("model_index.json").is_file() && dir.join("unet").join("model.onnx").is_file()
}

/// The files of `relative` that are not regular files (after following symlinks) under `dir`.
pub fn missing_files<'a>(dir: &Path, relative: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    relative
        .into_iter()
        .filter(|file| !dir.join(file).is_file())
        .map(str::to_string)
        .collect()
}

/// Whether every file the entry lists exists under `dir`.
pub fn has_all_files(dir: &Path, model: &ModelEntry) -> bool {
    model.files.iter().all(|file| dir.join(file).is_file())
}

/// A directory that looked like a copy of a model but lacks files.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct IncompleteCopy {
    /// The directory.
    pub dir: PathBuf,
    /// Listed files it lacks.
    pub missing: Vec<String>,
}

/// What a search for one model found.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Located {
    /// The first directory with every listed file.
    pub found: Option<PathBuf>,
    /// Directories before it (or instead of it) that hold some but not all listed files.
    pub incomplete: Vec<IncompleteCopy>,
}

/// The candidate directories for `model` under one root, in the order they are tried:
/// `<root>/<id>`, `<root>/<org>/<name>`, `<root>/<name>`, then the HF cache snapshot of the
/// entry's revision (`<root>/models--org--name/snapshots/<commit>`), with the subfolder applied
/// to the repo-shaped ones.
fn candidates(model: &ModelEntry, root: &Path) -> Vec<PathBuf> {
    let with_subfolder = |dir: PathBuf| {
        if model.subfolder.is_empty() {
            dir
        } else {
            dir.join(&model.subfolder)
        }
    };
    let mut dirs = vec![root.join(&model.id)];
    if let Some(repo) = &model.repo {
        dirs.push(with_subfolder(root.join(repo)));
        if let Some(name) = repo.split('/').nth(1) {
            dirs.push(with_subfolder(root.join(name)));
        }
        dirs.extend(hf_snapshot_dir(root, repo, &model.revision).map(with_subfolder));
    }
    dirs
}

/// Searches `roots` in order, then the bundled copy, for a directory holding every file the
/// entry lists; partial copies met on the way are reported too.
pub fn locate(model: &ModelEntry, roots: &[SearchRoot]) -> Located {
    let mut located = Located::default();
    let bundled = bundled_dir(model).into_iter();
    for dir in roots
        .iter()
        .flat_map(|root| candidates(model, &root.path))
        .chain(bundled)
    {
        if !dir.is_dir() {
            continue;
        }
        let missing = missing_files(&dir, model.files.iter().map(String::as_str));
        if missing.is_empty() {
            located.found = Some(dir);
            return located;
        }
        if missing.len() < model.files.len() {
            located.incomplete.push(IncompleteCopy { dir, missing });
        }
    }
    located
}

/// The directory holding `model`'s layout, searching `roots` in order, then the bundled copy.
pub fn find_local_checkpoint(model: &ModelEntry, roots: &[SearchRoot]) -> Option<PathBuf> {
    locate(model, roots).found
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
    /// A directory was given but it lacks files of the Optimum layout.
    #[error(
        "{} is not a complete SDXL checkpoint in the Optimum layout: missing {}",
        dir.display(),
        missing.join(", ")
    )]
    IncompleteDirectory {
        /// The directory.
        dir: PathBuf,
        /// The required files it lacks.
        missing: Vec<String>,
    },
    /// A known id with no complete local copy.
    #[error(
        "model \"{id}\" is not downloaded: no complete copy in {searched}{partial}; run `sdxl models download {id}`"
    )]
    NotDownloaded {
        /// The id.
        id: String,
        /// The places searched, in order.
        searched: String,
        /// The partial copies met and what each lacks (empty when none).
        partial: String,
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
    let Some(entry) = registry.model(name) else {
        if as_path.is_dir() {
            return Err(ModelLookupError::IncompleteDirectory {
                dir: as_path.to_path_buf(),
                missing: missing_files(as_path, REQUIRED_FILES),
            });
        }
        return Err(ModelLookupError::Unknown {
            name: name.to_string(),
            suggestion: registry.suggest(name),
            known: registry.ids().join(", "),
        });
    };
    let located = locate(entry, roots);
    let dir = located
        .found
        .ok_or_else(|| not_downloaded(entry, roots, &located.incomplete))?;
    Ok(ResolvedModel {
        dir,
        entry: Some(entry.clone()),
    })
}

fn not_downloaded(
    entry: &ModelEntry,
    roots: &[SearchRoot],
    incomplete: &[IncompleteCopy],
) -> ModelLookupError {
    let mut searched: Vec<String> = roots
        .iter()
        .map(|r| format!("{} ({})", r.path.display(), r.kind))
        .collect();
    if let Some(bundled) = bundled_dir(entry) {
        searched.push(format!("{} (bundled)", bundled.display()));
    }
    let partial = incomplete
        .iter()
        .map(|copy| format!("; {} lacks {}", copy.dir.display(), copy.missing.join(", ")))
        .collect();
    ModelLookupError::NotDownloaded {
        id: entry.id.clone(),
        searched: searched.join(", "),
        partial,
    }
}
