//! One generation from request to images: scheduler, text, initial latents, the loop, the VAE.

use std::time::{Duration, Instant};

use ndarray::{Array2, Array3, ArrayD, Axis, concatenate};
use serde::Serialize;

use super::denoise::{Conditioning, StepEvent, denoise};
use super::request::{GenerateParams, SchedulerChoice};
use super::text::{PromptEmbeddings, encode_prompt};
use super::vae::{self, RgbImage};
use super::{PipelineError, SdxlPipeline};
use crate::registry::PresetKind;
use crate::registry::SchedulerRegistry;
use crate::schedulers::kinds::DiffusersClass;
use crate::schedulers::ksampler::build_sampling;
use crate::schedulers::{NoiseSource, Plan, SchedulerConfig, Stepper, build_stepper};

/// Where the time of one generation went.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Timings {
    /// Both text encoders, positive and negative.
    pub text_encoding: Duration,
    /// Each UNet evaluation including its scheduler step.
    pub steps: Vec<Duration>,
    /// VAE encode (img2img) and decode.
    pub vae: Duration,
    /// Time inside ONNX Runtime's `run` (everything else is engine overhead).
    pub inside_ort: Duration,
    /// Everything.
    pub total: Duration,
}

/// What a generation produced.
#[derive(Debug, Clone)]
pub struct GenerateOutput {
    /// Final latents before decoding [batch, C, h, w] (diffusers' `output_type="latent"`).
    pub latents: ArrayD<f32>,
    /// Decoded images (empty when decoding was skipped).
    pub images: Vec<RgbImage>,
    /// The scheduler's plan (before img2img slicing).
    pub plan: Plan,
    /// Model evaluations that ran.
    pub evaluations: usize,
    /// Things the caller should know (truncated prompts, fallbacks, adjusted values).
    pub warnings: Vec<String>,
    /// Timings.
    pub timings: Timings,
}

impl SdxlPipeline {
    /// Builds the stepper for `choice` over this model's scheduler config. Diffusers classes
    /// plan all `steps` (img2img then runs the tail, as diffusers' `get_timesteps`); a sampler
    /// over a schedule plans only the last part for img2img `denoise` < 1 (ComfyUI's
    /// `denoise`), which the returned flag reports.
    pub fn scheduler(
        &self,
        choice: &SchedulerChoice,
        registry: &SchedulerRegistry,
        steps: usize,
        denoise: f64,
    ) -> Result<(Box<dyn Stepper>, bool), PipelineError> {
        let model_config = &self.components.scheduler_config;
        let sampling = |sampler: &str,
                        schedule: Option<&str>|
         -> Result<(Box<dyn Stepper>, bool), PipelineError> {
            Ok((
                build_sampling(registry, sampler, schedule, model_config, steps, denoise)?,
                true,
            ))
        };
        match choice {
            SchedulerChoice::ModelDefault => {
                let name = self
                    .components
                    .scheduler_class
                    .clone()
                    .unwrap_or_else(|| "EulerDiscreteScheduler".into());
                let class: DiffusersClass = serde_json::from_value(serde_json::Value::String(name.clone())).map_err(|_| {
                    PipelineError::Config {
                        path: self.components.root.join("scheduler/scheduler_config.json"),
                        message: format!("scheduler class {name} is not supported; name a preset instead (see `sdxl schedulers list`)"),
                    }
                })?;
                Ok((
                    build_stepper(class, model_config, &SchedulerConfig::default(), steps)?,
                    false,
                ))
            }
            SchedulerChoice::Preset(name) => match &registry.preset(name)?.kind {
                PresetKind::Diffusers { class, config } => {
                    Ok((build_stepper(*class, model_config, config, steps)?, false))
                }
                PresetKind::Sampling { sampler, schedule } => sampling(sampler, Some(schedule)),
            },
            SchedulerChoice::Sampling { sampler, schedule } => {
                // Resolve names here so an unknown one is a lookup error naming the valid ones.
                let sampler = registry.sampler(sampler)?;
                let schedule =
                    registry.schedule(schedule.as_deref().unwrap_or(&sampler.default_schedule))?;
                sampling(&sampler.name, Some(&schedule.name))
            }
        }
    }

    /// Runs one generation. `noise` supplies every random draw in diffusers' order (initial
    /// latents, img2img posterior sample and added noise, ancestral noise); `observer` sees
    /// each model evaluation and returns `false` to cancel. `decode = false` stops at latents.
    pub fn generate(
        &self,
        params: &GenerateParams,
        registry: &SchedulerRegistry,
        noise: &mut dyn NoiseSource,
        observer: &mut dyn FnMut(StepEvent) -> bool,
        decode: bool,
    ) -> Result<GenerateOutput, PipelineError> {
        let started = Instant::now();
        super::graph::take_ort_run_time();
        let settings = &self.components.settings;
        params.validate(settings.vae_scale_factor)?;
        let mut warnings: Vec<String> = self
            .components
            .graphs()
            .filter_map(|g| g.fallback.clone())
            .collect();
        warnings.extend(self.components.load_warnings.iter().cloned());
        let mut timings = Timings::default();

        let img2img_denoise = params.init_image.is_some() && params.denoising_start.is_none();
        let denoise_fraction = if img2img_denoise {
            params.strength
        } else {
            1.0
        };
        let (mut stepper, tail_only) =
            self.scheduler(&params.scheduler, registry, params.steps, denoise_fraction)?;
        let plan = Plan::of(stepper.as_ref());
        let (begin, end) = self.evaluation_range(params, stepper.as_ref(), tail_only)?;

        // Text: once per request.
        let text_started = Instant::now();
        let guidance = (params.guidance_scale > 1.0).then_some(params.guidance_scale);
        let prompt_2 = params.prompt_2.as_deref().unwrap_or(&params.prompt);
        let positive = encode_prompt(
            &self.components,
            &params.prompt,
            prompt_2,
            params.clip_skip,
            &mut warnings,
        )?;
        let negative = match guidance {
            None => None,
            Some(_)
                if params.negative_prompt.is_none() && settings.force_zeros_for_empty_prompt =>
            {
                Some(positive.zeros_like())
            }
            Some(_) => {
                let negative = params.negative_prompt.as_deref().unwrap_or("");
                let negative_2 = params.negative_prompt_2.as_deref().unwrap_or(negative);
                // diffusers always takes the penultimate layer for negatives (no clip_skip).
                Some(encode_prompt(
                    &self.components,
                    negative,
                    negative_2,
                    None,
                    &mut warnings,
                )?)
            }
        };
        let conditioning = self.conditioning(params, &positive, negative.as_ref(), guidance)?;
        timings.text_encoding = text_started.elapsed();

        // Initial latents.
        let latent_shape = [
            params.batch_size,
            settings.latent_channels,
            params.height / settings.vae_scale_factor,
            params.width / settings.vae_scale_factor,
        ];
        let vae_started = Instant::now();
        let latents = match &params.init_image {
            None => {
                let initial = match &params.latents {
                    Some(given) if given.shape() == latent_shape => given.clone(),
                    Some(given) => {
                        return Err(PipelineError::InvalidRequest {
                            field: "latents",
                            message: format!(
                                "shape {:?} does not match the request's {:?}",
                                given.shape(),
                                latent_shape
                            ),
                        });
                    }
                    None => noise.randn(&latent_shape),
                };
                initial * stepper.init_noise_sigma() as f32
            }
            Some(image) => {
                if (image.width as usize, image.height as usize) != (params.width, params.height) {
                    return Err(PipelineError::InvalidRequest {
                        field: "init_image",
                        message: format!(
                            "is {}x{}, the request is {}x{}; resize it first",
                            image.width, image.height, params.width, params.height
                        ),
                    });
                }
                let encoded = vae::encode(&self.components, &vae::image_to_tensor(image), noise)?;
                let views = vec![encoded.view(); params.batch_size];
                let batch = concatenate(Axis(0), &views)
                    .map_err(|e| PipelineError::Internal(e.to_string()))?;
                if params.denoising_start.is_some() {
                    batch // A base model's partly denoised latents: no noise added (diffusers).
                } else {
                    let added = noise.randn(batch.shape());
                    stepper.add_noise(&batch, &added, begin)?
                }
            }
        };
        timings.vae += vae_started.elapsed();

        let (latents, steps) = denoise(
            &self.components,
            stepper.as_mut(),
            begin..end,
            latents,
            &conditioning,
            noise,
            observer,
        )?;
        timings.steps = steps;

        let decode_started = Instant::now();
        let images = if decode {
            vae::to_rgb8(&vae::decode(&self.components, &latents)?)
        } else {
            Vec::new()
        };
        timings.vae += decode_started.elapsed();
        timings.total = started.elapsed();
        timings.inside_ort = super::graph::take_ort_run_time();
        Ok(GenerateOutput {
            latents,
            images,
            plan,
            evaluations: end - begin,
            warnings,
            timings,
        })
    }

    /// Which model evaluations run: img2img strength / denoising_start pick the tail of the
    /// schedule, denoising_end cuts its end (diffusers `get_timesteps` and the hand-off logic).
    fn evaluation_range(
        &self,
        params: &GenerateParams,
        stepper: &dyn Stepper,
        tail_only: bool,
    ) -> Result<(usize, usize), PipelineError> {
        let timesteps = stepper.timesteps();
        let order = stepper.order().max(1);
        let n_train = self
            .components
            .scheduler_config
            .num_train_timesteps
            .unwrap_or(1000) as f64;
        let cutoff = |fraction: f64| (n_train - fraction * n_train).round();
        let mut begin = 0;
        if params.init_image.is_some() && !(tail_only && params.denoising_start.is_none()) {
            begin = match params.denoising_start {
                Some(start) => {
                    let cut = cutoff(start);
                    let mut remaining = timesteps.iter().filter(|&&t| t < cut).count();
                    if order == 2 && remaining % 2 == 0 {
                        remaining += 1;
                    }
                    timesteps.len().saturating_sub(remaining)
                }
                None => {
                    let init_steps =
                        ((params.steps as f64 * params.strength) as usize).min(params.steps);
                    params.steps.saturating_sub(init_steps) * order
                }
            };
        }
        let mut end = timesteps.len();
        if let Some(fraction) = params.denoising_end {
            let cut = cutoff(fraction);
            end = begin + timesteps[begin..].iter().filter(|&&t| t >= cut).count();
        }
        if begin >= end {
            return Err(PipelineError::InvalidRequest {
                field: "strength",
                message: format!(
                    "with {} steps and strength {} no denoising step would run; raise strength or steps",
                    params.steps, params.strength
                ),
            });
        }
        Ok((begin, end))
    }

    /// Text and micro-conditioning for every UNet call, negatives first when guidance runs.
    fn conditioning(
        &self,
        params: &GenerateParams,
        positive: &PromptEmbeddings,
        negative: Option<&PromptEmbeddings>,
        guidance: Option<f64>,
    ) -> Result<Conditioning, PipelineError> {
        let settings = &self.components.settings;
        let size = (params.height, params.width);
        let original = params.original_size.unwrap_or(size);
        let target = params.target_size.unwrap_or(size);
        let crop = params.crops_coords_top_left;
        let time_ids = |original: (usize, usize),
                        crop: (usize, usize),
                        target: (usize, usize),
                        aesthetic: f64| {
            let mut ids = vec![
                original.0 as f32,
                original.1 as f32,
                crop.0 as f32,
                crop.1 as f32,
            ];
            if settings.requires_aesthetics_score {
                ids.push(aesthetic as f32);
            } else {
                ids.extend([target.0 as f32, target.1 as f32]);
            }
            ids
        };
        let positive_ids = time_ids(original, crop, target, params.aesthetic_score);
        if positive_ids.len() != settings.time_ids_len {
            return Err(PipelineError::Graph {
                path: self.components.unet.path.clone(),
                message: format!(
                    "input `time_ids` takes {} values but the model config gives {} (requires_aesthetics_score = {})",
                    settings.time_ids_len,
                    positive_ids.len(),
                    settings.requires_aesthetics_score
                ),
            });
        }
        let batch = params.batch_size;
        let repeat2 = |row: &[f32]| Array2::from_shape_fn((batch, row.len()), |(_, j)| row[j]);
        let repeat_embeddings =
            |e: &PromptEmbeddings| -> Result<(Array3<f32>, Array2<f32>), PipelineError> {
                let hidden = concatenate(Axis(0), &vec![e.hidden.view(); batch])
                    .map_err(|err| PipelineError::Internal(err.to_string()))?;
                let pooled = concatenate(Axis(0), &vec![e.pooled.view(); batch])
                    .map_err(|err| PipelineError::Internal(err.to_string()))?;
                Ok((hidden, pooled))
            };
        let (pos_hidden, pos_pooled) = repeat_embeddings(positive)?;
        let pos_ids = repeat2(&positive_ids);
        let (hidden, pooled, ids) = match (negative, guidance) {
            (Some(negative), Some(_)) => {
                let negative_ids = time_ids(
                    params.negative_original_size.unwrap_or(original),
                    params.negative_crops_coords_top_left.unwrap_or(crop),
                    params.negative_target_size.unwrap_or(target),
                    params.negative_aesthetic_score,
                );
                let (neg_hidden, neg_pooled) = repeat_embeddings(negative)?;
                let join3 =
                    |a: &Array3<f32>, b: &Array3<f32>| concatenate(Axis(0), &[a.view(), b.view()]);
                let join2 =
                    |a: &Array2<f32>, b: &Array2<f32>| concatenate(Axis(0), &[a.view(), b.view()]);
                let internal = |e: ndarray::ShapeError| PipelineError::Internal(e.to_string());
                (
                    join3(&neg_hidden, &pos_hidden).map_err(internal)?,
                    join2(&neg_pooled, &pos_pooled).map_err(internal)?,
                    join2(&repeat2(&negative_ids), &pos_ids).map_err(internal)?,
                )
            }
            _ => (pos_hidden, pos_pooled, pos_ids),
        };
        Ok(Conditioning {
            hidden,
            pooled,
            time_ids: ids,
            guidance,
            guidance_rescale: params.guidance_rescale,
        })
    }
}
