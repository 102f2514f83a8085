//! diffusers `HeunDiscreteScheduler` (Karras et al. 2022, Algorithm 1 with `gamma = 0`), and the
//! bookkeeping every two-evaluation diffusers class shares ([`TwoStage`]): Heun, KDPM2,
//! KDPM2 ancestral and DPMSolverSDE list one timestep per model evaluation, the first
//! evaluation of a step returning an intermediate sample exactly as diffusers does.

use super::config::{PredictionType, SchedulerConfig, TimestepSpacing};
use super::euler::{discrete_init_noise_sigma, predicted_original, scale_by_sigma};
use super::noise::NoiseSource;
use super::spacing::{DiscretePlan, discrete_plan};
use super::stepper::{Sample, SchedulerError, Stepper, at};
use super::training::TrainingSchedule;

/// The config a diffusers port of a k-diffusion sampler (Heun, LMS, KDPM2, KDPM2 ancestral,
/// DPMSolverSDE) sees: the keys all of them take, with the class's `beta_start` / `beta_end`
/// defaults and `linspace` spacing for unset keys. Every other key of `config` is dropped, as
/// `Class.from_config` drops keys the class does not take (e.g. SDXL's `interpolation_type`,
/// `final_sigmas_type`); class-specific keys (`clip_sample`, `noise_sampler_seed`) are read by
/// the class itself.
pub fn k_class_config(config: &SchedulerConfig, beta_range: (f64, f64)) -> SchedulerConfig {
    SchedulerConfig {
        num_train_timesteps: config.num_train_timesteps,
        beta_start: Some(config.beta_start.unwrap_or(beta_range.0)),
        beta_end: Some(config.beta_end.unwrap_or(beta_range.1)),
        beta_schedule: config.beta_schedule,
        trained_betas: config.trained_betas.clone(),
        prediction_type: Some(config.prediction_type.unwrap_or(PredictionType::Epsilon)),
        use_karras_sigmas: config.use_karras_sigmas,
        use_exponential_sigmas: config.use_exponential_sigmas,
        use_beta_sigmas: config.use_beta_sigmas,
        timestep_spacing: Some(config.timestep_spacing.unwrap_or(TimestepSpacing::Linspace)),
        steps_offset: config.steps_offset,
        ..Default::default()
    }
}

/// `beta_start` / `beta_end` defaults of Heun, KDPM2, KDPM2 ancestral and DPMSolverSDE.
pub const SD_BETA_RANGE: (f64, f64) = (0.00085, 0.012);

/// Which evaluation of which step a model-evaluation index is, for the two-evaluation classes:
/// evaluations run `first(0), second(0), first(1), ..., first(N - 1)` (the last step, down to
/// sigma 0, has no second evaluation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// The first evaluation of the step (a first-order update to an intermediate sample).
    First(usize),
    /// The second evaluation of the step (the update from the step's start).
    Second(usize),
}

impl Stage {
    /// The stage of evaluation `index`.
    pub fn of(index: usize) -> Self {
        if index.is_multiple_of(2) {
            Stage::First(index / 2)
        } else {
            Stage::Second(index / 2)
        }
    }
}

/// Plan and history shared by the two-evaluation classes.
#[derive(Debug, Clone)]
pub struct TwoStage<S> {
    /// One timestep per model evaluation (2N - 1).
    pub timesteps: Vec<f64>,
    /// The N step sigmas plus the final one.
    pub sigmas: Vec<f64>,
    /// What the first evaluation left for the second: `(its index, the state)`.
    pending: Option<(usize, S)>,
}

impl<S> TwoStage<S> {
    /// `second_timesteps[k]` is the timestep of step k's second evaluation (N - 1 of them).
    pub fn new(first_timesteps: &[f64], second_timesteps: &[f64], sigmas: Vec<f64>) -> Self {
        let mut timesteps = Vec::with_capacity(2 * first_timesteps.len());
        for (k, &t) in first_timesteps.iter().enumerate() {
            timesteps.push(t);
            if let Some(&second) = second_timesteps.get(k) {
                timesteps.push(second);
            }
        }
        Self {
            timesteps,
            sigmas,
            pending: None,
        }
    }

    /// The stage of evaluation `index`, checked against the plan.
    pub fn stage(&self, index: usize) -> Result<Stage, SchedulerError> {
        at(&self.timesteps, index)?;
        Ok(Stage::of(index))
    }

    /// diffusers' interleaved `sigmas[index]` (`[s0, s1, s1, s2, s2, ...]`): the noise level
    /// `add_noise` uses at evaluation `index`.
    pub fn interleaved_sigma(&self, index: usize) -> Result<f64, SchedulerError> {
        at(&self.timesteps, index)?;
        at(&self.sigmas, index.div_ceil(2))
    }

    /// Keeps the first evaluation's state for the second.
    pub fn remember(&mut self, index: usize, state: S) {
        self.pending = Some((index, state));
    }

    /// The state the first evaluation of the step left, which the second evaluation `index`
    /// needs (evaluations must come in order).
    pub fn take(&mut self, index: usize) -> Result<S, SchedulerError> {
        match self.pending.take() {
            Some((first, state)) if first + 1 == index => Ok(state),
            _ => Err(SchedulerError::Config(format!(
                "model evaluation {index} is the second of a two-evaluation step; evaluation {} \
                 must be stepped just before it",
                index - 1
            ))),
        }
    }

    /// `original + noise * sigma` at evaluation `index` (diffusers `add_noise` with
    /// `begin_index = index`).
    pub fn add_noise(
        &self,
        original: &Sample,
        noise: &Sample,
        index: usize,
    ) -> Result<Sample, SchedulerError> {
        let sigma = self.interleaved_sigma(index)? as f32;
        Ok(original + &(noise * sigma))
    }
}

/// The training schedule and `set_timesteps` plan of a k-diffusion port (`config` as returned
/// by [`k_class_config`]).
pub fn k_class_plan(
    config: &SchedulerConfig,
    steps: usize,
) -> Result<(TrainingSchedule, DiscretePlan), SchedulerError> {
    let schedule = TrainingSchedule::from_config(config)?;
    let plan = discrete_plan(config, &schedule, steps, TimestepSpacing::Linspace)?;
    Ok((schedule, plan))
}

/// What Heun's first evaluation leaves for the second.
#[derive(Debug, Clone)]
struct HeunFirst {
    sample: Sample,
    derivative: Sample,
}

/// `HeunDiscreteScheduler`.
#[derive(Debug, Clone)]
pub struct HeunDiscrete {
    plan: TwoStage<HeunFirst>,
    prediction: PredictionType,
    clip: Option<f32>,
    init_noise_sigma: f64,
}

impl HeunDiscrete {
    /// Configured for `steps` inference steps.
    pub fn new(config: &SchedulerConfig, steps: usize) -> Result<Self, SchedulerError> {
        let clip = config
            .clip_sample
            .unwrap_or(false)
            .then(|| config.clip_sample_range.unwrap_or(1.0) as f32);
        let config = k_class_config(config, SD_BETA_RANGE);
        let (_, plan) = k_class_plan(&config, steps)?;
        let spacing = config.timestep_spacing.unwrap_or(TimestepSpacing::Linspace);
        let init_noise_sigma = discrete_init_noise_sigma(&plan.sigmas, spacing);
        // Each step after the first is evaluated twice at its own timestep:
        // [t0, t1, t1, t2, t2, ...] (the second evaluation of step k sits at sigma k + 1).
        Ok(Self {
            plan: TwoStage::new(&plan.timesteps, &plan.timesteps[1..], plan.sigmas),
            prediction: config.prediction_type.unwrap_or(PredictionType::Epsilon),
            clip,
            init_noise_sigma,
        })
    }

    fn denoise(&self, model_output: &Sample, sample: &Sample, sigma: f64) -> Sample {
        let denoised = predicted_original(self.prediction, model_output, sample, sigma);
        match self.clip {
            Some(range) => denoised.mapv(|v| v.clamp(-range, range)),
            None => denoised,
        }
    }
}

impl Stepper for HeunDiscrete {
    fn timesteps(&self) -> &[f64] {
        &self.plan.timesteps
    }

    fn sigmas(&self) -> &[f64] {
        &self.plan.sigmas
    }

    fn init_noise_sigma(&self) -> f64 {
        self.init_noise_sigma
    }

    fn scale_model_input(&self, sample: &Sample, index: usize) -> Result<Sample, SchedulerError> {
        Ok(scale_by_sigma(sample, self.plan.interleaved_sigma(index)?))
    }

    fn step(
        &mut self,
        model_output: &Sample,
        index: usize,
        sample: &Sample,
        _noise: &mut dyn NoiseSource,
    ) -> Result<Sample, SchedulerError> {
        match self.plan.stage(index)? {
            Stage::First(k) => {
                let sigma = self.plan.sigmas[k];
                let sigma_next = self.plan.sigmas[k + 1];
                let denoised = self.denoise(model_output, sample, sigma);
                let derivative = (sample - &denoised) / sigma as f32;
                let next = sample + &(&derivative * (sigma_next - sigma) as f32);
                self.plan.remember(
                    index,
                    HeunFirst {
                        sample: sample.clone(),
                        derivative,
                    },
                );
                Ok(next)
            }
            Stage::Second(k) => {
                let first = self.plan.take(index)?;
                let sigma = self.plan.sigmas[k];
                let sigma_next = self.plan.sigmas[k + 1];
                // The model saw the Euler prediction at sigma_next; average the two slopes.
                let denoised = self.denoise(model_output, sample, sigma_next);
                let derivative = (sample - &denoised) / sigma_next as f32;
                let mean = (first.derivative + derivative) / 2.0;
                Ok(first.sample + &(mean * (sigma_next - sigma) as f32))
            }
        }
    }

    fn add_noise(
        &self,
        original: &Sample,
        noise: &Sample,
        index: usize,
    ) -> Result<Sample, SchedulerError> {
        self.plan.add_noise(original, noise, index)
    }

    fn order(&self) -> usize {
        2
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stages_alternate_and_the_last_step_has_one_evaluation() {
        let plan: TwoStage<()> =
            TwoStage::new(&[3.0, 2.0, 1.0], &[2.0, 1.0], vec![9.0, 4.0, 1.0, 0.0]);
        assert_eq!(plan.timesteps, vec![3.0, 2.0, 2.0, 1.0, 1.0]);
        assert_eq!(plan.stage(3).unwrap(), Stage::Second(1));
        assert_eq!(plan.stage(4).unwrap(), Stage::First(2));
        assert!(plan.stage(5).is_err());
        let interleaved: Vec<f64> = (0..5).map(|i| plan.interleaved_sigma(i).unwrap()).collect();
        assert_eq!(interleaved, vec![9.0, 4.0, 4.0, 1.0, 1.0]);
    }

    #[test]
    fn second_evaluation_needs_the_first() {
        let mut plan: TwoStage<u8> = TwoStage::new(&[3.0, 2.0], &[2.0], vec![9.0, 4.0, 0.0]);
        assert!(plan.take(1).is_err());
        plan.remember(0, 7);
        assert_eq!(plan.take(1).unwrap(), 7);
    }

    #[test]
    fn defaults_are_the_class_defaults() {
        // HeunDiscreteScheduler() (diffusers 0.39): linear betas 0.00085..0.012, linspace.
        let heun = HeunDiscrete::new(&SchedulerConfig::default(), 4).unwrap();
        assert_eq!(
            heun.timesteps(),
            &[999.0, 666.0, 666.0, 333.0, 333.0, 0.0, 0.0]
        );
        assert_eq!(heun.order(), 2);
    }
}
