//! diffusers `DDIMScheduler` (Song et al. 2020, arXiv:2010.02502) with eta = 0, the
//! deterministic sampler SDXL pipelines run by default.
//!
//! DDIM has no sigma list of its own; [`Stepper::sigmas`] reports
//! `sqrt((1 - acp) / acp)` at each timestep plus a final 0 ([`super::vp::sigmas_at_timesteps`]).

use super::config::{PredictionType, SchedulerConfig, TimestepSpacing};
use super::noise::NoiseSource;
use super::stepper::{Sample, SchedulerError, Stepper, at};
use super::vp::{
    X0Guard, add_noise_at_timestep, alpha_cumprod_at, combine, data_prediction, integer_timesteps,
    noise_prediction, raw_alphas_cumprod, sigmas_at_timesteps, training_schedule,
};

/// `DDIMScheduler` configured for a number of steps (eta = 0).
#[derive(Debug, Clone)]
pub struct Ddim {
    timesteps: Vec<f64>,
    sigmas: Vec<f64>,
    alphas_cumprod: Vec<f32>,
    final_alpha_cumprod: f32,
    prediction: PredictionType,
    guard: X0Guard,
    /// `num_train_timesteps // steps`: how far back the previous timestep is.
    stride: f64,
}

impl Ddim {
    /// Configured for `steps` inference steps.
    pub fn new(config: &SchedulerConfig, steps: usize) -> Result<Self, SchedulerError> {
        let schedule = training_schedule(config, true)?;
        let alphas_cumprod = raw_alphas_cumprod(config, &schedule);
        let timesteps = integer_timesteps(
            config.timestep_spacing.unwrap_or(TimestepSpacing::Leading),
            schedule.len(),
            steps,
            config.steps_offset.unwrap_or(0),
        )?;
        Ok(Self {
            sigmas: sigmas_at_timesteps(&schedule, &timesteps)?,
            timesteps,
            final_alpha_cumprod: if config.set_alpha_to_one.unwrap_or(true) {
                1.0
            } else {
                alphas_cumprod[0]
            },
            alphas_cumprod,
            prediction: config.prediction_type.unwrap_or(PredictionType::Epsilon),
            guard: X0Guard::from_config(config, Some(true)),
            stride: (schedule.len() / steps) as f64,
        })
    }
}

impl Stepper for Ddim {
    fn timesteps(&self) -> &[f64] {
        &self.timesteps
    }

    fn sigmas(&self) -> &[f64] {
        &self.sigmas
    }

    fn init_noise_sigma(&self) -> f64 {
        1.0
    }

    fn scale_model_input(&self, sample: &Sample, index: usize) -> Result<Sample, SchedulerError> {
        at(&self.timesteps, index)?;
        Ok(sample.clone())
    }

    fn step(
        &mut self,
        model_output: &Sample,
        index: usize,
        sample: &Sample,
        _noise: &mut dyn NoiseSource,
    ) -> Result<Sample, SchedulerError> {
        let t = at(&self.timesteps, index)?;
        let prev_t = t - self.stride;
        let acp = alpha_cumprod_at(&self.alphas_cumprod, t)?;
        let acp_prev = if prev_t >= 0.0 {
            alpha_cumprod_at(&self.alphas_cumprod, prev_t)?
        } else {
            self.final_alpha_cumprod
        };
        let (alpha, sigma) = (f64::from(acp.sqrt()), f64::from((1.0 - acp).sqrt()));
        let x0 = data_prediction(self.prediction, model_output, sample, alpha, sigma);
        let epsilon = noise_prediction(self.prediction, model_output, sample, alpha, sigma);
        let x0 = self.guard.apply(x0);
        // eta = 0: no variance, x_prev = sqrt(acp_prev) x0 + sqrt(1 - acp_prev) eps.
        let direction = f64::from((1.0 - acp_prev).sqrt());
        Ok(combine(&[
            (f64::from(acp_prev.sqrt()), &x0),
            (direction, &epsilon),
        ]))
    }

    fn add_noise(
        &self,
        original: &Sample,
        noise: &Sample,
        index: usize,
    ) -> Result<Sample, SchedulerError> {
        add_noise_at_timestep(
            &self.alphas_cumprod,
            at(&self.timesteps, index)?,
            original,
            noise,
        )
    }
}
