//! `sdxl schedulers|samplers|schedules list` and `sdxl schedulers show`.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use sdxl_backend::registry::{PresetKind, Registries};
use sdxl_backend::schedulers::ksampler::build_sampling;
use sdxl_backend::schedulers::{Plan, SchedulerConfig, build_preset};

use super::table::emit;

/// The SDXL base 1.0 `scheduler/scheduler_config.json`, used when `--model` is not given.
pub const SDXL_BASE_SCHEDULER_CONFIG: &str =
    include_str!("../../tests/fixtures/schedulers/sdxl_base_scheduler_config.json");

/// `sdxl schedulers ...`.
#[derive(Subcommand, Debug)]
pub enum SchedulersAction {
    /// List the presets.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print the plan of a preset, or of a sampler over a schedule, for N steps.
    Show(ShowArgs),
}

/// Arguments of `sdxl schedulers show`.
#[derive(Args, Debug)]
pub struct ShowArgs {
    /// A preset name (or use --sampler/--schedule).
    #[arg(conflicts_with_all = ["sampler", "schedule"])]
    preset: Option<String>,
    /// A sampler.
    #[arg(long)]
    sampler: Option<String>,
    /// A sigma schedule (default: the sampler's).
    #[arg(long, requires = "sampler")]
    schedule: Option<String>,
    /// Steps.
    #[arg(long)]
    steps: usize,
    /// A checkpoint directory whose scheduler/scheduler_config.json to use (default: SDXL base 1.0's).
    #[arg(long)]
    model: Option<PathBuf>,
    /// Print JSON `{"timesteps": [...], "sigmas": [...]}`.
    #[arg(long)]
    json: bool,
}

pub fn list_presets(registries: &Registries, json: bool) -> Result<()> {
    let presets: Vec<_> = registries.schedulers.presets().collect();
    let rows = presets
        .iter()
        .map(|p| vec![p.name.clone(), p.label.clone(), describe_preset(&p.kind)])
        .collect();
    emit(json, &presets, &["NAME", "LABEL", "RUNS"], rows)
}

pub fn list_samplers(registries: &Registries, json: bool) -> Result<()> {
    let samplers: Vec<_> = registries.schedulers.samplers().collect();
    let rows = samplers
        .iter()
        .map(|s| {
            vec![
                s.name.clone(),
                s.label.clone(),
                if s.stochastic { "yes" } else { "no" }.to_string(),
                s.order.to_string(),
                s.model_calls_per_step.to_string(),
                s.default_schedule.clone(),
            ]
        })
        .collect();
    emit(
        json,
        &samplers,
        &[
            "NAME",
            "LABEL",
            "STOCHASTIC",
            "ORDER",
            "CALLS/STEP",
            "DEFAULT SCHEDULE",
        ],
        rows,
    )
}

pub fn list_schedules(registries: &Registries, json: bool) -> Result<()> {
    let schedules: Vec<_> = registries.schedulers.schedules().collect();
    let rows = schedules
        .iter()
        .map(|s| vec![s.name.clone(), s.label.clone(), s.aliases.join(", ")])
        .collect();
    emit(json, &schedules, &["NAME", "LABEL", "ALIASES"], rows)
}

pub fn show(args: &ShowArgs, registries: &Registries) -> Result<()> {
    let config_text = match &args.model {
        Some(dir) => {
            let path = dir.join("scheduler").join("scheduler_config.json");
            std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?
        }
        None => SDXL_BASE_SCHEDULER_CONFIG.to_string(),
    };
    let model_config =
        SchedulerConfig::from_json(&config_text).context("parsing the scheduler config")?;
    let schedulers = &registries.schedulers;
    let stepper = match (&args.preset, &args.sampler) {
        (Some(name), _) => build_preset(
            schedulers.preset(name)?,
            schedulers,
            &model_config,
            args.steps,
        )?,
        (None, Some(sampler)) => build_sampling(
            schedulers,
            sampler,
            args.schedule.as_deref(),
            &model_config,
            args.steps,
            1.0,
        )?,
        (None, None) => bail!(
            "name a preset, or --sampler (and optionally --schedule); see `sdxl schedulers list`"
        ),
    };
    let plan = Plan::of(stepper.as_ref());
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(
                &serde_json::json!({ "timesteps": plan.timesteps, "sigmas": plan.sigmas })
            )?
        );
    } else {
        println!("init_noise_sigma: {}", plan.init_noise_sigma);
        let rows = (0..plan.sigmas.len())
            .map(|i| {
                let t = plan
                    .timesteps
                    .get(i)
                    .map_or(String::new(), |t| format!("{t}"));
                vec![i.to_string(), t, format!("{}", plan.sigmas[i])]
            })
            .collect();
        emit(false, &plan, &["STEP", "TIMESTEP", "SIGMA"], rows)?;
    }
    Ok(())
}

fn describe_preset(kind: &PresetKind) -> String {
    match kind {
        PresetKind::Diffusers { class, config } => {
            let overrides = serde_json::to_string(config).unwrap_or_default();
            if overrides == "{}" {
                class.to_string()
            } else {
                format!("{class} {overrides}")
            }
        }
        PresetKind::Sampling { sampler, schedule } => {
            format!("sampler {sampler} + schedule {schedule}")
        }
    }
}
