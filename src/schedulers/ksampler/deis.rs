//! Diffusion exponential integrator sampler (Zhang & Chen 2022): ComfyUI `sample_deis` with
//! `deis_mode = "tab"` (`comfy/k_diffusion/deis.py`, from zju-pi/diff-sampler).
//!
//! The sigmas are mapped to the time of a VP SDE fitted to EDM's range (sigma 0.002..80,
//! whatever the model's range: upstream calls `edm2t` with its defaults), and each step adds
//! `sum_j c_j d_{i-j}`, where `c_j` integrates `d sigma / d t` times the Lagrange basis through
//! the last `order` times. Upstream integrates with a 10000-point Riemann sum (not an exact
//! integral); it is reproduced as is.

use std::collections::VecDeque;

use super::{Method, Point, map2, weighted_sum};
use crate::schedulers::noise::NoiseSource;
use crate::schedulers::stepper::{Sample, SchedulerError};

/// Points of upstream's Riemann sum.
const RIEMANN_POINTS: usize = 10_000;

/// The VP SDE that `edm2t` fits to EDM's noise range: `1 + sigma(t)^2 = exp(beta_d t^2 / 2 +
/// beta_min t)`.
#[derive(Debug, Clone, Copy)]
struct VpTime {
    beta_d: f64,
    beta_min: f64,
}

impl VpTime {
    /// `edm2t(…, epsilon_s=1e-3, sigma_min=0.002, sigma_max=80)`. Upstream forms these constants
    /// from float32 tensors; the float32 rounding of `sigma^2 + 1` is part of the result, so it
    /// is reproduced.
    fn edm() -> Self {
        let (epsilon_s, sigma_min, sigma_max) = (1e-3_f32, 0.002_f32, 80_f32);
        let log_min = (sigma_min * sigma_min + 1.0).ln();
        let log_max = (sigma_max * sigma_max + 1.0).ln();
        let beta_d = 2.0 * (log_min / epsilon_s - log_max) / (epsilon_s - 1.0);
        let beta_min = log_max - 0.5 * beta_d;
        Self {
            beta_d: f64::from(beta_d),
            beta_min: f64::from(beta_min),
        }
    }

    /// `vp_sigma_inv`: the time of `sigma`.
    fn t(&self, sigma: f64) -> f64 {
        let log = (sigma * sigma + 1.0).ln();
        ((self.beta_min * self.beta_min + 2.0 * self.beta_d * log).sqrt() - self.beta_min)
            / self.beta_d
    }

    /// `cal_intergrand`: `-0.5 * d log(alpha) / d tau / sqrt(alpha (1 - alpha))`, which is
    /// `d sigma / d tau`.
    fn integrand(&self, tau: f64) -> f64 {
        let (beta_0, beta_1) = (self.beta_min, self.beta_d + self.beta_min);
        let log_alpha = -0.5 * tau * tau * (beta_1 - beta_0) - tau * beta_0;
        let alpha = log_alpha.exp();
        let d_log_alpha = -(tau * (beta_1 - beta_0) + beta_0);
        -0.5 * d_log_alpha / (alpha * (1.0 - alpha)).sqrt()
    }
}

/// ComfyUI `sample_deis` (tab mode) up to `max_order` (1 to 4; ComfyUI's default is 3).
#[derive(Debug, Clone)]
pub struct Deis {
    max_order: usize,
    time: VpTime,
    history: VecDeque<Sample>,
}

impl Deis {
    /// DEIS up to `max_order`.
    pub fn new(max_order: u32) -> Result<Self, SchedulerError> {
        if !(1..=4).contains(&max_order) {
            return Err(SchedulerError::Config(format!(
                "deis: order = {max_order} must be between 1 and 4"
            )));
        }
        Ok(Self {
            max_order: max_order as usize,
            time: VpTime::edm(),
            history: VecDeque::new(),
        })
    }

    /// `get_deis_coeff_list(...)[i]` for a step of `order > 1`: newest derivative first.
    fn coefficients(&self, sigmas: &[f64], i: usize, order: usize) -> Vec<f64> {
        let t: Vec<f64> = (0..order).map(|k| self.time.t(sigmas[i - k])).collect();
        let (t_cur, t_next) = (t[0], self.time.t(sigmas[i + 1]));
        let dtau = (t_next - t_cur) / RIEMANN_POINTS as f64;
        let taus = torch_linspace(t_cur, t_next, RIEMANN_POINTS);
        let integrand: Vec<f64> = taus.iter().map(|&tau| self.time.integrand(tau)).collect();
        (0..order)
            .map(|j| {
                let basis = |tau: f64| {
                    (0..order)
                        .filter(|&k| k != j)
                        .map(|k| (tau - t[k]) / (t[j] - t[k]))
                        .product::<f64>()
                };
                taus.iter()
                    .zip(&integrand)
                    .map(|(&tau, &f)| f * basis(tau))
                    .sum::<f64>()
                    * dtau
            })
            .collect()
    }
}

/// `torch.linspace(start, end, n)`: the first half counted up from `start`, the second half
/// down from `end` (computed in f64).
fn torch_linspace(start: f64, end: f64, n: usize) -> Vec<f64> {
    let step = (end - start) / (n - 1) as f64;
    (0..n)
        .map(|i| {
            if i < n / 2 {
                start + step * i as f64
            } else {
                end - step * (n - 1 - i) as f64
            }
        })
        .collect()
}

impl Method for Deis {
    fn advance(
        &mut self,
        point: &Point<'_>,
        x: &Sample,
        denoised: &Sample,
        _noise: &mut dyn NoiseSource,
    ) -> Result<Sample, SchedulerError> {
        let (step, sigma, sigma_next) = (point.eval.step, point.sigma(), point.sigma_next());
        let d = map2(x, denoised, |x, den| (x - den) / sigma);
        let mut order = self.max_order.min(step + 1).min(self.history.len() + 1);
        if sigma_next <= 0.0 {
            order = 1;
        }
        let next = if order == 1 {
            map2(x, &d, |x, d| x + (sigma_next - sigma) * d)
        } else {
            let coefficients = self.coefficients(point.sigmas, step, order);
            let mut terms = vec![(1.0, x), (coefficients[0], &d)];
            terms.extend(
                coefficients[1..]
                    .iter()
                    .copied()
                    .zip(self.history.iter().rev()),
            );
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
