//! From registry entries (a sampler and a schedule) to a running [`Stepper`], with ComfyUI's
//! sigma-list conventions: `discard_penultimate_sigma` and img2img by `denoise`.

use super::comfy::{Ddpm, Ipndm, Lcm};
use super::deis::Deis;
use super::dpm2::{Dpm2, Dpm2Ancestral};
use super::dpmpp::{Dpmpp2sAncestral, DpmppSde};
use super::dpmpp_multistep::{Dpmpp2m, Dpmpp2mSde, Dpmpp3mSde};
use super::euler::{Euler, EulerAncestral, Heun};
use super::lms::Lms;
use super::uni_pc::{UniPc, UniPcVariant};
use super::{KSampler, Method, param};
use crate::registry::{SamplerDef, SchedulerRegistry};
use crate::schedulers::config::{PredictionType, SchedulerConfig, SolverType};
use crate::schedulers::kinds::SamplerAlgorithm;
use crate::schedulers::sigmas::sigmas_with_steps_offset;
use crate::schedulers::stepper::{SchedulerError, Stepper};
use crate::schedulers::training::TrainingSchedule;

/// A request for `steps` steps of `sampler_name` over `schedule_name` (the sampler's
/// `default_schedule` when `None`), for the model whose scheduler config is `model_config`
/// (training betas, `prediction_type`, `steps_offset`), at img2img strength `denoise` in
/// (0, 1] (1 for text-to-image). Names are looked up by name, alias or label.
pub fn build_sampling(
    registry: &SchedulerRegistry,
    sampler_name: &str,
    schedule_name: Option<&str>,
    model_config: &SchedulerConfig,
    steps: usize,
    denoise: f64,
) -> Result<Box<dyn Stepper>, SchedulerError> {
    let lookup = |e: crate::registry::LookupError| SchedulerError::Config(e.to_string());
    let sampler = registry.sampler(sampler_name).map_err(lookup)?;
    let schedule = registry
        .schedule(schedule_name.unwrap_or(&sampler.default_schedule))
        .map_err(lookup)?;
    let training = TrainingSchedule::from_config(model_config)?;
    let steps_offset = model_config.steps_offset.unwrap_or(0);
    let discard = sampler.discard_penultimate_sigma;
    let sigmas = img2img_sigmas(steps, denoise, |n| {
        // ComfyUI `KSampler.calculate_sigmas`: one more step, then drop the penultimate sigma.
        let full = sigmas_with_steps_offset(
            n + usize::from(discard),
            &training,
            &schedule.kind,
            steps_offset,
        )?;
        Ok(if discard {
            discard_penultimate_sigma(full)
        } else {
            full
        })
    })?;
    let prediction = model_config
        .prediction_type
        .unwrap_or(PredictionType::Epsilon);
    build_sampler(sampler, sigmas, &training, prediction)
}

/// The stepper of `sampler` over an explicit sigma list.
pub fn build_sampler(
    sampler: &SamplerDef,
    sigmas: Vec<f64>,
    schedule: &TrainingSchedule,
    prediction: PredictionType,
) -> Result<Box<dyn Stepper>, SchedulerError> {
    Ok(Box::new(KSampler::new(
        method(sampler)?,
        sigmas,
        schedule,
        prediction,
    )?))
}

/// The algorithm of `sampler` with its registry parameters (k-diffusion's defaults for those
/// not set).
pub fn method(sampler: &SamplerDef) -> Result<Box<dyn Method>, SchedulerError> {
    let params = &sampler.params;
    let eta = param(params.eta, 1.0);
    let s_noise = param(params.s_noise, 1.0);
    let order = |default: u32| params.order.unwrap_or(default);
    use SamplerAlgorithm as A;
    Ok(match sampler.algorithm {
        A::Euler => Box::new(Euler),
        A::EulerAncestral => Box::new(EulerAncestral { eta, s_noise }),
        A::Heun => Box::new(Heun::default()),
        A::Dpm2 => Box::new(Dpm2::default()),
        A::Dpm2Ancestral => Box::new(Dpm2Ancestral::new(eta, s_noise)),
        A::Lms => Box::new(Lms::new(order(4))?),
        A::Dpmpp2sAncestral => Box::new(Dpmpp2sAncestral::new(eta, s_noise)),
        A::DpmppSde => Box::new(DpmppSde::new(eta, s_noise, param(params.r, 0.5))?),
        A::Dpmpp2m => Box::new(Dpmpp2m::default()),
        A::Dpmpp2mSde => {
            let solver = params.solver_type.unwrap_or(SolverType::Midpoint);
            Box::new(Dpmpp2mSde::new(eta, s_noise, solver)?)
        }
        A::Dpmpp3mSde => Box::new(Dpmpp3mSde::new(eta, s_noise)),
        A::Ddpm => Box::new(Ddpm),
        A::Lcm => Box::new(Lcm),
        A::Ipndm => Box::new(Ipndm::new(order(4))?),
        A::Deis => Box::new(Deis::new(order(3))?),
        A::UniPc => Box::new(UniPc::new(order(3), UniPcVariant::Bh1)?),
    })
}

/// Drops `sigmas[-2]` (ComfyUI / A1111 do this for DPM2 and UniPC, after computing the schedule
/// for one more step, so the last step is not wasted on a tiny interval).
pub fn discard_penultimate_sigma(mut sigmas: Vec<f64>) -> Vec<f64> {
    if sigmas.len() >= 3 {
        sigmas.remove(sigmas.len() - 2);
    }
    sigmas
}

/// ComfyUI's img2img sigmas (`KSampler.set_steps`): for `denoise` < 1 the schedule is computed
/// for `int(steps / denoise)` steps by `schedule` and only its last `steps + 1` sigmas are kept;
/// `denoise` above 0.9999 is the full schedule.
pub fn img2img_sigmas(
    steps: usize,
    denoise: f64,
    schedule: impl Fn(usize) -> Result<Vec<f64>, SchedulerError>,
) -> Result<Vec<f64>, SchedulerError> {
    if !(denoise > 0.0 && denoise <= 1.0) {
        return Err(SchedulerError::Config(format!(
            "denoise = {denoise}: must be in (0, 1]"
        )));
    }
    if denoise > 0.9999 {
        return schedule(steps);
    }
    let full = schedule((steps as f64 / denoise) as usize)?;
    let keep = (steps + 1).min(full.len());
    Ok(full[full.len() - keep..].to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn img2img_keeps_the_tail_of_a_longer_schedule() {
        let schedule = |n: usize| Ok((0..=n).rev().map(|i| i as f64).collect::<Vec<_>>());
        assert_eq!(
            img2img_sigmas(4, 1.0, schedule).unwrap(),
            vec![4.0, 3.0, 2.0, 1.0, 0.0]
        );
        // int(4 / 0.5) = 8 steps, last 5 sigmas.
        assert_eq!(
            img2img_sigmas(4, 0.5, schedule).unwrap(),
            vec![4.0, 3.0, 2.0, 1.0, 0.0]
        );
        assert_eq!(
            img2img_sigmas(3, 0.3, schedule).unwrap(),
            vec![3.0, 2.0, 1.0, 0.0]
        );
        assert!(img2img_sigmas(4, 0.0, schedule).is_err());
        assert!(img2img_sigmas(4, 1.5, schedule).is_err());
    }

    #[test]
    fn discarding_keeps_the_final_zero() {
        assert_eq!(
            discard_penultimate_sigma(vec![3.0, 2.0, 1.0, 0.0]),
            vec![3.0, 2.0, 0.0]
        );
    }
}
