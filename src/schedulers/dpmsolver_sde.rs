//! diffusers `DPMSolverSDEScheduler`: stochastic DPM-Solver++ with a midpoint at r = 1/2
//! (k-diffusion `sample_dpmpp_sde`, eta = 1, s_noise = 1), two model evaluations per step.
//!
//! diffusers draws its noise from a `torchsde` Brownian tree seeded by `noise_sampler_seed`
//! (`BrownianTreeNoiseSampler(sigma, sigma_next)`, a standard-normal increment). Here every call
//! of that noise sampler is one `randn` of the [`NoiseSource`], in diffusers' call order (both
//! evaluations of every step but the last), so recorded noise replays exactly. A seeded source
//! therefore gives independent Gaussian increments, not a Brownian tree: the marginal
//! distribution of each step is the same, but the increments of overlapping intervals are not
//! correlated as a tree's would be, and results differ from diffusers' for the same seed.

use super::config::{PredictionType, SchedulerConfig, TimestepSpacing};
use super::euler::{ancestral_step, discrete_init_noise_sigma, predicted_original, scale_by_sigma};
use super::heun::{SD_BETA_RANGE, Stage, TwoStage, k_class_config, k_class_plan};
use super::noise::NoiseSource;
use super::stepper::{Sample, SchedulerError, Stepper};

/// `DPMSolverSDEScheduler`.
#[derive(Debug, Clone)]
pub struct DpmSolverSde {
    plan: TwoStage<Sample>,
    /// Each step's midpoint sigma `exp(-(t + t_next) / 2)` with `t = -ln sigma` (N - 1 values:
    /// the last step, to sigma 0, is a single Euler evaluation).
    midpoints: Vec<f64>,
    prediction: PredictionType,
    init_noise_sigma: f64,
}

impl DpmSolverSde {
    /// Configured for `steps` inference steps.
    pub fn new(config: &SchedulerConfig, steps: usize) -> Result<Self, SchedulerError> {
        if config.noise_sampler_seed.is_some() {
            return Err(SchedulerError::Unsupported(
                "DPMSolverSDEScheduler noise_sampler_seed: the Brownian tree is replaced by the \
                 request's noise source (seed that instead)"
                    .into(),
            ));
        }
        let config = k_class_config(config, SD_BETA_RANGE);
        let prediction = config.prediction_type.unwrap_or(PredictionType::Epsilon);
        if prediction == PredictionType::Sample {
            return Err(SchedulerError::Unsupported(
                "DPMSolverSDEScheduler prediction_type = \"sample\" (diffusers raises \
                 NotImplementedError)"
                    .into(),
            ));
        }
        let (schedule, plan) = k_class_plan(&config, steps)?;
        let spacing = config.timestep_spacing.unwrap_or(TimestepSpacing::Linspace);
        let step_sigmas = &plan.sigmas[..plan.sigmas.len() - 1];
        let midpoints: Vec<f64> = step_sigmas
            .windows(2)
            .map(|w| log_midpoint(w[0], w[1]))
            .collect();
        let second_timesteps: Vec<f64> =
            midpoints.iter().map(|&s| schedule.sigma_to_t(s)).collect();
        Ok(Self {
            init_noise_sigma: discrete_init_noise_sigma(&plan.sigmas, spacing),
            plan: TwoStage::new(&plan.timesteps, &second_timesteps, plan.sigmas),
            midpoints,
            prediction,
        })
    }

    /// One DPM-Solver++ (SDE) update of `start` from sigma to `sigma_to` with the data
    /// prediction `denoised`, plus `sigma_up` of fresh noise (k-diffusion `sample_dpmpp_sde`).
    fn ancestral_update(
        start: &Sample,
        denoised: &Sample,
        sigma: f64,
        sigma_to: f64,
        noise: &mut dyn NoiseSource,
    ) -> Sample {
        let (sigma_down, sigma_up) = ancestral_step(sigma, sigma_to, 1.0);
        // x' = (sigma_down / sigma) x - expm1(ln(sigma_down / sigma)) x0: diffusers'
        // `sigma_fn(ancestral_t) / sigma_fn(t) * x - (t - ancestral_t).expm1() * x0`.
        let log_ratio = sigma_down.ln() - sigma.ln();
        let stepped = start * (sigma_down / sigma) as f32 - &(denoised * log_ratio.exp_m1() as f32);
        let fresh = noise.randn(denoised.shape());
        stepped + &(fresh * sigma_up as f32)
    }
}

/// `exp(-(t + t_next) / 2)` with `t = -ln a`, `t_next = -ln b`: the geometric mean.
fn log_midpoint(a: f64, b: f64) -> f64 {
    let (t, t_next) = (-a.ln(), -b.ln());
    (-(t + (t_next - t) * 0.5)).exp()
}

impl Stepper for DpmSolverSde {
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
        let sigma = match self.plan.stage(index)? {
            Stage::First(k) => self.plan.sigmas[k],
            Stage::Second(k) => self.midpoints[k],
        };
        Ok(scale_by_sigma(sample, sigma))
    }

    fn step(
        &mut self,
        model_output: &Sample,
        index: usize,
        sample: &Sample,
        noise: &mut dyn NoiseSource,
    ) -> Result<Sample, SchedulerError> {
        match self.plan.stage(index)? {
            Stage::First(k) => {
                let sigma = self.plan.sigmas[k];
                let sigma_next = self.plan.sigmas[k + 1];
                let denoised = predicted_original(self.prediction, model_output, sample, sigma);
                if sigma_next == 0.0 {
                    // The last step: an Euler step to sigma 0, i.e. the denoised sample.
                    let derivative = (sample - &denoised) / sigma as f32;
                    return Ok(sample + &(derivative * (sigma_next - sigma) as f32));
                }
                self.plan.remember(index, sample.clone());
                let midpoint = self.midpoints[k];
                Ok(Self::ancestral_update(
                    sample, &denoised, sigma, midpoint, noise,
                ))
            }
            Stage::Second(k) => {
                let start = self.plan.take(index)?;
                let sigma = self.plan.sigmas[k];
                let sigma_next = self.plan.sigmas[k + 1];
                let denoised =
                    predicted_original(self.prediction, model_output, sample, self.midpoints[k]);
                Ok(Self::ancestral_update(
                    &start, &denoised, sigma, sigma_next, noise,
                ))
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
    use crate::schedulers::noise::ReplayNoise;
    use ndarray::{ArrayD, IxDyn};

    #[test]
    fn draws_once_per_evaluation_except_the_last() {
        let mut sde = DpmSolverSde::new(&SchedulerConfig::default(), 3).unwrap();
        assert_eq!(sde.timesteps().len(), 5);
        let shape = IxDyn(&[1, 2]);
        let mut noise = ReplayNoise::new((0..4).map(|_| ArrayD::zeros(shape.clone())));
        let mut x = ArrayD::from_elem(shape.clone(), 1.0_f32);
        for index in 0..5 {
            let eps = ArrayD::from_elem(shape.clone(), 0.5_f32);
            x = sde.step(&eps, index, &x, &mut noise).unwrap();
        }
        assert_eq!(noise.served, 4);
        assert!(x.iter().all(|v| v.is_finite()));
    }

    #[test]
    fn seed_is_unsupported() {
        let config = SchedulerConfig {
            noise_sampler_seed: Some(7),
            ..Default::default()
        };
        assert!(matches!(
            DpmSolverSde::new(&config, 10),
            Err(SchedulerError::Unsupported(_))
        ));
    }
}
