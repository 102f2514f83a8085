//! `sdxl generate`: one request through [`SdxlBackend`], images and latents written atomically.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::Args;
use sdxl_backend::backend::{BackendConfig, GenerateOptions, ImageInput, Progress, RngKind};
use sdxl_backend::npy;
use sdxl_backend::output::write_atomically;
use sdxl_backend::runtime::{DevicePreference, SessionOptions};
use sdxl_backend::{CancellationToken, GenerateRequest, SdxlBackend};
use serde_json::json;

/// Arguments of `sdxl generate`.
#[derive(Args, Debug)]
pub struct GenerateArgs {
    /// A models.toml id (or alias), or a directory in the Optimum ONNX layout.
    #[arg(long)]
    model: String,
    /// The prompt.
    #[arg(long)]
    prompt: String,
    /// Prompt for the second text encoder (default: --prompt).
    #[arg(long)]
    prompt_2: Option<String>,
    /// Negative prompt (omitted: zeros on base models, as diffusers).
    #[arg(long)]
    negative_prompt: Option<String>,
    /// Negative prompt for the second text encoder.
    #[arg(long)]
    negative_prompt_2: Option<String>,
    /// A scheduler preset (`sdxl schedulers list`); default: the model's.
    #[arg(long, conflicts_with_all = ["sampler", "schedule"])]
    scheduler: Option<String>,
    /// A sampler (`sdxl samplers list`), optionally with --schedule.
    #[arg(long)]
    sampler: Option<String>,
    /// A sigma schedule (`sdxl schedules list`); default: the sampler's.
    #[arg(long, requires = "sampler")]
    schedule: Option<String>,
    /// Denoising steps (default: the model's).
    #[arg(long)]
    steps: Option<u32>,
    /// Classifier-free guidance scale (default: the model's).
    #[arg(long)]
    guidance: Option<f64>,
    /// Guidance rescale (0 to 1).
    #[arg(long)]
    guidance_rescale: Option<f64>,
    /// Skip this many extra text-encoder layers.
    #[arg(long)]
    clip_skip: Option<u32>,
    /// Width in pixels (default: the model's, or the init image's).
    #[arg(long)]
    width: Option<u32>,
    /// Height in pixels (default: the model's, or the init image's).
    #[arg(long)]
    height: Option<u32>,
    /// Seed of the torch-compatible CPU generator; -1 or omitted: random (reported).
    #[arg(long, allow_hyphen_values = true)]
    seed: Option<i64>,
    /// Noise generator: cpu (torch.Generator("cpu"), diffusers/ComfyUI) or philox (torch CUDA, A1111 GPU seeds).
    #[arg(long, default_value = "cpu")]
    rng: String,
    /// Images to generate (image i uses seed + i).
    #[arg(long)]
    batch_size: Option<u32>,
    /// Initial noise as float32 .npy [1, 4, H/8, W/8] (diffusers' `latents=`).
    #[arg(long, value_name = "IN.npy")]
    latents: Option<PathBuf>,
    /// Write the final latents (before VAE decoding) as .npy.
    #[arg(long, value_name = "OUT.npy")]
    output_latents: Option<PathBuf>,
    /// img2img: the input image.
    #[arg(long, value_name = "IN.png")]
    init_image: Option<PathBuf>,
    /// img2img strength in (0, 1].
    #[arg(long)]
    strength: Option<f64>,
    /// Output PNG (batches add -1, -2, ... before the extension).
    #[arg(long, value_name = "OUT.png", default_value = "out.png")]
    out: PathBuf,
    /// Execution provider: auto, cpu, cuda (cuda = strict, no fallback).
    #[arg(long, default_value = "auto")]
    device: String,
    /// Print the result as JSON on stdout (images as paths, not base64).
    #[arg(long)]
    json: bool,
}

pub fn run(
    args: &GenerateArgs,
    schedulers_toml: Option<PathBuf>,
    models_toml: Option<PathBuf>,
) -> Result<()> {
    let device = match args.device.as_str() {
        "auto" => DevicePreference::Auto,
        "cpu" => DevicePreference::Cpu,
        "cuda" => DevicePreference::CudaStrict,
        other => bail!("--device {other}: valid values are auto, cpu, cuda"),
    };
    let rng = match args.rng.as_str() {
        "cpu" => RngKind::Cpu,
        "philox" => RngKind::Philox,
        other => bail!("--rng {other}: valid values are cpu, philox"),
    };
    let backend = SdxlBackend::new(BackendConfig {
        schedulers_toml,
        models_toml,
        ..Default::default()
    })?;
    backend.init_backend(
        &args.model,
        SessionOptions {
            device,
            ..Default::default()
        },
    )?;
    let init_image = match &args.init_image {
        Some(path) => Some(ImageInput::Bytes(
            std::fs::read(path)
                .with_context(|| format!("reading --init-image {}", path.display()))?,
        )),
        None => None,
    };
    let request = GenerateRequest {
        prompt: args.prompt.clone(),
        prompt_2: args.prompt_2.clone(),
        negative_prompt: args.negative_prompt.clone(),
        negative_prompt_2: args.negative_prompt_2.clone(),
        width: args.width,
        height: args.height,
        steps: args.steps,
        guidance_scale: args.guidance,
        guidance_rescale: args.guidance_rescale,
        scheduler: args.scheduler.clone(),
        sampler: args.sampler.clone(),
        schedule: args.schedule.clone(),
        seed: args.seed,
        batch_size: args.batch_size,
        clip_skip: args.clip_skip,
        init_image,
        strength: args.strength,
        rng,
        ..Default::default()
    };
    let options = GenerateOptions {
        initial_latents: args.latents.as_deref().map(npy::read_f32).transpose()?,
        return_latents: args.output_latents.is_some(),
    };
    let interactive = std::io::stderr().is_terminal() && !args.json;
    let mut progress = |p: Progress| {
        let line = format!(
            "step {}/{}  {:.1}s elapsed, ETA {:.1}s",
            p.step,
            p.total,
            p.elapsed.as_secs_f64(),
            p.eta.as_secs_f64()
        );
        if interactive {
            eprint!("\r{line}   ");
        } else if !args.json {
            eprintln!("{line}");
        }
    };
    let result =
        backend.generate_advanced(&request, &options, &mut progress, &CancellationToken::new())?;
    if interactive {
        eprintln!();
    }
    let mut written = Vec::new();
    for (i, image) in result.images.iter().enumerate() {
        let path = numbered(&args.out, i, result.images.len());
        write_atomically(&path, &image.png)?;
        written.push(json!({ "path": path, "width": image.width, "height": image.height, "seed": image.seed }));
    }
    if let (Some(path), Some(latents)) = (&args.output_latents, &result.latents) {
        write_atomically(path, &npy::to_bytes(latents))?;
    }
    for warning in &result.warnings {
        tracing::warn!("{warning}");
    }
    if args.json {
        let mut value = serde_json::to_value(&result)?;
        value["images"] = json!(written);
        println!("{}", serde_json::to_string_pretty(&value)?);
    } else {
        for image in &written {
            eprintln!(
                "wrote {} (seed {})",
                image["path"].as_str().unwrap_or_default(),
                image["seed"]
            );
        }
    }
    Ok(())
}

/// `out.png`, then `out-1.png`, `out-2.png`... for batches.
fn numbered(path: &Path, index: usize, count: usize) -> PathBuf {
    if count <= 1 || index == 0 {
        return path.to_path_buf();
    }
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let extension = path
        .extension()
        .map(|e| format!(".{}", e.to_string_lossy()))
        .unwrap_or_default();
    path.with_file_name(format!("{stem}-{index}{extension}"))
}
