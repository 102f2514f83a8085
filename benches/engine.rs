//! End-to-end benchmark of the engine: load a checkpoint with `SdxlBackend`, run one request,
//! print one JSON line of timings and memory.
//!
//! It is the Rust half of the side-by-side comparison with Optimum's
//! `ORTStableDiffusionXLPipeline` (`tools/bench/run.py` drives both and writes `BENCHMARKS.md`).
//! Peak resident memory (`VmHWM`) covers the whole process, so the harness starts a fresh process
//! per measurement; `--warmup` runs the same request first in that process (excluded from the
//! timings, included in the peak, as on the Python side).
//!
//! ```sh
//! cargo build --release --benches          # or: cargo bench --no-run
//! target/release/deps/engine-<hash> --model tests/fixtures/tiny-sdxl \
//!     --request '{"prompt": "a photo of an astronaut", "width": 64, "height": 64, "steps": 20,
//!                 "guidance_scale": 5, "seed": 42, "scheduler": "euler"}' --threads 2
//! ```
//!
//! Run through `cargo bench` (no arguments) it runs the tiny fixture workload three times in one
//! process as a smoke test. Arguments may also come from the environment: `SDXL_BENCH_MODEL`,
//! `SDXL_BENCH_REQUEST`, `SDXL_BENCH_THREADS`.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, bail};
use clap::Parser;
use sdxl_backend::backend::{CancellationToken, GenerateOptions, ImageInput};
use sdxl_backend::runtime::{DevicePreference, GraphOptimization, SessionOptions, ensure_runtime};
use sdxl_backend::{BackendConfig, GenerateRequest, SdxlBackend};
use serde::{Deserialize, Serialize};

/// One benchmark workload: the fields both sides of the comparison read (same JSON for
/// `tools/bench/optimum_bench.py`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct Workload {
    /// The prompt (no negative prompt: both pipelines then use zero negative embeddings).
    prompt: String,
    /// Width in pixels.
    width: u32,
    /// Height in pixels.
    height: u32,
    /// Denoising steps of the schedule (img2img runs `int(steps * strength)` of them).
    steps: u32,
    /// Classifier-free guidance scale.
    guidance_scale: f64,
    /// Seed of the torch-compatible CPU generator.
    seed: i64,
    /// Scheduler preset (`euler` = EulerDiscreteScheduler over the model's config).
    #[serde(default = "default_scheduler")]
    scheduler: String,
    /// img2img input image (a PNG file of width x height), relative to the working directory.
    #[serde(default)]
    init_image: Option<PathBuf>,
    /// img2img strength.
    #[serde(default)]
    strength: Option<f64>,
}

fn default_scheduler() -> String {
    "euler".to_string()
}

const DEFAULT_REQUEST: &str = r#"{"prompt": "a photo of an astronaut riding a horse on mars",
    "width": 64, "height": 64, "steps": 20, "guidance_scale": 5.0, "seed": 42, "scheduler": "euler"}"#;

#[derive(Debug, Parser)]
#[command(about = "Time one SDXL generation with sdxl-backend and print a JSON line per run")]
struct Args {
    /// Checkpoint directory in the Optimum layout (default: the bundled tiny fixture).
    #[arg(long)]
    model: Option<PathBuf>,
    /// The workload as JSON (see `Workload`); `@FILE` reads it from a file.
    #[arg(long)]
    request: Option<String>,
    /// ONNX Runtime intra-op threads per session.
    #[arg(long)]
    threads: Option<usize>,
    /// Execution provider: `cpu`, `auto` (CUDA when built with `--features cuda`), `cuda`
    /// (CUDA or an error).
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Untimed runs of the same request before the measured ones.
    #[arg(long, default_value_t = 1)]
    warmup: usize,
    /// Measured runs in this process (peak memory is per process: use 1 and fresh processes);
    /// 0 only loads the model and prints the load time.
    #[arg(long)]
    runs: Option<usize>,
    /// Label copied into the JSON output.
    #[arg(long, default_value = "")]
    label: String,
    /// Write the last image here (PNG), to compare pixels with the other side.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Only open each graph as a session, one at a time, and print the time and memory of each.
    #[arg(long)]
    profile_load: bool,
    /// With `--profile-load`: open the UNet on one thread and the other graphs on another
    /// (measures what parallel session creation would save in `init_backend`).
    #[arg(long, requires = "profile_load")]
    parallel: bool,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

/// One measured run, as printed.
#[derive(Debug, Serialize)]
struct Measurement<'a> {
    side: &'static str,
    label: &'a str,
    threads: usize,
    ort: String,
    ort_build: String,
    provider: String,
    load_ms: f64,
    wall_ms: f64,
    text_encoding_ms: f64,
    unet_steps: usize,
    unet_step_mean_ms: f64,
    vae_ms: f64,
    inside_ort_ms: f64,
    overhead_ms: f64,
    overhead_pct: f64,
    rss_after_load_bytes: Option<u64>,
    peak_rss_bytes: Option<u64>,
    /// GPU memory of this process after the run (NVML), when on CUDA.
    gpu_process_bytes: Option<u64>,
}

fn main() -> anyhow::Result<()> {
    let mut args = Args::parse();
    // clap's `env` feature is not enabled in this crate; read the variables by hand.
    let from_env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    args.model = args
        .model
        .or_else(|| from_env("SDXL_BENCH_MODEL").map(PathBuf::from));
    args.request = args.request.or_else(|| from_env("SDXL_BENCH_REQUEST"));
    let threads = match args
        .threads
        .map(Ok)
        .or_else(|| from_env("SDXL_BENCH_THREADS").map(|v| v.parse::<usize>()))
    {
        Some(parsed) => parsed.context("SDXL_BENCH_THREADS is not a number")?,
        None => 2,
    };
    let smoke = args.model.is_none() && args.request.is_none();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let model = args
        .model
        .clone()
        .unwrap_or_else(|| root.join("tests/fixtures/tiny-sdxl"));
    let workload: Workload = match args.request.as_deref() {
        Some(text) if text.starts_with('@') => {
            let path = &text[1..];
            let text = std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?;
            serde_json::from_str(&text)
                .with_context(|| format!("parsing the workload in {path}"))?
        }
        Some(text) => serde_json::from_str(text).context("parsing --request")?,
        None => serde_json::from_str(DEFAULT_REQUEST)?,
    };
    let request = generate_request(&workload)?;
    let runs = args.runs.unwrap_or(if smoke { 3 } else { 1 });

    let runtime = ensure_runtime()?;
    let ort = runtime.dylib_path.display().to_string();
    let ort_build = runtime.build_info.clone();
    let backend = SdxlBackend::new(BackendConfig::default())?;
    let device = match args.device.as_str() {
        "cpu" => DevicePreference::Cpu,
        "auto" => DevicePreference::Auto,
        "cuda" => DevicePreference::CudaStrict,
        other => bail!("--device {other}: expected cpu, auto or cuda"),
    };
    let options = SessionOptions {
        device,
        intra_threads: Some(threads),
        optimization: GraphOptimization::All,
    };
    if args.profile_load {
        return profile_load(&model, &options, args.parallel);
    }
    let model_arg = model.to_str().context("model path is not UTF-8")?;
    let load_started = Instant::now();
    backend.init_backend(model_arg, options)?;
    let load_ms = ms(load_started.elapsed());
    let rss_after_load = sdxl_backend::memory::process_memory().0;
    let provider = backend
        .status()
        .provider
        .map_or_else(|| "none".to_string(), |p| format!("{p:?}").to_lowercase());

    if runs == 0 {
        // Load only (for profiling `init_backend`).
        let line = serde_json::json!({
            "side": "engine", "label": args.label, "load_ms": load_ms,
            "rss_after_load_bytes": rss_after_load,
            "peak_rss_bytes": sdxl_backend::memory::process_memory().1,
        });
        println!("{line}");
        return Ok(());
    }
    let generate = || {
        backend.generate_advanced(
            &request,
            &GenerateOptions::default(),
            &mut |_| {},
            &CancellationToken::new(),
        )
    };
    for _ in 0..args.warmup {
        generate()?;
    }
    for _ in 0..runs {
        let started = Instant::now();
        let result = generate()?;
        let wall_ms = ms(started.elapsed());
        let timings = &result.timings;
        let steps = timings.steps.len();
        let step_mean = timings.steps.iter().sum::<f64>() / steps.max(1) as f64;
        let overhead_ms = wall_ms - timings.inside_ort;
        let measurement = Measurement {
            side: "engine",
            label: &args.label,
            threads,
            ort: ort.clone(),
            ort_build: ort_build.clone(),
            provider: provider.clone(),
            load_ms,
            wall_ms,
            text_encoding_ms: timings.text_encoding,
            unet_steps: steps,
            unet_step_mean_ms: step_mean,
            vae_ms: timings.vae,
            inside_ort_ms: timings.inside_ort,
            overhead_ms,
            overhead_pct: 100.0 * overhead_ms / wall_ms,
            rss_after_load_bytes: rss_after_load,
            peak_rss_bytes: sdxl_backend::memory::process_memory().1,
            gpu_process_bytes: result
                .memory
                .after
                .gpu
                .as_ref()
                .and_then(|gpu| gpu.process_bytes),
        };
        println!("{}", serde_json::to_string(&measurement)?);
        if let (Some(out), Some(image)) = (&args.out, result.images.first()) {
            std::fs::write(out, &image.png)
                .with_context(|| format!("writing {}", out.display()))?;
        }
    }
    Ok(())
}

/// Opens every graph of the checkpoint with the crate's session options, printing one JSON
/// line per graph (milliseconds, resident memory after it) and a total, to see where
/// `init_backend` goes. `parallel` opens the UNet and the other graphs on two threads.
fn profile_load(model: &Path, options: &SessionOptions, parallel: bool) -> anyhow::Result<()> {
    let open = |components: &[&str]| -> anyhow::Result<Vec<sdxl_backend::runtime::OpenedSession>> {
        let mut sessions = Vec::new();
        for component in components {
            let path = model.join(component).join("model.onnx");
            if !path.is_file() {
                continue;
            }
            let started = Instant::now();
            sessions.push(sdxl_backend::runtime::create_session(&path, options)?);
            let (rss, peak) = sdxl_backend::memory::process_memory();
            let line = serde_json::json!({
                "graph": component, "open_ms": ms(started.elapsed()),
                "rss_bytes": rss, "peak_rss_bytes": peak,
            });
            println!("{line}");
        }
        Ok(sessions)
    };
    let others = [
        "text_encoder",
        "text_encoder_2",
        "vae_decoder",
        "vae_encoder",
    ];
    let started = Instant::now();
    let sessions = if parallel {
        std::thread::scope(|scope| -> anyhow::Result<_> {
            let unet = scope.spawn(|| open(&["unet"]));
            let mut sessions = open(&others)?;
            sessions.extend(
                unet.join()
                    .map_err(|_| anyhow::anyhow!("the UNet thread panicked"))??,
            );
            Ok(sessions)
        })?
    } else {
        open(&[&others[..2], &["unet"], &others[2..]].concat())?
    };
    let total_ms = ms(started.elapsed());
    drop(sessions);
    let line = serde_json::json!({
        "total_ms": total_ms, "parallel": parallel,
        "peak_rss_bytes": sdxl_backend::memory::process_memory().1,
    });
    println!("{line}");
    Ok(())
}

fn generate_request(workload: &Workload) -> anyhow::Result<GenerateRequest> {
    let init_image = match &workload.init_image {
        None => None,
        Some(path) => {
            let bytes =
                std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
            Some(ImageInput::Bytes(bytes))
        }
    };
    if init_image.is_some() != workload.strength.is_some() {
        bail!("img2img needs both `init_image` and `strength`");
    }
    Ok(GenerateRequest {
        prompt: workload.prompt.clone(),
        width: Some(workload.width),
        height: Some(workload.height),
        steps: Some(workload.steps),
        guidance_scale: Some(workload.guidance_scale),
        seed: Some(workload.seed),
        scheduler: Some(workload.scheduler.clone()),
        init_image,
        strength: workload.strength,
        ..GenerateRequest::default()
    })
}

fn ms(duration: std::time::Duration) -> f64 {
    duration.as_secs_f64() * 1e3
}
