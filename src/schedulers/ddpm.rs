//! diffusers `DDPMScheduler`: ancestral sampling of the DDPM posterior (Ho et al. 2020,
//! arXiv:2006.11239, eq. 6-7), with fresh noise on every step whose timestep is above 0.
//!
//! DDPM has no sigma list of its own; [`Stepper::sigmas`] reports
//! `sqrt((1 - acp) / acp)` at each timestep plus a final 0 ([`super::vp::sigmas_at_timesteps`]).

use super::config::{PredictionType, SchedulerConfig, TimestepSpacing};
use super::noise::NoiseSource;
use super::stepper::{Sample, SchedulerError, Stepper, at};
use super::vp::{
    X0Guard, add_noise_at_timestep, alpha_cumprod_at, combine, data_prediction, integer_timesteps,
    raw_alphas_cumprod, sigmas_at_timesteps, training_schedule,
};

/// `variance_type` (`fixed_*`): the variance the fresh noise is scaled to.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Variance {
    /// `fixed_small`: beta~_t, the posterior variance.
    Small,
    /// `fixed_small_log`: exp(0.5 ln(beta~_t)), used as the standard deviation itself.
    SmallLog,
    /// `fixed_large`: beta_t.
    Large,
}

/// `DDPMScheduler` configured for a number of steps.
#[derive(Debug, Clone)]
pub struct Ddpm {
    timesteps: Vec<f64>,
    sigmas: Vec<f64>,
    alphas_cumprod: Vec<f32>,
    prediction: PredictionType,
    guard: X0Guard,
    variance: Variance,
}

impl Ddpm {
    /// Configured for `steps` inference steps.
    pub fn new(config: &SchedulerConfig, steps: usize) -> Result<Self, SchedulerError> {
        let variance = match config.variance_type.as_deref() {
            None | Some("fixed_small") => Variance::Small,
            Some("fixed_small_log") => Variance::SmallLog,
            Some("fixed_large") => Variance::Large,
            Some(other) => {
                return Err(SchedulerError::Unsupported(format!(
                    "DDPMScheduler with variance_type = \"{other}\""
                )));
            }
        };
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
            alphas_cumprod,
            prediction: config.prediction_type.unwrap_or(PredictionType::Epsilon),
            guard: X0Guard::from_config(config, Some(true)),
            variance,
        })
    }
}

impl Stepper for Ddpm {
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
        noise: &mut dyn NoiseSource,
    ) -> Result<Sample, SchedulerError> {
        let t = at(&self.timesteps, index)?;
        // diffusers `previous_timestep`: the entry after the first occurrence of t, or -1.
        let position = self.timesteps.iter().position(|&v| v == t).unwrap_or(index);
        let acp = alpha_cumprod_at(&self.alphas_cumprod, t)?;
        let acp_prev = match self.timesteps.get(position + 1) {
            Some(&prev_t) => alpha_cumprod_at(&self.alphas_cumprod, prev_t)?,
            None => 1.0,
        };
        let (beta, beta_prev) = (1.0 - acp, 1.0 - acp_prev);
        let current_alpha = acp / acp_prev;
        let current_beta = 1.0 - current_alpha;
        let x0 = data_prediction(
            self.prediction,
            model_output,
            sample,
            f64::from(acp.sqrt()),
            f64::from(beta.sqrt()),
        );
        let x0 = self.guard.apply(x0);
        // Posterior mean: eq. 7 of Ho et al.
        let x0_coefficient = acp_prev.sqrt() * current_beta / beta;
        let sample_coefficient = current_alpha.sqrt() * beta_prev / beta;
        let mean = combine(&[
            (f64::from(x0_coefficient), &x0),
            (f64::from(sample_coefficient), sample),
        ]);
        if t <= 0.0 {
            return Ok(mean);
        }
        let fresh = noise.randn(model_output.shape());
        let posterior = (beta_prev / beta * current_beta).max(1e-20);
        let std = match self.variance {
            Variance::Small => posterior.sqrt(),
            Variance::SmallLog => (0.5 * posterior.ln()).exp(),
            Variance::Large => current_beta.sqrt(),
        };
        Ok(combine(&[(1.0, &mean), (f64::from(std), &fresh)]))
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
