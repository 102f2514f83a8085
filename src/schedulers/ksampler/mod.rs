//! k-diffusion and ComfyUI samplers over a sigma list (the "sampler x schedule" model of A1111
//! and ComfyUI), driven through the diffusers-style [`Stepper`] interface.
//!
//! A k-diffusion sampler is a loop `for i in steps { denoised = model(x, sigmas[i]); x = ... }`.
//! Here that loop is turned inside out: every model evaluation the loop would make is listed up
//! front ([`Evaluation`]: which step, which stage of it, at which sigma), so the pipeline can run
//! `for i in 0..timesteps.len() { out = unet(scale_model_input(x, i), timesteps[i]);
//! x = step(out, i, x, noise) }`. `step` turns the raw UNet output into k-diffusion's denoised
//! prediction (`euler::predicted_original`) and hands it to the algorithm ([`Method`]), which
//! returns the sample the next evaluation sees: for two-stage methods (Heun, DPM2, DPM++ 2S/SDE)
//! the intermediate point after the first stage, as diffusers' `HeunDiscreteScheduler` does.
//!
//! Noise is never drawn here except through the `NoiseSource` argument, one draw per call of
//! k-diffusion's `noise_sampler` and in the same order, so a recorded stream replays exactly.
//!
//! Files, one per family: [`euler`] (Euler, Euler a, Heun), [`dpm2`], [`lms`], [`dpmpp`]
//! (single-step DPM++), [`dpmpp_multistep`], [`comfy`] (DDPM, LCM, iPNDM), [`deis`], [`uni_pc`].

pub mod comfy;
pub mod deis;
pub mod dpm2;
pub mod dpmpp;
pub mod dpmpp_multistep;
pub mod euler;
pub mod lms;
pub mod uni_pc;

mod build;
#[cfg(test)]
mod tests;

use ndarray::Zip;

use super::config::PredictionType;
use super::euler::{predicted_original, scale_by_sigma};
use super::noise::NoiseSource;
use super::stepper::{Sample, SchedulerError, Stepper};
use super::training::TrainingSchedule;

pub use build::{build_sampler, build_sampling, discard_penultimate_sigma, img2img_sigmas, method};

/// Which model evaluation of a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// The evaluation at the step's own sigma.
    First,
    /// The second evaluation of a two-stage method (Heun, DPM2, DPM++ 2S/SDE).
    Second,
}

/// One model evaluation of the plan.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Evaluation {
    /// The step (index into the sigma list) it belongs to.
    pub step: usize,
    /// First or second evaluation of that step.
    pub stage: Stage,
    /// The noise level the model is evaluated at.
    pub sigma: f64,
}

impl Evaluation {
    /// The first evaluation of `step`, at `sigmas[step]`.
    pub fn first(step: usize, sigmas: &[f64]) -> Self {
        Self {
            step,
            stage: Stage::First,
            sigma: sigmas[step],
        }
    }

    /// The second evaluation of `step`, at `sigma`.
    pub fn second(step: usize, sigma: f64) -> Self {
        Self {
            step,
            stage: Stage::Second,
            sigma,
        }
    }
}

/// Where an evaluation sits: the step sigmas and the evaluation.
#[derive(Debug, Clone, Copy)]
pub struct Point<'a> {
    /// All step sigmas (N + 1).
    pub sigmas: &'a [f64],
    /// The evaluation being consumed.
    pub eval: Evaluation,
}

impl Point<'_> {
    /// `sigmas[i]` of the current step.
    pub fn sigma(&self) -> f64 {
        self.sigmas[self.eval.step]
    }

    /// `sigmas[i + 1]` of the current step.
    pub fn sigma_next(&self) -> f64 {
        self.sigmas[self.eval.step + 1]
    }
}

/// A sampling algorithm: the evaluations it makes over a sigma list and the update each one
/// triggers. Implementations keep their history (multistep buffers, the start of a two-stage
/// step) between calls; [`KSampler`] calls them in plan order.
pub trait Method: Send {
    /// Every model evaluation for the step sigmas, in order. The default is one evaluation per
    /// step at its own sigma.
    fn plan(&self, sigmas: &[f64]) -> Result<Vec<Evaluation>, SchedulerError> {
        Ok((0..sigmas.len() - 1)
            .map(|step| Evaluation::first(step, sigmas))
            .collect())
    }

    /// Consumes the `denoised` prediction of evaluation `point` for the sample `x` the model
    /// saw, and returns the sample for the next evaluation (after the last one, the result).
    fn advance(
        &mut self,
        point: &Point<'_>,
        x: &Sample,
        denoised: &Sample,
        noise: &mut dyn NoiseSource,
    ) -> Result<Sample, SchedulerError>;

    /// Forgets all history (a new run starts at evaluation 0).
    fn reset(&mut self);
}

impl Method for Box<dyn Method> {
    fn plan(&self, sigmas: &[f64]) -> Result<Vec<Evaluation>, SchedulerError> {
        (**self).plan(sigmas)
    }

    fn advance(
        &mut self,
        point: &Point<'_>,
        x: &Sample,
        denoised: &Sample,
        noise: &mut dyn NoiseSource,
    ) -> Result<Sample, SchedulerError> {
        (**self).advance(point, x, denoised, noise)
    }

    fn reset(&mut self) {
        (**self).reset();
    }
}

/// A [`Method`] over a sigma list, as a [`Stepper`].
#[derive(Debug, Clone)]
pub struct KSampler<M> {
    method: M,
    sigmas: Vec<f64>,
    evaluations: Vec<Evaluation>,
    timesteps: Vec<f64>,
    prediction: PredictionType,
    next_index: usize,
}

impl<M: Method> KSampler<M> {
    /// `method` over `sigmas` (descending, ending at the final noise level, usually 0), for a
    /// model trained on `schedule` that predicts `prediction`.
    pub fn new(
        method: M,
        sigmas: Vec<f64>,
        schedule: &TrainingSchedule,
        prediction: PredictionType,
    ) -> Result<Self, SchedulerError> {
        validate_sigmas(&sigmas)?;
        let evaluations = method.plan(&sigmas)?;
        if let Some(bad) = evaluations
            .iter()
            .find(|e| e.sigma.is_nan() || e.sigma <= 0.0)
        {
            return Err(SchedulerError::Config(format!(
                "step {} would evaluate the model at sigma {}; only the last sigma may be 0",
                bad.step, bad.sigma
            )));
        }
        let timesteps = evaluations
            .iter()
            .map(|e| schedule.sigma_to_t(e.sigma))
            .collect();
        Ok(Self {
            method,
            sigmas,
            evaluations,
            timesteps,
            prediction,
            next_index: 0,
        })
    }

    /// The planned model evaluations.
    pub fn evaluations(&self) -> &[Evaluation] {
        &self.evaluations
    }

    fn evaluation(&self, index: usize) -> Result<Evaluation, SchedulerError> {
        self.evaluations
            .get(index)
            .copied()
            .ok_or(SchedulerError::IndexOutOfRange {
                index,
                len: self.evaluations.len(),
            })
    }
}

fn validate_sigmas(sigmas: &[f64]) -> Result<(), SchedulerError> {
    if sigmas.len() < 2 {
        return Err(SchedulerError::Config(format!(
            "a sampler needs at least 2 sigmas (1 step), got {}",
            sigmas.len()
        )));
    }
    if sigmas.iter().any(|s| !s.is_finite() || *s < 0.0) {
        return Err(SchedulerError::Config(format!(
            "sigmas must be finite and >= 0, got {sigmas:?}"
        )));
    }
    if sigmas.windows(2).any(|w| w[1] > w[0]) {
        return Err(SchedulerError::Config(format!(
            "sigmas must not increase, got {sigmas:?}"
        )));
    }
    Ok(())
}

impl<M: Method> Stepper for KSampler<M> {
    fn timesteps(&self) -> &[f64] {
        &self.timesteps
    }

    fn sigmas(&self) -> &[f64] {
        &self.sigmas
    }

    /// `sigmas[0]`: k-diffusion samplers start from `x = noise * sigmas[0]`, and the pipeline
    /// multiplies its initial noise by `init_noise_sigma` (ComfyUI uses `sqrt(1 + sigma^2)`
    /// instead when starting from the model's largest sigma; k-diffusion and A1111 do not).
    fn init_noise_sigma(&self) -> f64 {
        self.sigmas[0]
    }

    fn scale_model_input(&self, sample: &Sample, index: usize) -> Result<Sample, SchedulerError> {
        Ok(scale_by_sigma(sample, self.evaluation(index)?.sigma))
    }

    /// Evaluations must come in plan order; index 0 starts a new run.
    fn step(
        &mut self,
        model_output: &Sample,
        index: usize,
        sample: &Sample,
        noise: &mut dyn NoiseSource,
    ) -> Result<Sample, SchedulerError> {
        let eval = self.evaluation(index)?;
        if index == 0 {
            self.method.reset();
        } else if index != self.next_index {
            return Err(SchedulerError::Config(format!(
                "model evaluation {index} stepped out of order (expected {})",
                self.next_index
            )));
        }
        let denoised = predicted_original(self.prediction, model_output, sample, eval.sigma);
        let point = Point {
            sigmas: &self.sigmas,
            eval,
        };
        let next = self.method.advance(&point, sample, &denoised, noise)?;
        self.next_index = index + 1;
        Ok(next)
    }

    /// `original + noise * sigma` at evaluation `index` (k-diffusion semantics: img2img starts
    /// from the noised image at the first sigma of a shortened list, see [`img2img_sigmas`]).
    fn add_noise(
        &self,
        original: &Sample,
        noise: &Sample,
        index: usize,
    ) -> Result<Sample, SchedulerError> {
        let sigma = self.evaluation(index)?.sigma;
        Ok(combine(1.0, original, sigma, noise))
    }

    /// 2 for the two-stage methods, else 1. img2img with these steppers should shorten the
    /// sigma list ([`img2img_sigmas`]) rather than slice the timesteps by this order.
    fn order(&self) -> usize {
        if self.evaluations.iter().any(|e| e.stage == Stage::Second) {
            2
        } else {
            1
        }
    }
}

/// `a * x + b * y`, each element computed in f64.
pub fn combine(a: f64, x: &Sample, b: f64, y: &Sample) -> Sample {
    let mut out = x.clone();
    Zip::from(&mut out)
        .and(y)
        .for_each(|o, &yv| *o = (a * f64::from(*o) + b * f64::from(yv)) as f32);
    out
}

/// `f(x, y)` element-wise, computed in f64.
pub fn map2(x: &Sample, y: &Sample, f: impl Fn(f64, f64) -> f64) -> Sample {
    let mut out = x.clone();
    Zip::from(&mut out)
        .and(y)
        .for_each(|o, &yv| *o = f(f64::from(*o), f64::from(yv)) as f32);
    out
}

/// `f(x, y, z)` element-wise, computed in f64.
pub fn map3(x: &Sample, y: &Sample, z: &Sample, f: impl Fn(f64, f64, f64) -> f64) -> Sample {
    let mut out = x.clone();
    Zip::from(&mut out).and(y).and(z).for_each(|o, &yv, &zv| {
        *o = f(f64::from(*o), f64::from(yv), f64::from(zv)) as f32;
    });
    out
}

/// `sum(coeff * term)` over equally shaped samples, each element computed in f64.
pub fn weighted_sum(terms: &[(f64, &Sample)]) -> Sample {
    let mut acc = ndarray::ArrayD::<f64>::zeros(terms[0].1.raw_dim());
    for (coeff, term) in terms {
        Zip::from(&mut acc)
            .and(*term)
            .for_each(|a, &t| *a += coeff * f64::from(t));
    }
    acc.mapv(|v| v as f32)
}

/// Adds `scale * noise.randn()` to `x` (one draw).
pub fn add_fresh_noise(x: Sample, scale: f64, noise: &mut dyn NoiseSource) -> Sample {
    let fresh = noise.randn(x.shape());
    combine(1.0, &x, scale, &fresh)
}

/// The history a two-stage method keeps between its evaluations: the sample and the denoised
/// prediction at the start of the step.
#[derive(Debug, Clone, Default)]
pub struct StepStart {
    start: Option<(Sample, Sample)>,
}

impl StepStart {
    /// Remembers the start of a step.
    pub fn set(&mut self, x: &Sample, denoised: &Sample) {
        self.start = Some((x.clone(), denoised.clone()));
    }

    /// Takes the start of the step back (an error if the first stage did not run).
    pub fn take(&mut self, step: usize) -> Result<(Sample, Sample), SchedulerError> {
        self.start.take().ok_or_else(|| {
            SchedulerError::Config(format!(
                "the second evaluation of step {step} came without the first"
            ))
        })
    }

    /// Forgets it.
    pub fn clear(&mut self) {
        self.start = None;
    }
}

/// A sampler parameter read from the registry, with its k-diffusion default.
pub(crate) fn param(value: Option<f64>, default: f64) -> f64 {
    value.unwrap_or(default)
}
