//! From a registry entry and the model's scheduler config to a running [`Stepper`].

use serde::Serialize;

use super::config::SchedulerConfig;
use super::euler::{EulerAncestralDiscrete, EulerDiscrete};
use super::kinds::DiffusersClass;
use super::stepper::{SchedulerError, Stepper};
use crate::registry::{PresetDef, PresetKind, SchedulerRegistry};

/// What a scheduler will do for N steps: the `sdxl schedulers show` output.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Plan {
    /// UNet timestep of every model evaluation, in order.
    pub timesteps: Vec<f64>,
    /// Noise level before each step plus the final one.
    pub sigmas: Vec<f64>,
    /// Standard deviation of the initial noise.
    pub init_noise_sigma: f64,
}

impl Plan {
    /// The plan of a configured stepper.
    pub fn of(stepper: &dyn Stepper) -> Self {
        Self {
            timesteps: stepper.timesteps().to_vec(),
            sigmas: stepper.sigmas().to_vec(),
            init_noise_sigma: stepper.init_noise_sigma(),
        }
    }
}

/// Builds a diffusers class over `model_config` with `overrides`, for `steps` steps.
pub fn build_stepper(
    class: DiffusersClass,
    model_config: &SchedulerConfig,
    overrides: &SchedulerConfig,
    steps: usize,
) -> Result<Box<dyn Stepper>, SchedulerError> {
    let config = model_config.with_overrides(overrides);
    match class {
        DiffusersClass::EulerDiscreteScheduler => Ok(Box::new(EulerDiscrete::new(&config, steps)?)),
        DiffusersClass::EulerAncestralDiscreteScheduler => {
            Ok(Box::new(EulerAncestralDiscrete::new(&config, steps)?))
        }
        DiffusersClass::DpmSolverMultistepScheduler => Ok(Box::new(
            super::dpmsolver_multistep::DpmSolverMultistep::new(&config, steps)?,
        )),
        DiffusersClass::HeunDiscreteScheduler => {
            Ok(Box::new(super::heun::HeunDiscrete::new(&config, steps)?))
        }
        DiffusersClass::LmsDiscreteScheduler => {
            Ok(Box::new(super::lms::LmsDiscrete::new(&config, steps)?))
        }
        DiffusersClass::Kdpm2DiscreteScheduler => {
            Ok(Box::new(super::kdpm2::Kdpm2Discrete::new(&config, steps)?))
        }
        DiffusersClass::Kdpm2AncestralDiscreteScheduler => Ok(Box::new(
            super::kdpm2::Kdpm2AncestralDiscrete::new(&config, steps)?,
        )),
        DiffusersClass::DpmSolverSdeScheduler => Ok(Box::new(
            super::dpmsolver_sde::DpmSolverSde::new(&config, steps)?,
        )),
        DiffusersClass::DpmSolverSinglestepScheduler => Ok(Box::new(
            super::dpmsolver_singlestep::DpmSolverSinglestep::new(&config, steps)?,
        )),
        DiffusersClass::UniPcMultistepScheduler => {
            Ok(Box::new(super::unipc::UniPcMultistep::new(&config, steps)?))
        }
        DiffusersClass::DeisMultistepScheduler => {
            Ok(Box::new(super::deis::DeisMultistep::new(&config, steps)?))
        }
        DiffusersClass::DdimScheduler => Ok(Box::new(super::ddim::Ddim::new(&config, steps)?)),
        DiffusersClass::DdpmScheduler => Ok(Box::new(super::ddpm::Ddpm::new(&config, steps)?)),
        DiffusersClass::PndmScheduler => Ok(Box::new(super::pndm::Pndm::new(&config, steps)?)),
        DiffusersClass::LcmScheduler => Ok(Box::new(super::lcm::Lcm::new(&config, steps)?)),
    }
}

/// Builds the stepper a preset names, for `steps` steps over the model's scheduler config.
pub fn build_preset(
    preset: &PresetDef,
    registry: &SchedulerRegistry,
    model_config: &SchedulerConfig,
    steps: usize,
) -> Result<Box<dyn Stepper>, SchedulerError> {
    match &preset.kind {
        PresetKind::Diffusers { class, config } => {
            build_stepper(*class, model_config, config, steps)
        }
        PresetKind::Sampling { sampler, schedule } => super::ksampler::build_sampling(
            registry,
            sampler,
            Some(schedule),
            model_config,
            steps,
            1.0,
        ),
    }
}
