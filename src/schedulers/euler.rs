//! diffusers `EulerDiscreteScheduler` and `EulerAncestralDiscreteScheduler`.

use super::config::{PredictionType, SchedulerConfig, TimestepSpacing};
use super::noise::NoiseSource;
use super::spacing::{DiscretePlan, discrete_plan};
use super::stepper::{Sample, SchedulerError, Stepper, at};
use super::training::TrainingSchedule;

/// What the model predicts, turned into the denoised sample (x0) at noise level `sigma`
/// (k-diffusion's denoiser wrapper; diffusers' `pred_original_sample` for the sigma schedulers).
pub fn predicted_original(
    prediction: PredictionType,
    model_output: &Sample,
    sample: &Sample,
    sigma: f64,
) -> Sample {
    match prediction {
        PredictionType::Epsilon => sample - &(model_output * sigma as f32),
        PredictionType::VPrediction => {
            let c_out = (-sigma / (sigma * sigma + 1.0).sqrt()) as f32;
            let c_skip = (1.0 / (sigma * sigma + 1.0)) as f32;
            model_output * c_out + &(sample * c_skip)
        }
        PredictionType::Sample => model_output.clone(),
    }
}

/// `sample / sqrt(sigma^2 + 1)`: the input scaling of every sigma-based scheduler.
pub fn scale_by_sigma(sample: &Sample, sigma: f64) -> Sample {
    sample / ((sigma * sigma + 1.0).sqrt() as f32)
}

/// `sqrt(max_sigma^2 + 1)`, or `max_sigma` for linspace/trailing spacing (diffusers
/// `init_noise_sigma` of the sigma-based schedulers).
pub fn discrete_init_noise_sigma(sigmas: &[f64], spacing: TimestepSpacing) -> f64 {
    let max = sigmas.iter().copied().fold(0.0, f64::max);
    match spacing {
        TimestepSpacing::Linspace | TimestepSpacing::Trailing => max,
        TimestepSpacing::Leading => (max * max + 1.0).sqrt(),
    }
}

/// A plan plus what both Euler variants need to step it.
#[derive(Debug, Clone)]
struct EulerCore {
    plan: DiscretePlan,
    prediction: PredictionType,
    init_noise_sigma: f64,
}

impl EulerCore {
    fn new(
        config: &SchedulerConfig,
        steps: usize,
        karras_allowed: bool,
    ) -> Result<Self, SchedulerError> {
        let schedule = TrainingSchedule::from_config(config)?;
        let mut config = config.clone();
        if !karras_allowed {
            // EulerAncestral's set_timesteps has no sigma conversions.
            config.use_karras_sigmas = None;
            config.use_exponential_sigmas = None;
            config.use_beta_sigmas = None;
            config.final_sigmas_type = None;
        }
        let spacing = config.timestep_spacing.unwrap_or(TimestepSpacing::Linspace);
        let plan = discrete_plan(&config, &schedule, steps, TimestepSpacing::Linspace)?;
        let init_noise_sigma = discrete_init_noise_sigma(&plan.sigmas, spacing);
        Ok(Self {
            plan,
            prediction: config.prediction_type.unwrap_or(PredictionType::Epsilon),
            init_noise_sigma,
        })
    }

    fn add_noise(
        &self,
        original: &Sample,
        noise: &Sample,
        index: usize,
    ) -> Result<Sample, SchedulerError> {
        let sigma = at(&self.plan.sigmas, index)? as f32;
        Ok(original + &(noise * sigma))
    }
}

/// `EulerDiscreteScheduler` (no churn: `s_churn = 0`, as every SDXL pipeline calls it).
#[derive(Debug, Clone)]
pub struct EulerDiscrete {
    core: EulerCore,
}

impl EulerDiscrete {
    /// Configured for `steps` inference steps.
    pub fn new(config: &SchedulerConfig, steps: usize) -> Result<Self, SchedulerError> {
        if config.timestep_type == Some(super::config::TimestepType::Continuous) {
            return Err(SchedulerError::Unsupported(
                "EulerDiscreteScheduler timestep_type = \"continuous\"".into(),
            ));
        }
        Ok(Self {
            core: EulerCore::new(config, steps, true)?,
        })
    }
}

impl Stepper for EulerDiscrete {
    fn timesteps(&self) -> &[f64] {
        &self.core.plan.timesteps
    }

    fn sigmas(&self) -> &[f64] {
        &self.core.plan.sigmas
    }

    fn init_noise_sigma(&self) -> f64 {
        self.core.init_noise_sigma
    }

    fn scale_model_input(&self, sample: &Sample, index: usize) -> Result<Sample, SchedulerError> {
        Ok(scale_by_sigma(sample, at(&self.core.plan.sigmas, index)?))
    }

    fn step(
        &mut self,
        model_output: &Sample,
        index: usize,
        sample: &Sample,
        _noise: &mut dyn NoiseSource,
    ) -> Result<Sample, SchedulerError> {
        let sigma = at(&self.core.plan.sigmas, index)?;
        let sigma_next = at(&self.core.plan.sigmas, index + 1)?;
        let denoised = predicted_original(self.core.prediction, model_output, sample, sigma);
        // derivative = (x - x0) / sigma; x_next = x + derivative * (sigma_next - sigma)
        let derivative = (sample - &denoised) / sigma as f32;
        Ok(sample + &(derivative * (sigma_next - sigma) as f32))
    }

    fn add_noise(
        &self,
        original: &Sample,
        noise: &Sample,
        index: usize,
    ) -> Result<Sample, SchedulerError> {
        self.core.add_noise(original, noise, index)
    }
}

/// `EulerAncestralDiscreteScheduler` (eta = 1).
#[derive(Debug, Clone)]
pub struct EulerAncestralDiscrete {
    core: EulerCore,
}

impl EulerAncestralDiscrete {
    /// Configured for `steps` inference steps.
    pub fn new(config: &SchedulerConfig, steps: usize) -> Result<Self, SchedulerError> {
        Ok(Self {
            core: EulerCore::new(config, steps, false)?,
        })
    }
}

impl Stepper for EulerAncestralDiscrete {
    fn timesteps(&self) -> &[f64] {
        &self.core.plan.timesteps
    }

    fn sigmas(&self) -> &[f64] {
        &self.core.plan.sigmas
    }

    fn init_noise_sigma(&self) -> f64 {
        self.core.init_noise_sigma
    }

    fn scale_model_input(&self, sample: &Sample, index: usize) -> Result<Sample, SchedulerError> {
        Ok(scale_by_sigma(sample, at(&self.core.plan.sigmas, index)?))
    }

    fn step(
        &mut self,
        model_output: &Sample,
        index: usize,
        sample: &Sample,
        noise: &mut dyn NoiseSource,
    ) -> Result<Sample, SchedulerError> {
        let sigma = at(&self.core.plan.sigmas, index)?;
        let sigma_next = at(&self.core.plan.sigmas, index + 1)?;
        let denoised = predicted_original(self.core.prediction, model_output, sample, sigma);
        let (sigma_down, sigma_up) = ancestral_step(sigma, sigma_next, 1.0);
        let derivative = (sample - &denoised) / sigma as f32;
        let stepped = sample + &(derivative * (sigma_down - sigma) as f32);
        // diffusers draws the noise on every step, including the last (where sigma_up = 0).
        let fresh = noise.randn(model_output.shape());
        Ok(stepped + &(fresh * sigma_up as f32))
    }

    fn add_noise(
        &self,
        original: &Sample,
        noise: &Sample,
        index: usize,
    ) -> Result<Sample, SchedulerError> {
        self.core.add_noise(original, noise, index)
    }
}

/// Splits a step from `sigma_from` to `sigma_to` into a deterministic part down to `sigma_down`
/// and fresh noise of `sigma_up` (k-diffusion `get_ancestral_step`).
pub fn ancestral_step(sigma_from: f64, sigma_to: f64, eta: f64) -> (f64, f64) {
    if eta == 0.0 || sigma_from == 0.0 {
        return (sigma_to, 0.0);
    }
    let up =
        (sigma_to.powi(2) * (sigma_from.powi(2) - sigma_to.powi(2)) / sigma_from.powi(2)).sqrt();
    let sigma_up = sigma_to.min(eta * up);
    let sigma_down = (sigma_to.powi(2) - sigma_up.powi(2)).sqrt();
    (sigma_down, sigma_up)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedulers::config::BetaSchedule;

    #[test]
    fn sdxl_plan_matches_diffusers_for_ten_steps() {
        // diffusers 0.39: EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012,
        // beta_schedule="scaled_linear", steps_offset=1, timestep_spacing="leading").set_timesteps(10)
        let config = SchedulerConfig {
            beta_start: Some(0.00085),
            beta_end: Some(0.012),
            beta_schedule: Some(BetaSchedule::ScaledLinear),
            steps_offset: Some(1),
            timestep_spacing: Some(TimestepSpacing::Leading),
            ..Default::default()
        };
        let euler = EulerDiscrete::new(&config, 10).unwrap();
        assert_eq!(
            euler.timesteps(),
            &[
                901.0, 801.0, 701.0, 601.0, 501.0, 401.0, 301.0, 201.0, 101.0, 1.0
            ]
        );
        let expected = [
            8.390686988830566,
            5.134433269500732,
            3.3477649688720703,
            2.2928547859191895,
            1.6236929893493652,
            1.1682164669036865,
            0.8356532454490662,
            0.574050784111023,
            0.3461872935295105,
            0.04131447896361351,
            0.0,
        ];
        for (got, want) in euler.sigmas().iter().zip(expected) {
            assert!((got - want).abs() <= 1e-6 * want, "{got} vs {want}");
        }
        assert!((euler.init_noise_sigma() - 8.4501).abs() < 1e-4);
    }
}
