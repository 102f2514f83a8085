//! diffusers scheduler configuration: the model's `scheduler/scheduler_config.json` and the
//! per-preset overrides from `schedulers.toml`, merged like
//! `Class.from_config(pipe.scheduler.config, **overrides)`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// `beta_schedule`: how the training betas are laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BetaSchedule {
    /// Linear in beta.
    Linear,
    /// Linear in sqrt(beta) (Stable Diffusion).
    ScaledLinear,
    /// Cosine schedule (Nichol & Dhariwal 2021).
    #[serde(rename = "squaredcos_cap_v2")]
    SquaredcosCapV2,
}

/// `prediction_type`: what the UNet predicts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PredictionType {
    /// The added noise.
    Epsilon,
    /// The velocity v = alpha * eps - sigma * x0.
    VPrediction,
    /// The clean sample.
    Sample,
}

/// `timestep_spacing`: how N inference timesteps are picked from the training range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimestepSpacing {
    /// 0, k, 2k, ... plus steps_offset.
    Leading,
    /// Counted back from the end.
    Trailing,
    /// Evenly from 0 to n_train - 1.
    Linspace,
}

/// `final_sigmas_type`: the sigma after the last step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinalSigmasType {
    /// Zero.
    Zero,
    /// The model's smallest sigma.
    SigmaMin,
}

/// `algorithm_type` of the DPM-Solver schedulers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AlgorithmType {
    /// Data-prediction solver.
    #[serde(rename = "dpmsolver++")]
    DpmSolverPlusPlus,
    /// Stochastic data-prediction solver.
    #[serde(rename = "sde-dpmsolver++")]
    SdeDpmSolverPlusPlus,
    /// Noise-prediction solver.
    #[serde(rename = "dpmsolver")]
    DpmSolver,
    /// Stochastic noise-prediction solver.
    #[serde(rename = "sde-dpmsolver")]
    SdeDpmSolver,
    /// DEIS's own type.
    #[serde(rename = "deis")]
    Deis,
}

/// `solver_type` of the multistep schedulers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SolverType {
    /// Midpoint second-order update.
    Midpoint,
    /// Heun second-order update.
    Heun,
    /// DEIS log-rho.
    Logrho,
    /// UniPC B(h) = h.
    Bh1,
    /// UniPC B(h) = e^h - 1.
    Bh2,
}

/// `timestep_type` (EulerDiscrete): discrete timesteps or continuous `0.25 * log(sigma)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimestepType {
    /// Integer training timesteps.
    Discrete,
    /// EDM-style continuous timesteps.
    Continuous,
}

/// Every diffusers scheduler config key the crate understands. All optional: a preset's
/// overrides set a few, a model's `scheduler_config.json` sets many, diffusers' class defaults
/// fill the rest. Keys not listed here land in `unknown`: ignored (logged) in a model's JSON,
/// an error in `schedulers.toml`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SchedulerConfig {
    /// Number of training timesteps (1000 for SDXL).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub num_train_timesteps: Option<u32>,
    /// First training beta.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub beta_start: Option<f64>,
    /// Last training beta.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub beta_end: Option<f64>,
    /// Beta layout.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub beta_schedule: Option<BetaSchedule>,
    /// Explicit betas (overrides the schedule when given).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trained_betas: Option<Vec<f64>>,
    /// What the UNet predicts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prediction_type: Option<PredictionType>,
    /// How inference timesteps are spaced.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timestep_spacing: Option<TimestepSpacing>,
    /// Offset added to leading-spaced timesteps.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub steps_offset: Option<u32>,
    /// Sigma interpolation between timesteps (`linear` or `log_linear`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interpolation_type: Option<String>,
    /// Use Karras sigmas.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub use_karras_sigmas: Option<bool>,
    /// Use exponential sigmas.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub use_exponential_sigmas: Option<bool>,
    /// Use beta-distribution sigmas.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub use_beta_sigmas: Option<bool>,
    /// Rescale betas to zero terminal SNR (Lin et al. 2023).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rescale_betas_zero_snr: Option<bool>,
    /// The sigma after the last step.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub final_sigmas_type: Option<FinalSigmasType>,
    /// DPM-Solver algorithm.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub algorithm_type: Option<AlgorithmType>,
    /// Multistep solver order.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub solver_order: Option<u32>,
    /// Second-order update rule.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub solver_type: Option<SolverType>,
    /// Lower the order on the final steps (stability with few steps).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lower_order_final: Option<bool>,
    /// Use an Euler step for the final step.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub euler_at_final: Option<bool>,
    /// Lu et al. lambda spacing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub use_lu_lambdas: Option<bool>,
    /// Clip the predicted sample.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub clip_sample: Option<bool>,
    /// Clip range.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub clip_sample_range: Option<f64>,
    /// DDIM/PNDM: alpha of the step before the first is 1.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub set_alpha_to_one: Option<bool>,
    /// PNDM: skip the Runge-Kutta warm-up steps.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skip_prk_steps: Option<bool>,
    /// Dynamic thresholding (Imagen).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub thresholding: Option<bool>,
    /// Thresholding percentile.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dynamic_thresholding_ratio: Option<f64>,
    /// Thresholding maximum.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sample_max_value: Option<f64>,
    /// Discrete or continuous timesteps.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timestep_type: Option<TimestepType>,
    /// LCM: the distillation schedule's step count.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub original_inference_steps: Option<u32>,
    /// LCM: boundary-condition timestep scaling.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timestep_scaling: Option<f64>,
    /// DDPM variance type.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub variance_type: Option<String>,
    /// UniPC: predict x0 (data prediction).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub predict_x0: Option<bool>,
    /// UniPC: steps without the corrector.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disable_corrector: Option<Vec<u32>>,
    /// DPMSolverSDE: Brownian tree seed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub noise_sampler_seed: Option<u64>,
    /// Keys the crate does not know, with their values.
    #[serde(flatten, skip_serializing)]
    pub unknown: BTreeMap<String, serde_json::Value>,
}

impl SchedulerConfig {
    /// Parses a model's `scheduler_config.json`; keys starting with `_` (`_class_name`,
    /// `_diffusers_version`) are metadata and dropped.
    pub fn from_json(text: &str) -> Result<Self, serde_json::Error> {
        let mut config: SchedulerConfig = serde_json::from_str(text)?;
        config.unknown.retain(|key, _| !key.starts_with('_'));
        Ok(config)
    }

    /// `self` with every key set in `overrides` replaced (diffusers' `from_config(config, **overrides)`).
    pub fn with_overrides(&self, overrides: &SchedulerConfig) -> SchedulerConfig {
        // Round-trip through JSON objects so every field is merged without listing them again.
        let mut base = serde_json::to_value(self).unwrap_or_default();
        if let (Some(base), Ok(serde_json::Value::Object(over))) =
            (base.as_object_mut(), serde_json::to_value(overrides))
        {
            base.extend(over);
        }
        serde_json::from_value(base).unwrap_or_else(|_| self.clone())
    }
}

/// Every key [`SchedulerConfig`] reads (suggestions for typos in `schedulers.toml`).
pub const KNOWN_KEYS: &[&str] = &[
    "num_train_timesteps",
    "beta_start",
    "beta_end",
    "beta_schedule",
    "trained_betas",
    "prediction_type",
    "timestep_spacing",
    "steps_offset",
    "interpolation_type",
    "use_karras_sigmas",
    "use_exponential_sigmas",
    "use_beta_sigmas",
    "rescale_betas_zero_snr",
    "final_sigmas_type",
    "algorithm_type",
    "solver_order",
    "solver_type",
    "lower_order_final",
    "euler_at_final",
    "use_lu_lambdas",
    "clip_sample",
    "clip_sample_range",
    "set_alpha_to_one",
    "skip_prk_steps",
    "thresholding",
    "dynamic_thresholding_ratio",
    "sample_max_value",
    "timestep_type",
    "original_inference_steps",
    "timestep_scaling",
    "variance_type",
    "predict_x0",
    "disable_corrector",
    "noise_sampler_seed",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_replace_only_the_keys_they_set() {
        let base = SchedulerConfig::from_json(
            r#"{"_class_name": "EulerDiscreteScheduler", "beta_start": 0.00085, "steps_offset": 1,
                "timestep_spacing": "leading", "sample_max_value": 1.0}"#,
        )
        .unwrap();
        assert!(base.unknown.is_empty());
        let over = SchedulerConfig {
            timestep_spacing: Some(TimestepSpacing::Trailing),
            use_karras_sigmas: Some(true),
            ..Default::default()
        };
        let merged = base.with_overrides(&over);
        assert_eq!(merged.timestep_spacing, Some(TimestepSpacing::Trailing));
        assert_eq!(merged.use_karras_sigmas, Some(true));
        assert_eq!(merged.beta_start, Some(0.00085));
        assert_eq!(merged.steps_offset, Some(1));
    }

    #[test]
    fn every_known_key_is_a_field() {
        for key in KNOWN_KEYS {
            let config = SchedulerConfig::from_json(&format!(r#"{{"{key}": null}}"#)).unwrap();
            assert!(
                config.unknown.is_empty(),
                "{key} is not a SchedulerConfig field"
            );
        }
    }

    #[test]
    fn unknown_model_keys_are_kept_aside() {
        let config =
            SchedulerConfig::from_json(r#"{"beta_end": 0.012, "shift_terminal": 0.5}"#).unwrap();
        assert_eq!(config.beta_end, Some(0.012));
        assert!(config.unknown.contains_key("shift_terminal"));
    }
}
