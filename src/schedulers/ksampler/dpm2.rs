//! DPM-Solver-2 midpoint samplers (Lu et al. 2022 with Karras et al.'s sigma parametrisation):
//! k-diffusion `sample_dpm_2` and `sample_dpm_2_ancestral`.

use super::{Evaluation, Method, Point, Stage, StepStart, add_fresh_noise, map2};
use crate::schedulers::euler::ancestral_step;
use crate::schedulers::noise::NoiseSource;
use crate::schedulers::stepper::{Sample, SchedulerError};

/// The geometric midpoint of two sigmas, as k-diffusion computes it:
/// `sigma.log().lerp(sigma_to.log(), 0.5).exp()` (torch's lerp at weight 0.5 is
/// `end - (end - start) * 0.5`).
pub(crate) fn log_midpoint(sigma: f64, sigma_to: f64) -> f64 {
    let (start, end) = (sigma.ln(), sigma_to.ln());
    (end - (end - start) * 0.5).exp()
}

/// The plan of both DPM2 variants: a second evaluation at the log midpoint between the step's
/// sigma and `target(step)`, except where the target is 0 (a plain Euler step).
fn midpoint_plan(sigmas: &[f64], target: impl Fn(usize) -> f64) -> Vec<Evaluation> {
    let mut plan = Vec::with_capacity(2 * sigmas.len());
    for step in 0..sigmas.len() - 1 {
        plan.push(Evaluation::first(step, sigmas));
        let to = target(step);
        if to != 0.0 {
            plan.push(Evaluation::second(step, log_midpoint(sigmas[step], to)));
        }
    }
    plan
}

/// The shared update: stage one steps to the midpoint (or all the way to a zero target),
/// stage two takes the full step from the start with the midpoint's slope.
fn midpoint_advance(
    start: &mut StepStart,
    point: &Point<'_>,
    x: &Sample,
    denoised: &Sample,
    target: f64,
) -> Result<Sample, SchedulerError> {
    let sigma = point.sigma();
    match point.eval.stage {
        Stage::First => {
            let d = map2(x, denoised, |x, den| (x - den) / sigma);
            if target == 0.0 {
                return Ok(map2(x, &d, |x, d| x + d * (target - sigma)));
            }
            let dt_1 = log_midpoint(sigma, target) - sigma;
            start.set(x, &d);
            Ok(map2(x, &d, |x, d| x + d * dt_1))
        }
        Stage::Second => {
            let (x_start, _) = start.take(point.eval.step)?;
            let sigma_mid = point.eval.sigma;
            let d_2 = map2(x, denoised, |x, den| (x - den) / sigma_mid);
            let dt_2 = target - sigma;
            Ok(map2(&x_start, &d_2, |x, d_2| x + d_2 * dt_2))
        }
    }
}

/// k-diffusion `sample_dpm_2` (`s_churn = 0`).
#[derive(Debug, Clone, Default)]
pub struct Dpm2 {
    start: StepStart,
}

impl Method for Dpm2 {
    fn plan(&self, sigmas: &[f64]) -> Result<Vec<Evaluation>, SchedulerError> {
        Ok(midpoint_plan(sigmas, |step| sigmas[step + 1]))
    }

    fn advance(
        &mut self,
        point: &Point<'_>,
        x: &Sample,
        denoised: &Sample,
        _noise: &mut dyn NoiseSource,
    ) -> Result<Sample, SchedulerError> {
        midpoint_advance(&mut self.start, point, x, denoised, point.sigma_next())
    }

    fn reset(&mut self) {
        self.start.clear();
    }
}

/// k-diffusion `sample_dpm_2_ancestral`: the DPM2 step down to `sigma_down`, then fresh noise
/// of `sigma_up` (drawn only after a two-stage step, as upstream).
#[derive(Debug, Clone)]
pub struct Dpm2Ancestral {
    /// Ancestral noise amount.
    pub eta: f64,
    /// Noise scale.
    pub s_noise: f64,
    start: StepStart,
}

impl Dpm2Ancestral {
    /// With these parameters.
    pub fn new(eta: f64, s_noise: f64) -> Self {
        Self {
            eta,
            s_noise,
            start: StepStart::default(),
        }
    }
}

impl Method for Dpm2Ancestral {
    fn plan(&self, sigmas: &[f64]) -> Result<Vec<Evaluation>, SchedulerError> {
        Ok(midpoint_plan(sigmas, |step| {
            ancestral_step(sigmas[step], sigmas[step + 1], self.eta).0
        }))
    }

    fn advance(
        &mut self,
        point: &Point<'_>,
        x: &Sample,
        denoised: &Sample,
        noise: &mut dyn NoiseSource,
    ) -> Result<Sample, SchedulerError> {
        let (sigma_down, sigma_up) = ancestral_step(point.sigma(), point.sigma_next(), self.eta);
        let stepped = midpoint_advance(&mut self.start, point, x, denoised, sigma_down)?;
        Ok(match point.eval.stage {
            Stage::Second => add_fresh_noise(stepped, self.s_noise * sigma_up, noise),
            Stage::First => stepped,
        })
    }

    fn reset(&mut self) {
        self.start.clear();
    }
}
