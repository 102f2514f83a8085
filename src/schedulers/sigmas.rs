//! Sigma schedules: from a step count and the model's training noise table to the descending
//! noise levels a sampler walks through (`steps + 1` values ending in 0).
//!
//! Every schedule is a plain function of `(steps, model table, parameters)`; the samplers in
//! [`super::ksampler`] step over the list. Each follows the upstream function named on it
//! (k-diffusion `get_sigmas_*`, ComfyUI `comfy/samplers.py`, diffusers `set_timesteps`), including
//! their quirks, so that a list agrees with upstream to float32 rounding.
//!
//! Two ComfyUI schedules do not always give `steps + 1` values, exactly as upstream:
//! `ddim_uniform` walks a fixed stride and can give one more, and `beta` drops repeated timesteps
//! and can give fewer.

use super::config::{SchedulerConfig, TimestepSpacing};
use super::kinds::ScheduleKind;
use super::spacing::{self, discrete_plan};
use super::special::beta_ppf;
use super::stepper::SchedulerError;
use super::training::{TrainingSchedule, torch_linspace_f32};

/// The sigmas of `kind` for `steps` steps over `schedule`, with diffusers' `steps_offset = 0`
/// for the `leading` spacing (see [`sigmas_with_steps_offset`]).
pub fn sigmas(
    steps: usize,
    schedule: &TrainingSchedule,
    kind: &ScheduleKind,
) -> Result<Vec<f64>, SchedulerError> {
    sigmas_with_steps_offset(steps, schedule, kind, 0)
}

/// The sigmas of `kind` for `steps` steps over the model described by `model_config` (its
/// training betas, and its `steps_offset` for the `leading` spacing).
pub fn sigmas_for_model(
    steps: usize,
    model_config: &SchedulerConfig,
    kind: &ScheduleKind,
) -> Result<Vec<f64>, SchedulerError> {
    let schedule = TrainingSchedule::from_config(model_config)?;
    let offset = model_config.steps_offset.unwrap_or(0);
    sigmas_with_steps_offset(steps, &schedule, kind, offset)
}

/// The sigmas of `kind` for `steps` steps; `steps_offset` is read by `leading` only.
pub fn sigmas_with_steps_offset(
    steps: usize,
    schedule: &TrainingSchedule,
    kind: &ScheduleKind,
    steps_offset: u32,
) -> Result<Vec<f64>, SchedulerError> {
    if steps == 0 {
        return Err(SchedulerError::Config(
            "steps = 0: a sigma schedule needs at least 1 step".into(),
        ));
    }
    let (sigma_min, sigma_max) = (schedule.sigma_min(), schedule.sigma_max());
    let sigmas = match kind {
        ScheduleKind::Normal => normal(steps, schedule, false),
        ScheduleKind::SgmUniform => normal(steps, schedule, true),
        ScheduleKind::Karras { rho } => {
            append_zero(spacing::karras(sigma_min, sigma_max, steps, *rho))
        }
        ScheduleKind::Exponential => append_zero(spacing::exponential(sigma_min, sigma_max, steps)),
        ScheduleKind::Polyexponential { rho } => polyexponential(steps, sigma_min, sigma_max, *rho),
        ScheduleKind::Simple => simple(steps, schedule),
        ScheduleKind::DdimUniform => ddim_uniform(steps, schedule),
        ScheduleKind::Beta { alpha, beta } => beta_quantiles(steps, schedule, *alpha, *beta),
        ScheduleKind::KlOptimal => kl_optimal(steps, sigma_min, sigma_max),
        ScheduleKind::LinearQuadratic {
            threshold_noise,
            linear_steps,
        } => linear_quadratic(steps, sigma_max, *threshold_noise, *linear_steps)?,
        ScheduleKind::AlignYourSteps { sigmas } => align_your_steps(steps, sigmas)?,
        ScheduleKind::Leading => {
            diffusers_spacing(steps, schedule, TimestepSpacing::Leading, steps_offset)?
        }
        ScheduleKind::Trailing => {
            diffusers_spacing(steps, schedule, TimestepSpacing::Trailing, steps_offset)?
        }
        ScheduleKind::Linspace => {
            diffusers_spacing(steps, schedule, TimestepSpacing::Linspace, steps_offset)?
        }
    };
    Ok(sigmas)
}

fn append_zero(mut sigmas: Vec<f64>) -> Vec<f64> {
    sigmas.push(0.0);
    sigmas
}

/// The index of the table sigma nearest to `sigma` in log space (ComfyUI
/// `ModelSamplingDiscrete.timestep`: an argmin, not an interpolation).
fn nearest_timestep(schedule: &TrainingSchedule, sigma: f64) -> usize {
    let log_sigma = sigma.ln();
    let mut best = (0, f64::INFINITY);
    for (index, &log) in schedule.log_sigmas.iter().enumerate() {
        let distance = (log_sigma - log).abs();
        if distance < best.1 {
            best = (index, distance);
        }
    }
    best.0
}

/// Timesteps evenly spaced from the largest to the smallest sigma, mapped to sigmas by log-linear
/// interpolation: k-diffusion `DiscreteSchedule.get_sigmas` and ComfyUI `normal_scheduler`, or
/// with `sgm` ComfyUI's `sgm_uniform` (`steps + 1` points with the last dropped).
fn normal(steps: usize, schedule: &TrainingSchedule, sgm: bool) -> Vec<f64> {
    let start = nearest_timestep(schedule, schedule.sigma_max()) as f64;
    let end = nearest_timestep(schedule, schedule.sigma_min()) as f64;
    let timesteps = if sgm {
        let mut timesteps = torch_linspace_f32(start, end, steps + 1);
        timesteps.pop();
        timesteps
    } else if schedule.t_to_sigma(end) < 1e-5 {
        // ComfyUI: a table that reaches sigma 0 ends on it instead of an appended zero.
        let timesteps = torch_linspace_f32(start, end, steps + 1);
        return timesteps
            .iter()
            .map(|&t| schedule.t_to_sigma(f64::from(t)))
            .collect();
    } else {
        torch_linspace_f32(start, end, steps)
    };
    append_zero(
        timesteps
            .iter()
            .map(|&t| schedule.t_to_sigma(f64::from(t)))
            .collect(),
    )
}

/// k-diffusion `get_sigmas_polyexponential`: log sigma along the ramp `linspace(1, 0, n)^rho`.
fn polyexponential(steps: usize, sigma_min: f64, sigma_max: f64, rho: f64) -> Vec<f64> {
    let (log_min, log_max) = (sigma_min.ln(), sigma_max.ln());
    append_zero(
        torch_linspace_f32(1.0, 0.0, steps)
            .into_iter()
            .map(|ramp| (f64::from(ramp).powf(rho) * (log_max - log_min) + log_min).exp())
            .collect(),
    )
}

/// ComfyUI `simple_scheduler`: every `(n / steps)`-th table sigma counted from the top.
fn simple(steps: usize, schedule: &TrainingSchedule) -> Vec<f64> {
    let n = schedule.len();
    let stride = n as f64 / steps as f64;
    append_zero(
        (0..steps)
            .map(|x| f64::from(schedule.sigmas[n - 1 - (x as f64 * stride) as usize]))
            .collect(),
    )
}

/// ComfyUI `ddim_scheduler`: table sigmas at 1, 1 + k, 1 + 2k, ... (k = n // steps), reversed,
/// after a 0. The stride can fit one more value than `steps` (upstream behaviour, kept).
fn ddim_uniform(steps: usize, schedule: &TrainingSchedule) -> Vec<f64> {
    let n = schedule.len();
    let mut steps = steps;
    let mut sigmas = Vec::new();
    if f64::from(schedule.sigmas[1]).abs() <= 1e-5 {
        steps += 1;
    } else {
        sigmas.push(0.0);
    }
    let stride = (n / steps).max(1);
    sigmas.extend(
        (1..n)
            .step_by(stride)
            .map(|t| f64::from(schedule.sigmas[t])),
    );
    sigmas.reverse();
    sigmas
}

/// ComfyUI `beta_scheduler` (Lee et al. 2024): table sigmas at the Beta(alpha, beta) quantiles
/// of `1 - linspace(0, 1, steps, endpoint=False)`, rounded to timesteps, repeats dropped.
fn beta_quantiles(steps: usize, schedule: &TrainingSchedule, alpha: f64, beta: f64) -> Vec<f64> {
    let total = (schedule.len() - 1) as f64;
    let spacing = 1.0 / steps as f64;
    let mut sigmas = Vec::with_capacity(steps + 1);
    let mut last = None;
    for i in 0..steps {
        let quantile = 1.0 - i as f64 * spacing;
        let t = spacing::round_half_even(beta_ppf(quantile, alpha, beta) * total);
        if last != Some(t) {
            sigmas.push(f64::from(schedule.sigmas[t as usize]));
        }
        last = Some(t);
    }
    append_zero(sigmas)
}

/// ComfyUI `kl_optimal_scheduler` (Sabour et al. 2024):
/// `tan(u * atan(sigma_min) + (1 - u) * atan(sigma_max))` for `u = i / (n - 1)`.
/// With one step upstream divides 0 by 0; here the single sigma is `sigma_max`.
fn kl_optimal(steps: usize, sigma_min: f64, sigma_max: f64) -> Vec<f64> {
    let (low, high) = (sigma_min.atan(), sigma_max.atan());
    let last = (steps.max(2) - 1) as f32;
    append_zero(
        (0..steps)
            .map(|i| {
                let u = f64::from(i as f32 / last);
                (u * low + (1.0 - u) * high).tan()
            })
            .collect(),
    )
}

/// ComfyUI `linear_quadratic_schedule` (from Mochi): `1 - ramp` times `sigma_max`, the ramp
/// linear up to `threshold_noise` over `linear_steps` steps, then quadratic up to 1.
fn linear_quadratic(
    steps: usize,
    sigma_max: f64,
    threshold_noise: f64,
    linear_steps: Option<u32>,
) -> Result<Vec<f64>, SchedulerError> {
    if steps == 1 {
        return Ok(vec![sigma_max, 0.0]);
    }
    let linear_steps = linear_steps.map_or(steps / 2, |n| n as usize);
    if linear_steps == 0 || linear_steps >= steps {
        return Err(SchedulerError::Config(format!(
            "linear_quadratic: linear_steps = {linear_steps} must be between 1 and steps - 1 ({})",
            steps - 1
        )));
    }
    let (n, linear) = (steps as f64, linear_steps as f64);
    let quadratic_steps = n - linear;
    let step_diff = linear - threshold_noise * n;
    let quadratic_coef = step_diff / (linear * quadratic_steps * quadratic_steps);
    let linear_coef =
        threshold_noise / linear - 2.0 * step_diff / (quadratic_steps * quadratic_steps);
    let constant = quadratic_coef * linear * linear;
    let ramp = (0..linear_steps)
        .map(|i| i as f64 * threshold_noise / linear)
        .chain((linear_steps..steps).map(|i| {
            let i = i as f64;
            quadratic_coef * i * i + linear_coef * i + constant
        }))
        .chain(std::iter::once(1.0));
    // Upstream builds a float32 tensor and multiplies by the float32 sigma_max.
    Ok(ramp
        .map(|r| f64::from((1.0 - r) as f32) * sigma_max)
        .collect())
}

/// ComfyUI `AlignYourStepsScheduler`: the published sigmas, log-linearly interpolated to
/// `steps + 1` points (`loglinear_interp`) unless they already have that many, last set to 0.
fn align_your_steps(steps: usize, published: &[f64]) -> Result<Vec<f64>, SchedulerError> {
    if published.len() < 2 || published.iter().any(|&s| s <= 0.0 || !s.is_finite()) {
        return Err(SchedulerError::Config(
            "align_your_steps: need at least 2 positive published sigmas".into(),
        ));
    }
    let mut sigmas = if published.len() == steps + 1 {
        published.to_vec()
    } else {
        loglinear_interp(published, steps + 1)
    };
    if let Some(last) = sigmas.last_mut() {
        *last = 0.0;
    }
    Ok(sigmas)
}

/// ComfyUI `loglinear_interp`: `np.interp` of log sigma (ascending) from
/// `linspace(0, 1, len)` onto `linspace(0, 1, n)`, descending again.
fn loglinear_interp(descending: &[f64], n: usize) -> Vec<f64> {
    let ys: Vec<f64> = descending.iter().rev().map(|s| s.ln()).collect();
    let xs = spacing::linspace(0.0, 1.0, ys.len());
    let mut out: Vec<f64> = spacing::linspace(0.0, 1.0, n)
        .into_iter()
        .map(|x| np_interp(x, &xs, &ys).exp())
        .collect();
    out.reverse();
    out
}

/// `np.interp(x, xs, ys)` for ascending `xs` (numpy's slope formula, ends clamped).
fn np_interp(x: f64, xs: &[f64], ys: &[f64]) -> f64 {
    let last = xs.len() - 1;
    if x <= xs[0] {
        return ys[0];
    }
    if x >= xs[last] {
        return ys[last];
    }
    let j = xs.partition_point(|&xp| xp <= x) - 1;
    if xs[j] == x {
        return ys[j];
    }
    let slope = (ys[j + 1] - ys[j]) / (xs[j + 1] - xs[j]);
    slope * (x - xs[j]) + ys[j]
}

/// The sigmas diffusers' `EulerDiscreteScheduler.set_timesteps` gives with this timestep spacing
/// (interpolated table sigmas at the spaced timesteps, a final 0).
fn diffusers_spacing(
    steps: usize,
    schedule: &TrainingSchedule,
    spacing: TimestepSpacing,
    steps_offset: u32,
) -> Result<Vec<f64>, SchedulerError> {
    let config = SchedulerConfig {
        timestep_spacing: Some(spacing),
        steps_offset: Some(steps_offset),
        ..Default::default()
    };
    Ok(discrete_plan(&config, schedule, steps, spacing)?.sigmas)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedulers::config::BetaSchedule;

    fn sdxl() -> TrainingSchedule {
        TrainingSchedule::from_config(&SchedulerConfig {
            beta_start: Some(0.00085),
            beta_end: Some(0.012),
            beta_schedule: Some(BetaSchedule::ScaledLinear),
            ..Default::default()
        })
        .unwrap()
    }

    #[test]
    fn normal_spans_the_whole_table() {
        let schedule = sdxl();
        let sigmas = sigmas(10, &schedule, &ScheduleKind::Normal).unwrap();
        assert_eq!(sigmas.len(), 11);
        assert!((sigmas[0] - schedule.sigma_max()).abs() < 1e-9);
        assert!((sigmas[9] - schedule.sigma_min()).abs() < 1e-9);
        assert_eq!(sigmas[10], 0.0);
    }

    #[test]
    fn simple_and_ddim_pick_table_entries() {
        let schedule = sdxl();
        let simple = sigmas(10, &schedule, &ScheduleKind::Simple).unwrap();
        assert_eq!(simple[1], f64::from(schedule.sigmas[899]));
        let ddim = sigmas(10, &schedule, &ScheduleKind::DdimUniform).unwrap();
        assert_eq!(ddim[0], f64::from(schedule.sigmas[901]));
        assert_eq!(ddim[9], f64::from(schedule.sigmas[1]));
        // A stride that fits one more value than asked for, as in ComfyUI.
        assert_eq!(
            sigmas(7, &schedule, &ScheduleKind::DdimUniform)
                .unwrap()
                .len(),
            9
        );
    }

    #[test]
    fn align_your_steps_keeps_the_published_list_at_ten_steps() {
        let published = vec![
            14.6, 6.3, 3.7, 2.1, 1.3, 0.86, 0.55, 0.37, 0.23, 0.11, 0.029,
        ];
        let kind = ScheduleKind::AlignYourSteps {
            sigmas: published.clone(),
        };
        let at_ten = sigmas(10, &sdxl(), &kind).unwrap();
        assert_eq!(&at_ten[..10], &published[..10]);
        assert_eq!(at_ten[10], 0.0);
        let at_twenty = sigmas(20, &sdxl(), &kind).unwrap();
        assert_eq!(at_twenty.len(), 21);
        assert!((at_twenty[0] - 14.6).abs() < 1e-12);
        assert!(
            (at_twenty[2] - 6.3).abs() < 1e-12,
            "every other point is a published one"
        );
    }

    #[test]
    fn linear_quadratic_rejects_a_bad_split() {
        let kind = ScheduleKind::LinearQuadratic {
            threshold_noise: 0.025,
            linear_steps: Some(10),
        };
        assert!(sigmas(10, &sdxl(), &kind).is_err());
        assert!(sigmas(0, &sdxl(), &ScheduleKind::Normal).is_err());
    }
}
