//! TOML -> typed, validated registries: `schedulers.toml` and `models.toml`.
//!
//! The built-in files are embedded with `include_str!`; user files (paths from
//! `SDXL_SCHEDULERS_TOML` / `SDXL_MODELS_TOML`, or given through [`Registries::load`]) are layered
//! over them by name: a user entry with the same name replaces the built-in one. Parsing is
//! strict (`deny_unknown_fields`); validation is a separate step that resolves references,
//! rejects duplicate names and checks ranges, and every error names file, line, column and entry.

pub mod models;
mod scheduler_entries;
pub mod schedulers;
pub mod source;

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::path::{Path, PathBuf};

use toml::Spanned;

pub use models::{ModelDefaults, ModelEntry, ModelKind, ModelRegistry};
pub use schedulers::{
    LookupError, PresetDef, PresetKind, SamplerDef, SamplerParams, ScheduleDef, SchedulerRegistry,
};
pub use source::{Location, RegistryError, SourceFile};

/// The built-in scheduler registry text.
pub const BUILTIN_SCHEDULERS_TOML: &str = include_str!("../../schedulers.toml");
/// The built-in model registry text.
pub const BUILTIN_MODELS_TOML: &str = include_str!("../../models.toml");
/// Environment variable naming a user `schedulers.toml` layered over the built-in one.
pub const SCHEDULERS_TOML_ENV: &str = "SDXL_SCHEDULERS_TOML";
/// Environment variable naming a user `models.toml` layered over the built-in one.
pub const MODELS_TOML_ENV: &str = "SDXL_MODELS_TOML";

/// Both registries, validated together (model defaults name scheduler presets).
#[derive(Debug, Clone)]
pub struct Registries {
    /// Schedules, samplers and presets.
    pub schedulers: SchedulerRegistry,
    /// Known checkpoints.
    pub models: ModelRegistry,
}

impl Registries {
    /// The built-in registries plus the user files given (each layered over its built-in).
    pub fn load(
        user_schedulers: Option<&Path>,
        user_models: Option<&Path>,
    ) -> Result<Self, RegistryError> {
        let mut scheduler_sources = vec![SourceFile::builtin(
            "schedulers.toml",
            BUILTIN_SCHEDULERS_TOML,
        )];
        scheduler_sources.extend(user_schedulers.map(SourceFile::read).transpose()?);
        let mut model_sources = vec![SourceFile::builtin("models.toml", BUILTIN_MODELS_TOML)];
        model_sources.extend(user_models.map(SourceFile::read).transpose()?);
        let schedulers = SchedulerRegistry::from_sources(&scheduler_sources)?;
        let models = ModelRegistry::from_sources(&model_sources, &schedulers)?;
        Ok(Self { schedulers, models })
    }

    /// The built-in registries plus the files named by `SDXL_SCHEDULERS_TOML` and `SDXL_MODELS_TOML`.
    pub fn from_env() -> Result<Self, RegistryError> {
        let path = |var: &str| {
            std::env::var_os(var)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        Self::load(
            path(SCHEDULERS_TOML_ENV).as_deref(),
            path(MODELS_TOML_ENV).as_deref(),
        )
    }
}

/// Known checkpoints by id (built-ins plus `SDXL_MODELS_TOML`).
pub fn get_model_checkpoint_map() -> Result<BTreeMap<String, ModelEntry>, RegistryError> {
    let registries = Registries::from_env()?;
    Ok(registries
        .models
        .models()
        .map(|m| (m.id.clone(), m.clone()))
        .collect())
}

/// Scheduler presets (what a request's `scheduler` names).
pub fn get_available_schedulers() -> Result<Vec<PresetDef>, RegistryError> {
    Ok(Registries::from_env()?
        .schedulers
        .presets()
        .cloned()
        .collect())
}

/// Samplers (what a request's `sampler` names).
pub fn get_available_samplers() -> Result<Vec<SamplerDef>, RegistryError> {
    Ok(Registries::from_env()?
        .schedulers
        .samplers()
        .cloned()
        .collect())
}

/// Sigma schedules (what a request's `schedule` names).
pub fn get_available_schedules() -> Result<Vec<ScheduleDef>, RegistryError> {
    Ok(Registries::from_env()?
        .schedulers
        .schedules()
        .cloned()
        .collect())
}

/// A raw entry and the index of the source file it came from.
struct Layered<T> {
    source: usize,
    value: Spanned<T>,
}

impl<T> Layered<T> {
    fn origin<'a>(&'a self, sources: &'a [SourceFile]) -> Origin<'a, T> {
        Origin {
            source: &sources[self.source],
            value: self.value.get_ref(),
            span: self.value.span(),
        }
    }
}

/// Inserts `entries` from source `index`, replacing same-named entries of earlier sources.
fn layer<T>(
    into: &mut BTreeMap<String, Layered<T>>,
    entries: BTreeMap<String, Spanned<T>>,
    index: usize,
) {
    for (name, value) in entries {
        into.insert(
            name,
            Layered {
                source: index,
                value,
            },
        );
    }
}

/// An entry being validated, with where it was written.
struct Origin<'a, T> {
    source: &'a SourceFile,
    value: &'a T,
    span: Range<usize>,
}

impl<T> Origin<'_, T> {
    fn invalid(&self, kind: &'static str, entry: &str, message: &str) -> RegistryError {
        self.invalid_at(kind, entry, self.span.clone(), message.to_string())
    }

    fn invalid_at(
        &self,
        kind: &'static str,
        entry: &str,
        span: Range<usize>,
        message: String,
    ) -> RegistryError {
        RegistryError::Invalid {
            location: self.source.location(&span),
            kind,
            entry: entry.to_string(),
            message,
        }
    }
}

/// Case-insensitive index of names, aliases and labels onto canonical names.
#[derive(Debug, Clone, Default)]
struct NameIndex {
    by_key: HashMap<String, String>,
    by_label: HashMap<String, String>,
    canonical: Vec<String>,
}

impl NameIndex {
    /// Adds an entry; a name or alias already taken by another entry is an error. Labels are
    /// looked up after names and aliases and may repeat (the first entry keeps the label).
    fn insert<T>(
        &mut self,
        kind: &'static str,
        name: &str,
        aliases: &[String],
        label: &str,
        origin: &Origin<'_, T>,
    ) -> Result<(), RegistryError> {
        for key in std::iter::once(name).chain(aliases.iter().map(String::as_str)) {
            let folded = key.to_lowercase();
            match self.by_key.get(&folded) {
                Some(owner) if owner != name => {
                    return Err(origin.invalid(
                        kind,
                        name,
                        &format!("name or alias \"{key}\" is already used by {kind} \"{owner}\"; names and aliases must be unique"),
                    ));
                }
                _ => {
                    self.by_key.insert(folded, name.to_string());
                }
            }
        }
        self.by_label
            .entry(label.to_lowercase())
            .or_insert_with(|| name.to_string());
        self.canonical.push(name.to_string());
        Ok(())
    }

    fn resolve(&self, key: &str) -> Option<&str> {
        let folded = key.trim().to_lowercase();
        self.by_key
            .get(&folded)
            .or_else(|| self.by_label.get(&folded))
            .map(String::as_str)
    }

    fn canonical_names(&self) -> Vec<String> {
        let mut names = self.canonical.clone();
        names.sort();
        names
    }

    fn all_names(&self) -> impl Iterator<Item = &str> {
        self.by_key.keys().map(String::as_str)
    }
}
