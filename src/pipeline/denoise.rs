//! The generic denoising loop: classifier-free guidance batched into one UNet call per model
//! evaluation, guidance rescale, and any [`Stepper`] doing the stepping.

use std::time::{Duration, Instant};

use ndarray::{Array2, Array3, ArrayD, Axis, IxDyn, concatenate};
use ort::value::TensorElementType;

use super::PipelineError;
use super::components::Components;
use super::graph::Input;
use crate::schedulers::{NoiseSource, Stepper};

/// Conditioning for every UNet call of one request, built once.
#[derive(Debug, Clone)]
pub struct Conditioning {
    /// [B, 77, D]: negatives first when guidance runs (B = 2 * batch), else positives only.
    pub hidden: Array3<f32>,
    /// [B, P].
    pub pooled: Array2<f32>,
    /// [B, 5 or 6].
    pub time_ids: Array2<f32>,
    /// Guidance scale when classifier-free guidance runs.
    pub guidance: Option<f64>,
    /// guidance_rescale (0 = off).
    pub guidance_rescale: f64,
}

/// One finished model evaluation, for progress reporting.
#[derive(Debug, Clone, Copy)]
pub struct StepEvent {
    /// Evaluations done in this request (1-based).
    pub step: usize,
    /// Evaluations this request runs.
    pub total: usize,
    /// Time spent in this evaluation.
    pub elapsed: Duration,
}

/// Runs evaluations `range` of `stepper` from `latents`. `observer` sees every finished
/// evaluation and returns `false` to cancel.
pub fn denoise(
    components: &Components,
    stepper: &mut dyn Stepper,
    range: std::ops::Range<usize>,
    mut latents: ArrayD<f32>,
    conditioning: &Conditioning,
    noise: &mut dyn NoiseSource,
    observer: &mut dyn FnMut(StepEvent) -> bool,
) -> Result<(ArrayD<f32>, Vec<Duration>), PipelineError> {
    let unet = &components.unet;
    let timestep_port = unet
        .input("timestep")
        .ok_or_else(|| PipelineError::Internal("unet has no timestep".into()))?;
    let timestep_shape: Vec<usize> = if timestep_port.shape.is_empty() {
        vec![]
    } else {
        vec![1]
    };
    let hidden = conditioning.hidden.view().into_dyn();
    let pooled = conditioning.pooled.view().into_dyn();
    let time_ids = conditioning.time_ids.view().into_dyn();
    let total = range.len();
    let half_precision = unet
        .output("out_sample")
        .is_some_and(|p| p.ty == TensorElementType::Float16);
    let mut durations = Vec::with_capacity(total);
    for (done, index) in range.enumerate() {
        let started = Instant::now();
        let t = *stepper
            .timesteps()
            .get(index)
            .ok_or_else(|| PipelineError::Internal("evaluation index out of plan".into()))?;
        let scaled = stepper.scale_model_input(&latents, index)?;
        let model_input = match conditioning.guidance {
            Some(_) => concatenate(Axis(0), &[scaled.view(), scaled.view()])
                .map_err(|e| PipelineError::Internal(e.to_string()))?,
            None => scaled,
        };
        // Integer-timestep exports get the rounded value; float exports the exact one.
        let timestep_value = if timestep_port.ty == TensorElementType::Int64 {
            t.round()
        } else {
            t
        } as f32;
        let timestep = ArrayD::from_elem(IxDyn(&timestep_shape), timestep_value);
        let mut outputs = unet.run(
            &[
                ("sample", Input::Float(model_input.view())),
                ("timestep", Input::Float(timestep.view())),
                ("encoder_hidden_states", Input::Float(hidden.view())),
                ("text_embeds", Input::Float(pooled.view())),
                ("time_ids", Input::Float(time_ids.view())),
            ],
            &["out_sample"],
        )?;
        let prediction = outputs
            .pop()
            .ok_or_else(|| PipelineError::Internal("unet gave no output".into()))?;
        let prediction = match conditioning.guidance {
            Some(scale) => guide(prediction, scale, conditioning.guidance_rescale)?,
            None => prediction,
        };
        latents = stepper.step(&prediction, index, &latents, noise)?;
        if half_precision {
            // diffusers' schedulers return `prev_sample.to(model_output.dtype)`: with an fp16
            // UNet the latents are held in fp16 between steps, as Optimum's pipeline does.
            latents.mapv_inplace(|v| half::f16::from_f32(v).to_f32());
        }
        if latents.iter().any(|v| !v.is_finite()) {
            return Err(PipelineError::NonFinite {
                stage: "latents",
                hint: format!(
                    "after evaluation {} of {total} (timestep {t}); the UNet or the scheduler diverged",
                    done + 1
                ),
            });
        }
        let elapsed = started.elapsed();
        durations.push(elapsed);
        if !observer(StepEvent {
            step: done + 1,
            total,
            elapsed,
        }) {
            return Err(PipelineError::Cancelled {
                step: done + 1,
                total,
            });
        }
    }
    Ok((latents, durations))
}

/// uncond + scale * (cond - uncond) over a batch laid out [uncond..., cond...], then the
/// optional rescale of diffusers' `rescale_noise_cfg` (std over all but the batch axis, N - 1).
fn guide(prediction: ArrayD<f32>, scale: f64, rescale: f64) -> Result<ArrayD<f32>, PipelineError> {
    let half = prediction.shape()[0] / 2;
    let (uncond, cond) = prediction.view().split_at(Axis(0), half);
    let guided = &uncond + &((&cond - &uncond) * scale as f32);
    if rescale <= 0.0 {
        return Ok(guided);
    }
    let mut out = guided.clone();
    for (mut item, text) in out.axis_iter_mut(Axis(0)).zip(cond.axis_iter(Axis(0))) {
        let ratio = std_unbiased(text.iter()) / std_unbiased(item.iter());
        let r = rescale as f32;
        item.mapv_inplace(|v| r * (v * ratio as f32) + (1.0 - r) * v);
    }
    Ok(out)
}

fn std_unbiased<'a>(values: impl Iterator<Item = &'a f32> + Clone) -> f64 {
    let n = values.clone().count() as f64;
    let mean = values.clone().map(|&v| f64::from(v)).sum::<f64>() / n;
    (values.map(|&v| (f64::from(v) - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt()
}
