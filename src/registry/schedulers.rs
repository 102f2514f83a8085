//! `schedulers.toml`: raw tables, validation, and the typed scheduler registry.

use std::collections::BTreeMap;

use serde::Serialize;

use super::scheduler_entries::{RawFile, validate_preset, validate_sampler, validate_schedule};
use super::source::{RegistryError, SourceFile, did_you_mean};
use super::{NameIndex, layer};
use crate::schedulers::SchedulerConfig;
use crate::schedulers::config::SolverType;
use crate::schedulers::kinds::{DiffusersClass, SamplerAlgorithm, ScheduleKind};

/// A validated sigma schedule.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ScheduleDef {
    /// Canonical name.
    pub name: String,
    /// Display label.
    pub label: String,
    /// Other accepted names.
    pub aliases: Vec<String>,
    /// One-line description.
    pub description: String,
    /// The implementation and its parameters.
    #[serde(flatten)]
    pub kind: ScheduleKind,
}

/// Sampler parameters (only those the algorithm reads are set).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct SamplerParams {
    /// Ancestral noise amount (default 1).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub eta: Option<f64>,
    /// Noise scale (default 1).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub s_noise: Option<f64>,
    /// Midpoint ratio (default 0.5).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub r: Option<f64>,
    /// Second-order rule (default midpoint).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub solver_type: Option<SolverType>,
    /// Multistep order.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub order: Option<u32>,
}

/// A validated sampler.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SamplerDef {
    /// Canonical name.
    pub name: String,
    /// Display label.
    pub label: String,
    /// Other accepted names.
    pub aliases: Vec<String>,
    /// One-line description.
    pub description: String,
    /// The implementation.
    pub algorithm: SamplerAlgorithm,
    /// Schedule used when none is named (a validated schedule name).
    pub default_schedule: String,
    /// Drop the second-to-last sigma.
    pub discard_penultimate_sigma: bool,
    /// Whether it draws noise (so the seed matters beyond the initial latents).
    pub stochastic: bool,
    /// Order of accuracy.
    pub order: u32,
    /// UNet evaluations per step.
    pub model_calls_per_step: u32,
    /// Parameters.
    pub params: SamplerParams,
}

/// What a preset runs.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum PresetKind {
    /// A diffusers scheduler class with overrides over the model's config.
    Diffusers {
        /// The class.
        class: DiffusersClass,
        /// The overrides.
        config: Box<SchedulerConfig>,
    },
    /// A sampler over a sigma schedule.
    Sampling {
        /// Sampler name (validated).
        sampler: String,
        /// Schedule name (validated).
        schedule: String,
    },
}

/// A validated preset.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PresetDef {
    /// Canonical name.
    pub name: String,
    /// Display label.
    pub label: String,
    /// Other accepted names.
    pub aliases: Vec<String>,
    /// One-line description.
    pub description: String,
    /// What it runs.
    #[serde(flatten)]
    pub kind: PresetKind,
}

/// All schedules, samplers and presets, validated and indexed by name, alias and label.
#[derive(Debug, Clone)]
pub struct SchedulerRegistry {
    schedules: BTreeMap<String, ScheduleDef>,
    samplers: BTreeMap<String, SamplerDef>,
    presets: BTreeMap<String, PresetDef>,
    schedule_names: NameIndex,
    sampler_names: NameIndex,
    preset_names: NameIndex,
}

impl SchedulerRegistry {
    /// Parses and validates `sources` in order; later files replace earlier entries by name.
    pub fn from_sources(sources: &[SourceFile]) -> Result<Self, RegistryError> {
        let mut schedules = BTreeMap::new();
        let mut samplers = BTreeMap::new();
        let mut presets = BTreeMap::new();
        for (index, source) in sources.iter().enumerate() {
            let raw: RawFile =
                toml::from_str(&source.text).map_err(|e| RegistryError::from_toml(source, &e))?;
            if raw.schedules.is_empty() && raw.samplers.is_empty() && raw.presets.is_empty() {
                return Err(RegistryError::empty(
                    source,
                    "[presets.NAME], [samplers.NAME] or [schedules.NAME]",
                ));
            }
            layer(&mut schedules, raw.schedules, index);
            layer(&mut samplers, raw.samplers, index);
            layer(&mut presets, raw.presets, index);
        }
        let mut schedule_names = NameIndex::default();
        let mut validated_schedules = BTreeMap::new();
        for (name, entry) in &schedules {
            let def = validate_schedule(name, &entry.origin(sources))?;
            schedule_names.insert(
                "schedule",
                &def.name,
                &def.aliases,
                &def.label,
                &entry.origin(sources),
            )?;
            validated_schedules.insert(name.clone(), def);
        }
        let mut sampler_names = NameIndex::default();
        let mut validated_samplers = BTreeMap::new();
        for (name, entry) in &samplers {
            let origin = entry.origin(sources);
            let def = validate_sampler(name, &origin, &schedule_names)?;
            sampler_names.insert("sampler", &def.name, &def.aliases, &def.label, &origin)?;
            validated_samplers.insert(name.clone(), def);
        }
        let mut preset_names = NameIndex::default();
        let mut validated_presets = BTreeMap::new();
        for (name, entry) in &presets {
            let origin = entry.origin(sources);
            let def = validate_preset(name, &origin, &sampler_names, &schedule_names)?;
            preset_names.insert("preset", &def.name, &def.aliases, &def.label, &origin)?;
            validated_presets.insert(name.clone(), def);
        }
        Ok(Self {
            schedules: validated_schedules,
            samplers: validated_samplers,
            presets: validated_presets,
            schedule_names,
            sampler_names,
            preset_names,
        })
    }

    /// All schedules, by canonical name.
    pub fn schedules(&self) -> impl Iterator<Item = &ScheduleDef> {
        self.schedules.values()
    }

    /// All samplers, by canonical name.
    pub fn samplers(&self) -> impl Iterator<Item = &SamplerDef> {
        self.samplers.values()
    }

    /// All presets, by canonical name.
    pub fn presets(&self) -> impl Iterator<Item = &PresetDef> {
        self.presets.values()
    }

    /// Looks a schedule up by name, alias or label (case-insensitive).
    pub fn schedule(&self, name: &str) -> Result<&ScheduleDef, LookupError> {
        lookup(&self.schedules, &self.schedule_names, "schedule", name)
    }

    /// Looks a sampler up by name, alias or label (case-insensitive).
    pub fn sampler(&self, name: &str) -> Result<&SamplerDef, LookupError> {
        lookup(&self.samplers, &self.sampler_names, "sampler", name)
    }

    /// Looks a preset up by name, alias or label (case-insensitive).
    pub fn preset(&self, name: &str) -> Result<&PresetDef, LookupError> {
        lookup(&self.presets, &self.preset_names, "scheduler", name)
    }
}

/// A request named something the registry does not have.
#[derive(Debug, Clone, thiserror::Error)]
#[error("unknown {kind} \"{name}\"{suggestion}; valid: {valid}")]
pub struct LookupError {
    /// `sampler`, `schedule` or `scheduler`.
    pub kind: &'static str,
    /// What was asked for.
    pub name: String,
    /// `; did you mean "..."?` or empty.
    pub suggestion: String,
    /// The canonical names.
    pub valid: String,
}

fn lookup<'a, T>(
    entries: &'a BTreeMap<String, T>,
    names: &NameIndex,
    kind: &'static str,
    name: &str,
) -> Result<&'a T, LookupError> {
    names
        .resolve(name)
        .and_then(|canonical| entries.get(canonical))
        .ok_or_else(|| LookupError {
            kind,
            name: name.to_string(),
            suggestion: did_you_mean(name, names.all_names()),
            valid: entries.keys().cloned().collect::<Vec<_>>().join(", "),
        })
}
