//! `sdxl generate`: one generation from the command line.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::Args;
use sdxl_backend::model_loader::{resolve_model, search_roots};
use sdxl_backend::npy;
use sdxl_backend::output::{Infotext, encode_png, write_atomically};
use sdxl_backend::pipeline::{GenerateParams, RgbImage, SchedulerChoice, SdxlPipeline};
use sdxl_backend::registry::{PresetKind, Registries};
use sdxl_backend::rng::TorchCpuRng;
use sdxl_backend::runtime::{DevicePreference, SessionOptions};
use sdxl_backend::schedulers::SchedulerConfig;
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
    /// A sampler (`sdxl samplers list`), with --schedule.
    #[arg(long)]
    sampler: Option<String>,
    /// A sigma schedule (`sdxl schedules list`); default: the sampler's.
    #[arg(long, requires = "sampler")]
    schedule: Option<String>,
    /// Denoising steps (default: the model's).
    #[arg(long)]
    steps: Option<usize>,
    /// Classifier-free guidance scale (default: the model's).
    #[arg(long)]
    guidance: Option<f64>,
    /// Guidance rescale (0 to 1).
    #[arg(long, default_value_t = 0.0)]
    guidance_rescale: f64,
    /// Skip this many extra text-encoder layers.
    #[arg(long)]
    clip_skip: Option<usize>,
    /// Width in pixels (default: the model's).
    #[arg(long)]
    width: Option<usize>,
    /// Height in pixels (default: the model's).
    #[arg(long)]
    height: Option<usize>,
    /// Seed of the torch-compatible CPU generator; -1 or omitted: random (reported).
    #[arg(long, allow_hyphen_values = true)]
    seed: Option<i64>,
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
    #[arg(long, default_value_t = 0.3)]
    strength: f64,
    /// Output PNG.
    #[arg(long, value_name = "OUT.png", default_value = "out.png")]
    out: PathBuf,
    /// Execution provider: auto, cpu, cuda (cuda = strict).
    #[arg(long, default_value = "auto")]
    device: String,
    /// Print the result as JSON on stdout.
    #[arg(long)]
    json: bool,
}

pub fn run(args: &GenerateArgs, registries: &Registries) -> Result<()> {
    let resolved = resolve_model(&args.model, &registries.models, &search_roots(None))?;
    let device = match args.device.as_str() {
        "auto" => DevicePreference::Auto,
        "cpu" => DevicePreference::Cpu,
        "cuda" => DevicePreference::CudaStrict,
        other => bail!("--device {other}: valid values are auto, cpu, cuda"),
    };
    let pipeline = SdxlPipeline::load(
        &resolved.dir,
        &SessionOptions {
            device,
            ..Default::default()
        },
    )
    .with_context(|| format!("loading {}", resolved.dir.display()))?;
    let settings = &pipeline.components.settings;
    let defaults = resolved.entry.as_ref().map(|e| e.defaults.clone());
    let sample_size =
        pipeline.components.unet_sample_size().unwrap_or(128) * settings.vae_scale_factor;
    let scheduler = match (&args.scheduler, &args.sampler) {
        (Some(preset), _) => SchedulerChoice::Preset(preset.clone()),
        (None, Some(sampler)) => SchedulerChoice::Sampling {
            sampler: sampler.clone(),
            schedule: args.schedule.clone(),
        },
        (None, None) => match defaults.as_ref().and_then(|d| d.scheduler.clone()) {
            Some(preset) => SchedulerChoice::Preset(preset),
            None => SchedulerChoice::ModelDefault,
        },
    };
    let seed = match args.seed {
        Some(seed) if seed >= 0 => seed as u64,
        _ => random_seed(),
    };
    let init_image = args
        .init_image
        .as_deref()
        .map(|path| -> Result<RgbImage> {
            let bytes = std::fs::read(path)
                .with_context(|| format!("reading --init-image {}", path.display()))?;
            RgbImage::from_png(&bytes)
                .map_err(|e| anyhow::anyhow!("--init-image {}: {e}", path.display()))
        })
        .transpose()?;
    let (width, height) = match (&init_image, args.width, args.height) {
        (_, Some(w), Some(h)) => (w, h),
        (Some(image), None, None) => (image.width as usize, image.height as usize),
        _ => (
            args.width
                .or(defaults.as_ref().map(|d| d.width as usize))
                .unwrap_or(sample_size),
            args.height
                .or(defaults.as_ref().map(|d| d.height as usize))
                .unwrap_or(sample_size),
        ),
    };
    let params = GenerateParams {
        prompt: args.prompt.clone(),
        prompt_2: args.prompt_2.clone(),
        negative_prompt: args.negative_prompt.clone(),
        negative_prompt_2: args.negative_prompt_2.clone(),
        width,
        height,
        steps: args
            .steps
            .or(defaults.as_ref().map(|d| d.steps as usize))
            .unwrap_or(30),
        guidance_scale: args
            .guidance
            .or(defaults.as_ref().map(|d| d.guidance_scale))
            .unwrap_or(5.0),
        guidance_rescale: args.guidance_rescale,
        clip_skip: args.clip_skip,
        scheduler: scheduler.clone(),
        latents: args.latents.as_deref().map(npy::read_f32).transpose()?,
        init_image,
        strength: args.strength,
        ..Default::default()
    };
    let interactive = std::io::stderr().is_terminal() && !args.json;
    let mut progress = |event: sdxl_backend::pipeline::StepEvent| {
        if interactive {
            eprint!(
                "\rstep {}/{} ({:.0} ms)   ",
                event.step,
                event.total,
                event.elapsed.as_secs_f64() * 1e3
            );
        } else if !args.json {
            eprintln!(
                "step {}/{} ({:.0} ms)",
                event.step,
                event.total,
                event.elapsed.as_secs_f64() * 1e3
            );
        }
        true
    };
    let mut noise = TorchCpuRng::new(seed);
    let output = pipeline.generate(
        &params,
        &registries.schedulers,
        &mut noise,
        &mut progress,
        true,
    )?;
    if interactive {
        eprintln!();
    }
    let (sampler_label, schedule_label) = describe_scheduler(
        &scheduler,
        registries,
        pipeline.components.scheduler_class.as_deref(),
    );
    let model_name = resolved
        .entry
        .as_ref()
        .map_or_else(|| resolved.dir.display().to_string(), |e| e.id.clone());
    let mut fields = vec![
        ("Steps".to_string(), params.steps.to_string()),
        ("Sampler".to_string(), sampler_label),
    ];
    if let Some(schedule) = schedule_label {
        fields.push(("Schedule type".to_string(), schedule));
    }
    fields.extend([
        (
            "CFG scale".to_string(),
            format_number(params.guidance_scale),
        ),
        ("Seed".to_string(), seed.to_string()),
        ("Size".to_string(), format!("{width}x{height}")),
        ("Model".to_string(), model_name.clone()),
    ]);
    if params.init_image.is_some() {
        fields.push((
            "Denoising strength".to_string(),
            format_number(params.strength),
        ));
    }
    let infotext = Infotext {
        prompt: params.prompt.clone(),
        negative_prompt: params.negative_prompt.clone().unwrap_or_default(),
        fields,
    };
    let mut written = Vec::new();
    for (i, image) in output.images.iter().enumerate() {
        let path = numbered(&args.out, i, output.images.len());
        write_atomically(&path, &encode_png(image, Some(&infotext.render()))?)?;
        written.push(
            json!({ "path": path, "width": image.width, "height": image.height, "seed": seed }),
        );
    }
    if let Some(path) = &args.output_latents {
        write_atomically(path, &npy::to_bytes(&output.latents))?;
    }
    for warning in &output.warnings {
        tracing::warn!("{warning}");
    }
    if args.json {
        let result = json!({
            "images": written,
            "model": model_name,
            "model_dir": resolved.dir,
            "seed": seed,
            "infotext": infotext.render(),
            "plan": output.plan,
            "evaluations": output.evaluations,
            "timings": output.timings,
            "warnings": output.warnings,
        });
        println!("{}", serde_json::to_string_pretty(&result)?);
    } else {
        for image in &written {
            eprintln!("wrote {}", image["path"].as_str().unwrap_or_default());
        }
    }
    Ok(())
}

/// A1111's "Sampler" and "Schedule type" labels for the choice.
fn describe_scheduler(
    choice: &SchedulerChoice,
    registries: &Registries,
    model_class: Option<&str>,
) -> (String, Option<String>) {
    let schedulers = &registries.schedulers;
    match choice {
        SchedulerChoice::ModelDefault => {
            // The preset that runs the model's class unchanged names it best ("Euler").
            let class = model_class.unwrap_or("EulerDiscreteScheduler");
            let label = schedulers.presets().find_map(|preset| match &preset.kind {
                PresetKind::Diffusers { class: c, config }
                    if c.to_string() == class && **config == SchedulerConfig::default() =>
                {
                    Some(preset.label.clone())
                }
                _ => None,
            });
            (label.unwrap_or_else(|| class.to_string()), None)
        }
        SchedulerChoice::Preset(name) => (
            schedulers
                .preset(name)
                .map_or_else(|_| name.clone(), |p| p.label.clone()),
            None,
        ),
        SchedulerChoice::Sampling { sampler, schedule } => {
            let sampler = schedulers.sampler(sampler).ok();
            let schedule_name = schedule
                .clone()
                .or_else(|| sampler.map(|s| s.default_schedule.clone()));
            let schedule_label = schedule_name.map(|name| {
                schedulers
                    .schedule(&name)
                    .map_or(name.clone(), |s| s.label.clone())
            });
            (
                sampler.map_or_else(|| "?".to_string(), |s| s.label.clone()),
                schedule_label,
            )
        }
    }
}

fn format_number(value: f64) -> String {
    if value.fract() == 0.0 {
        format!("{value:.0}")
    } else {
        format!("{value}")
    }
}

/// `out.png`, or `out-1.png`, `out-2.png`... for batches.
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

fn random_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    hasher.finish() & 0xFFFF_FFFF
}
