//! diffusers' inference timesteps and sigmas for the sigma-based ("discrete") schedulers:
//! timestep spacing, sigma interpolation, and the Karras / exponential / beta sigma conversions
//! of `EulerDiscreteScheduler.set_timesteps` and its siblings.

use super::config::{FinalSigmasType, SchedulerConfig, TimestepSpacing};
use super::stepper::SchedulerError;
use super::training::TrainingSchedule;

/// Descending inference timesteps for `steps` steps (diffusers `timestep_spacing`).
///
/// `linspace`: `np.linspace(0, n - 1, steps)` reversed; `leading`: `arange(steps) * (n // steps)`
/// reversed, plus `steps_offset`; `trailing`: `round(arange(n, 0, -n / steps)) - 1`.
pub fn spaced_timesteps(
    spacing: TimestepSpacing,
    num_train_timesteps: usize,
    steps: usize,
    steps_offset: u32,
) -> Result<Vec<f64>, SchedulerError> {
    if steps == 0 || steps > num_train_timesteps {
        return Err(SchedulerError::Config(format!(
            "steps = {steps}: must be between 1 and num_train_timesteps ({num_train_timesteps})"
        )));
    }
    let n = num_train_timesteps as f64;
    let timesteps = match spacing {
        TimestepSpacing::Linspace => linspace(0.0, n - 1.0, steps)
            .into_iter()
            .rev()
            .map(|t| f64::from(t as f32))
            .collect(),
        TimestepSpacing::Leading => {
            let ratio = (num_train_timesteps / steps) as f64;
            (0..steps)
                .rev()
                .map(|i| (i as f64 * ratio).round() + f64::from(steps_offset))
                .collect()
        }
        TimestepSpacing::Trailing => {
            let ratio = n / steps as f64;
            // np.arange(n, 0, -ratio): n, n - ratio, ... while > 0.
            let count = (n / ratio).ceil() as usize;
            (0..count)
                .map(|i| round_half_even(n - i as f64 * ratio) - 1.0)
                .collect()
        }
    };
    Ok(timesteps)
}

/// numpy's `round` (half to even), as used by diffusers on timesteps.
pub fn round_half_even(x: f64) -> f64 {
    let r = x.round();
    if (x - x.trunc()).abs() == 0.5 {
        2.0 * (x / 2.0).round()
    } else {
        r
    }
}

/// `np.linspace(start, end, n)` in f64 (numpy's formula: start + i * step, last value exact).
pub fn linspace(start: f64, end: f64, n: usize) -> Vec<f64> {
    match n {
        0 => Vec::new(),
        1 => vec![start],
        _ => {
            let step = (end - start) / (n - 1) as f64;
            (0..n)
                .map(|i| {
                    if i == n - 1 {
                        end
                    } else {
                        start + i as f64 * step
                    }
                })
                .collect()
        }
    }
}

/// How the sigma-based classes turn timesteps into sigmas.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SigmaConversion {
    /// Interpolated table sigmas at the spaced timesteps.
    Interpolated,
    /// Karras et al. rho = 7 between the interpolated ends.
    Karras,
    /// Evenly spaced in log sigma between the interpolated ends.
    Exponential,
    /// Beta(0.6, 0.6) quantiles between the interpolated ends.
    Beta,
}

impl SigmaConversion {
    /// The conversion a config asks for (`use_karras_sigmas`, `use_exponential_sigmas`,
    /// `use_beta_sigmas`; at most one may be set).
    pub fn from_config(config: &SchedulerConfig) -> Result<Self, SchedulerError> {
        let flags = [
            (
                config.use_karras_sigmas.unwrap_or(false),
                SigmaConversion::Karras,
            ),
            (
                config.use_exponential_sigmas.unwrap_or(false),
                SigmaConversion::Exponential,
            ),
            (
                config.use_beta_sigmas.unwrap_or(false),
                SigmaConversion::Beta,
            ),
        ];
        let mut set = flags.iter().filter(|(on, _)| *on).map(|(_, c)| *c);
        match (set.next(), set.next()) {
            (None, _) => Ok(SigmaConversion::Interpolated),
            (Some(one), None) => Ok(one),
            (Some(_), Some(_)) => Err(SchedulerError::Config(
                "only one of use_karras_sigmas, use_exponential_sigmas, use_beta_sigmas may be true".to_string(),
            )),
        }
    }
}

/// The timesteps and N + 1 sigmas of a sigma-based diffusers scheduler after `set_timesteps(N)`
/// (EulerDiscrete's recipe; Heun, LMS, KDPM2 and DPMSolverSDE start from it).
#[derive(Debug, Clone, PartialEq)]
pub struct DiscretePlan {
    /// One timestep per step.
    pub timesteps: Vec<f64>,
    /// N sigmas plus the final one.
    pub sigmas: Vec<f64>,
}

/// Builds the plan: spaced timesteps, interpolated sigmas, an optional conversion (after which
/// timesteps are recomputed from the sigmas), and the final sigma (`final_sigmas_type`).
pub fn discrete_plan(
    config: &SchedulerConfig,
    schedule: &TrainingSchedule,
    steps: usize,
    default_spacing: TimestepSpacing,
) -> Result<DiscretePlan, SchedulerError> {
    let spacing = config.timestep_spacing.unwrap_or(default_spacing);
    let mut timesteps = spaced_timesteps(
        spacing,
        schedule.len(),
        steps,
        config.steps_offset.unwrap_or(0),
    )?;
    // diffusers interpolates in float64 from the float32 timesteps and table.
    let mut sigmas: Vec<f64> = timesteps
        .iter()
        .map(|&t| schedule.interp_sigma(t))
        .collect();
    let conversion = SigmaConversion::from_config(config)?;
    if conversion != SigmaConversion::Interpolated {
        let (sigma_min, sigma_max) = (sigmas[sigmas.len() - 1], sigmas[0]);
        sigmas = match conversion {
            SigmaConversion::Karras => karras(sigma_min, sigma_max, steps, 7.0),
            SigmaConversion::Exponential => exponential(sigma_min, sigma_max, steps),
            SigmaConversion::Beta => beta_sigmas(sigma_min, sigma_max, steps, 0.6, 0.6),
            SigmaConversion::Interpolated => sigmas,
        };
        timesteps = sigmas.iter().map(|&s| schedule.sigma_to_t(s)).collect();
    }
    let last = match config.final_sigmas_type.unwrap_or(FinalSigmasType::Zero) {
        FinalSigmasType::Zero => 0.0,
        FinalSigmasType::SigmaMin => schedule.sigma_min(),
    };
    sigmas.push(last);
    // diffusers stores both as float32 tensors.
    let to_f32 = |v: f64| f64::from(v as f32);
    Ok(DiscretePlan {
        timesteps: timesteps.into_iter().map(to_f32).collect(),
        sigmas: sigmas.into_iter().map(to_f32).collect(),
    })
}

/// Karras et al. 2022, eq. 5 (k-diffusion `get_sigmas_karras` without the appended zero).
pub fn karras(sigma_min: f64, sigma_max: f64, n: usize, rho: f64) -> Vec<f64> {
    let min_inv = sigma_min.powf(1.0 / rho);
    let max_inv = sigma_max.powf(1.0 / rho);
    linspace(0.0, 1.0, n)
        .into_iter()
        .map(|r| (max_inv + r * (min_inv - max_inv)).powf(rho))
        .collect()
}

/// Evenly spaced in log sigma from `sigma_max` to `sigma_min` (k-diffusion
/// `get_sigmas_exponential` without the appended zero).
pub fn exponential(sigma_min: f64, sigma_max: f64, n: usize) -> Vec<f64> {
    linspace(sigma_max.ln(), sigma_min.ln(), n)
        .into_iter()
        .map(f64::exp)
        .collect()
}

/// diffusers `_convert_to_beta`: sigma_min + ppf(1 - linspace(0, 1, n)) * (sigma_max - sigma_min).
pub fn beta_sigmas(sigma_min: f64, sigma_max: f64, n: usize, alpha: f64, beta: f64) -> Vec<f64> {
    linspace(0.0, 1.0, n)
        .into_iter()
        .map(|x| {
            sigma_min + super::special::beta_ppf(1.0 - x, alpha, beta) * (sigma_max - sigma_min)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spacings_match_diffusers_for_ten_steps() {
        // EulerDiscreteScheduler(num_train_timesteps=1000, steps_offset=1).set_timesteps(10)
        assert_eq!(
            spaced_timesteps(TimestepSpacing::Leading, 1000, 10, 1).unwrap(),
            vec![
                901.0, 801.0, 701.0, 601.0, 501.0, 401.0, 301.0, 201.0, 101.0, 1.0
            ]
        );
        assert_eq!(
            spaced_timesteps(TimestepSpacing::Trailing, 1000, 10, 1).unwrap(),
            vec![
                999.0, 899.0, 799.0, 699.0, 599.0, 499.0, 399.0, 299.0, 199.0, 99.0
            ]
        );
        let linspace = spaced_timesteps(TimestepSpacing::Linspace, 1000, 10, 1).unwrap();
        assert_eq!(linspace[0], 999.0);
        assert_eq!(linspace[9], 0.0);
        assert!((linspace[1] - 888.0).abs() < 1e-4);
    }

    #[test]
    fn trailing_spacing_rounds_like_numpy() {
        // np.arange(1000, 0, -1000/3).round() - 1 = [999, 666, 332]
        assert_eq!(
            spaced_timesteps(TimestepSpacing::Trailing, 1000, 3, 0).unwrap(),
            vec![999.0, 666.0, 332.0]
        );
    }
}
