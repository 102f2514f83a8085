//! The interface every scheduler implements, in diffusers' terms: a list of model evaluations
//! (`timesteps`), input scaling, and a `step` that consumes one model output.
//!
//! Steps are addressed by the index of the model evaluation, never by a float timestep value.
//! Multi-evaluation methods (Heun, DPM2, ...) list one timestep per evaluation and return the
//! intermediate sample from the first evaluation of a step, as diffusers does.

use ndarray::ArrayD;

use super::noise::NoiseSource;

/// Latents (or any sample) flowing through a scheduler.
pub type Sample = ArrayD<f32>;

/// Errors from building or running a scheduler.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SchedulerError {
    /// The merged config is unusable (names the key and the problem).
    #[error("scheduler config: {0}")]
    Config(String),
    /// The combination is not supported (e.g. a class option not implemented).
    #[error("unsupported scheduler setting: {0}")]
    Unsupported(String),
    /// A step index outside the plan.
    #[error("step index {index} is outside the plan of {len} model evaluations")]
    IndexOutOfRange {
        /// The index asked for.
        index: usize,
        /// Number of evaluations.
        len: usize,
    },
}

/// A scheduler configured for a number of inference steps.
pub trait Stepper: Send {
    /// The UNet timestep of every model evaluation, in order (diffusers `scheduler.timesteps`).
    fn timesteps(&self) -> &[f64];

    /// The noise level before each step plus the final one (N + 1 values).
    fn sigmas(&self) -> &[f64];

    /// Standard deviation of the initial noise (diffusers `init_noise_sigma`).
    fn init_noise_sigma(&self) -> f64;

    /// The sample as the model should see it at evaluation `index` (diffusers
    /// `scale_model_input`).
    fn scale_model_input(&self, sample: &Sample, index: usize) -> Result<Sample, SchedulerError>;

    /// Consumes the model output of evaluation `index` for the current `sample` and returns the
    /// next sample. Stochastic methods draw from `noise`.
    fn step(
        &mut self,
        model_output: &Sample,
        index: usize,
        sample: &Sample,
        noise: &mut dyn NoiseSource,
    ) -> Result<Sample, SchedulerError>;

    /// Noises a clean sample to the level of evaluation `index` (img2img's first step;
    /// diffusers `add_noise`).
    fn add_noise(
        &self,
        original: &Sample,
        noise: &Sample,
        index: usize,
    ) -> Result<Sample, SchedulerError>;

    /// Model evaluations per step for img2img slicing (diffusers `scheduler.order`).
    fn order(&self) -> usize {
        1
    }
}

/// `values[index]`, or an [`SchedulerError::IndexOutOfRange`].
pub fn at(values: &[f64], index: usize) -> Result<f64, SchedulerError> {
    values
        .get(index)
        .copied()
        .ok_or(SchedulerError::IndexOutOfRange {
            index,
            len: values.len(),
        })
}
