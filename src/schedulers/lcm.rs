//! diffusers `LCMScheduler` (Luo et al. 2023, arXiv:2310.04378): each step maps the sample to
//! the consistency model's clean estimate, then noises it again to the next timestep.
//!
//! LCM has no sigma list of its own; [`Stepper::sigmas`] reports
//! `sqrt((1 - acp) / acp)` at each timestep plus a final 0 ([`super::vp::sigmas_at_timesteps`]).

use super::config::{BetaSchedule, PredictionType, SchedulerConfig};
use super::noise::NoiseSource;
use super::stepper::{Sample, SchedulerError, Stepper, at};
use super::vp::{
    X0Guard, add_noise_at_timestep, alpha_cumprod_at, combine, data_prediction, raw_alphas_cumprod,
    sigmas_at_timesteps, training_schedule,
};

/// `LCMScheduler` configured for a number of steps.
#[derive(Debug, Clone)]
pub struct Lcm {
    timesteps: Vec<f64>,
    sigmas: Vec<f64>,
    alphas_cumprod: Vec<f32>,
    final_alpha_cumprod: f32,
    prediction: PredictionType,
    guard: X0Guard,
    timestep_scaling: f64,
}

impl Lcm {
    /// Configured for `steps` inference steps.
    pub fn new(config: &SchedulerConfig, steps: usize) -> Result<Self, SchedulerError> {
        // LCM's class defaults are Stable Diffusion's betas, not DDPM's.
        let mut config = config.clone();
        config.beta_start.get_or_insert(0.00085);
        config.beta_end.get_or_insert(0.012);
        config
            .beta_schedule
            .get_or_insert(BetaSchedule::ScaledLinear);
        let schedule = training_schedule(&config, true)?;
        let alphas_cumprod = raw_alphas_cumprod(&config, &schedule);
        let timesteps = lcm_timesteps(
            schedule.len(),
            config.original_inference_steps.unwrap_or(50) as usize,
            steps,
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
            guard: X0Guard::from_config(&config, Some(false)),
            timestep_scaling: config.timestep_scaling.unwrap_or(10.0),
        })
    }
}

/// diffusers `LCMScheduler.set_timesteps` (strength 1): `steps` timesteps picked evenly from
/// the distillation schedule `k - 1, 2k - 1, ..., original * k - 1` (k = n_train / original),
/// from the top. `timestep_spacing` and `steps_offset` play no part.
fn lcm_timesteps(
    num_train_timesteps: usize,
    original_steps: usize,
    steps: usize,
) -> Result<Vec<f64>, SchedulerError> {
    if original_steps == 0 || original_steps > num_train_timesteps {
        return Err(SchedulerError::Config(format!(
            "LCMScheduler: original_inference_steps = {original_steps} must be between 1 and num_train_timesteps ({num_train_timesteps})"
        )));
    }
    if steps == 0 || steps > original_steps {
        return Err(SchedulerError::Config(format!(
            "LCMScheduler: steps = {steps} must be between 1 and original_inference_steps ({original_steps})"
        )));
    }
    let k = num_train_timesteps / original_steps;
    let origin: Vec<usize> = (1..=original_steps).rev().map(|i| i * k - 1).collect();
    let stride = original_steps as f64 / steps as f64;
    Ok((0..steps)
        .map(|i| origin[(i as f64 * stride).floor() as usize] as f64)
        .collect())
}

impl Stepper for Lcm {
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
        let prev_t = self.timesteps.get(index + 1).copied().unwrap_or(t);
        let acp = alpha_cumprod_at(&self.alphas_cumprod, t)?;
        let acp_prev = if prev_t >= 0.0 {
            alpha_cumprod_at(&self.alphas_cumprod, prev_t)?
        } else {
            self.final_alpha_cumprod
        };
        // Boundary-condition scalings (sigma_data = 0.5), in float32 as diffusers computes them.
        let scaled = (t * self.timestep_scaling) as f32;
        let c_skip = 0.25 / (scaled * scaled + 0.25);
        let c_out = scaled / (scaled * scaled + 0.25).sqrt();
        let x0 = data_prediction(
            self.prediction,
            model_output,
            sample,
            f64::from(acp.sqrt()),
            f64::from((1.0 - acp).sqrt()),
        );
        let x0 = self.guard.apply(x0);
        let denoised = combine(&[(f64::from(c_out), &x0), (f64::from(c_skip), sample)]);
        if index + 1 == self.timesteps.len() {
            return Ok(denoised);
        }
        let fresh = noise.randn(model_output.shape());
        Ok(combine(&[
            (f64::from(acp_prev.sqrt()), &denoised),
            (f64::from((1.0 - acp_prev).sqrt()), &fresh),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timesteps_match_diffusers() {
        // LCMScheduler().set_timesteps(4) and (7)
        assert_eq!(
            lcm_timesteps(1000, 50, 4).unwrap(),
            vec![999.0, 759.0, 499.0, 259.0]
        );
        assert_eq!(
            lcm_timesteps(1000, 50, 7).unwrap(),
            vec![999.0, 859.0, 719.0, 579.0, 439.0, 299.0, 159.0]
        );
    }
}
