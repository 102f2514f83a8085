//! `GenerateResult`: images with their seeds, the parameters actually used, timings, memory
//! and warnings.

use base64::Engine;
use serde::{Serialize, Serializer};

use crate::memory::MemorySnapshot;

/// One generated image.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GeneratedImage {
    /// The PNG file (with the A1111 `parameters` chunk); base64 in JSON.
    #[serde(serialize_with = "as_base64")]
    pub png: Vec<u8>,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// The seed that reproduces this image alone.
    pub seed: u64,
}

fn as_base64<S: Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&base64::engine::general_purpose::STANDARD.encode(bytes))
}

/// The parameters a generation actually ran with (defaults resolved).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UsedParameters {
    /// Model id (or directory).
    pub model: String,
    /// Prompt.
    pub prompt: String,
    /// Negative prompt.
    pub negative_prompt: Option<String>,
    /// Width.
    pub width: usize,
    /// Height.
    pub height: usize,
    /// Steps requested.
    pub steps: usize,
    /// Model evaluations that ran (img2img runs only the tail).
    pub evaluations: usize,
    /// Guidance scale.
    pub guidance_scale: f64,
    /// Guidance rescale.
    pub guidance_rescale: f64,
    /// Preset name, or `sampler + schedule`, or the model's own scheduler class.
    pub scheduler: String,
    /// First seed.
    pub seed: u64,
    /// Images.
    pub batch_size: usize,
    /// img2img strength, when img2img ran.
    pub strength: Option<f64>,
    /// Noise generator.
    pub rng: super::request::RngKind,
}

/// Milliseconds per stage.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct TimingsMs {
    /// Text encoding.
    pub text_encoding: f64,
    /// Each model evaluation (UNet + scheduler step).
    pub steps: Vec<f64>,
    /// VAE encode and decode.
    pub vae: f64,
    /// Inside ONNX Runtime's `run` calls (total minus this is engine overhead).
    pub inside_ort: f64,
    /// Everything, including PNG encoding.
    pub total: f64,
}

/// Memory around one generation.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct MemoryReport {
    /// `cpu` or `cuda`.
    pub device: String,
    /// Before.
    pub before: MemorySnapshot,
    /// After.
    pub after: MemorySnapshot,
    /// Peak resident memory of the process during (and before) the generation, bytes.
    pub peak_resident_bytes: Option<u64>,
}

/// What `SdxlBackend::generate` returns.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GenerateResult {
    /// The images, in seed order.
    pub images: Vec<GeneratedImage>,
    /// What was used.
    pub parameters: UsedParameters,
    /// The A1111 infotext of the first image.
    pub infotext: String,
    /// Timings.
    pub timings: TimingsMs,
    /// Memory.
    pub memory: MemoryReport,
    /// Prompt truncated, CPU fallback, resized input, ...
    pub warnings: Vec<String>,
    /// Final latents before decoding, when asked for (`GenerateOptions::return_latents`).
    #[serde(skip)]
    pub latents: Option<ndarray::ArrayD<f32>>,
}
