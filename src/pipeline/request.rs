//! What one generation asks for (diffusers' `__call__` arguments) and its validation.

use ndarray::ArrayD;

use super::PipelineError;
use super::vae::RgbImage;

/// Which scheduler runs the denoising loop.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum SchedulerChoice {
    /// The model's own `scheduler/scheduler_config.json` (its `_class_name`).
    #[default]
    ModelDefault,
    /// A preset from `schedulers.toml` by name, alias or label.
    Preset(String),
    /// Any sampler over any sigma schedule (the sampler's default schedule when `None`).
    Sampling {
        /// Sampler name, alias or label.
        sampler: String,
        /// Schedule name, alias or label.
        schedule: Option<String>,
    },
}

/// The inputs of one generation, with diffusers' names and meanings.
#[derive(Debug, Clone)]
pub struct GenerateParams {
    /// Prompt for the first text encoder (and the second when `prompt_2` is `None`).
    pub prompt: String,
    /// Prompt for the second text encoder.
    pub prompt_2: Option<String>,
    /// Negative prompt; `None` means zeros when the model forces zeros for empty prompts.
    pub negative_prompt: Option<String>,
    /// Negative prompt for the second encoder (defaults to `negative_prompt`).
    pub negative_prompt_2: Option<String>,
    /// Image width in pixels (multiple of the VAE scale factor).
    pub width: usize,
    /// Image height in pixels.
    pub height: usize,
    /// Inference steps (before img2img strength).
    pub steps: usize,
    /// Classifier-free guidance scale; guidance runs only when > 1.
    pub guidance_scale: f64,
    /// Rescale of the guided prediction (Lin et al. 2023), 0 = off.
    pub guidance_rescale: f64,
    /// Extra text-encoder layers to skip (diffusers' `clip_skip`).
    pub clip_skip: Option<usize>,
    /// The scheduler.
    pub scheduler: SchedulerChoice,
    /// Images per prompt.
    pub batch_size: usize,
    /// Initial noise [batch, C, H/8, W/8] (diffusers' `latents=`: scaled by init_noise_sigma).
    pub latents: Option<ArrayD<f32>>,
    /// img2img input image (already the requested size).
    pub init_image: Option<RgbImage>,
    /// img2img strength in (0, 1].
    pub strength: f64,
    /// Micro-conditioning: original size (height, width); default the target size.
    pub original_size: Option<(usize, usize)>,
    /// Micro-conditioning: crop top-left (top, left).
    pub crops_coords_top_left: (usize, usize),
    /// Micro-conditioning: target size (height, width); default the image size.
    pub target_size: Option<(usize, usize)>,
    /// Negative micro-conditioning original size (default: the positive one).
    pub negative_original_size: Option<(usize, usize)>,
    /// Negative crop top-left (default: the positive one).
    pub negative_crops_coords_top_left: Option<(usize, usize)>,
    /// Negative target size (default: the positive one).
    pub negative_target_size: Option<(usize, usize)>,
    /// Refiner aesthetic score.
    pub aesthetic_score: f64,
    /// Refiner negative aesthetic score.
    pub negative_aesthetic_score: f64,
    /// Fraction of the schedule already done by a base model (refiner hand-off), img2img only.
    pub denoising_start: Option<f64>,
    /// Fraction of the schedule to run before handing latents to a refiner.
    pub denoising_end: Option<f64>,
}

impl Default for GenerateParams {
    fn default() -> Self {
        Self {
            prompt: String::new(),
            prompt_2: None,
            negative_prompt: None,
            negative_prompt_2: None,
            width: 1024,
            height: 1024,
            steps: 30,
            guidance_scale: 5.0,
            guidance_rescale: 0.0,
            clip_skip: None,
            scheduler: SchedulerChoice::ModelDefault,
            batch_size: 1,
            latents: None,
            init_image: None,
            strength: 0.3,
            original_size: None,
            crops_coords_top_left: (0, 0),
            target_size: None,
            negative_original_size: None,
            negative_crops_coords_top_left: None,
            negative_target_size: None,
            aesthetic_score: 6.0,
            negative_aesthetic_score: 2.5,
            denoising_start: None,
            denoising_end: None,
        }
    }
}

impl GenerateParams {
    /// Checks ranges that do not depend on the model.
    pub fn validate(&self, vae_scale_factor: usize) -> Result<(), PipelineError> {
        let invalid = |field: &'static str, message: String| {
            Err(PipelineError::InvalidRequest { field, message })
        };
        for (field, value) in [("width", self.width), ("height", self.height)] {
            if value == 0 || value % vae_scale_factor != 0 {
                return invalid(
                    field,
                    format!("{value} must be a positive multiple of {vae_scale_factor}"),
                );
            }
        }
        if self.steps == 0 || self.steps > 1000 {
            return invalid(
                "steps",
                format!("{} must be between 1 and 1000", self.steps),
            );
        }
        if !self.guidance_scale.is_finite() || self.guidance_scale < 0.0 {
            return invalid(
                "guidance_scale",
                format!("{} must be a finite number >= 0", self.guidance_scale),
            );
        }
        if !self.guidance_rescale.is_finite() || !(0.0..=1.0).contains(&self.guidance_rescale) {
            return invalid(
                "guidance_rescale",
                format!("{} must be between 0 and 1", self.guidance_rescale),
            );
        }
        if self.batch_size == 0 || self.batch_size > 64 {
            return invalid(
                "batch_size",
                format!("{} must be between 1 and 64", self.batch_size),
            );
        }
        if self.init_image.is_some() && !(self.strength > 0.0 && self.strength <= 1.0) {
            return invalid("strength", format!("{} must be in (0, 1]", self.strength));
        }
        for (field, value) in [
            ("denoising_start", self.denoising_start),
            ("denoising_end", self.denoising_end),
        ] {
            if let Some(v) = value.filter(|v| !(v.is_finite() && *v > 0.0 && *v < 1.0)) {
                return invalid(field, format!("{v} must be strictly between 0 and 1"));
            }
        }
        Ok(())
    }
}
