//! Single-step DPM-Solver++ samplers (Lu et al. 2022, "DPM-Solver++"), two model evaluations a
//! step: k-diffusion `sample_dpmpp_2s_ancestral` and `sample_dpmpp_sde`.
//!
//! Both work in `t = -ln(sigma)` (the half log-SNR of the variance-exploding parametrisation).

use super::{Evaluation, Method, Point, Stage, StepStart, add_fresh_noise, map2, map3};
use crate::schedulers::euler::ancestral_step;
use crate::schedulers::noise::NoiseSource;
use crate::schedulers::stepper::{Sample, SchedulerError};

fn t_of(sigma: f64) -> f64 {
    -sigma.ln()
}

fn sigma_of(t: f64) -> f64 {
    (-t).exp()
}

/// k-diffusion `sample_dpmpp_2s_ancestral`: DPM-Solver++(2S) down to `sigma_down` with the
/// midpoint at r = 1/2, then fresh noise of `sigma_up` while `sigma_next > 0`.
#[derive(Debug, Clone)]
pub struct Dpmpp2sAncestral {
    /// Ancestral noise amount.
    pub eta: f64,
    /// Noise scale.
    pub s_noise: f64,
    start: StepStart,
}

impl Dpmpp2sAncestral {
    /// With these parameters.
    pub fn new(eta: f64, s_noise: f64) -> Self {
        Self {
            eta,
            s_noise,
            start: StepStart::default(),
        }
    }

    /// `(t, t_next, h, sigma at the midpoint)` of a step down to `sigma_down`.
    fn geometry(sigma: f64, sigma_down: f64) -> (f64, f64, f64, f64) {
        let (t, t_next) = (t_of(sigma), t_of(sigma_down));
        let h = t_next - t;
        (t, t_next, h, sigma_of(t + 0.5 * h))
    }
}

impl Method for Dpmpp2sAncestral {
    fn plan(&self, sigmas: &[f64]) -> Result<Vec<Evaluation>, SchedulerError> {
        let mut plan = Vec::with_capacity(2 * sigmas.len());
        for step in 0..sigmas.len() - 1 {
            plan.push(Evaluation::first(step, sigmas));
            let (sigma_down, _) = ancestral_step(sigmas[step], sigmas[step + 1], self.eta);
            if sigma_down != 0.0 {
                let (.., sigma_mid) = Self::geometry(sigmas[step], sigma_down);
                plan.push(Evaluation::second(step, sigma_mid));
            }
        }
        Ok(plan)
    }

    fn advance(
        &mut self,
        point: &Point<'_>,
        x: &Sample,
        denoised: &Sample,
        noise: &mut dyn NoiseSource,
    ) -> Result<Sample, SchedulerError> {
        let (sigma, sigma_next) = (point.sigma(), point.sigma_next());
        let (sigma_down, sigma_up) = ancestral_step(sigma, sigma_next, self.eta);
        let stepped = match point.eval.stage {
            Stage::First if sigma_down == 0.0 => {
                // Euler method.
                map2(x, denoised, |x, den| {
                    x + (x - den) / sigma * (sigma_down - sigma)
                })
            }
            Stage::First => {
                let (_, _, h, sigma_mid) = Self::geometry(sigma, sigma_down);
                self.start.set(x, denoised);
                let ratio = sigma_mid / sigma;
                let coeff = -(-h * 0.5).exp_m1();
                return Ok(map2(x, denoised, |x, den| ratio * x + coeff * den));
            }
            Stage::Second => {
                let (x_start, _) = self.start.take(point.eval.step)?;
                let (.., h, _) = Self::geometry(sigma, sigma_down);
                let ratio = sigma_down / sigma;
                let coeff = -(-h).exp_m1();
                map2(&x_start, denoised, |x, den| ratio * x + coeff * den)
            }
        };
        Ok(if sigma_next > 0.0 {
            add_fresh_noise(stepped, self.s_noise * sigma_up, noise)
        } else {
            stepped
        })
    }

    fn reset(&mut self) {
        self.start.clear();
    }
}

/// k-diffusion `sample_dpmpp_sde`: stochastic DPM-Solver++ with an intermediate evaluation at
/// `t + r h`; each of the two sub-steps is an ancestral step with its own noise draw (the
/// `noise_sampler` calls that default to a Brownian tree upstream; here the `NoiseSource`).
#[derive(Debug, Clone)]
pub struct DpmppSde {
    /// Ancestral noise amount.
    pub eta: f64,
    /// Noise scale.
    pub s_noise: f64,
    /// Position of the intermediate evaluation in the step (in t).
    pub r: f64,
    start: StepStart,
}

impl DpmppSde {
    /// With these parameters.
    pub fn new(eta: f64, s_noise: f64, r: f64) -> Result<Self, SchedulerError> {
        if !(r > 0.0 && r.is_finite()) {
            return Err(SchedulerError::Config(format!(
                "dpmpp_sde: r = {r} must be a positive number"
            )));
        }
        Ok(Self {
            eta,
            s_noise,
            r,
            start: StepStart::default(),
        })
    }

    /// `(t, t_next, s)`: the step in t and the intermediate point.
    fn geometry(&self, sigma: f64, sigma_next: f64) -> (f64, f64, f64) {
        let (t, t_next) = (t_of(sigma), t_of(sigma_next));
        (t, t_next, t + (t_next - t) * self.r)
    }
}

impl Method for DpmppSde {
    fn plan(&self, sigmas: &[f64]) -> Result<Vec<Evaluation>, SchedulerError> {
        let mut plan = Vec::with_capacity(2 * sigmas.len());
        for step in 0..sigmas.len() - 1 {
            plan.push(Evaluation::first(step, sigmas));
            if sigmas[step + 1] != 0.0 {
                let (.., s) = self.geometry(sigmas[step], sigmas[step + 1]);
                plan.push(Evaluation::second(step, sigma_of(s)));
            }
        }
        Ok(plan)
    }

    fn advance(
        &mut self,
        point: &Point<'_>,
        x: &Sample,
        denoised: &Sample,
        noise: &mut dyn NoiseSource,
    ) -> Result<Sample, SchedulerError> {
        let (sigma, sigma_next) = (point.sigma(), point.sigma_next());
        if sigma_next == 0.0 {
            // Euler method.
            return Ok(map2(x, denoised, |x, den| {
                x + (x - den) / sigma * (sigma_next - sigma)
            }));
        }
        let (t, t_next, s) = self.geometry(sigma, sigma_next);
        match point.eval.stage {
            Stage::First => {
                let (sigma_down, sigma_up) = ancestral_step(sigma_of(t), sigma_of(s), self.eta);
                let s_down = t_of(sigma_down);
                let ratio = sigma_of(s_down) / sigma_of(t);
                let coeff = -(t - s_down).exp_m1();
                self.start.set(x, denoised);
                let x_2 = map2(x, denoised, |x, den| ratio * x + coeff * den);
                Ok(add_fresh_noise(x_2, self.s_noise * sigma_up, noise))
            }
            Stage::Second => {
                let (x_start, denoised_1) = self.start.take(point.eval.step)?;
                let fac = 1.0 / (2.0 * self.r);
                let (sigma_down, sigma_up) =
                    ancestral_step(sigma_of(t), sigma_of(t_next), self.eta);
                let t_down = t_of(sigma_down);
                let ratio = sigma_of(t_down) / sigma_of(t);
                let coeff = -(t - t_down).exp_m1();
                let stepped = map3(&x_start, &denoised_1, denoised, |x, den_1, den_2| {
                    ratio * x + coeff * ((1.0 - fac) * den_1 + fac * den_2)
                });
                Ok(add_fresh_noise(stepped, self.s_noise * sigma_up, noise))
            }
        }
    }

    fn reset(&mut self) {
        self.start.clear();
    }
}
