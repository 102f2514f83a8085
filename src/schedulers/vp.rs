//! What diffusers' alpha/sigma ("variance preserving") schedulers share: DPM-Solver (multistep
//! and singlestep), UniPC, DEIS, DDIM, DDPM, PNDM and LCM.
//!
//! These classes write a noisy sample as x_t = alpha_t x0 + sigma_t eps with
//! alpha_t^2 + sigma_t^2 = 1, where the sigma-based (Euler) classes write x = x0 + sigma eps.
//! The two frames are related by alpha_t = 1 / sqrt(1 + sigma^2), sigma_t = sigma alpha_t
//! (diffusers `_sigma_to_alpha_sigma_t`), so every plan still lists k-diffusion sigmas. The
//! model-output conversions here therefore differ from [`super::euler::predicted_original`],
//! which works on the unscaled sample.

use ndarray::{Axis, Zip};

use super::config::{PredictionType, SchedulerConfig, TimestepSpacing};
use super::spacing::{
    SigmaConversion, beta_sigmas, exponential, karras, linspace, round_half_even, spaced_timesteps,
};
use super::stepper::{Sample, SchedulerError};
use super::training::TrainingSchedule;

mod history;

pub use history::{History, kept};

/// `(alpha_t, sigma_t)` of the k-diffusion noise level `sigma` (diffusers
/// `_sigma_to_alpha_sigma_t`), computed in float32 from a float32 sigma in PyTorch's order of
/// operations on the scheduler's float32 `sigmas` (PyTorch's vectorised `sqrt` can still
/// differ by an ulp).
pub fn alpha_sigma(sigma: f64) -> (f64, f64) {
    let sigma = sigma as f32;
    let alpha = 1.0 / (sigma * sigma + 1.0).sqrt();
    (f64::from(alpha), f64::from(sigma * alpha))
}

/// Half log-SNR `lambda = ln(alpha_t) - ln(sigma_t)`; `+inf` at sigma = 0.
pub fn lambda(sigma: f64) -> f64 {
    let (alpha, sigma_t) = alpha_sigma(sigma);
    alpha.ln() - sigma_t.ln()
}

/// `sum(coefficient * tensor)`, evaluated left to right in float32 with one rounding per
/// product and per sum, as the chain of tensor operations in diffusers' updates is.
pub fn combine(terms: &[(f64, &Sample)]) -> Sample {
    let Some(((first_coefficient, first), rest)) = terms.split_first() else {
        return Sample::zeros(ndarray::IxDyn(&[]));
    };
    let mut out = *first * (*first_coefficient as f32);
    for (coefficient, tensor) in rest {
        let c = *coefficient as f32;
        Zip::from(&mut out)
            .and(*tensor)
            .for_each(|o, &x| *o += c * x);
    }
    out
}

/// The clean sample (x0) the model output implies, given the current `alpha_t` and `sigma_t`
/// (diffusers `convert_model_output` for data-prediction solvers, DDIM/DDPM/LCM
/// `pred_original_sample`).
pub fn data_prediction(
    prediction: PredictionType,
    model_output: &Sample,
    sample: &Sample,
    alpha_t: f64,
    sigma_t: f64,
) -> Sample {
    let (a, s) = (alpha_t as f32, sigma_t as f32);
    match prediction {
        PredictionType::Epsilon => Zip::from(sample)
            .and(model_output)
            .map_collect(|&x, &m| (x - s * m) / a),
        PredictionType::VPrediction => Zip::from(sample)
            .and(model_output)
            .map_collect(|&x, &m| a * x - s * m),
        PredictionType::Sample => model_output.clone(),
    }
}

/// The noise (epsilon) the model output implies (noise-prediction solvers: `dpmsolver`,
/// UniPC with `predict_x0 = false`, DDIM's `pred_epsilon`).
pub fn noise_prediction(
    prediction: PredictionType,
    model_output: &Sample,
    sample: &Sample,
    alpha_t: f64,
    sigma_t: f64,
) -> Sample {
    let (a, s) = (alpha_t as f32, sigma_t as f32);
    match prediction {
        PredictionType::Epsilon => model_output.clone(),
        PredictionType::VPrediction => Zip::from(model_output)
            .and(sample)
            .map_collect(|&m, &x| a * m + s * x),
        PredictionType::Sample => Zip::from(sample)
            .and(model_output)
            .map_collect(|&x, &m| (x - a * m) / s),
    }
}

/// What happens to the predicted x0 before it is used.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum X0Guard {
    /// Used as is.
    None,
    /// Clamped to `[-range, range]` (`clip_sample`).
    Clip(f32),
    /// Imagen's dynamic thresholding (`thresholding`, Saharia et al. 2022).
    Threshold {
        /// `dynamic_thresholding_ratio`: the quantile of |x0| per batch element.
        ratio: f64,
        /// `sample_max_value`: the largest threshold.
        max: f64,
    },
}

impl X0Guard {
    /// From `thresholding` and, for classes that have it (`clip_default` is the class's default),
    /// `clip_sample` / `clip_sample_range`. Thresholding wins over clipping, as in diffusers.
    pub fn from_config(config: &SchedulerConfig, clip_default: Option<bool>) -> Self {
        if config.thresholding.unwrap_or(false) {
            return Self::Threshold {
                ratio: config.dynamic_thresholding_ratio.unwrap_or(0.995),
                max: config.sample_max_value.unwrap_or(1.0),
            };
        }
        match clip_default {
            Some(default) if config.clip_sample.unwrap_or(default) => {
                Self::Clip(config.clip_sample_range.unwrap_or(1.0) as f32)
            }
            _ => Self::None,
        }
    }

    /// Applies the guard to a predicted x0.
    pub fn apply(&self, x0: Sample) -> Sample {
        match *self {
            Self::None => x0,
            Self::Clip(range) => x0.mapv(|v| v.clamp(-range, range)),
            Self::Threshold { ratio, max } => threshold(x0, ratio, max),
        }
    }
}

/// diffusers `_threshold_sample`: per batch element, s = the `ratio` quantile of |x| (linear
/// interpolation, as `torch.quantile`) clamped to [1, max]; x is clamped to [-s, s] and divided
/// by s.
fn threshold(mut sample: Sample, ratio: f64, max: f64) -> Sample {
    if sample.ndim() == 0 {
        return sample;
    }
    for mut item in sample.axis_iter_mut(Axis(0)) {
        let mut magnitudes: Vec<f32> = item.iter().map(|v| v.abs()).collect();
        if magnitudes.is_empty() {
            continue;
        }
        magnitudes.sort_by(f32::total_cmp);
        // torch.quantile: float32 rank, then `lerp` of the neighbours (torch's two-sided form).
        let rank = ratio as f32 * (magnitudes.len() - 1) as f32;
        let (below, above) = (magnitudes[rank as usize], magnitudes[rank.ceil() as usize]);
        let weight = rank - rank.floor();
        let quantile = if weight < 0.5 {
            below + weight * (above - below)
        } else {
            above - (above - below) * (1.0 - weight)
        };
        let s = quantile.max(1.0).min(max as f32);
        item.mapv_inplace(|v| v.clamp(-s, s) / s);
    }
    sample
}

/// Rejects model-config keys this crate does not model but that would change a class's
/// behaviour (anything but `null` / `false` for them), instead of silently ignoring them.
pub fn reject_unmodelled(
    config: &SchedulerConfig,
    class: &str,
    keys: &[&str],
) -> Result<(), SchedulerError> {
    for key in keys {
        match config.unknown.get(*key) {
            None | Some(serde_json::Value::Null) | Some(serde_json::Value::Bool(false)) => {}
            Some(value) => {
                return Err(SchedulerError::Unsupported(format!(
                    "{class} with {key} = {value}"
                )));
            }
        }
    }
    Ok(())
}

/// The training schedule of a class, from the merged config. `has_zero_snr` says whether the
/// class has the `rescale_betas_zero_snr` key at all (from_config ignores keys a class lacks).
pub fn training_schedule(
    config: &SchedulerConfig,
    has_zero_snr: bool,
) -> Result<TrainingSchedule, SchedulerError> {
    if has_zero_snr {
        TrainingSchedule::from_config(config)
    } else {
        let mut config = config.clone();
        config.rescale_betas_zero_snr = None;
        TrainingSchedule::from_config(&config)
    }
}

/// `alphas_cumprod` as the classes that work on it directly (DDIM, DDPM, PNDM, LCM) hold it:
/// with zero terminal SNR they keep the exact 0 at the last timestep, where the sigma-based
/// classes substitute 2^-24.
pub fn raw_alphas_cumprod(config: &SchedulerConfig, schedule: &TrainingSchedule) -> Vec<f32> {
    let mut alphas_cumprod = schedule.alphas_cumprod.clone();
    if config.rescale_betas_zero_snr.unwrap_or(false)
        && let Some(last) = alphas_cumprod.last_mut()
    {
        *last = 0.0;
    }
    alphas_cumprod
}

/// The noise level at each timestep plus a final 0: the sigmas this crate reports for the
/// classes that have no `sigmas` of their own (DDIM, DDPM, PNDM, LCM). They are the training
/// table's float32 `sqrt((1 - acp) / acp)`, so with zero terminal SNR the last timestep reads
/// 4096 (acp = 2^-24, as the sigma-based classes use it) rather than infinity.
pub fn sigmas_at_timesteps(
    schedule: &TrainingSchedule,
    timesteps: &[f64],
) -> Result<Vec<f64>, SchedulerError> {
    let mut sigmas = timesteps
        .iter()
        .map(|&t| {
            alpha_cumprod_at(&schedule.alphas_cumprod, t)?;
            Ok(f64::from(schedule.sigmas[t as usize]))
        })
        .collect::<Result<Vec<f64>, SchedulerError>>()?;
    sigmas.push(0.0);
    Ok(sigmas)
}

/// `alphas_cumprod[t]`, or an error for a timestep outside the table.
pub fn alpha_cumprod_at(alphas_cumprod: &[f32], t: f64) -> Result<f32, SchedulerError> {
    if t < 0.0 || t as usize >= alphas_cumprod.len() {
        return Err(SchedulerError::Config(format!(
            "timestep {t} is outside the training schedule (0..{})",
            alphas_cumprod.len()
        )));
    }
    Ok(alphas_cumprod[t as usize])
}

/// `sqrt(acp) * original + sqrt(1 - acp) * noise` at timestep `t`, in float32 (diffusers
/// `add_noise` of DDIM, DDPM, PNDM and LCM).
pub fn add_noise_at_timestep(
    alphas_cumprod: &[f32],
    t: f64,
    original: &Sample,
    noise: &Sample,
) -> Result<Sample, SchedulerError> {
    let acp = alpha_cumprod_at(alphas_cumprod, t)?;
    let (alpha, sigma) = (acp.sqrt(), (1.0 - acp).sqrt());
    Ok(combine(&[
        (f64::from(alpha), original),
        (f64::from(sigma), noise),
    ]))
}

/// Descending integer timesteps over `steps + 1` spaced points with the last dropped: the
/// `set_timesteps` spacing of DPMSolverMultistep, UniPC and DEIS (`linspace`, `leading` with
/// `steps_offset`, `trailing`).
pub fn solver_timesteps(
    spacing: TimestepSpacing,
    num_train_timesteps: usize,
    steps: usize,
    steps_offset: u32,
) -> Result<Vec<f64>, SchedulerError> {
    check_steps(num_train_timesteps, steps)?;
    let n = num_train_timesteps;
    Ok(match spacing {
        TimestepSpacing::Linspace => linspace(0.0, (n - 1) as f64, steps + 1)
            .into_iter()
            .rev()
            .take(steps)
            .map(round_half_even)
            .collect(),
        TimestepSpacing::Leading => {
            let ratio = n / (steps + 1);
            (1..=steps)
                .rev()
                .map(|i| (i * ratio) as f64 + f64::from(steps_offset))
                .collect()
        }
        TimestepSpacing::Trailing => spaced_timesteps(spacing, n, steps, 0)?,
    })
}

/// Descending integer timesteps over `steps` spaced points: the spacing of DDIM, DDPM and PNDM
/// (`np.linspace(...).round()` for `linspace`, otherwise [`spaced_timesteps`]).
pub fn integer_timesteps(
    spacing: TimestepSpacing,
    num_train_timesteps: usize,
    steps: usize,
    steps_offset: u32,
) -> Result<Vec<f64>, SchedulerError> {
    check_steps(num_train_timesteps, steps)?;
    match spacing {
        TimestepSpacing::Linspace => Ok(linspace(0.0, (num_train_timesteps - 1) as f64, steps)
            .into_iter()
            .rev()
            .map(round_half_even)
            .collect()),
        _ => spaced_timesteps(spacing, num_train_timesteps, steps, steps_offset),
    }
}

fn check_steps(num_train_timesteps: usize, steps: usize) -> Result<(), SchedulerError> {
    if steps == 0 || steps > num_train_timesteps {
        return Err(SchedulerError::Config(format!(
            "steps = {steps}: must be between 1 and num_train_timesteps ({num_train_timesteps})"
        )));
    }
    Ok(())
}

/// Timesteps and sigmas (without the final one) of the solvers' `set_timesteps`: the table's
/// sigmas at the `spaced` timesteps, or a conversion over the model's full noise range
/// (`_convert_to_karras` / `_convert_to_exponential` / `_convert_to_beta` between the table's
/// smallest and largest sigma) with timesteps from `_sigma_to_t`. Karras timesteps are
/// rounded when `round_karras`; every converted timestep then becomes an integer by truncation
/// (diffusers' cast to int64).
pub fn solver_plan(
    conversion: SigmaConversion,
    schedule: &TrainingSchedule,
    spaced: Vec<f64>,
    round_karras: bool,
) -> (Vec<f64>, Vec<f64>) {
    let (sigma_min, sigma_max, steps) = (schedule.sigma_min(), schedule.sigma_max(), spaced.len());
    let sigmas = match conversion {
        SigmaConversion::Interpolated => {
            let sigmas = spaced.iter().map(|&t| schedule.interp_sigma(t)).collect();
            return (spaced, sigmas);
        }
        SigmaConversion::Karras => karras(sigma_min, sigma_max, steps, 7.0),
        SigmaConversion::Exponential => exponential(sigma_min, sigma_max, steps),
        SigmaConversion::Beta => beta_sigmas(sigma_min, sigma_max, steps, 0.6, 0.6),
    };
    let round = round_karras && conversion == SigmaConversion::Karras;
    let timesteps = sigmas
        .iter()
        .map(|&sigma| {
            let t = schedule.sigma_to_t(sigma);
            if round { round_half_even(t) } else { t.trunc() }
        })
        .collect();
    (timesteps, sigmas)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn solver_spacings_match_diffusers() {
        // DPMSolverMultistepScheduler(steps_offset=1, timestep_spacing=...).set_timesteps(10)
        assert_eq!(
            solver_timesteps(TimestepSpacing::Leading, 1000, 10, 1).unwrap(),
            vec![
                901.0, 811.0, 721.0, 631.0, 541.0, 451.0, 361.0, 271.0, 181.0, 91.0
            ]
        );
        assert_eq!(
            solver_timesteps(TimestepSpacing::Trailing, 1000, 10, 1).unwrap(),
            vec![
                999.0, 899.0, 799.0, 699.0, 599.0, 499.0, 399.0, 299.0, 199.0, 99.0
            ]
        );
        assert_eq!(
            solver_timesteps(TimestepSpacing::Linspace, 1000, 10, 0).unwrap(),
            vec![
                999.0, 899.0, 799.0, 699.0, 599.0, 500.0, 400.0, 300.0, 200.0, 100.0
            ]
        );
    }

    #[test]
    fn thresholding_clamps_and_rescales_per_batch_item() {
        let sample =
            Sample::from_shape_vec(ndarray::IxDyn(&[1, 4]), vec![-4.0, 1.0, 2.0, 3.0]).unwrap();
        // quantile 0.5 of [1, 2, 3, 4] = 2.5 -> s = min(2.5, max = 3)
        let out = threshold(sample, 0.5, 3.0);
        assert_eq!(out.as_slice().unwrap(), &[-1.0, 0.4, 0.8, 1.0]);
    }
}
