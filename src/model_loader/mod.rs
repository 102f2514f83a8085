//! Model discovery and loading: from a `models.toml` id to a loaded [`SdxlPipeline`].
//!
//! - [`search`]: the search roots in order (`SDXL_MODELS_DIR`, `./models`, the user data dir, the
//!   Hugging Face cache), checkpoint directories inside them, the bundled copy, `--model` lookup.
//! - [`hf_cache`]: the Hugging Face cache layout (`models--org--name/{blobs,snapshots,refs}`),
//!   shared with Python's huggingface_hub and read without a client.
//! - [`download`]: fetching an entry's files from the hub with the `hf-hub` crate.
//! - [`details`]: per-file sizes and components (`sdxl models show`).
//! - [`graph_cache`]: an opt-in cache of ONNX Runtime-optimised graphs ([`load_pipeline_cached`]).
//!
//! Every operation takes its places explicitly ([`ModelLocations`]); the free functions
//! [`is_model_downloaded`], [`get_model_file_details`] and [`download_model_by_id`] are
//! wrappers that read the registries and locations from the environment.

pub mod details;
pub mod download;
pub mod graph_cache;
pub mod hf_cache;
pub mod search;

use std::path::{Path, PathBuf};

pub use details::{
    FileDetail, ModelDetails, checkpoint_file_details, component_of, directory_details,
};
pub use download::{DownloadError, DownloadEvent, DownloadReport, HubSettings, download_model};
pub use graph_cache::{GraphCache, GraphCacheError};
pub use hf_cache::{hf_hub_cache, hf_snapshot_dir};
pub use search::{
    IncompleteCopy, LOCAL_MODELS_DIR, Located, MODELS_DIR_ENV, ModelLookupError, REQUIRED_FILES,
    ResolvedModel, RootKind, SearchRoot, bundled_dir, find_local_checkpoint, has_all_files,
    is_checkpoint_dir, locate, resolve_model, search_roots,
};

use crate::pipeline::{PipelineError, SdxlPipeline};
use crate::registry::{ModelEntry, Registries, RegistryError};
use crate::runtime::SessionOptions;

/// Errors of the model loader's entry points.
#[derive(Debug, thiserror::Error)]
pub enum ModelLoaderError {
    /// The registries could not be read.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// The id is unknown or has no complete copy.
    #[error(transparent)]
    Lookup(#[from] ModelLookupError),
    /// Downloading failed (or offline with an incomplete cache).
    #[error(transparent)]
    Download(#[from] DownloadError),
    /// A checkpoint directory lacks files the pipeline needs.
    #[error(
        "cannot load {}: missing {} (looked for them in that directory)",
        dir.display(),
        missing.join(", ")
    )]
    IncompleteCheckpoint {
        /// The directory.
        dir: PathBuf,
        /// Files of the Optimum layout it lacks.
        missing: Vec<String>,
    },
    /// The graphs or configs could not be loaded.
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
    /// The optimised-graph cache could not be built.
    #[error(transparent)]
    GraphCache(#[from] GraphCacheError),
}

/// Where models are searched for and fetched to.
#[derive(Debug, Clone)]
pub struct ModelLocations {
    /// The search roots, in order (the hub cache among them).
    pub roots: Vec<SearchRoot>,
    /// The hub and its cache.
    pub hub: HubSettings,
}

impl ModelLocations {
    /// `roots`, plus the hub's cache as the last root when no root is that directory.
    pub fn new(mut roots: Vec<SearchRoot>, hub: HubSettings) -> Self {
        if !roots.iter().any(|root| root.path == hub.cache_dir) {
            roots.push(SearchRoot::new(RootKind::HfCache, hub.cache_dir.clone()));
        }
        Self { roots, hub }
    }

    /// Only the hub cache of `hub` (and the bundled copies): what tests and embedders that
    /// manage their own cache want.
    pub fn hub_only(hub: HubSettings) -> Self {
        Self::new(Vec::new(), hub)
    }

    /// [`search_roots`] and [`HubSettings::from_env`].
    pub fn from_env() -> Self {
        Self::new(search_roots(None), HubSettings::from_env())
    }

    /// The complete local copy of `entry`, if any.
    pub fn find(&self, entry: &ModelEntry) -> Option<PathBuf> {
        find_local_checkpoint(entry, &self.roots)
    }

    /// Whether a copy with every listed file exists (partial downloads do not count).
    pub fn is_downloaded(&self, entry: &ModelEntry) -> bool {
        self.find(entry).is_some()
    }

    /// Per-file details of `entry`.
    pub fn details(&self, entry: &ModelEntry) -> ModelDetails {
        details::model_details(entry, &self.roots)
    }

    /// Downloads `entry` into the hub cache (or checks the cache when offline).
    pub fn download(
        &self,
        entry: &ModelEntry,
        progress: &mut dyn FnMut(DownloadEvent<'_>),
    ) -> Result<DownloadReport, DownloadError> {
        download_model(entry, &self.hub, progress)
    }

    /// Resolves an id, alias or checkpoint directory.
    pub fn resolve(
        &self,
        name: &str,
        registries: &Registries,
    ) -> Result<ResolvedModel, ModelLookupError> {
        resolve_model(name, &registries.models, &self.roots)
    }
}

fn entry_from_env(model_id: &str) -> Result<(Registries, ModelEntry), ModelLoaderError> {
    let registries = Registries::from_env()?;
    let entry =
        registries
            .models
            .model(model_id)
            .cloned()
            .ok_or_else(|| ModelLookupError::Unknown {
                name: model_id.to_string(),
                suggestion: registries.models.suggest(model_id),
                known: registries.models.ids().join(", "),
            })?;
    Ok((registries, entry))
}

/// Whether `model_id` (an id or alias of the registries from the environment) has a complete
/// local copy in the locations from the environment.
pub fn is_model_downloaded(model_id: &str) -> Result<bool, ModelLoaderError> {
    let (_, entry) = entry_from_env(model_id)?;
    Ok(ModelLocations::from_env().is_downloaded(&entry))
}

/// Per-file details of `model_id`, from the registries and locations of the environment.
pub fn get_model_file_details(model_id: &str) -> Result<ModelDetails, ModelLoaderError> {
    let (_, entry) = entry_from_env(model_id)?;
    Ok(ModelLocations::from_env().details(&entry))
}

/// Downloads `model_id` with the registries and hub settings of the environment, silently.
pub fn download_model_by_id(model_id: &str) -> Result<DownloadReport, ModelLoaderError> {
    let (_, entry) = entry_from_env(model_id)?;
    Ok(ModelLocations::from_env().download(&entry, &mut |_| {})?)
}

/// The files of the Optimum layout in `dir` that [`SdxlPipeline::load`] needs and cannot find:
/// model_index.json, the scheduler config, text_encoder_2, unet and vae_decoder graphs, the
/// tokenizer_2 files (`tokenizer.json` or `vocab.json` + `merges.txt`), and the tokenizer files
/// when a `text_encoder` graph exists.
pub fn missing_layout_files(dir: &Path) -> Vec<String> {
    let mut missing = search::missing_files(dir, REQUIRED_FILES);
    let mut tokenizer = |name: &str| {
        let tokenizer_dir = dir.join(name);
        if !tokenizer_dir.join("tokenizer.json").is_file() {
            for file in ["vocab.json", "merges.txt"] {
                if !tokenizer_dir.join(file).is_file() {
                    missing.push(format!("{name}/{file}"));
                }
            }
        }
    };
    tokenizer("tokenizer_2");
    if dir.join("text_encoder").join("model.onnx").is_file() {
        tokenizer("tokenizer");
    }
    missing
}

/// Loads the checkpoint in `checkpoint_dir` ([`SdxlPipeline::load`]), first checking that the
/// layout is complete so that a missing component is named with the directory searched.
pub fn load_pipeline(
    checkpoint_dir: &Path,
    options: &SessionOptions,
) -> Result<SdxlPipeline, ModelLoaderError> {
    let missing = missing_layout_files(checkpoint_dir);
    if !missing.is_empty() {
        return Err(ModelLoaderError::IncompleteCheckpoint {
            dir: checkpoint_dir.to_path_buf(),
            missing,
        });
    }
    Ok(SdxlPipeline::load(checkpoint_dir, options)?)
}

/// [`load_pipeline`] through `cache`: CPU sessions open graphs that ONNX Runtime optimised on an
/// earlier load (built on the first one); other devices load `checkpoint_dir` directly.
pub fn load_pipeline_cached(
    checkpoint_dir: &Path,
    options: &SessionOptions,
    cache: &GraphCache,
) -> Result<SdxlPipeline, ModelLoaderError> {
    let missing = missing_layout_files(checkpoint_dir);
    if !missing.is_empty() || !GraphCache::applies_to(options) {
        return load_pipeline(checkpoint_dir, options);
    }
    let mirror = cache.prepare(checkpoint_dir)?;
    Ok(SdxlPipeline::load(&mirror, options)?)
}
