//! The VAE: latents to pixels and, for img2img, pixels to a sample of the latent distribution.

use ndarray::{Array4, ArrayD, Axis, Ix4, s};

use super::PipelineError;
use super::components::Components;
use super::graph::Input;
use crate::schedulers::NoiseSource;

/// An 8-bit RGB image, row-major, 3 bytes per pixel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RgbImage {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// RGBRGB... rows top to bottom.
    pub pixels: Vec<u8>,
}

/// Decodes latents [b, C, h, w] to images: divides by `scaling_factor`, runs the decoder, maps
/// [-1, 1] to [0, 1]. Returns the float images [b, 3, H, W] in [0, 1]; non-finite output is an
/// error (the SDXL VAE overflows in fp16), never a black image.
pub fn decode(
    components: &Components,
    latents: &ArrayD<f32>,
) -> Result<Array4<f32>, PipelineError> {
    let scaled = latents / components.settings.scaling_factor as f32;
    let mut outputs = components.vae_decoder.run(
        &[("latent_sample", Input::Float(scaled.view()))],
        &["sample"],
    )?;
    let decoded = outputs
        .pop()
        .ok_or_else(|| PipelineError::Internal("VAE decoder gave no output".into()))?;
    let decoded = decoded
        .into_dimensionality::<Ix4>()
        .map_err(|e| PipelineError::Graph {
            path: components.vae_decoder.path.clone(),
            message: format!("output `sample` is not [batch, 3, H, W]: {e}"),
        })?;
    if decoded.iter().any(|v| !v.is_finite()) {
        return Err(PipelineError::NonFinite {
            stage: "VAE decoder output",
            hint:
                "the SDXL VAE overflows in float16; use a float32 vae_decoder (or the fp16-fix VAE)"
                    .to_string(),
        });
    }
    Ok(decoded.mapv(|v| (v / 2.0 + 0.5).clamp(0.0, 1.0)))
}

/// Float images [b, 3, H, W] in [0, 1] to 8-bit RGB, rounding like diffusers' `numpy_to_pil`
/// (`(x * 255).round()`).
pub fn to_rgb8(images: &Array4<f32>) -> Vec<RgbImage> {
    images
        .axis_iter(Axis(0))
        .map(|image| {
            let (height, width) = (image.shape()[1], image.shape()[2]);
            let mut pixels = Vec::with_capacity(height * width * 3);
            for y in 0..height {
                for x in 0..width {
                    for c in 0..3 {
                        pixels.push((image[[c, y, x]] * 255.0).round().clamp(0.0, 255.0) as u8);
                    }
                }
            }
            RgbImage {
                width: width as u32,
                height: height as u32,
                pixels,
            }
        })
        .collect()
}

/// An 8-bit image as the VAE encoder's input [1, 3, H, W] in [-1, 1] (diffusers
/// `VaeImageProcessor.preprocess`: x / 255 * 2 - 1).
pub fn image_to_tensor(image: &RgbImage) -> Array4<f32> {
    let (w, h) = (image.width as usize, image.height as usize);
    Array4::from_shape_fn((1, 3, h, w), |(_, c, y, x)| {
        f32::from(image.pixels[(y * w + x) * 3 + c]) / 255.0 * 2.0 - 1.0
    })
}

/// Encodes an image and samples the latent distribution: mean + exp(logvar / 2) * noise (one
/// draw from `noise`, as diffusers' `latent_dist.sample(generator)`), times `scaling_factor`.
pub fn encode(
    components: &Components,
    image: &Array4<f32>,
    noise: &mut dyn NoiseSource,
) -> Result<ArrayD<f32>, PipelineError> {
    let encoder = components
        .vae_encoder
        .as_ref()
        .ok_or_else(|| PipelineError::MissingFile {
            path: components.root.join("vae_encoder").join("model.onnx"),
            reason: "img2img needs the VAE encoder".to_string(),
        })?;
    let mut outputs = encoder.run(
        &[("sample", Input::Float(image.view().into_dyn()))],
        &["latent_parameters"],
    )?;
    let parameters = outputs
        .pop()
        .ok_or_else(|| PipelineError::Internal("VAE encoder gave no output".into()))?;
    let parameters = parameters
        .into_dimensionality::<Ix4>()
        .map_err(|e| PipelineError::Graph {
            path: encoder.path.clone(),
            message: format!("output `latent_parameters` is not [batch, 2C, h, w]: {e}"),
        })?;
    let channels = components.settings.latent_channels;
    if parameters.shape()[1] != 2 * channels {
        return Err(PipelineError::Graph {
            path: encoder.path.clone(),
            message: format!(
                "output `latent_parameters` has {} channels, expected {}",
                parameters.shape()[1],
                2 * channels
            ),
        });
    }
    let mean = parameters.slice(s![.., ..channels, .., ..]);
    let std = parameters
        .slice(s![.., channels.., .., ..])
        .mapv(|logvar| (0.5 * logvar.clamp(-30.0, 20.0)).exp());
    let draw = noise.randn(mean.shape());
    let sample = &mean.into_dyn() + &(std.into_dyn() * &draw);
    Ok(sample * components.settings.scaling_factor as f32)
}

impl RgbImage {
    /// Decodes a PNG (any colour type and bit depth is converted to 8-bit RGB).
    pub fn from_png(bytes: &[u8]) -> Result<Self, String> {
        let decoded = image::load_from_memory_with_format(bytes, image::ImageFormat::Png)
            .map_err(|e| e.to_string())?;
        let rgb = decoded.to_rgb8();
        Ok(Self {
            width: rgb.width(),
            height: rgb.height(),
            pixels: rgb.into_raw(),
        })
    }

    /// Encodes as an 8-bit RGB PNG.
    pub fn to_png(&self) -> Result<Vec<u8>, String> {
        let mut out = Vec::new();
        let encoder = image::codecs::png::PngEncoder::new(&mut out);
        image::ImageEncoder::write_image(
            encoder,
            &self.pixels,
            self.width,
            self.height,
            image::ExtendedColorType::Rgb8,
        )
        .map_err(|e| e.to_string())?;
        Ok(out)
    }
}
