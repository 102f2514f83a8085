//! Multistep DPM-Solver++ samplers (Lu et al. 2022), one model evaluation a step with the
//! previous denoised predictions as history: k-diffusion `sample_dpmpp_2m`,
//! `sample_dpmpp_2m_sde` and `sample_dpmpp_3m_sde`.
//!
//! All three work in `t = -ln(sigma)`; the step to sigma 0 returns the denoised prediction.

use super::{Method, Point, add_fresh_noise, map2, map3};
use crate::schedulers::config::SolverType;
use crate::schedulers::noise::NoiseSource;
use crate::schedulers::stepper::{Sample, SchedulerError};

/// k-diffusion `sample_dpmpp_2m`: DPM-Solver++(2M), first order on the first and last steps.
#[derive(Debug, Clone, Default)]
pub struct Dpmpp2m {
    old_denoised: Option<Sample>,
}

impl Method for Dpmpp2m {
    fn advance(
        &mut self,
        point: &Point<'_>,
        x: &Sample,
        denoised: &Sample,
        _noise: &mut dyn NoiseSource,
    ) -> Result<Sample, SchedulerError> {
        let (sigma, sigma_next) = (point.sigma(), point.sigma_next());
        let (t, t_next) = (-sigma.ln(), -sigma_next.ln());
        let h = t_next - t;
        // sigma_fn(t_next) / sigma_fn(t); 0 when sigma_next is 0 (then h is infinite and the
        // update is exactly the denoised prediction).
        let ratio = (-t_next).exp() / (-t).exp();
        let coeff = -(-h).exp_m1();
        let next = match &self.old_denoised {
            Some(old) if sigma_next != 0.0 => {
                let h_last = t + point.sigmas[point.eval.step - 1].ln();
                let r = h_last / h;
                let (w_new, w_old) = (1.0 + 1.0 / (2.0 * r), 1.0 / (2.0 * r));
                map3(x, denoised, old, |x, den, old| {
                    ratio * x + coeff * (w_new * den - w_old * old)
                })
            }
            _ if sigma_next == 0.0 => denoised.clone(),
            _ => map2(x, denoised, |x, den| ratio * x + coeff * den),
        };
        self.old_denoised = Some(denoised.clone());
        Ok(next)
    }

    fn reset(&mut self) {
        self.old_denoised = None;
    }
}

/// k-diffusion `sample_dpmpp_2m_sde`: DPM-Solver++(2M) SDE with the midpoint or Heun
/// second-order correction; one noise draw per step while `eta != 0` and `sigma_next > 0`.
#[derive(Debug, Clone)]
pub struct Dpmpp2mSde {
    /// Stochasticity (0 is the ODE).
    pub eta: f64,
    /// Noise scale.
    pub s_noise: f64,
    /// `midpoint` or `heun`.
    pub solver_type: SolverType,
    old_denoised: Option<Sample>,
    h_last: Option<f64>,
}

impl Dpmpp2mSde {
    /// With these parameters (`solver_type` must be `midpoint` or `heun`).
    pub fn new(eta: f64, s_noise: f64, solver_type: SolverType) -> Result<Self, SchedulerError> {
        if !matches!(solver_type, SolverType::Midpoint | SolverType::Heun) {
            return Err(SchedulerError::Config(format!(
                "dpmpp_2m_sde: solver_type {solver_type:?} is not one of midpoint, heun"
            )));
        }
        Ok(Self {
            eta,
            s_noise,
            solver_type,
            old_denoised: None,
            h_last: None,
        })
    }
}

impl Method for Dpmpp2mSde {
    fn advance(
        &mut self,
        point: &Point<'_>,
        x: &Sample,
        denoised: &Sample,
        noise: &mut dyn NoiseSource,
    ) -> Result<Sample, SchedulerError> {
        let (sigma, sigma_next) = (point.sigma(), point.sigma_next());
        let next = if sigma_next == 0.0 {
            denoised.clone()
        } else {
            let (t, s) = (-sigma.ln(), -sigma_next.ln());
            let h = s - t;
            let eta_h = self.eta * h;
            let decay = sigma_next / sigma * (-eta_h).exp();
            let phi = -(-h - eta_h).exp_m1();
            let mut next = map2(x, denoised, |x, den| decay * x + phi * den);
            if let (Some(old), Some(h_last)) = (&self.old_denoised, self.h_last) {
                let r = h_last / h;
                let correction = match self.solver_type {
                    SolverType::Heun => (phi / (-h - eta_h) + 1.0) / r,
                    _ => 0.5 * phi / r,
                };
                next = map3(&next, denoised, old, |x, den, old| {
                    x + correction * (den - old)
                });
            }
            self.h_last = Some(h);
            if self.eta != 0.0 {
                let scale = sigma_next * (-(-2.0 * eta_h).exp_m1()).sqrt() * self.s_noise;
                next = add_fresh_noise(next, scale, noise);
            }
            next
        };
        self.old_denoised = Some(denoised.clone());
        Ok(next)
    }

    fn reset(&mut self) {
        self.old_denoised = None;
        self.h_last = None;
    }
}

/// k-diffusion `sample_dpmpp_3m_sde`: DPM-Solver++(3M) SDE (second order on the second step,
/// first order on the first); one noise draw per step while `eta != 0` and `sigma_next > 0`.
#[derive(Debug, Clone)]
pub struct Dpmpp3mSde {
    /// Stochasticity (0 is the ODE).
    pub eta: f64,
    /// Noise scale.
    pub s_noise: f64,
    denoised_1: Option<Sample>,
    denoised_2: Option<Sample>,
    h_1: Option<f64>,
    h_2: Option<f64>,
}

impl Dpmpp3mSde {
    /// With these parameters.
    pub fn new(eta: f64, s_noise: f64) -> Self {
        Self {
            eta,
            s_noise,
            denoised_1: None,
            denoised_2: None,
            h_1: None,
            h_2: None,
        }
    }
}

impl Method for Dpmpp3mSde {
    fn advance(
        &mut self,
        point: &Point<'_>,
        x: &Sample,
        denoised: &Sample,
        noise: &mut dyn NoiseSource,
    ) -> Result<Sample, SchedulerError> {
        let (sigma, sigma_next) = (point.sigma(), point.sigma_next());
        if sigma_next == 0.0 {
            self.shift(denoised, self.h_1);
            return Ok(denoised.clone());
        }
        let (t, s) = (-sigma.ln(), -sigma_next.ln());
        let h = s - t;
        let h_eta = h * (self.eta + 1.0);
        let decay = (-h_eta).exp();
        let phi_1 = -(-h_eta).exp_m1();
        let mut next = map2(x, denoised, |x, den| decay * x + phi_1 * den);
        let phi_2 = (-h_eta).exp_m1() / h_eta + 1.0;
        match (&self.denoised_1, &self.denoised_2, self.h_1, self.h_2) {
            (Some(den_1), Some(den_2), Some(h_1), Some(h_2)) => {
                let (r0, r1) = (h_1 / h, h_2 / h);
                let phi_3 = phi_2 / h_eta - 0.5;
                let mut d1_0 = map2(denoised, den_1, |den, den_1| (den - den_1) / r0);
                let d1_1 = map2(den_1, den_2, |den_1, den_2| (den_1 - den_2) / r1);
                // d1 = d1_0 + (d1_0 - d1_1) r0 / (r0 + r1); d2 = (d1_0 - d1_1) / (r0 + r1)
                let d2 = map2(&d1_0, &d1_1, |a, b| (a - b) / (r0 + r1));
                d1_0 = map2(&d1_0, &d2, |a, d2| a + d2 * r0);
                next = map3(&next, &d1_0, &d2, |x, d1, d2| x + phi_2 * d1 - phi_3 * d2);
            }
            (Some(den_1), _, Some(h_1), _) => {
                let r = h_1 / h;
                next = map3(&next, denoised, den_1, |x, den, den_1| {
                    x + phi_2 * ((den - den_1) / r)
                });
            }
            _ => {}
        }
        if self.eta != 0.0 {
            let scale = sigma_next * (-(-2.0 * h * self.eta).exp_m1()).sqrt() * self.s_noise;
            next = add_fresh_noise(next, scale, noise);
        }
        self.shift(denoised, Some(h));
        Ok(next)
    }

    fn reset(&mut self) {
        self.denoised_1 = None;
        self.denoised_2 = None;
        self.h_1 = None;
        self.h_2 = None;
    }
}

impl Dpmpp3mSde {
    /// `denoised_1, denoised_2 = denoised, denoised_1; h_1, h_2 = h, h_1`.
    fn shift(&mut self, denoised: &Sample, h: Option<f64>) {
        self.denoised_2 = self.denoised_1.replace(denoised.clone());
        self.h_2 = std::mem::replace(&mut self.h_1, h);
    }
}
