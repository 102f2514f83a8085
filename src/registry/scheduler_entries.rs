//! Raw `schedulers.toml` tables as written, and their validation into registry entries.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

use super::schedulers::{PresetDef, PresetKind, SamplerDef, SamplerParams, ScheduleDef};
use super::source::{RegistryError, did_you_mean};
use super::{NameIndex, Origin};
use crate::schedulers::SchedulerConfig;
use crate::schedulers::config::{KNOWN_KEYS, SolverType};
use crate::schedulers::kinds::{
    DiffusersClass, SamplerAlgorithm, SamplerParam, ScheduleKind, ScheduleKindName,
};

/// One `schedulers.toml` document as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawFile {
    #[serde(default)]
    pub(super) schedules: BTreeMap<String, Spanned<RawSchedule>>,
    #[serde(default)]
    pub(super) samplers: BTreeMap<String, Spanned<RawSampler>>,
    #[serde(default)]
    pub(super) presets: BTreeMap<String, Spanned<RawPreset>>,
}

/// `[schedules.NAME]` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSchedule {
    /// Display name (A1111's "Schedule type" label).
    label: Option<String>,
    /// Other names a request may use.
    #[serde(default)]
    aliases: Vec<String>,
    /// One line for listings.
    #[serde(default)]
    description: String,
    /// The implementation.
    kind: ScheduleKindName,
    /// Karras / polyexponential exponent.
    rho: Option<Spanned<f64>>,
    /// Beta schedule alpha.
    alpha: Option<Spanned<f64>>,
    /// Beta schedule beta.
    beta: Option<Spanned<f64>>,
    /// Linear-quadratic threshold.
    threshold_noise: Option<Spanned<f64>>,
    /// Linear-quadratic linear steps.
    linear_steps: Option<Spanned<u32>>,
    /// Align-your-steps published sigmas.
    sigmas: Option<Spanned<Vec<f64>>>,
}

/// `[samplers.NAME]` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSampler {
    /// Display name (A1111 label).
    label: Option<String>,
    /// Other names.
    #[serde(default)]
    aliases: Vec<String>,
    /// One line for listings.
    #[serde(default)]
    description: String,
    /// The implementation.
    algorithm: SamplerAlgorithm,
    /// Schedule used when a request names none.
    default_schedule: Spanned<String>,
    /// Drop the second-to-last sigma (A1111 / ComfyUI do it for dpm_2 and uni_pc).
    #[serde(default)]
    discard_penultimate_sigma: bool,
    /// Ancestral noise amount.
    eta: Option<Spanned<f64>>,
    /// Noise scale.
    s_noise: Option<Spanned<f64>>,
    /// Midpoint ratio.
    r: Option<Spanned<f64>>,
    /// Second-order rule.
    solver_type: Option<Spanned<SolverType>>,
    /// Multistep order.
    order: Option<Spanned<u32>>,
}

/// `[presets.NAME]` as written: either `class` (+ `config`) or `sampler` + `schedule`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPreset {
    /// Display name.
    label: Option<String>,
    /// Other names.
    #[serde(default)]
    aliases: Vec<String>,
    /// One line for listings.
    #[serde(default)]
    description: String,
    /// A diffusers scheduler class.
    class: Option<DiffusersClass>,
    /// Overrides over the model's scheduler config (diffusers keys).
    config: Option<Spanned<SchedulerConfig>>,
    /// A sampler name (with `schedule`).
    sampler: Option<Spanned<String>>,
    /// A schedule name (with `sampler`).
    schedule: Option<Spanned<String>>,
}

pub(super) fn validate_schedule(
    name: &str,
    origin: &Origin<'_, RawSchedule>,
) -> Result<ScheduleDef, RegistryError> {
    let raw = origin.value;
    let params = [
        ("rho", raw.rho.as_ref().map(Spanned::span)),
        ("alpha", raw.alpha.as_ref().map(Spanned::span)),
        ("beta", raw.beta.as_ref().map(Spanned::span)),
        (
            "threshold_noise",
            raw.threshold_noise.as_ref().map(Spanned::span),
        ),
        ("linear_steps", raw.linear_steps.as_ref().map(Spanned::span)),
        ("sigmas", raw.sigmas.as_ref().map(Spanned::span)),
    ];
    let allowed: &[&str] = match raw.kind {
        ScheduleKindName::Karras | ScheduleKindName::Polyexponential => &["rho"],
        ScheduleKindName::Beta => &["alpha", "beta"],
        ScheduleKindName::LinearQuadratic => &["threshold_noise", "linear_steps"],
        ScheduleKindName::AlignYourSteps => &["sigmas"],
        _ => &[],
    };
    for (key, span) in params {
        if let Some(span) = span.filter(|_| !allowed.contains(&key)) {
            return Err(origin.invalid_at(
                "schedule",
                name,
                span,
                format!(
                    "parameter `{key}` does not apply to kind {:?}; it takes: {}",
                    raw.kind,
                    list_or_none(allowed)
                ),
            ));
        }
    }
    let positive =
        |value: &Option<Spanned<f64>>, key: &str, default: f64| -> Result<f64, RegistryError> {
            match value {
                None => Ok(default),
                Some(v) if v.get_ref().is_finite() && *v.get_ref() > 0.0 => Ok(*v.get_ref()),
                Some(v) => Err(origin.invalid_at(
                    "schedule",
                    name,
                    v.span(),
                    format!("`{key}` must be a finite number > 0, got {}", v.get_ref()),
                )),
            }
        };
    let kind = match raw.kind {
        ScheduleKindName::Normal => ScheduleKind::Normal,
        ScheduleKindName::Karras => ScheduleKind::Karras {
            rho: positive(&raw.rho, "rho", 7.0)?,
        },
        ScheduleKindName::Exponential => ScheduleKind::Exponential,
        ScheduleKindName::Polyexponential => ScheduleKind::Polyexponential {
            rho: positive(&raw.rho, "rho", 1.0)?,
        },
        ScheduleKindName::SgmUniform => ScheduleKind::SgmUniform,
        ScheduleKindName::Simple => ScheduleKind::Simple,
        ScheduleKindName::DdimUniform => ScheduleKind::DdimUniform,
        ScheduleKindName::Beta => ScheduleKind::Beta {
            alpha: positive(&raw.alpha, "alpha", 0.6)?,
            beta: positive(&raw.beta, "beta", 0.6)?,
        },
        ScheduleKindName::KlOptimal => ScheduleKind::KlOptimal,
        ScheduleKindName::LinearQuadratic => ScheduleKind::LinearQuadratic {
            threshold_noise: positive(&raw.threshold_noise, "threshold_noise", 0.025)?,
            linear_steps: raw.linear_steps.as_ref().map(|v| *v.get_ref()),
        },
        ScheduleKindName::AlignYourSteps => {
            let sigmas = raw.sigmas.as_ref().ok_or_else(|| {
                origin.invalid(
                    "schedule",
                    name,
                    "kind align_your_steps needs `sigmas = [...]` (descending, > 0)",
                )
            })?;
            let values = sigmas.get_ref();
            let descending = values.windows(2).all(|w| w[0] > w[1]);
            if values.len() < 2 || !descending || values.iter().any(|s| !s.is_finite() || *s <= 0.0)
            {
                return Err(origin.invalid_at(
                    "schedule",
                    name,
                    sigmas.span(),
                    "`sigmas` must hold at least 2 finite, strictly descending values > 0"
                        .to_string(),
                ));
            }
            ScheduleKind::AlignYourSteps {
                sigmas: values.clone(),
            }
        }
        ScheduleKindName::Leading => ScheduleKind::Leading,
        ScheduleKindName::Trailing => ScheduleKind::Trailing,
        ScheduleKindName::Linspace => ScheduleKind::Linspace,
    };
    Ok(ScheduleDef {
        name: name.to_string(),
        label: raw.label.clone().unwrap_or_else(|| name.to_string()),
        aliases: raw.aliases.clone(),
        description: raw.description.clone(),
        kind,
    })
}

pub(super) fn validate_sampler(
    name: &str,
    origin: &Origin<'_, RawSampler>,
    schedules: &NameIndex,
) -> Result<SamplerDef, RegistryError> {
    let raw = origin.value;
    let default_schedule = schedules
        .resolve(raw.default_schedule.get_ref())
        .ok_or_else(|| {
            origin.invalid_at(
                "sampler",
                name,
                raw.default_schedule.span(),
                format!(
                    "default_schedule \"{}\" is not a schedule{}; valid: {}",
                    raw.default_schedule.get_ref(),
                    did_you_mean(raw.default_schedule.get_ref(), schedules.all_names()),
                    schedules.canonical_names().join(", ")
                ),
            )
        })?;
    let accepted = raw.algorithm.params();
    let given = [
        (
            SamplerParam::Eta,
            "eta",
            raw.eta.as_ref().map(Spanned::span),
        ),
        (
            SamplerParam::SNoise,
            "s_noise",
            raw.s_noise.as_ref().map(Spanned::span),
        ),
        (SamplerParam::R, "r", raw.r.as_ref().map(Spanned::span)),
        (
            SamplerParam::SolverType,
            "solver_type",
            raw.solver_type.as_ref().map(Spanned::span),
        ),
        (
            SamplerParam::Order,
            "order",
            raw.order.as_ref().map(Spanned::span),
        ),
    ];
    for (param, key, span) in given {
        if let Some(span) = span.filter(|_| !accepted.contains(&param)) {
            return Err(origin.invalid_at(
                "sampler",
                name,
                span,
                format!(
                    "parameter `{key}` does not apply to algorithm {:?}",
                    raw.algorithm
                ),
            ));
        }
    }
    let ranged = |value: &Option<Spanned<f64>>,
                  key: &str,
                  low: f64,
                  high: f64|
     -> Result<Option<f64>, RegistryError> {
        match value {
            None => Ok(None),
            Some(v) if (low..=high).contains(v.get_ref()) => Ok(Some(*v.get_ref())),
            Some(v) => Err(origin.invalid_at(
                "sampler",
                name,
                v.span(),
                format!(
                    "`{key}` = {} is out of range; valid: {low} to {high}",
                    v.get_ref()
                ),
            )),
        }
    };
    let order = match &raw.order {
        Some(v) if !(1..=4).contains(v.get_ref()) => {
            return Err(origin.invalid_at(
                "sampler",
                name,
                v.span(),
                format!("`order` = {} is out of range; valid: 1 to 4", v.get_ref()),
            ));
        }
        other => other.as_ref().map(|v| *v.get_ref()),
    };
    let params = SamplerParams {
        eta: ranged(&raw.eta, "eta", 0.0, 10.0)?,
        s_noise: ranged(&raw.s_noise, "s_noise", 0.0, 10.0)?,
        r: ranged(&raw.r, "r", 0.01, 0.99)?,
        solver_type: raw.solver_type.as_ref().map(|v| *v.get_ref()),
        order,
    };
    let eta_zero = params.eta.is_some_and(|eta| eta == 0.0);
    Ok(SamplerDef {
        name: name.to_string(),
        label: raw.label.clone().unwrap_or_else(|| name.to_string()),
        aliases: raw.aliases.clone(),
        description: raw.description.clone(),
        algorithm: raw.algorithm,
        default_schedule: default_schedule.to_string(),
        discard_penultimate_sigma: raw.discard_penultimate_sigma,
        stochastic: raw.algorithm.draws_noise() && !eta_zero,
        order: params
            .order
            .unwrap_or_else(|| raw.algorithm.intrinsic_order()),
        model_calls_per_step: raw.algorithm.model_calls_per_step(),
        params,
    })
}

pub(super) fn validate_preset(
    name: &str,
    origin: &Origin<'_, RawPreset>,
    samplers: &NameIndex,
    schedules: &NameIndex,
) -> Result<PresetDef, RegistryError> {
    let raw = origin.value;
    let kind = match (&raw.class, &raw.sampler, &raw.schedule) {
        (Some(class), None, None) => {
            let config = raw
                .config
                .as_ref()
                .map(|c| (c.get_ref().clone(), c.span()))
                .unwrap_or_default();
            if let Some(key) = config.0.unknown.keys().next() {
                return Err(origin.invalid_at(
                    "preset",
                    name,
                    config.1,
                    format!(
                        "unknown scheduler config key `{key}`{}",
                        did_you_mean(key, KNOWN_KEYS.iter().copied())
                    ),
                ));
            }
            PresetKind::Diffusers {
                class: *class,
                config: Box::new(config.0),
            }
        }
        (None, Some(sampler), Some(schedule)) => {
            if let Some(config) = &raw.config {
                return Err(origin.invalid_at(
                    "preset",
                    name,
                    config.span(),
                    "`config` applies only to presets with a diffusers `class`".to_string(),
                ));
            }
            let resolve = |index: &NameIndex, what: &str, value: &Spanned<String>| {
                index
                    .resolve(value.get_ref())
                    .map(str::to_string)
                    .ok_or_else(|| {
                        origin.invalid_at(
                            "preset",
                            name,
                            value.span(),
                            format!(
                                "{what} \"{}\" does not exist{}; valid: {}",
                                value.get_ref(),
                                did_you_mean(value.get_ref(), index.all_names()),
                                index.canonical_names().join(", ")
                            ),
                        )
                    })
            };
            PresetKind::Sampling {
                sampler: resolve(samplers, "sampler", sampler)?,
                schedule: resolve(schedules, "schedule", schedule)?,
            }
        }
        _ => {
            return Err(origin.invalid(
                "preset",
                name,
                "a preset needs either `class` (a diffusers scheduler, optional `config`) or both `sampler` and `schedule`",
            ));
        }
    };
    Ok(PresetDef {
        name: name.to_string(),
        label: raw.label.clone().unwrap_or_else(|| name.to_string()),
        aliases: raw.aliases.clone(),
        description: raw.description.clone(),
        kind,
    })
}

fn list_or_none(items: &[&str]) -> String {
    if items.is_empty() {
        "no parameters".to_string()
    } else {
        items.join(", ")
    }
}
