//! `models.toml`: the checkpoint map (known models, where their ONNX files live, defaults).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use toml::Spanned;

use super::schedulers::SchedulerRegistry;
use super::source::{RegistryError, SourceFile, did_you_mean};
use super::{NameIndex, Origin, layer};

/// One `models.toml` document as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    models: BTreeMap<String, Spanned<RawModel>>,
}

/// `[models.ID]` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawModel {
    /// Display name.
    label: Option<String>,
    /// Other ids a request may use.
    #[serde(default)]
    aliases: Vec<String>,
    /// One line for listings.
    #[serde(default)]
    description: String,
    /// base, refiner or turbo.
    kind: ModelKind,
    /// Hugging Face repo id (`org/name`).
    repo: Option<Spanned<String>>,
    /// Git revision (branch, tag or commit) on the hub.
    #[serde(default = "default_revision")]
    revision: String,
    /// Folder inside the repo that holds the Optimum ONNX layout ("" = repo root).
    #[serde(default)]
    subfolder: String,
    /// A copy shipped with this crate, relative to the crate root (the tiny test model).
    bundled: Option<String>,
    /// Files needed, relative to the layout root (including `.onnx_data` external weights).
    files: Spanned<Vec<String>>,
    /// Recommended generation defaults.
    defaults: Spanned<RawDefaults>,
}

fn default_revision() -> String {
    "main".to_string()
}

/// `[models.ID.defaults]` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDefaults {
    /// Image width in pixels.
    width: Spanned<u32>,
    /// Image height in pixels.
    height: Spanned<u32>,
    /// Denoising steps.
    steps: Spanned<u32>,
    /// Classifier-free guidance scale.
    guidance_scale: Spanned<f64>,
    /// Scheduler preset when a request names none (omit: the model's own scheduler config).
    scheduler: Option<Spanned<String>>,
}

/// What a checkpoint is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModelKind {
    /// A text-to-image base model.
    Base,
    /// An img2img refiner (text_encoder_2 only, aesthetic-score time ids).
    Refiner,
    /// A few-step distilled model (guidance off).
    Turbo,
}

/// Recommended defaults of a model.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelDefaults {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Steps.
    pub steps: u32,
    /// Guidance scale.
    pub guidance_scale: f64,
    /// Preset name (validated), or `None` for the model's own scheduler config.
    pub scheduler: Option<String>,
}

/// A validated checkpoint entry.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelEntry {
    /// Canonical id.
    pub id: String,
    /// Display name.
    pub label: String,
    /// Other accepted ids.
    pub aliases: Vec<String>,
    /// One-line description.
    pub description: String,
    /// What it is for.
    pub kind: ModelKind,
    /// Hugging Face repo id.
    pub repo: Option<String>,
    /// Hub revision.
    pub revision: String,
    /// Folder of the layout inside the repo.
    pub subfolder: String,
    /// Shipped copy, relative to the crate root.
    pub bundled: Option<String>,
    /// Needed files relative to the layout root.
    pub files: Vec<String>,
    /// Recommended defaults.
    pub defaults: ModelDefaults,
}

/// The validated checkpoint map.
#[derive(Debug, Clone)]
pub struct ModelRegistry {
    models: BTreeMap<String, ModelEntry>,
    names: NameIndex,
}

impl ModelRegistry {
    /// Parses and validates `sources` (later files replace earlier entries by id); scheduler
    /// names in defaults are checked against `schedulers`.
    pub fn from_sources(
        sources: &[SourceFile],
        schedulers: &SchedulerRegistry,
    ) -> Result<Self, RegistryError> {
        let mut raw_models = BTreeMap::new();
        for (index, source) in sources.iter().enumerate() {
            let raw: RawFile =
                toml::from_str(&source.text).map_err(|e| RegistryError::from_toml(source, &e))?;
            if raw.models.is_empty() {
                return Err(RegistryError::empty(source, "[models.ID]"));
            }
            layer(&mut raw_models, raw.models, index);
        }
        let mut names = NameIndex::default();
        let mut models = BTreeMap::new();
        for (id, entry) in &raw_models {
            let origin = entry.origin(sources);
            let model = validate_model(id, &origin, schedulers)?;
            names.insert("model", &model.id, &model.aliases, &model.label, &origin)?;
            models.insert(id.clone(), model);
        }
        Ok(Self { models, names })
    }

    /// All entries by id.
    pub fn models(&self) -> impl Iterator<Item = &ModelEntry> {
        self.models.values()
    }

    /// Looks an entry up by id, alias or label (case-insensitive).
    pub fn model(&self, name: &str) -> Option<&ModelEntry> {
        self.names.resolve(name).and_then(|id| self.models.get(id))
    }

    /// `; did you mean "..."?` for an unknown id.
    pub fn suggest(&self, name: &str) -> String {
        did_you_mean(name, self.names.all_names())
    }

    /// All canonical ids.
    pub fn ids(&self) -> Vec<String> {
        self.models.keys().cloned().collect()
    }
}

fn validate_model(
    id: &str,
    origin: &Origin<'_, RawModel>,
    schedulers: &SchedulerRegistry,
) -> Result<ModelEntry, RegistryError> {
    let raw = origin.value;
    let invalid_at = |span, message: String| origin.invalid_at("model", id, span, message);
    if raw.repo.is_none() && raw.bundled.is_none() {
        return Err(origin.invalid(
            "model",
            id,
            "needs `repo` (a Hugging Face repo) or `bundled` (a shipped copy)",
        ));
    }
    if let Some(repo) = &raw.repo {
        let parts: Vec<&str> = repo.get_ref().split('/').collect();
        if parts.len() != 2 || parts.iter().any(|p| p.is_empty()) {
            return Err(invalid_at(
                repo.span(),
                format!("repo \"{}\" must look like \"org/name\"", repo.get_ref()),
            ));
        }
    }
    let files = raw.files.get_ref();
    for file in files {
        if file.is_empty()
            || file.starts_with('/')
            || file.split('/').any(|part| part == ".." || part.is_empty())
        {
            return Err(invalid_at(
                raw.files.span(),
                format!(
                    "file \"{file}\" must be a relative path inside the layout (no leading /, no ..)"
                ),
            ));
        }
    }
    for required in [
        "model_index.json",
        "unet/model.onnx",
        "vae_decoder/model.onnx",
        "text_encoder_2/model.onnx",
    ] {
        if !files.iter().any(|f| f == required) {
            return Err(invalid_at(
                raw.files.span(),
                format!("`files` must include \"{required}\""),
            ));
        }
    }
    let defaults = raw.defaults.get_ref();
    for (key, value) in [("width", &defaults.width), ("height", &defaults.height)] {
        let v = *value.get_ref();
        if v == 0 || v % 8 != 0 || v > 8192 {
            return Err(invalid_at(
                value.span(),
                format!("defaults.{key} = {v}: must be a multiple of 8 from 8 to 8192"),
            ));
        }
    }
    let steps = *defaults.steps.get_ref();
    if !(1..=1000).contains(&steps) {
        return Err(invalid_at(
            defaults.steps.span(),
            format!("defaults.steps = {steps}: valid 1 to 1000"),
        ));
    }
    let guidance = *defaults.guidance_scale.get_ref();
    if !guidance.is_finite() || !(0.0..=100.0).contains(&guidance) {
        return Err(invalid_at(
            defaults.guidance_scale.span(),
            format!("defaults.guidance_scale = {guidance}: valid 0 to 100"),
        ));
    }
    let scheduler = match &defaults.scheduler {
        None => None,
        Some(name) => Some(
            schedulers
                .preset(name.get_ref())
                .map_err(|e| invalid_at(name.span(), format!("defaults.scheduler: {e}")))?
                .name
                .clone(),
        ),
    };
    Ok(ModelEntry {
        id: id.to_string(),
        label: raw.label.clone().unwrap_or_else(|| id.to_string()),
        aliases: raw.aliases.clone(),
        description: raw.description.clone(),
        kind: raw.kind,
        repo: raw.repo.as_ref().map(|r| r.get_ref().clone()),
        revision: raw.revision.clone(),
        subfolder: raw.subfolder.trim_matches('/').to_string(),
        bundled: raw.bundled.clone(),
        files: files.clone(),
        defaults: ModelDefaults {
            width: *defaults.width.get_ref(),
            height: *defaults.height.get_ref(),
            steps,
            guidance_scale: guidance,
            scheduler,
        },
    })
}
