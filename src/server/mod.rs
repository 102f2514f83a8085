//! `sdxl serve`: an HTTP server that speaks the AUTOMATIC1111 web UI API (`/sdapi/v1/...`) over
//! one [`SdxlBackend`].
//!
//! - [`routes`]: the endpoints, one handler each, and the router (auth and body limit layers).
//! - [`request`]: an A1111 JSON body, field by field (unknown fields ignored, a wrong type is a
//!   422 naming the field), into a [`crate::GenerateRequest`].
//! - [`samplers`]: A1111 sampler and schedule-type names onto the scheduler registry, and the
//!   `/samplers` and `/schedulers` listings.
//! - [`response`]: `images` / `parameters` / `info` of a generation, `/progress`, `/memory`.
//! - [`queue`]: jobs run one at a time on a blocking thread through a bounded queue; the running
//!   job's progress and cancellation token.
//! - [`auth`]: optional HTTP basic auth (`--api-auth user:pass[,user2:pass2]`).
//! - [`error`]: errors as HTTP responses (422 with the field, 503 with `Retry-After`, ...).
//!
//! | endpoint | notes |
//! |---|---|
//! | `POST /sdapi/v1/txt2img`, `img2img` | A1111 fields; `n_iter` batches continue the seeds; an interrupt answers 200 with the finished images and `"interrupted": true` in `info` |
//! | `GET /sdapi/v1/samplers`, `schedulers` | the registry's samplers (then presets with other labels) and sigma schedules |
//! | `GET /sdapi/v1/sd-models` | registry models with a complete local copy; no hashes |
//! | `GET/POST /sdapi/v1/options` | `sd_model_checkpoint` (loads it, queued behind running jobs), `randn_source` |
//! | `GET /sdapi/v1/progress`, `POST /sdapi/v1/interrupt` | the running job |
//! | `POST /sdapi/v1/unload-checkpoint`, `reload-checkpoint`, `refresh-checkpoints` | |
//! | `GET /sdapi/v1/memory`, `GET /sdapi/v1/scripts` | RAM/NVML; no scripts |
//!
//! The model is loaded when the server starts (or by `POST /sdapi/v1/options` with
//! `sd_model_checkpoint`); after `POST /sdapi/v1/unload-checkpoint` the next generation loads the
//! last model again, as A1111 does.

pub mod auth;
pub mod error;
pub mod queue;
pub mod request;
pub mod response;
pub mod routes;
pub mod samplers;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::net::TcpListener;

pub use auth::Credentials;
pub use error::ApiError;
pub use queue::JobQueue;

use crate::backend::{BackendConfig, RngKind, SdxlBackend};
use crate::error::Error;
use crate::runtime::SessionOptions;

/// Default request body limit: 64 MiB (base64 init images of a few thousand pixels a side).
pub const DEFAULT_BODY_LIMIT: usize = 64 << 20;

/// How the server is set up.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Address to listen on (`127.0.0.1:7860` by default; port 0 picks a free port).
    pub addr: SocketAddr,
    /// Model loaded at start (a `models.toml` id or a checkpoint directory); `None` starts empty
    /// until `POST /sdapi/v1/options` sets `sd_model_checkpoint`.
    pub model: Option<String>,
    /// Registries and model search of the backend.
    pub backend: BackendConfig,
    /// How ONNX Runtime sessions are opened.
    pub session: SessionOptions,
    /// HTTP basic auth; `None` leaves the API open.
    pub auth: Option<Credentials>,
    /// Jobs that may wait while one runs; one more gets 503.
    pub queue: usize,
    /// Largest request body in bytes.
    pub body_limit: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            addr: SocketAddr::from(([127, 0, 0, 1], 7860)),
            model: None,
            backend: BackendConfig::default(),
            session: SessionOptions::default(),
            auth: None,
            queue: 8,
            body_limit: DEFAULT_BODY_LIMIT,
        }
    }
}

/// Errors starting the server.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The registries could not be read or the start-up model not loaded.
    #[error(transparent)]
    Backend(#[from] Error),
    /// The address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The server stopped with an I/O error.
    #[error("server error: {0}")]
    Io(#[from] std::io::Error),
}

/// Settings a client changes through `/sdapi/v1/options`.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    /// The model asked for last (what `reload-checkpoint` and the reload after an unload load).
    pub checkpoint: Option<String>,
    /// A1111's `randn_source`: where seeded noise comes from.
    pub rng: RngKind,
}

/// What every handler shares.
pub struct AppState {
    /// The backend.
    pub backend: Arc<SdxlBackend>,
    /// The job queue (also serialises model loads with generations).
    pub queue: Arc<JobQueue>,
    /// How sessions are opened when a model is (re)loaded.
    pub session: SessionOptions,
    /// Option values.
    pub settings: Mutex<Settings>,
    /// Basic-auth credentials.
    pub auth: Option<Credentials>,
}

impl AppState {
    /// A snapshot of the settings.
    pub fn settings(&self) -> Settings {
        self.settings
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Changes the settings.
    pub fn update_settings(&self, change: impl FnOnce(&mut Settings)) {
        change(&mut self.settings.lock().unwrap_or_else(|p| p.into_inner()));
    }
}

/// A bound server, ready to run.
pub struct Server {
    listener: TcpListener,
    state: Arc<AppState>,
    body_limit: usize,
}

impl Server {
    /// Loads the registries and the start-up model, and binds the address.
    pub async fn bind(config: ServerConfig) -> Result<Self, ServerError> {
        let backend_config = config.backend.clone();
        let session = config.session.clone();
        let model = config.model.clone();
        let backend = tokio::task::spawn_blocking(move || -> Result<SdxlBackend, Error> {
            let backend = SdxlBackend::new(backend_config)?;
            if let Some(model) = &model {
                backend.init_backend(model, session)?;
            }
            Ok(backend)
        })
        .await
        .map_err(|e| ServerError::Io(std::io::Error::other(e)))??;
        let listener =
            TcpListener::bind(config.addr)
                .await
                .map_err(|source| ServerError::Bind {
                    addr: config.addr,
                    source,
                })?;
        let state = Arc::new(AppState {
            backend: Arc::new(backend),
            queue: Arc::new(JobQueue::new(config.queue)),
            session: config.session,
            settings: Mutex::new(Settings {
                checkpoint: config.model,
                rng: RngKind::default(),
            }),
            auth: config.auth,
        });
        Ok(Self {
            listener,
            state,
            body_limit: config.body_limit,
        })
    }

    /// The address actually bound (the port chosen when the config asked for port 0).
    pub fn local_addr(&self) -> Result<SocketAddr, ServerError> {
        Ok(self.listener.local_addr()?)
    }

    /// Serves until `shutdown` completes; then the running job is cancelled, queued jobs are
    /// refused, and the call returns once the open requests have been answered.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServerError> {
        let queue = self.state.queue.clone();
        let router = routes::router(self.state, self.body_limit);
        axum::serve(self.listener, router)
            .with_graceful_shutdown(async move {
                shutdown.await;
                tracing::info!("shutting down: cancelling the running job");
                queue.shut_down();
            })
            .await?;
        Ok(())
    }
}

/// Completes on SIGINT (Ctrl-C) or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::warn!("cannot listen for Ctrl-C: {error}");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::warn!("cannot listen for SIGTERM: {error}");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}
