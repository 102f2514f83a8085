//! Samplers ComfyUI adds to k-diffusion (`comfy/k_diffusion/sampling.py`): `sample_ddpm`,
//! `sample_lcm` and `sample_ipndm`.

use std::collections::VecDeque;

use super::{Method, Point, add_fresh_noise, map2, weighted_sum};
use crate::schedulers::noise::NoiseSource;
use crate::schedulers::stepper::{Sample, SchedulerError};

/// ComfyUI `sample_ddpm` (`generic_step_sampler` with `DDPMSampler_step`): the DDPM posterior
/// mean in the variance-preserving frame `x / sqrt(1 + sigma^2)`, plus posterior noise while
/// the next sigma is above 0.
#[derive(Debug, Clone, Default)]
pub struct Ddpm;

impl Method for Ddpm {
    fn advance(
        &mut self,
        point: &Point<'_>,
        x: &Sample,
        denoised: &Sample,
        noise: &mut dyn NoiseSource,
    ) -> Result<Sample, SchedulerError> {
        let (sigma, sigma_prev) = (point.sigma(), point.sigma_next());
        let alpha_cumprod = 1.0 / (sigma * sigma + 1.0);
        let alpha_cumprod_prev = 1.0 / (sigma_prev * sigma_prev + 1.0);
        let alpha = alpha_cumprod / alpha_cumprod_prev;
        let vp_scale = 1.0 / (1.0 + sigma * sigma).sqrt();
        let mean_scale = (1.0 / alpha).sqrt();
        let eps_scale = (1.0 - alpha) / (1.0 - alpha_cumprod).sqrt();
        // mu = sqrt(1 / alpha) * (x_vp - (1 - alpha) * eps / sqrt(1 - alpha_cumprod))
        let mut mu = map2(x, denoised, |x, den| {
            let eps = (x - den) / sigma;
            mean_scale * (x * vp_scale - eps_scale * eps)
        });
        if sigma_prev > 0.0 {
            let std = ((1.0 - alpha) * (1.0 - alpha_cumprod_prev) / (1.0 - alpha_cumprod)).sqrt();
            mu = add_fresh_noise(mu, std, noise);
            let back = (1.0 + sigma_prev * sigma_prev).sqrt();
            mu.mapv_inplace(|v| (f64::from(v) * back) as f32);
        }
        Ok(mu)
    }

    fn reset(&mut self) {}
}

/// ComfyUI `sample_lcm` (default `s_noise = 1`, no clipping): jump to the denoised prediction,
/// then re-noise it to the next sigma (`x = denoised + sigma_next * noise`).
#[derive(Debug, Clone, Default)]
pub struct Lcm;

impl Method for Lcm {
    fn advance(
        &mut self,
        point: &Point<'_>,
        _x: &Sample,
        denoised: &Sample,
        noise: &mut dyn NoiseSource,
    ) -> Result<Sample, SchedulerError> {
        let sigma_next = point.sigma_next();
        Ok(if sigma_next > 0.0 {
            add_fresh_noise(denoised.clone(), sigma_next, noise)
        } else {
            denoised.clone()
        })
    }

    fn reset(&mut self) {}
}

/// ComfyUI `sample_ipndm` (from zju-pi/diff-sampler): Adams-Bashforth on the probability-flow
/// ODE with fixed (equal-step) coefficients, order growing to `max_order` (1 to 4).
#[derive(Debug, Clone)]
pub struct Ipndm {
    max_order: usize,
    history: VecDeque<Sample>,
}

impl Ipndm {
    /// iPNDM up to `max_order` (ComfyUI's default is 4).
    pub fn new(max_order: u32) -> Result<Self, SchedulerError> {
        if !(1..=4).contains(&max_order) {
            return Err(SchedulerError::Config(format!(
                "ipndm: order = {max_order} must be between 1 and 4"
            )));
        }
        Ok(Self {
            max_order: max_order as usize,
            history: VecDeque::new(),
        })
    }
}

/// Adams-Bashforth weights (newest derivative first) and their common denominator.
const ADAMS_BASHFORTH: [(&[f64], f64); 4] = [
    (&[1.0], 1.0),
    (&[3.0, -1.0], 2.0),
    (&[23.0, -16.0, 5.0], 12.0),
    (&[55.0, -59.0, 37.0, -9.0], 24.0),
];

impl Method for Ipndm {
    fn advance(
        &mut self,
        point: &Point<'_>,
        x: &Sample,
        denoised: &Sample,
        _noise: &mut dyn NoiseSource,
    ) -> Result<Sample, SchedulerError> {
        let (sigma, sigma_next) = (point.sigma(), point.sigma_next());
        let d = map2(x, denoised, |x, den| (x - den) / sigma);
        let next = if sigma_next == 0.0 {
            denoised.clone()
        } else {
            let order = self
                .max_order
                .min(point.eval.step + 1)
                .min(self.history.len() + 1);
            let (weights, denominator) = ADAMS_BASHFORTH[order - 1];
            let dt = sigma_next - sigma;
            let mut terms = vec![(1.0, x), (dt * weights[0] / denominator, &d)];
            for (weight, past) in weights[1..].iter().zip(self.history.iter().rev()) {
                terms.push((dt * weight / denominator, past));
            }
            weighted_sum(&terms)
        };
        if self.max_order > 1 {
            if self.history.len() == self.max_order - 1 {
                self.history.pop_front();
            }
            self.history.push_back(d);
        }
        Ok(next)
    }

    fn reset(&mut self) {
        self.history.clear();
    }
}
