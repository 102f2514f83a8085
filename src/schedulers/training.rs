//! The model's training noise schedule: betas, cumulative alphas, the sigma table, and the
//! timestep <-> sigma mapping diffusers and k-diffusion use.
//!
//! Values are computed the way PyTorch computes them in diffusers (float32 betas from
//! `torch.linspace`, a cumulative product accumulated in double and stored as float32), so sigma
//! tables agree with diffusers to float32 rounding.

use super::config::{BetaSchedule, SchedulerConfig};
use super::stepper::SchedulerError;

/// Training-time schedule of a discrete-time diffusion model.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainingSchedule {
    /// beta_t for t = 0..n_train (float32 as in diffusers).
    pub betas: Vec<f32>,
    /// prod(1 - beta) up to t (float32 as in diffusers).
    pub alphas_cumprod: Vec<f32>,
    /// sigma_t = sqrt((1 - acp) / acp), ascending in t (float32 as in diffusers).
    pub sigmas: Vec<f32>,
    /// ln(sigma_t) in f64, for interpolation.
    pub log_sigmas: Vec<f64>,
}

impl TrainingSchedule {
    /// Builds the schedule from a (merged) scheduler config, with diffusers' defaults
    /// (1000 steps, linear betas 0.0001..0.02) for keys it does not set.
    pub fn from_config(config: &SchedulerConfig) -> Result<Self, SchedulerError> {
        let n = config.num_train_timesteps.unwrap_or(1000) as usize;
        if n < 2 {
            return Err(SchedulerError::Config(format!(
                "num_train_timesteps = {n}: need at least 2"
            )));
        }
        let start = config.beta_start.unwrap_or(0.0001);
        let end = config.beta_end.unwrap_or(0.02);
        let mut betas = match (
            &config.trained_betas,
            config.beta_schedule.unwrap_or(BetaSchedule::Linear),
        ) {
            (Some(trained), _) => {
                if trained.len() != n {
                    return Err(SchedulerError::Config(format!(
                        "trained_betas has {} values but num_train_timesteps is {n}",
                        trained.len()
                    )));
                }
                trained.iter().map(|&b| b as f32).collect()
            }
            (None, BetaSchedule::Linear) => torch_linspace_f32(start, end, n),
            (None, BetaSchedule::ScaledLinear) => torch_linspace_f32(start.sqrt(), end.sqrt(), n)
                .into_iter()
                .map(|b| b * b)
                .collect(),
            (None, BetaSchedule::SquaredcosCapV2) => betas_for_alpha_bar_cosine(n),
        };
        let zero_snr = config.rescale_betas_zero_snr.unwrap_or(false);
        if zero_snr {
            betas = rescale_zero_terminal_snr(&betas);
        }
        let mut alphas_cumprod = cumprod_f32(betas.iter().map(|b| 1.0 - b));
        if zero_snr {
            // diffusers: close to 0 without being 0, so the first sigma is not infinite.
            if let Some(last) = alphas_cumprod.last_mut() {
                *last = 2f32.powi(-24);
            }
        }
        let sigmas: Vec<f32> = alphas_cumprod
            .iter()
            .map(|&a| ((1.0 - a) / a).sqrt())
            .collect();
        let log_sigmas = sigmas.iter().map(|&s| f64::from(s).ln()).collect();
        Ok(Self {
            betas,
            alphas_cumprod,
            sigmas,
            log_sigmas,
        })
    }

    /// Number of training timesteps.
    pub fn len(&self) -> usize {
        self.sigmas.len()
    }

    /// Whether the schedule is empty (never, once built).
    pub fn is_empty(&self) -> bool {
        self.sigmas.is_empty()
    }

    /// Smallest sigma of the table.
    pub fn sigma_min(&self) -> f64 {
        f64::from(self.sigmas[0])
    }

    /// Largest sigma of the table.
    pub fn sigma_max(&self) -> f64 {
        f64::from(self.sigmas[self.sigmas.len() - 1])
    }

    /// Continuous timestep of `sigma` by interpolation in log sigma (diffusers `_sigma_to_t`,
    /// k-diffusion `DiscreteSchedule.sigma_to_t`), clamped to the table's range.
    pub fn sigma_to_t(&self, sigma: f64) -> f64 {
        let log_sigma = sigma.max(1e-10).ln();
        let n = self.log_sigmas.len();
        // Index of the last table entry whose log sigma is <= log_sigma, at most n - 2.
        let low = self
            .log_sigmas
            .iter()
            .rposition(|&l| log_sigma - l >= 0.0)
            .unwrap_or(0)
            .min(n - 2);
        let (lo, hi) = (self.log_sigmas[low], self.log_sigmas[low + 1]);
        let w = ((lo - log_sigma) / (lo - hi)).clamp(0.0, 1.0);
        (1.0 - w) * low as f64 + w * (low + 1) as f64
    }

    /// Sigma at a continuous timestep by log-linear interpolation (k-diffusion
    /// `DiscreteSchedule.t_to_sigma`).
    pub fn t_to_sigma(&self, t: f64) -> f64 {
        let max = (self.log_sigmas.len() - 1) as f64;
        let t = t.clamp(0.0, max);
        let low = t.floor() as usize;
        let high = t.ceil() as usize;
        let w = t - low as f64;
        ((1.0 - w) * self.log_sigmas[low] + w * self.log_sigmas[high]).exp()
    }

    /// Sigma at a continuous timestep by linear interpolation of the table (numpy `np.interp`
    /// over `arange(n)`, as diffusers' `interpolation_type = "linear"`).
    pub fn interp_sigma(&self, t: f64) -> f64 {
        let max = self.sigmas.len() - 1;
        if t <= 0.0 {
            return f64::from(self.sigmas[0]);
        }
        if t >= max as f64 {
            return f64::from(self.sigmas[max]);
        }
        let low = t.floor() as usize;
        let w = t - low as f64;
        let (a, b) = (f64::from(self.sigmas[low]), f64::from(self.sigmas[low + 1]));
        a + (b - a) * w
    }
}

/// `torch.linspace(start, end, n, dtype=torch.float32)` as PyTorch's CPU kernel computes it:
/// float32 step, the first half counted up from `start`, the second half down from `end`,
/// each value rounded once (fused multiply-add): all 1000 SDXL betas come out bit-exact.
pub fn torch_linspace_f32(start: f64, end: f64, n: usize) -> Vec<f32> {
    let (start, end) = (start as f32, end as f32);
    if n == 1 {
        return vec![start];
    }
    let step = (end - start) / (n - 1) as f32;
    let halfway = n / 2;
    (0..n)
        .map(|i| {
            // PyTorch's kernel rounds `start + step * i` once (a fused multiply-add on x86-64).
            if i < halfway {
                step.mul_add(i as f32, start)
            } else {
                (-step).mul_add((n - i - 1) as f32, end)
            }
        })
        .collect()
}

/// `torch.cumprod` of float32 values: PyTorch's CPU kernel accumulates in double and stores
/// each prefix product as float32.
fn cumprod_f32(values: impl Iterator<Item = f32>) -> Vec<f32> {
    let mut acc = 1.0_f64;
    values
        .map(|v| {
            acc *= f64::from(v);
            acc as f32
        })
        .collect()
}

/// Glide's cosine schedule (diffusers `betas_for_alpha_bar`, `alpha_transform_type="cosine"`).
fn betas_for_alpha_bar_cosine(n: usize) -> Vec<f32> {
    let alpha_bar = |t: f64| {
        ((t + 0.008) / 1.008 * std::f64::consts::FRAC_PI_2)
            .cos()
            .powi(2)
    };
    (0..n)
        .map(|i| {
            let (t1, t2) = (i as f64 / n as f64, (i + 1) as f64 / n as f64);
            (1.0 - alpha_bar(t2) / alpha_bar(t1)).min(0.999) as f32
        })
        .collect()
}

/// Rescales betas to zero terminal SNR (Lin et al. 2023, Algorithm 1; diffusers
/// `rescale_zero_terminal_snr`).
fn rescale_zero_terminal_snr(betas: &[f32]) -> Vec<f32> {
    let alphas_bar_sqrt: Vec<f32> = cumprod_f32(betas.iter().map(|b| 1.0 - b))
        .iter()
        .map(|a| a.sqrt())
        .collect();
    let first = alphas_bar_sqrt[0];
    let last = alphas_bar_sqrt[alphas_bar_sqrt.len() - 1];
    let rescaled: Vec<f32> = alphas_bar_sqrt
        .iter()
        .map(|a| (a - last) * first / (first - last))
        .collect();
    let alphas_bar: Vec<f32> = rescaled.iter().map(|a| a * a).collect();
    let mut alphas = Vec::with_capacity(alphas_bar.len());
    alphas.push(alphas_bar[0]);
    alphas.extend(alphas_bar.windows(2).map(|w| w[1] / w[0]));
    alphas.iter().map(|a| 1.0 - a).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sdxl() -> TrainingSchedule {
        let config = SchedulerConfig {
            beta_start: Some(0.00085),
            beta_end: Some(0.012),
            beta_schedule: Some(BetaSchedule::ScaledLinear),
            ..Default::default()
        };
        TrainingSchedule::from_config(&config).unwrap()
    }

    #[test]
    fn sdxl_sigma_range_matches_diffusers() {
        // diffusers 0.39 EulerDiscreteScheduler(SDXL config): sqrt((1 - acp) / acp) at t = 0 and
        // t = 999, and alphas_cumprod[500], betas[700]; float32 rounding allows ~1e-7 relative.
        let schedule = sdxl();
        let close = |a: f64, b: f64| (a - b).abs() <= 2e-7 * b.abs();
        assert!(
            close(schedule.sigma_max(), 14.614_646_911_621_094),
            "{}",
            schedule.sigma_max()
        );
        assert!(
            close(schedule.sigma_min(), 0.029_167_534_783_482_55),
            "{}",
            schedule.sigma_min()
        );
        assert!(close(
            f64::from(schedule.alphas_cumprod[500]),
            0.276_332_467_794_418_33
        ));
        assert!(close(
            f64::from(schedule.betas[700]),
            0.007_307_498_715_817_928
        ));
    }

    #[test]
    fn sigma_to_t_inverts_the_table() {
        let schedule = sdxl();
        for t in [0usize, 1, 250, 500, 998, 999] {
            let sigma = f64::from(schedule.sigmas[t]);
            assert!(
                (schedule.sigma_to_t(sigma) - t as f64).abs() < 1e-4,
                "t = {t}"
            );
            assert!((schedule.t_to_sigma(t as f64) - sigma).abs() < 1e-6 * sigma);
        }
    }

    #[test]
    fn zero_snr_makes_the_last_alpha_tiny() {
        let config = SchedulerConfig {
            rescale_betas_zero_snr: Some(true),
            ..Default::default()
        };
        let schedule = TrainingSchedule::from_config(&config).unwrap();
        assert_eq!(schedule.alphas_cumprod[999], 2f32.powi(-24));
    }
}
