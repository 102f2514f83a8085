//! A1111 sampler and schedule-type names onto the scheduler registry, and the `/samplers` and
//! `/schedulers` listings in A1111's shapes.
//!
//! A1111 (1.9+) sends `sampler_name` ("DPM++ 2M", "Euler a") and `scheduler` (the schedule type:
//! "Karras", "Automatic", ...); older clients send legacy combined names ("DPM++ 2M Karras").
//! The registry's lookups already accept labels and aliases case-insensitively, so:
//!
//! - with a schedule type (not "Automatic"): `sampler_name` is a sampler (or a legacy combined
//!   name whose sampler part is taken), run over that schedule;
//! - without one: `sampler_name` is tried as a preset ("DPM++ 2M Karras", "Euler a" as diffusers
//!   runs them), then as a sampler over its default schedule, then as a sampler followed by a
//!   schedule label ("DPM++ 2M SDE Exponential").

use serde_json::{Value, json};

use super::error::ApiError;
use crate::registry::SchedulerRegistry;
use crate::schedulers::kinds::ScheduleKind;

/// What a request runs: a preset, or a sampler with an optional schedule (all `None`: the
/// model's default).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SchedulerSelection {
    /// Preset (canonical name).
    pub preset: Option<String>,
    /// Sampler (canonical name).
    pub sampler: Option<String>,
    /// Schedule (canonical name).
    pub schedule: Option<String>,
}

/// A1111's "let the sampler choose" schedule type.
fn is_automatic(schedule: &str) -> bool {
    let schedule = schedule.trim();
    schedule.is_empty() || schedule.eq_ignore_ascii_case("automatic")
}

/// Resolves A1111's `sampler_name` and `scheduler` fields.
pub fn resolve(
    registry: &SchedulerRegistry,
    sampler_name: Option<&str>,
    schedule_type: Option<&str>,
) -> Result<SchedulerSelection, ApiError> {
    let schedule = match schedule_type.filter(|s| !is_automatic(s)) {
        Some(name) => Some(
            registry
                .schedule(name)
                .map_err(|e| ApiError::invalid("scheduler", e.to_string()))?
                .name
                .clone(),
        ),
        None => None,
    };
    let Some(name) = sampler_name.map(str::trim).filter(|n| !n.is_empty()) else {
        // A schedule alone runs A1111's default sampler over it.
        return Ok(SchedulerSelection {
            sampler: schedule.as_ref().map(|_| "euler".to_string()),
            schedule,
            preset: None,
        });
    };
    if schedule.is_none()
        && let Ok(preset) = registry.preset(name)
    {
        return Ok(SchedulerSelection {
            preset: Some(preset.name.clone()),
            ..Default::default()
        });
    }
    let sampler_error = match registry.sampler(name) {
        Ok(sampler) => {
            return Ok(SchedulerSelection {
                sampler: Some(sampler.name.clone()),
                schedule,
                preset: None,
            });
        }
        Err(error) => error,
    };
    if let Some((sampler, named_schedule)) = split_schedule_suffix(registry, name) {
        return Ok(SchedulerSelection {
            sampler: Some(sampler),
            // An explicit schedule type wins over the one in a legacy name.
            schedule: schedule.or(Some(named_schedule)),
            preset: None,
        });
    }
    Err(ApiError::invalid(
        "sampler_name",
        format!(
            "{sampler_error}; A1111 labels such as \"DPM++ 2M\" or \"Euler a\" and legacy names such as \"DPM++ 2M Karras\" work too (GET /sdapi/v1/samplers)"
        ),
    ))
}

/// "DPM++ 2M SDE Exponential" -> (dpmpp_2m_sde, exponential): the longest schedule label, name
/// or alias that ends the text after a space, with a sampler before it.
fn split_schedule_suffix(registry: &SchedulerRegistry, name: &str) -> Option<(String, String)> {
    let mut candidates: Vec<(&str, &str)> = registry
        .schedules()
        .flat_map(|schedule| {
            std::iter::once(schedule.label.as_str())
                .chain(std::iter::once(schedule.name.as_str()))
                .chain(schedule.aliases.iter().map(String::as_str))
                .filter(|key| !is_automatic(key))
                .map(move |key| (key, schedule.name.as_str()))
        })
        .collect();
    candidates.sort_by_key(|(key, _)| std::cmp::Reverse(key.len()));
    candidates.into_iter().find_map(|(key, schedule)| {
        let cut = name.len().checked_sub(key.len() + 1)?;
        let (head, tail) = (name.get(..cut)?, name.get(cut..)?);
        let suffix = tail.strip_prefix(' ')?;
        if !suffix.eq_ignore_ascii_case(key) {
            return None;
        }
        let sampler = registry.sampler(head.trim()).ok()?;
        Some((sampler.name.clone(), schedule.to_string()))
    })
}

/// `GET /sdapi/v1/samplers`: every sampler as A1111 lists it (`name` is the label), then the
/// presets whose labels no sampler has (legacy combined names such as "DPM++ 2M Karras" and the
/// diffusers-only ones), so a client's dropdown offers everything `sampler_name` accepts.
pub fn samplers_listing(registry: &SchedulerRegistry) -> Value {
    let mut items = Vec::new();
    let mut labels = Vec::new();
    for sampler in registry.samplers() {
        let mut aliases = vec![sampler.name.clone()];
        aliases.extend(sampler.aliases.iter().cloned());
        let mut options = serde_json::Map::new();
        options.insert("scheduler".into(), json!(sampler.default_schedule));
        if sampler.discard_penultimate_sigma {
            options.insert("discard_next_to_last_sigma".into(), json!("True"));
        }
        if sampler.model_calls_per_step > 1 {
            options.insert("second_order".into(), json!("True"));
        }
        if sampler.stochastic {
            options.insert("uses_ensd".into(), json!("True"));
        }
        labels.push(sampler.label.to_lowercase());
        items.push(json!({"name": sampler.label, "aliases": aliases, "options": options}));
    }
    for preset in registry.presets() {
        if labels.contains(&preset.label.to_lowercase()) {
            continue;
        }
        let mut aliases = vec![preset.name.clone()];
        aliases.extend(preset.aliases.iter().cloned());
        items.push(json!({
            "name": preset.label,
            "aliases": aliases,
            "options": {"preset": preset.name},
        }));
    }
    Value::Array(items)
}

/// `GET /sdapi/v1/schedulers`: the sigma schedules in A1111's shape (`name`, `label`,
/// `aliases`, `default_rho`, `need_inner_model`).
pub fn schedulers_listing(registry: &SchedulerRegistry) -> Value {
    let items = registry
        .schedules()
        .map(|schedule| {
            let default_rho = match schedule.kind {
                ScheduleKind::Karras { rho } | ScheduleKind::Polyexponential { rho } => json!(rho),
                _ => json!(-1.0),
            };
            let aliases: Vec<&String> = schedule
                .aliases
                .iter()
                .filter(|alias| !is_automatic(alias))
                .collect();
            json!({
                "name": schedule.name,
                "label": schedule.label,
                "aliases": if aliases.is_empty() { Value::Null } else { json!(aliases) },
                "default_rho": default_rho,
                "need_inner_model": false,
            })
        })
        .collect();
    Value::Array(items)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::Registries;

    fn registry() -> SchedulerRegistry {
        Registries::load(None, None).unwrap().schedulers
    }

    fn sampler(sampler: &str, schedule: Option<&str>) -> SchedulerSelection {
        SchedulerSelection {
            preset: None,
            sampler: Some(sampler.into()),
            schedule: schedule.map(Into::into),
        }
    }

    fn preset(name: &str) -> SchedulerSelection {
        SchedulerSelection {
            preset: Some(name.into()),
            ..Default::default()
        }
    }

    #[test]
    fn a1111_names_resolve() {
        let r = registry();
        let resolve =
            |name: Option<&str>, schedule: Option<&str>| resolve(&r, name, schedule).unwrap();
        assert_eq!(resolve(None, None), SchedulerSelection::default());
        assert_eq!(
            resolve(Some("Euler a"), Some("automatic")),
            preset("euler_a")
        );
        assert_eq!(
            resolve(Some("DPM++ 2M Karras"), None),
            preset("dpmpp_2m_karras")
        );
        assert_eq!(
            resolve(Some("DPM++ 2M"), Some("Karras")),
            sampler("dpmpp_2m", Some("karras"))
        );
        assert_eq!(
            resolve(Some("DPM++ 3M SDE"), Some("")),
            sampler("dpmpp_3m_sde", None)
        );
        assert_eq!(
            resolve(Some("DPM++ 2M SDE Exponential"), None),
            sampler("dpmpp_2m_sde", Some("exponential"))
        );
        assert_eq!(
            resolve(Some("Euler SGM Uniform"), None),
            sampler("euler", Some("sgm_uniform"))
        );
        // An explicit schedule type wins over the legacy name's.
        assert_eq!(
            resolve(Some("DPM++ 2M Karras"), Some("Exponential")),
            sampler("dpmpp_2m", Some("exponential"))
        );
        assert_eq!(
            resolve(None, Some("karras")),
            sampler("euler", Some("karras"))
        );
    }

    #[test]
    fn unknown_names_name_the_field() {
        let r = registry();
        match resolve(&r, Some("DPM++ 9Z"), None) {
            Err(ApiError::Invalid { field, .. }) => assert_eq!(field, "sampler_name"),
            other => panic!("{other:?}"),
        }
        match resolve(&r, Some("Euler"), Some("Wobbly")) {
            Err(ApiError::Invalid { field, .. }) => assert_eq!(field, "scheduler"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn listings_have_a1111_shapes() {
        let r = registry();
        let samplers = samplers_listing(&r);
        let names: Vec<&str> = samplers
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["name"].as_str().unwrap())
            .collect();
        for name in ["Euler a", "DPM++ 2M", "DPM++ 2M Karras", "UniPC"] {
            assert!(names.contains(&name), "{name} in {names:?}");
        }
        let schedulers = schedulers_listing(&r);
        let karras = schedulers
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == "karras")
            .unwrap();
        assert_eq!(karras["label"], "Karras");
        assert_eq!(karras["default_rho"], 7.0);
    }
}
