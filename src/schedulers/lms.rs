//! diffusers `LMSDiscreteScheduler`: linear multistep in sigma with up to four past derivatives
//! (k-diffusion `sample_lms`, order 4 as diffusers' `step` defaults to).
//!
//! diffusers' `get_lms_coefficient` is k-diffusion's `linear_multistep_coeff`: the integral of a
//! Lagrange basis polynomial over the step, by `scipy.integrate.quad(epsrel=1e-4)`. The
//! integrand has degree `order - 1 <= 3`, which QUADPACK's 21-point Gauss-Kronrod rule
//! integrates exactly on its first pass, so quad's result differs from the exact integral only
//! by rounding; diffusers evaluates the integrand on float32 sigmas, which puts its coefficients
//! ~1e-7 relative from the exact ones. [`multistep_coefficient`] integrates with a Gauss-Legendre
//! rule that is exact for that degree (~1e-15 relative), so the samples agree with diffusers to
//! float32 rounding, far inside the 1e-4 parity tolerance; the quad tolerance of 1e-4 never
//! comes into play.

use std::collections::VecDeque;

use super::config::{PredictionType, SchedulerConfig, TimestepSpacing};
use super::euler::{discrete_init_noise_sigma, predicted_original, scale_by_sigma};
use super::heun::{k_class_config, k_class_plan};
use super::ksampler::lms::multistep_coefficient;
use super::noise::NoiseSource;
use super::stepper::{Sample, SchedulerError, Stepper, at};

/// diffusers' `step(order=4)` default.
const LMS_ORDER: usize = 4;

/// `LMSDiscreteScheduler`.
#[derive(Debug, Clone)]
pub struct LmsDiscrete {
    timesteps: Vec<f64>,
    sigmas: Vec<f64>,
    prediction: PredictionType,
    init_noise_sigma: f64,
    /// Past derivatives, newest last, and the index of the evaluation that made the newest.
    derivatives: VecDeque<Sample>,
    last_index: Option<usize>,
}

impl LmsDiscrete {
    /// Configured for `steps` inference steps.
    pub fn new(config: &SchedulerConfig, steps: usize) -> Result<Self, SchedulerError> {
        // LMS keeps diffusers' generic defaults (linear betas 0.0001..0.02).
        let config = k_class_config(config, (0.0001, 0.02));
        let (_, plan) = k_class_plan(&config, steps)?;
        let spacing = config.timestep_spacing.unwrap_or(TimestepSpacing::Linspace);
        Ok(Self {
            init_noise_sigma: discrete_init_noise_sigma(&plan.sigmas, spacing),
            timesteps: plan.timesteps,
            sigmas: plan.sigmas,
            prediction: config.prediction_type.unwrap_or(PredictionType::Epsilon),
            derivatives: VecDeque::with_capacity(LMS_ORDER + 1),
            last_index: None,
        })
    }
}

impl Stepper for LmsDiscrete {
    fn timesteps(&self) -> &[f64] {
        &self.timesteps
    }

    fn sigmas(&self) -> &[f64] {
        &self.sigmas
    }

    fn init_noise_sigma(&self) -> f64 {
        self.init_noise_sigma
    }

    fn scale_model_input(&self, sample: &Sample, index: usize) -> Result<Sample, SchedulerError> {
        at(&self.timesteps, index)?;
        Ok(scale_by_sigma(sample, self.sigmas[index]))
    }

    /// A step that does not follow the previous one starts a fresh history, like a new
    /// `set_timesteps`. As in diffusers, the order is `min(index + 1, 4)` even when fewer
    /// derivatives are known (img2img starting mid-schedule): the coefficients of that order are
    /// paired with the derivatives there are, newest first.
    fn step(
        &mut self,
        model_output: &Sample,
        index: usize,
        sample: &Sample,
        _noise: &mut dyn NoiseSource,
    ) -> Result<Sample, SchedulerError> {
        at(&self.timesteps, index)?;
        if self.last_index.is_none_or(|last| last + 1 != index) {
            self.derivatives.clear();
        }
        let sigma = self.sigmas[index];
        let denoised = predicted_original(self.prediction, model_output, sample, sigma);
        self.derivatives
            .push_back((sample - &denoised) / sigma as f32);
        if self.derivatives.len() > LMS_ORDER {
            self.derivatives.pop_front();
        }
        self.last_index = Some(index);
        let order = (index + 1).min(LMS_ORDER);
        let mut next = sample.clone();
        for (j, derivative) in self.derivatives.iter().rev().enumerate().take(order) {
            let coefficient = multistep_coefficient(order, &self.sigmas, index, j);
            next.scaled_add(coefficient as f32, derivative);
        }
        Ok(next)
    }

    fn add_noise(
        &self,
        original: &Sample,
        noise: &Sample,
        index: usize,
    ) -> Result<Sample, SchedulerError> {
        at(&self.timesteps, index)?;
        Ok(original + &(noise * self.sigmas[index] as f32))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coefficients_match_scipy_quad() {
        // diffusers' get_lms_coefficient(4, 3, j) (scipy.integrate.quad of the order-4 Lagrange
        // basis over [1.0, 0.5] with nodes sigmas[3..=0] = 1.0, 2.0, 4.0, 8.0, float64).
        let sigmas = [8.0, 4.0, 2.0, 1.0, 0.5];
        let expected = [
            -0.707_093_253_968_253_8,
            0.254_774_305_555_555_6,
            -0.050_998_263_888_888_895,
            0.003_317_212_301_587_301,
        ];
        for (j, want) in expected.iter().enumerate() {
            let got = multistep_coefficient(4, &sigmas, 3, j);
            assert!((got - want).abs() < 1e-12, "j = {j}: {got} vs {want}");
        }
        // Order 1 is the Euler step.
        assert_eq!(multistep_coefficient(1, &sigmas, 0, 0), -4.0);
    }
}
