//! `GenerateRequest`: what a host application asks for, with the field names users of
//! diffusers and AUTOMATIC1111 know (aliases accepted), serialisable to and from JSON.

use base64::Engine;
use serde::{Deserialize, Serialize};

/// Where seeded noise comes from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RngKind {
    /// `torch.Generator("cpu")`: diffusers' and ComfyUI's default.
    #[default]
    Cpu,
    /// Philox 4x32-10 as torch's CUDA generator (A1111's GPU/"NV" seeds).
    Philox,
}

/// An input image: base64 text (optionally a `data:` URL) in JSON, or raw file bytes in Rust.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ImageInput {
    /// Base64 of an image file.
    Base64(String),
    /// An image file's bytes.
    Bytes(Vec<u8>),
}

impl ImageInput {
    /// The image file's bytes.
    pub fn bytes(&self) -> Result<Vec<u8>, String> {
        match self {
            ImageInput::Bytes(bytes) => Ok(bytes.clone()),
            ImageInput::Base64(text) => {
                let payload = match text.split_once(";base64,") {
                    Some((_, data)) if text.starts_with("data:") => data,
                    _ => text.as_str(),
                };
                let compact: String = payload.chars().filter(|c| !c.is_whitespace()).collect();
                base64::engine::general_purpose::STANDARD
                    .decode(compact.as_bytes())
                    .map_err(|e| format!("invalid base64: {e}"))
            }
        }
    }
}

/// One generation request. Omitted fields take the model's defaults from `models.toml`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GenerateRequest {
    /// The prompt.
    pub prompt: String,
    /// Prompt for the second text encoder.
    pub prompt_2: Option<String>,
    /// Negative prompt.
    pub negative_prompt: Option<String>,
    /// Negative prompt for the second text encoder.
    pub negative_prompt_2: Option<String>,
    /// Width in pixels.
    pub width: Option<u32>,
    /// Height in pixels.
    pub height: Option<u32>,
    /// Denoising steps.
    #[serde(alias = "num_inference_steps")]
    pub steps: Option<u32>,
    /// Classifier-free guidance scale.
    #[serde(alias = "cfg_scale")]
    pub guidance_scale: Option<f64>,
    /// Guidance rescale (0 to 1).
    pub guidance_rescale: Option<f64>,
    /// A scheduler preset (`get_available_schedulers`).
    pub scheduler: Option<String>,
    /// A sampler (`get_available_samplers`), instead of a preset.
    #[serde(alias = "sampler_name")]
    pub sampler: Option<String>,
    /// A sigma schedule for `sampler` (its default when omitted).
    pub schedule: Option<String>,
    /// Seed; -1 or omitted = random (reported back).
    pub seed: Option<i64>,
    /// Images to generate; image i uses seed + i.
    #[serde(alias = "num_images_per_prompt")]
    pub batch_size: Option<u32>,
    /// Extra text-encoder layers to skip.
    pub clip_skip: Option<u32>,
    /// Micro-conditioning original size [height, width].
    pub original_size: Option<[u32; 2]>,
    /// Micro-conditioning crop top-left [top, left].
    pub crops_coords_top_left: Option<[u32; 2]>,
    /// Micro-conditioning target size [height, width].
    pub target_size: Option<[u32; 2]>,
    /// img2img input image.
    pub init_image: Option<ImageInput>,
    /// img2img strength in (0, 1].
    #[serde(alias = "denoising_strength")]
    pub strength: Option<f64>,
    /// Refiner hand-off: fraction of the schedule already done.
    pub denoising_start: Option<f64>,
    /// Base hand-off: fraction of the schedule to run.
    pub denoising_end: Option<f64>,
    /// Refiner aesthetic score.
    pub aesthetic_score: Option<f64>,
    /// Refiner negative aesthetic score.
    pub negative_aesthetic_score: Option<f64>,
    /// Noise generator.
    pub rng: RngKind,
}
