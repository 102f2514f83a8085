//! Between the JSON-friendly request/result types and the pipeline: defaults from the model's
//! `models.toml` entry, request validation, input image decoding, seeds, PNG encoding.

use std::time::Instant;

use ndarray::{ArrayD, Axis, IxDyn, stack};

use super::request::{GenerateRequest, RngKind};
use super::result::{GenerateResult, GeneratedImage, MemoryReport, TimingsMs, UsedParameters};
use crate::error::Error;
use crate::model_loader::ResolvedModel;
use crate::output::{Infotext, encode_png};
use crate::pipeline::{GenerateOutput, GenerateParams, RgbImage, SchedulerChoice, SdxlPipeline};
use crate::registry::{PresetKind, Registries};
use crate::rng::{PhiloxRng, TorchCpuRng, random_seed};
use crate::schedulers::{NoiseSource, SchedulerConfig};

/// A request resolved against the model: pipeline parameters plus what the result reports.
pub struct Plan {
    pub params: GenerateParams,
    pub seed: u64,
    pub scheduler_label: String,
    pub schedule_label: Option<String>,
    pub scheduler_name: String,
    pub warnings: Vec<String>,
    pub rng: RngKind,
}

fn invalid(field: &'static str, message: String) -> Error {
    Error::InvalidRequest { field, message }
}

/// Resolves defaults and validates everything that can be checked before running.
pub fn plan(
    request: &GenerateRequest,
    model: &ResolvedModel,
    pipeline: &SdxlPipeline,
    registries: &Registries,
    max_latent_bytes: usize,
) -> Result<Plan, Error> {
    let defaults = model.entry.as_ref().map(|e| e.defaults.clone());
    let settings = &pipeline.components.settings;
    let native = pipeline.components.unet_sample_size().unwrap_or(128) * settings.vae_scale_factor;
    let mut warnings = Vec::new();
    let prompts = [
        ("prompt", Some(&request.prompt)),
        ("prompt_2", request.prompt_2.as_ref()),
        ("negative_prompt", request.negative_prompt.as_ref()),
        ("negative_prompt_2", request.negative_prompt_2.as_ref()),
    ];
    for (field, text) in prompts {
        let control = text.and_then(|t| {
            t.chars()
                .find(|c| c.is_control() && !matches!(c, '\n' | '\t' | '\r'))
        });
        if let Some(c) = control {
            return Err(invalid(
                field,
                format!(
                    "contains control characters (U+{:04X}); remove them",
                    c as u32
                ),
            ));
        }
    }
    // img2img: decode first, so an omitted size defaults to the image's (rounded down to the
    // VAE's multiple, as diffusers' image processor does).
    let decoded_image = match &request.init_image {
        None => None,
        Some(input) => {
            let bytes = input.bytes().map_err(|e| invalid("init_image", e))?;
            let image = image::load_from_memory(&bytes)
                .map_err(|e| invalid("init_image", format!("not a readable image: {e}")))?;
            if !matches!(image.color(), image::ColorType::Rgb8) {
                let message = format!("init_image converted from {:?} to 8-bit RGB", image.color());
                tracing::warn!("{message}");
                warnings.push(message);
            }
            Some(image.to_rgb8())
        }
    };
    let multiple = settings.vae_scale_factor.max(1);
    let image_size = decoded_image.as_ref().map(|rgb| {
        (
            rgb.width() as usize / multiple * multiple,
            rgb.height() as usize / multiple * multiple,
        )
    });
    let width = request
        .width
        .map(|w| w as usize)
        .or(image_size.map(|(w, _)| w))
        .or(defaults.as_ref().map(|d| d.width as usize))
        .unwrap_or(native);
    let height = request
        .height
        .map(|h| h as usize)
        .or(image_size.map(|(_, h)| h))
        .or(defaults.as_ref().map(|d| d.height as usize))
        .unwrap_or(native);
    let batch_size = request.batch_size.unwrap_or(1) as usize;
    let latent_bytes = batch_size
        .saturating_mul(settings.latent_channels)
        .saturating_mul(width / settings.vae_scale_factor.max(1))
        .saturating_mul(height / settings.vae_scale_factor.max(1))
        .saturating_mul(4 * 2); // float32, doubled for classifier-free guidance
    if latent_bytes > max_latent_bytes {
        return Err(invalid(
            "width/height",
            format!(
                "{width}x{height} x {batch_size} needs ~{latent_bytes} bytes of latents, over the budget of {max_latent_bytes}"
            ),
        ));
    }
    let (scheduler, scheduler_label, schedule_label, scheduler_name) = scheduler_choice(
        request,
        registries,
        pipeline,
        defaults.as_ref().and_then(|d| d.scheduler.clone()),
    )?;
    let seed = match request.seed {
        Some(seed) if seed >= 0 => seed as u64,
        _ => random_seed(),
    };
    let init_image = match decoded_image {
        None => None,
        Some(rgb) => {
            let rgb = if (rgb.width() as usize, rgb.height() as usize) != (width, height) {
                let message = format!(
                    "init_image resized from {}x{} to {width}x{height} (Lanczos)",
                    rgb.width(),
                    rgb.height()
                );
                tracing::warn!("{message}");
                warnings.push(message);
                image::imageops::resize(
                    &rgb,
                    width as u32,
                    height as u32,
                    image::imageops::FilterType::Lanczos3,
                )
            } else {
                rgb
            };
            Some(RgbImage {
                width: rgb.width(),
                height: rgb.height(),
                pixels: rgb.into_raw(),
            })
        }
    };
    let pair = |v: Option<[u32; 2]>| v.map(|[a, b]| (a as usize, b as usize));
    let params = GenerateParams {
        prompt: request.prompt.clone(),
        prompt_2: request.prompt_2.clone(),
        negative_prompt: request.negative_prompt.clone(),
        negative_prompt_2: request.negative_prompt_2.clone(),
        width,
        height,
        steps: request
            .steps
            .map(|s| s as usize)
            .or(defaults.as_ref().map(|d| d.steps as usize))
            .unwrap_or(30),
        guidance_scale: request
            .guidance_scale
            .or(defaults.as_ref().map(|d| d.guidance_scale))
            .unwrap_or(5.0),
        guidance_rescale: request.guidance_rescale.unwrap_or(0.0),
        clip_skip: request.clip_skip.map(|c| c as usize),
        scheduler,
        batch_size,
        latents: None,
        init_image,
        strength: request.strength.unwrap_or(0.3),
        original_size: pair(request.original_size),
        crops_coords_top_left: pair(request.crops_coords_top_left).unwrap_or((0, 0)),
        target_size: pair(request.target_size),
        aesthetic_score: request.aesthetic_score.unwrap_or(6.0),
        negative_aesthetic_score: request.negative_aesthetic_score.unwrap_or(2.5),
        denoising_start: request.denoising_start,
        denoising_end: request.denoising_end,
        ..Default::default()
    };
    params
        .validate(settings.vae_scale_factor)
        .map_err(Error::from)?;
    Ok(Plan {
        params,
        seed,
        scheduler_label,
        schedule_label,
        scheduler_name,
        warnings,
        rng: request.rng,
    })
}

type SchedulerParts = (SchedulerChoice, String, Option<String>, String);

/// The scheduler a request names (validated now, so a typo fails before any work) and its
/// A1111 labels.
fn scheduler_choice(
    request: &GenerateRequest,
    registries: &Registries,
    pipeline: &SdxlPipeline,
    model_default: Option<String>,
) -> Result<SchedulerParts, Error> {
    let schedulers = &registries.schedulers;
    if request.scheduler.is_some() && request.sampler.is_some() {
        return Err(invalid(
            "scheduler",
            "give either `scheduler` (a preset) or `sampler` (+ `schedule`), not both".into(),
        ));
    }
    if let Some(sampler) = &request.sampler {
        let sampler = schedulers.sampler(sampler)?;
        let schedule = schedulers.schedule(
            request
                .schedule
                .as_deref()
                .unwrap_or(&sampler.default_schedule),
        )?;
        let choice = SchedulerChoice::Sampling {
            sampler: sampler.name.clone(),
            schedule: Some(schedule.name.clone()),
        };
        return Ok((
            choice,
            sampler.label.clone(),
            Some(schedule.label.clone()),
            format!("{} + {}", sampler.name, schedule.name),
        ));
    }
    if request.schedule.is_some() {
        return Err(invalid("schedule", "needs `sampler`".into()));
    }
    match request.scheduler.clone().or(model_default) {
        Some(name) => {
            let preset = schedulers.preset(&name)?;
            Ok((
                SchedulerChoice::Preset(preset.name.clone()),
                preset.label.clone(),
                None,
                preset.name.clone(),
            ))
        }
        None => {
            let class = pipeline
                .components
                .scheduler_class
                .clone()
                .unwrap_or_else(|| "EulerDiscreteScheduler".into());
            let label = schedulers
                .presets()
                .find_map(|preset| match &preset.kind {
                    PresetKind::Diffusers { class: c, config }
                        if c.to_string() == class && **config == SchedulerConfig::default() =>
                    {
                        Some(preset.label.clone())
                    }
                    _ => None,
                })
                .unwrap_or_else(|| class.clone());
            Ok((SchedulerChoice::ModelDefault, label, None, class))
        }
    }
}

/// Image i of a batch draws from its own generator seeded `seed + i`, so it equals the
/// single-image generation with that seed (A1111's batch seeds).
struct PerImageNoise {
    sources: Vec<Box<dyn NoiseSource>>,
}

impl NoiseSource for PerImageNoise {
    fn randn(&mut self, shape: &[usize]) -> ArrayD<f32> {
        if shape.first() != Some(&self.sources.len()) {
            // Not batch-shaped: draw from the first generator.
            return self.sources[0].randn(shape);
        }
        let item: Vec<ArrayD<f32>> = self
            .sources
            .iter_mut()
            .map(|rng| rng.randn(&shape[1..]))
            .collect();
        let views: Vec<_> = item.iter().map(|a| a.view()).collect();
        stack(Axis(0), &views).unwrap_or_else(|_| ArrayD::zeros(IxDyn(shape)))
    }
}

pub fn noise_source(rng: RngKind, seed: u64, batch: usize) -> Box<dyn NoiseSource> {
    match rng {
        RngKind::Philox => Box::new(PerImageNoise {
            sources: (0..batch.max(1) as u64)
                .map(|i| Box::new(PhiloxRng::new(seed + i)) as Box<dyn NoiseSource>)
                .collect(),
        }),
        RngKind::Cpu => Box::new(PerImageNoise {
            sources: (0..batch.max(1) as u64)
                .map(|i| Box::new(TorchCpuRng::new(seed + i)) as Box<dyn NoiseSource>)
                .collect(),
        }),
    }
}

fn number(value: f64) -> String {
    if value.fract() == 0.0 {
        format!("{value:.0}")
    } else {
        format!("{value}")
    }
}

/// The A1111 infotext of image `index`.
pub fn infotext(plan: &Plan, model: &str, seed: u64) -> Infotext {
    let p = &plan.params;
    let mut fields = vec![
        ("Steps".to_string(), p.steps.to_string()),
        ("Sampler".to_string(), plan.scheduler_label.clone()),
    ];
    if let Some(schedule) = &plan.schedule_label {
        fields.push(("Schedule type".to_string(), schedule.clone()));
    }
    fields.push(("CFG scale".to_string(), number(p.guidance_scale)));
    fields.push(("Seed".to_string(), seed.to_string()));
    fields.push(("Size".to_string(), format!("{}x{}", p.width, p.height)));
    fields.push(("Model".to_string(), model.to_string()));
    if p.init_image.is_some() {
        fields.push(("Denoising strength".to_string(), number(p.strength)));
    }
    // A1111's default is its GPU generator; it names the others.
    fields.push((
        "RNG".to_string(),
        match plan.rng {
            RngKind::Cpu => "CPU",
            RngKind::Philox => "NV",
        }
        .to_string(),
    ));
    if let Some(skip) = p.clip_skip {
        fields.push(("Clip skip".to_string(), (skip + 1).to_string()));
    }
    Infotext {
        prompt: p.prompt.clone(),
        negative_prompt: p.negative_prompt.clone().unwrap_or_default(),
        fields,
    }
}

/// Encodes the images and assembles the result.
pub fn result(
    model: &str,
    plan: &Plan,
    output: GenerateOutput,
    memory: MemoryReport,
    started: Instant,
) -> Result<GenerateResult, Error> {
    let mut images = Vec::with_capacity(output.images.len());
    let mut first_infotext = String::new();
    for (i, image) in output.images.iter().enumerate() {
        let seed = plan.seed + i as u64;
        let text = infotext(plan, model, seed).render();
        if i == 0 {
            first_infotext = text.clone();
        }
        images.push(GeneratedImage {
            png: encode_png(image, Some(&text))?,
            width: image.width,
            height: image.height,
            seed,
        });
    }
    let ms = |d: std::time::Duration| d.as_secs_f64() * 1e3;
    let p = &plan.params;
    let mut warnings = plan.warnings.clone();
    warnings.extend(output.warnings);
    Ok(GenerateResult {
        images,
        parameters: UsedParameters {
            model: model.to_string(),
            prompt: p.prompt.clone(),
            negative_prompt: p.negative_prompt.clone(),
            width: p.width,
            height: p.height,
            steps: p.steps,
            evaluations: output.evaluations,
            guidance_scale: p.guidance_scale,
            guidance_rescale: p.guidance_rescale,
            scheduler: plan.scheduler_name.clone(),
            seed: plan.seed,
            batch_size: p.batch_size,
            strength: p.init_image.as_ref().map(|_| p.strength),
            rng: plan.rng,
        },
        infotext: first_infotext,
        timings: TimingsMs {
            text_encoding: ms(output.timings.text_encoding),
            steps: output.timings.steps.iter().map(|d| ms(*d)).collect(),
            vae: ms(output.timings.vae),
            inside_ort: ms(output.timings.inside_ort),
            total: ms(started.elapsed()),
        },
        memory,
        warnings,
        latents: Some(output.latents),
    })
}
