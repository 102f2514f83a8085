//! `SdxlBackend`: the small public face a host application embeds (init, generate, unload).
//!
//! It only orchestrates: the registries say what exists, the model loader finds the files, the
//! pipeline generates, `output` writes PNGs with infotext. The loaded pipeline sits behind an
//! `Arc`: `generate` holds its own reference for the whole request, so `unload_backend` during a
//! generation never frees sessions in use (they are dropped when the last request ends).
//! Concurrent `generate` calls share one pipeline; each graph's session is taken by one request
//! at a time (requests interleave per graph), and results depend only on each request's seed.

pub mod request;
pub mod result;

mod convert;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use serde::Serialize;

pub use request::{GenerateRequest, ImageInput, RngKind};
pub use result::{GenerateResult, GeneratedImage, MemoryReport, TimingsMs, UsedParameters};

use crate::error::Error;
use crate::memory::{MemorySnapshot, track_vram_usage};
use crate::model_loader::{ResolvedModel, resolve_model, search_roots};
use crate::pipeline::{PipelineError, SdxlPipeline, StepEvent};
use crate::registry::Registries;
use crate::runtime::{ActiveProvider, SessionOptions};

/// How the backend is set up.
#[derive(Debug, Clone, Default)]
pub struct BackendConfig {
    /// A user `schedulers.toml` layered over the built-in one.
    pub schedulers_toml: Option<PathBuf>,
    /// A user `models.toml` layered over the built-in one.
    pub models_toml: Option<PathBuf>,
    /// An extra directory searched first for models.
    pub models_dir: Option<PathBuf>,
    /// Refuse requests whose latents alone would exceed this many bytes (0 = 1 GiB default).
    pub max_latent_bytes: usize,
}

/// Rust-only extras of a request (not JSON): explicit initial noise and the final latents.
#[derive(Debug, Clone, Default)]
pub struct GenerateOptions {
    /// Initial noise [batch, 4, H/8, W/8], with diffusers' `latents=` meaning.
    pub initial_latents: Option<ndarray::ArrayD<f32>>,
    /// Return the final latents in `GenerateResult::latents`.
    pub return_latents: bool,
}

/// A cancellation flag shared with a running request.
#[derive(Debug, Clone, Default)]
pub struct CancellationToken(Arc<AtomicBool>);

impl CancellationToken {
    /// A token that is not cancelled.
    pub fn new() -> Self {
        Self::default()
    }

    /// Asks the request to stop; it returns `Cancelled` within one step.
    pub fn cancel(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    /// Whether `cancel` was called.
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// Progress of a running request, once per model evaluation.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Progress {
    /// Evaluations done (1-based) across the whole batch.
    pub step: usize,
    /// Evaluations planned.
    pub total: usize,
    /// Time since the request started.
    pub elapsed: Duration,
    /// Estimated time to the end of the denoising loop.
    pub eta: Duration,
}

/// What `status()` reports.
#[derive(Debug, Clone, Serialize)]
pub struct BackendStatus {
    /// The loaded model id (or directory), if any.
    pub model: Option<String>,
    /// Its directory.
    pub model_dir: Option<PathBuf>,
    /// Execution provider of the UNet.
    pub provider: Option<ActiveProvider>,
    /// Requests running now.
    pub running: usize,
}

struct Loaded {
    /// Dropped explicitly in `Drop`, before the allocator is trimmed.
    pipeline: std::mem::ManuallyDrop<SdxlPipeline>,
    model: ResolvedModel,
    name: String,
}

impl Drop for Loaded {
    /// Runs when the last request using the model ends after an unload: the sessions are freed,
    /// then glibc is asked to return the freed heap to the system, so resident memory drops back
    /// instead of staying cached in the allocator.
    fn drop(&mut self) {
        // SAFETY: `pipeline` is not used after this point; `Loaded` is being dropped.
        unsafe { std::mem::ManuallyDrop::drop(&mut self.pipeline) };
        crate::memory::release_free_memory();
    }
}

/// The embeddable SDXL backend. `Send + Sync`.
pub struct SdxlBackend {
    config: BackendConfig,
    registries: Registries,
    loaded: RwLock<Option<Arc<Loaded>>>,
    running: Arc<std::sync::atomic::AtomicUsize>,
}

impl SdxlBackend {
    /// Loads the registries (built-ins plus the configured user files); no model yet.
    pub fn new(config: BackendConfig) -> Result<Self, Error> {
        let registries = Registries::load(
            config.schedulers_toml.as_deref(),
            config.models_toml.as_deref(),
        )?;
        Ok(Self {
            config,
            registries,
            loaded: RwLock::new(None),
            running: Arc::default(),
        })
    }

    /// The registries in use.
    pub fn registries(&self) -> &Registries {
        &self.registries
    }

    /// Loads `model` (a `models.toml` id or a checkpoint directory), replacing any loaded one.
    pub fn init_backend(&self, model: &str, options: SessionOptions) -> Result<(), Error> {
        let resolved = resolve_model(
            model,
            &self.registries.models,
            &search_roots(self.config.models_dir.as_deref()),
        )?;
        let pipeline = SdxlPipeline::load(&resolved.dir, &options)?;
        let name = resolved
            .entry
            .as_ref()
            .map_or_else(|| resolved.dir.display().to_string(), |e| e.id.clone());
        let loaded = Arc::new(Loaded {
            pipeline: std::mem::ManuallyDrop::new(pipeline),
            model: resolved,
            name,
        });
        *self.loaded.write().unwrap_or_else(|p| p.into_inner()) = Some(loaded);
        Ok(())
    }

    /// Drops the backend's reference to the loaded model; its sessions are freed once no
    /// request uses them. `generate` afterwards is an error until `init_backend`.
    pub fn unload_backend(&self) {
        self.loaded
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .take();
    }

    /// Model, provider and running requests.
    pub fn status(&self) -> BackendStatus {
        let loaded = self.current();
        BackendStatus {
            model: loaded.as_ref().map(|l| l.name.clone()),
            model_dir: loaded.as_ref().map(|l| l.model.dir.clone()),
            provider: loaded.as_ref().map(|l| l.pipeline.components.unet.provider),
            running: self.running.load(Ordering::SeqCst),
        }
    }

    /// Process (and GPU) memory now.
    pub fn memory_status(&self) -> MemorySnapshot {
        track_vram_usage()
    }

    fn current(&self) -> Option<Arc<Loaded>> {
        self.loaded
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Generates with no progress callback and no cancellation.
    pub fn generate(&self, request: &GenerateRequest) -> Result<GenerateResult, Error> {
        self.generate_with(request, &mut |_| {}, &CancellationToken::new())
    }

    /// Generates with progress and cancellation (see [`SdxlBackend::generate_advanced`]).
    pub fn generate_with(
        &self,
        request: &GenerateRequest,
        progress: &mut dyn FnMut(Progress),
        cancel: &CancellationToken,
    ) -> Result<GenerateResult, Error> {
        self.generate_advanced(request, &GenerateOptions::default(), progress, cancel)
    }

    /// Generates, calling `progress` after every model evaluation; `cancel` stops the request
    /// within one evaluation with [`PipelineError::Cancelled`].
    pub fn generate_advanced(
        &self,
        request: &GenerateRequest,
        options: &GenerateOptions,
        progress: &mut dyn FnMut(Progress),
        cancel: &CancellationToken,
    ) -> Result<GenerateResult, Error> {
        let loaded = self.current().ok_or(Error::NotLoaded)?;
        self.running.fetch_add(1, Ordering::SeqCst);
        let _running = RunningGuard(self.running.clone());
        let started = Instant::now();
        let before = track_vram_usage();
        let mut plan = convert::plan(
            request,
            &loaded.model,
            &loaded.pipeline,
            &self.registries,
            self.max_latent_bytes(),
        )?;
        plan.params.latents = options.initial_latents.clone();
        let mut observer = |event: StepEvent| {
            let elapsed = started.elapsed();
            let per_step = elapsed.div_f64(event.step.max(1) as f64);
            let eta = per_step.mul_f64(event.total.saturating_sub(event.step) as f64);
            progress(Progress {
                step: event.step,
                total: event.total,
                elapsed,
                eta,
            });
            !cancel.is_cancelled()
        };
        let mut noise = convert::noise_source(request.rng, plan.seed, plan.params.batch_size);
        let output = loaded
            .pipeline
            .generate(
                &plan.params,
                &self.registries.schedulers,
                noise.as_mut(),
                &mut observer,
                true,
            )
            .map_err(Error::from)?;
        let after = track_vram_usage();
        let device = match loaded.pipeline.components.unet.provider {
            ActiveProvider::Cpu => "cpu",
            ActiveProvider::Cuda => "cuda",
        };
        let memory = MemoryReport {
            device: device.to_string(),
            peak_resident_bytes: after.process_peak_resident_bytes,
            before,
            after,
        };
        let mut result = convert::result(&loaded.name, &plan, output, memory, started)?;
        if !options.return_latents {
            result.latents = None;
        }
        Ok(result)
    }

    fn max_latent_bytes(&self) -> usize {
        if self.config.max_latent_bytes == 0 {
            1 << 30
        } else {
            self.config.max_latent_bytes
        }
    }
}

struct RunningGuard(Arc<std::sync::atomic::AtomicUsize>);

impl Drop for RunningGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl From<PipelineError> for Error {
    fn from(error: PipelineError) -> Self {
        Error::Pipeline(Box::new(error))
    }
}
