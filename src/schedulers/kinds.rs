//! The closed sets the scheduler registry maps names onto: sigma schedule kinds, sampler
//! algorithms and the diffusers scheduler classes a preset can name.
//!
//! These are properties of the code (what is implemented), not data: `schedulers.toml` decides
//! which named entries exist and with which parameters.

use serde::{Deserialize, Serialize};

/// A sigma schedule implementation with its parameters.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ScheduleKind {
    /// Evenly spaced timesteps mapped to sigmas (k-diffusion `DiscreteSchedule.get_sigmas`).
    Normal,
    /// Karras et al. 2022 eq. 5.
    Karras {
        /// Exponent (7 in the paper).
        rho: f64,
    },
    /// Evenly spaced in log sigma.
    Exponential,
    /// Polynomial ramp in log sigma.
    Polyexponential {
        /// Ramp exponent (1 is exponential).
        rho: f64,
    },
    /// ComfyUI `sgm_uniform`.
    SgmUniform,
    /// ComfyUI `simple`.
    Simple,
    /// ComfyUI `ddim_uniform`.
    DdimUniform,
    /// Beta-distribution quantiles.
    Beta {
        /// Beta distribution alpha.
        alpha: f64,
        /// Beta distribution beta.
        beta: f64,
    },
    /// Sabour et al. 2024.
    KlOptimal,
    /// Mochi's linear-quadratic ramp.
    LinearQuadratic {
        /// Noise level where the linear part ends.
        threshold_noise: f64,
        /// Steps in the linear part (default: half the steps).
        linear_steps: Option<u32>,
    },
    /// Published sigmas, log-linearly interpolated to the step count.
    AlignYourSteps {
        /// The published descending sigmas.
        sigmas: Vec<f64>,
    },
    /// diffusers `timestep_spacing = "leading"`.
    Leading,
    /// diffusers `timestep_spacing = "trailing"`.
    Trailing,
    /// diffusers `timestep_spacing = "linspace"`.
    Linspace,
}

/// The name of a [`ScheduleKind`] as written in TOML (`kind = "karras"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScheduleKindName {
    /// See [`ScheduleKind::Normal`].
    Normal,
    /// See [`ScheduleKind::Karras`].
    Karras,
    /// See [`ScheduleKind::Exponential`].
    Exponential,
    /// See [`ScheduleKind::Polyexponential`].
    Polyexponential,
    /// See [`ScheduleKind::SgmUniform`].
    SgmUniform,
    /// See [`ScheduleKind::Simple`].
    Simple,
    /// See [`ScheduleKind::DdimUniform`].
    DdimUniform,
    /// See [`ScheduleKind::Beta`].
    Beta,
    /// See [`ScheduleKind::KlOptimal`].
    KlOptimal,
    /// See [`ScheduleKind::LinearQuadratic`].
    LinearQuadratic,
    /// See [`ScheduleKind::AlignYourSteps`].
    AlignYourSteps,
    /// See [`ScheduleKind::Leading`].
    Leading,
    /// See [`ScheduleKind::Trailing`].
    Trailing,
    /// See [`ScheduleKind::Linspace`].
    Linspace,
}

/// A sampler implementation (the stepping algorithm).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SamplerAlgorithm {
    /// k-diffusion `sample_euler`.
    Euler,
    /// k-diffusion `sample_euler_ancestral`.
    EulerAncestral,
    /// k-diffusion `sample_heun`.
    Heun,
    /// k-diffusion `sample_dpm_2`.
    #[serde(rename = "dpm_2")]
    Dpm2,
    /// k-diffusion `sample_dpm_2_ancestral`.
    #[serde(rename = "dpm_2_ancestral")]
    Dpm2Ancestral,
    /// k-diffusion `sample_lms`.
    Lms,
    /// k-diffusion `sample_dpmpp_2s_ancestral`.
    #[serde(rename = "dpmpp_2s_ancestral")]
    Dpmpp2sAncestral,
    /// k-diffusion `sample_dpmpp_sde`.
    DpmppSde,
    /// k-diffusion `sample_dpmpp_2m`.
    #[serde(rename = "dpmpp_2m")]
    Dpmpp2m,
    /// k-diffusion `sample_dpmpp_2m_sde`.
    #[serde(rename = "dpmpp_2m_sde")]
    Dpmpp2mSde,
    /// k-diffusion `sample_dpmpp_3m_sde`.
    #[serde(rename = "dpmpp_3m_sde")]
    Dpmpp3mSde,
    /// ComfyUI `sample_ddpm`.
    Ddpm,
    /// ComfyUI `uni_pc` (bh1).
    UniPc,
    /// ComfyUI `sample_deis`.
    Deis,
    /// ComfyUI `sample_ipndm`.
    Ipndm,
    /// ComfyUI `sample_lcm`.
    Lcm,
}

/// Which sampler parameters an algorithm reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SamplerParam {
    /// Ancestral noise amount.
    Eta,
    /// Noise scale.
    SNoise,
    /// Midpoint ratio (dpmpp_sde).
    R,
    /// midpoint / heun (dpmpp_2m_sde).
    SolverType,
    /// Multistep order (lms, uni_pc, deis, ipndm).
    Order,
}

impl SamplerAlgorithm {
    /// Parameters this algorithm reads; any other parameter in its TOML entry is an error.
    pub fn params(self) -> &'static [SamplerParam] {
        use SamplerAlgorithm::*;
        use SamplerParam::*;
        match self {
            Euler | Heun | Dpm2 | Dpmpp2m | Ddpm | Lcm => &[],
            EulerAncestral | Dpm2Ancestral | Dpmpp2sAncestral | Dpmpp3mSde => &[Eta, SNoise],
            DpmppSde => &[Eta, SNoise, R],
            Dpmpp2mSde => &[Eta, SNoise, SolverType],
            Lms | UniPc | Deis | Ipndm => &[Order],
        }
    }

    /// Whether the algorithm draws noise at all (given eta > 0 where eta applies).
    pub fn draws_noise(self) -> bool {
        use SamplerAlgorithm::*;
        matches!(
            self,
            EulerAncestral
                | Dpm2Ancestral
                | Dpmpp2sAncestral
                | DpmppSde
                | Dpmpp2mSde
                | Dpmpp3mSde
                | Ddpm
                | Lcm
        )
    }

    /// Model evaluations per step (the last step to sigma 0 may use fewer).
    pub fn model_calls_per_step(self) -> u32 {
        use SamplerAlgorithm::*;
        match self {
            Heun | Dpm2 | Dpm2Ancestral | Dpmpp2sAncestral | DpmppSde => 2,
            _ => 1,
        }
    }

    /// The method's order of accuracy when it has no `order` parameter.
    pub fn intrinsic_order(self) -> u32 {
        use SamplerAlgorithm::*;
        match self {
            Euler | EulerAncestral | Ddpm | Lcm => 1,
            Heun | Dpm2 | Dpm2Ancestral | Dpmpp2sAncestral | DpmppSde | Dpmpp2m | Dpmpp2mSde => 2,
            Dpmpp3mSde | UniPc | Deis => 3,
            Lms | Ipndm => 4,
        }
    }
}

impl std::fmt::Display for DiffusersClass {
    /// The diffusers class name, exactly as `schedulers.toml` and `_class_name` spell it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = serde_json::to_value(self).ok();
        f.write_str(name.as_ref().and_then(|v| v.as_str()).unwrap_or("?"))
    }
}

/// A diffusers scheduler class a preset can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum DiffusersClass {
    /// `EulerDiscreteScheduler`.
    EulerDiscreteScheduler,
    /// `EulerAncestralDiscreteScheduler`.
    EulerAncestralDiscreteScheduler,
    /// `HeunDiscreteScheduler`.
    HeunDiscreteScheduler,
    /// `LMSDiscreteScheduler`.
    #[serde(rename = "LMSDiscreteScheduler")]
    LmsDiscreteScheduler,
    /// `KDPM2DiscreteScheduler`.
    #[serde(rename = "KDPM2DiscreteScheduler")]
    Kdpm2DiscreteScheduler,
    /// `KDPM2AncestralDiscreteScheduler`.
    #[serde(rename = "KDPM2AncestralDiscreteScheduler")]
    Kdpm2AncestralDiscreteScheduler,
    /// `DPMSolverMultistepScheduler`.
    #[serde(rename = "DPMSolverMultistepScheduler")]
    DpmSolverMultistepScheduler,
    /// `DPMSolverSinglestepScheduler`.
    #[serde(rename = "DPMSolverSinglestepScheduler")]
    DpmSolverSinglestepScheduler,
    /// `DPMSolverSDEScheduler`.
    #[serde(rename = "DPMSolverSDEScheduler")]
    DpmSolverSdeScheduler,
    /// `DDIMScheduler`.
    #[serde(rename = "DDIMScheduler")]
    DdimScheduler,
    /// `DDPMScheduler`.
    #[serde(rename = "DDPMScheduler")]
    DdpmScheduler,
    /// `PNDMScheduler`.
    #[serde(rename = "PNDMScheduler")]
    PndmScheduler,
    /// `UniPCMultistepScheduler`.
    #[serde(rename = "UniPCMultistepScheduler")]
    UniPcMultistepScheduler,
    /// `DEISMultistepScheduler`.
    #[serde(rename = "DEISMultistepScheduler")]
    DeisMultistepScheduler,
    /// `LCMScheduler`.
    #[serde(rename = "LCMScheduler")]
    LcmScheduler,
}
