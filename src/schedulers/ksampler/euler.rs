//! Karras et al. (2022) ODE samplers: Euler, ancestral Euler and Heun (k-diffusion
//! `sample_euler`, `sample_euler_ancestral`, `sample_heun`, without churn).

use super::{Evaluation, Method, Point, StepStart, add_fresh_noise, map2};
use crate::schedulers::euler::ancestral_step;
use crate::schedulers::noise::NoiseSource;
use crate::schedulers::stepper::{Sample, SchedulerError};

/// k-diffusion `sample_euler` (`s_churn = 0`): `x + d * (sigma_next - sigma)`.
#[derive(Debug, Clone, Default)]
pub struct Euler;

impl Method for Euler {
    fn advance(
        &mut self,
        point: &Point<'_>,
        x: &Sample,
        denoised: &Sample,
        _noise: &mut dyn NoiseSource,
    ) -> Result<Sample, SchedulerError> {
        Ok(euler_step(x, denoised, point.sigma(), point.sigma_next()))
    }

    fn reset(&mut self) {}
}

/// `x + (x - denoised) / sigma * (sigma_to - sigma)`.
pub(crate) fn euler_step(x: &Sample, denoised: &Sample, sigma: f64, sigma_to: f64) -> Sample {
    let dt = sigma_to - sigma;
    map2(x, denoised, |x, den| x + (x - den) / sigma * dt)
}

/// k-diffusion `sample_euler_ancestral`: an Euler step down to `sigma_down`, then fresh noise
/// of `sigma_up` (drawn while `sigma_next > 0`).
#[derive(Debug, Clone)]
pub struct EulerAncestral {
    /// Ancestral noise amount.
    pub eta: f64,
    /// Noise scale.
    pub s_noise: f64,
}

impl Method for EulerAncestral {
    fn advance(
        &mut self,
        point: &Point<'_>,
        x: &Sample,
        denoised: &Sample,
        noise: &mut dyn NoiseSource,
    ) -> Result<Sample, SchedulerError> {
        let (sigma, sigma_next) = (point.sigma(), point.sigma_next());
        let (sigma_down, sigma_up) = ancestral_step(sigma, sigma_next, self.eta);
        let stepped = euler_step(x, denoised, sigma, sigma_down);
        Ok(if sigma_next > 0.0 {
            add_fresh_noise(stepped, self.s_noise * sigma_up, noise)
        } else {
            stepped
        })
    }

    fn reset(&mut self) {}
}

/// k-diffusion `sample_heun` (`s_churn = 0`; Karras et al. 2022, Algorithm 1): an Euler step
/// to `sigma_next`, a second evaluation there, and the average slope; a plain Euler step when
/// `sigma_next` is 0.
#[derive(Debug, Clone, Default)]
pub struct Heun {
    start: StepStart,
}

impl Method for Heun {
    fn plan(&self, sigmas: &[f64]) -> Result<Vec<Evaluation>, SchedulerError> {
        let mut plan = Vec::with_capacity(2 * sigmas.len());
        for step in 0..sigmas.len() - 1 {
            plan.push(Evaluation::first(step, sigmas));
            if sigmas[step + 1] != 0.0 {
                plan.push(Evaluation::second(step, sigmas[step + 1]));
            }
        }
        Ok(plan)
    }

    fn advance(
        &mut self,
        point: &Point<'_>,
        x: &Sample,
        denoised: &Sample,
        _noise: &mut dyn NoiseSource,
    ) -> Result<Sample, SchedulerError> {
        let (sigma, sigma_next) = (point.sigma(), point.sigma_next());
        let dt = sigma_next - sigma;
        match point.eval.stage {
            super::Stage::First => {
                let d = map2(x, denoised, |x, den| (x - den) / sigma);
                let x_2 = map2(x, &d, |x, d| x + d * dt);
                if sigma_next != 0.0 {
                    self.start.set(x, &d);
                }
                Ok(x_2)
            }
            super::Stage::Second => {
                let (x_start, d) = self.start.take(point.eval.step)?;
                let d_2 = map2(x, denoised, |x, den| (x - den) / sigma_next);
                Ok(super::map3(&x_start, &d, &d_2, |x, d, d_2| {
                    x + (d + d_2) / 2.0 * dt
                }))
            }
        }
    }

    fn reset(&mut self) {
        self.start.clear();
    }
}
