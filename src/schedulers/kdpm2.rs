//! diffusers `KDPM2DiscreteScheduler` and `KDPM2AncestralDiscreteScheduler`: DPM-Solver-2
//! (k-diffusion `sample_dpm_2` / `sample_dpm_2_ancestral`) with diffusers' own plan.
//!
//! Each step evaluates the model at its sigma and again at an interpolated sigma (the geometric
//! mean of the step's ends, or of its sigma and `sigma_down` for the ancestral variant), whose
//! timestep is interleaved into `timesteps`. The interpolated sigmas are computed in float32 like
//! diffusers' `sigmas.log().lerp(..., 0.5).exp()`.

use super::config::{PredictionType, SchedulerConfig, TimestepSpacing};
use super::euler::{ancestral_step, discrete_init_noise_sigma, predicted_original, scale_by_sigma};
use super::heun::{SD_BETA_RANGE, Stage, TwoStage, k_class_config, k_class_plan};
use super::noise::NoiseSource;
use super::spacing::{SigmaConversion, round_half_even};
use super::stepper::{Sample, SchedulerError, Stepper};
use super::training::TrainingSchedule;

/// `exp(lerp(ln a, ln b, 0.5))` in float32, as torch computes `a.log().lerp(b.log(), 0.5).exp()`
/// (torch's lerp at weight 0.5 is `end - (end - start) * 0.5`).
fn log_midpoint_f32(a: f64, b: f64) -> f64 {
    let (start, end) = ((a as f32).ln(), (b as f32).ln());
    f64::from((end - (end - start) * 0.5).exp())
}

/// What both variants share: the plan, the interpolated sigma of every step and the prediction.
#[derive(Debug, Clone)]
struct Kdpm2Core {
    plan: TwoStage<Sample>,
    /// The sigma of each step's second evaluation (N values).
    interpolated: Vec<f64>,
    prediction: PredictionType,
    init_noise_sigma: f64,
}

impl Kdpm2Core {
    /// `interpolate(schedule sigmas)` gives the N second-evaluation sigmas and the N - 1
    /// timesteps listed for them.
    fn new(
        config: &SchedulerConfig,
        steps: usize,
        class: &str,
        interpolate: impl FnOnce(&[f64], &TrainingSchedule) -> (Vec<f64>, Vec<f64>),
    ) -> Result<Self, SchedulerError> {
        let config = k_class_config(config, SD_BETA_RANGE);
        let prediction = config.prediction_type.unwrap_or(PredictionType::Epsilon);
        if prediction == PredictionType::Sample {
            return Err(SchedulerError::Unsupported(format!(
                "{class} prediction_type = \"sample\" (diffusers raises NotImplementedError)"
            )));
        }
        let (schedule, mut plan) = k_class_plan(&config, steps)?;
        if SigmaConversion::from_config(&config)? == SigmaConversion::Karras {
            // diffusers rounds the Karras timesteps of both KDPM2 classes (and only those).
            plan.timesteps = plan.timesteps.iter().map(|&t| round_half_even(t)).collect();
        }
        let spacing = config.timestep_spacing.unwrap_or(TimestepSpacing::Linspace);
        let (interpolated, second_timesteps) = interpolate(&plan.sigmas, &schedule);
        Ok(Self {
            init_noise_sigma: discrete_init_noise_sigma(&plan.sigmas, spacing),
            plan: TwoStage::new(&plan.timesteps, &second_timesteps, plan.sigmas),
            interpolated,
            prediction,
        })
    }

    /// The sigma the model sees at evaluation `index`.
    fn model_sigma(&self, index: usize) -> Result<f64, SchedulerError> {
        Ok(match self.plan.stage(index)? {
            Stage::First(k) => self.plan.sigmas[k],
            Stage::Second(k) => self.interpolated[k],
        })
    }

    /// The first evaluation of step `k`: an Euler step to the interpolated sigma.
    fn first(&mut self, model_output: &Sample, index: usize, k: usize, sample: &Sample) -> Sample {
        let sigma = self.plan.sigmas[k];
        let denoised = predicted_original(self.prediction, model_output, sample, sigma);
        let derivative = (sample - &denoised) / sigma as f32;
        self.plan.remember(index, sample.clone());
        sample + &(derivative * (self.interpolated[k] - sigma) as f32)
    }

    /// The second evaluation of step `k`: the slope at the interpolated sigma applied from the
    /// step's start down to `sigma_to`.
    fn second(
        &mut self,
        model_output: &Sample,
        index: usize,
        k: usize,
        sample: &Sample,
        sigma_to: f64,
    ) -> Result<Sample, SchedulerError> {
        let start = self.plan.take(index)?;
        let sigma_mid = self.interpolated[k];
        let denoised = predicted_original(self.prediction, model_output, sample, sigma_mid);
        let derivative = (sample - &denoised) / sigma_mid as f32;
        Ok(start + &(derivative * (sigma_to - self.plan.sigmas[k]) as f32))
    }
}

/// `KDPM2DiscreteScheduler`.
#[derive(Debug, Clone)]
pub struct Kdpm2Discrete {
    core: Kdpm2Core,
}

impl Kdpm2Discrete {
    /// Configured for `steps` inference steps.
    pub fn new(config: &SchedulerConfig, steps: usize) -> Result<Self, SchedulerError> {
        let core = Kdpm2Core::new(
            config,
            steps,
            "KDPM2DiscreteScheduler",
            |sigmas, schedule| {
                // Step k's midpoint: the geometric mean of sigmas k and k + 1 (0 for the last step,
                // whose first evaluation goes straight to sigma 0 and has no second).
                let interpolated: Vec<f64> = sigmas
                    .windows(2)
                    .map(|w| log_midpoint_f32(w[1], w[0]))
                    .collect();
                let timesteps = interpolated[..interpolated.len() - 1]
                    .iter()
                    .map(|&s| schedule.sigma_to_t(s))
                    .collect();
                (interpolated, timesteps)
            },
        )?;
        Ok(Self { core })
    }
}

impl Stepper for Kdpm2Discrete {
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
        Ok(scale_by_sigma(sample, self.core.model_sigma(index)?))
    }

    fn step(
        &mut self,
        model_output: &Sample,
        index: usize,
        sample: &Sample,
        _noise: &mut dyn NoiseSource,
    ) -> Result<Sample, SchedulerError> {
        match self.core.plan.stage(index)? {
            Stage::First(k) => Ok(self.core.first(model_output, index, k, sample)),
            Stage::Second(k) => {
                let sigma_next = self.core.plan.sigmas[k + 1];
                self.core.second(model_output, index, k, sample, sigma_next)
            }
        }
    }

    fn add_noise(
        &self,
        original: &Sample,
        noise: &Sample,
        index: usize,
    ) -> Result<Sample, SchedulerError> {
        self.core.plan.add_noise(original, noise, index)
    }

    fn order(&self) -> usize {
        2
    }
}

/// `KDPM2AncestralDiscreteScheduler` (eta = 1): the second evaluation steps to `sigma_down`
/// and adds fresh noise of `sigma_up`, one draw per step that has a second evaluation (the last
/// step, straight to sigma 0, draws none).
///
/// `sigma_down` / `sigma_up` come from [`ancestral_step`] in f64, stored as float32. diffusers
/// computes them in float32, where `sigma_next^2 - sigma_up^2` cancels when
/// `sigma_next << sigma`: with 2 `linspace` steps its interpolated timestep is 0.0096 where the
/// exact value (ours) is 0. Elsewhere the two agree to ~1e-4 in the timesteps.
#[derive(Debug, Clone)]
pub struct Kdpm2AncestralDiscrete {
    core: Kdpm2Core,
    /// `(sigma_down, sigma_up)` of every step.
    ancestral: Vec<(f64, f64)>,
}

impl Kdpm2AncestralDiscrete {
    /// Configured for `steps` inference steps.
    pub fn new(config: &SchedulerConfig, steps: usize) -> Result<Self, SchedulerError> {
        let mut ancestral = Vec::new();
        let core = Kdpm2Core::new(
            config,
            steps,
            "KDPM2AncestralDiscreteScheduler",
            |sigmas, schedule| {
                ancestral = sigmas
                    .windows(2)
                    .map(|w| {
                        // diffusers keeps them in float32 tensors.
                        let (down, up) = ancestral_step(w[0], w[1], 1.0);
                        (f64::from(down as f32), f64::from(up as f32))
                    })
                    .collect();
                // Step k's midpoint: the geometric mean of sigma k and its sigma_down; diffusers
                // zeroes the last step's (its first evaluation goes straight to sigma 0).
                let mut interpolated: Vec<f64> = sigmas
                    .iter()
                    .zip(&ancestral)
                    .map(|(&sigma, &(down, _))| log_midpoint_f32(sigma, down))
                    .collect();
                if let Some(last) = interpolated.last_mut() {
                    *last = 0.0;
                }
                let timesteps = interpolated[..interpolated.len() - 1]
                    .iter()
                    .map(|&s| schedule.sigma_to_t(s))
                    .collect();
                (interpolated, timesteps)
            },
        )?;
        Ok(Self { core, ancestral })
    }
}

impl Stepper for Kdpm2AncestralDiscrete {
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
        Ok(scale_by_sigma(sample, self.core.model_sigma(index)?))
    }

    fn step(
        &mut self,
        model_output: &Sample,
        index: usize,
        sample: &Sample,
        noise: &mut dyn NoiseSource,
    ) -> Result<Sample, SchedulerError> {
        match self.core.plan.stage(index)? {
            Stage::First(k) => Ok(self.core.first(model_output, index, k, sample)),
            Stage::Second(k) => {
                let (sigma_down, sigma_up) = self.ancestral[k];
                let stepped = self
                    .core
                    .second(model_output, index, k, sample, sigma_down)?;
                let fresh = noise.randn(model_output.shape());
                Ok(stepped + &(fresh * sigma_up as f32))
            }
        }
    }

    fn add_noise(
        &self,
        original: &Sample,
        noise: &Sample,
        index: usize,
    ) -> Result<Sample, SchedulerError> {
        self.core.plan.add_noise(original, noise, index)
    }

    fn order(&self) -> usize {
        2
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_match_diffusers_defaults() {
        // diffusers 0.39 KDPM2DiscreteScheduler().set_timesteps(3) and the ancestral variant.
        let kdpm2 = Kdpm2Discrete::new(&SchedulerConfig::default(), 3).unwrap();
        assert_eq!(kdpm2.timesteps().len(), 5);
        assert_eq!(kdpm2.timesteps()[0], 999.0);
        assert_eq!(kdpm2.timesteps()[2], 499.5);
        let ancestral = Kdpm2AncestralDiscrete::new(&SchedulerConfig::default(), 3).unwrap();
        assert_eq!(ancestral.timesteps().len(), 5);
        assert_eq!(ancestral.order(), 2);
    }

    #[test]
    fn sample_prediction_is_unsupported() {
        let config = SchedulerConfig {
            prediction_type: Some(PredictionType::Sample),
            ..Default::default()
        };
        assert!(matches!(
            Kdpm2Discrete::new(&config, 10),
            Err(SchedulerError::Unsupported(_))
        ));
    }
}
