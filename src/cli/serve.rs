//! `sdxl serve`: the AUTOMATIC1111-compatible HTTP API (`/sdapi/v1/...`) over one backend.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Args;
use sdxl_backend::backend::BackendConfig;
use sdxl_backend::runtime::{DevicePreference, SessionOptions};
use sdxl_backend::server::{Credentials, Server, ServerConfig, shutdown_signal};

/// Arguments of `sdxl serve`.
#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Address to listen on (127.0.0.1: this machine only; 0.0.0.0: every interface).
    #[arg(long, default_value = "127.0.0.1")]
    host: IpAddr,
    /// Port (0 picks a free one; the address is printed).
    #[arg(long, default_value_t = 7860)]
    port: u16,
    /// Model loaded at start: a models.toml id (or alias) or a checkpoint directory. Without it,
    /// POST /sdapi/v1/options {"sd_model_checkpoint": ID} loads one.
    #[arg(long)]
    model: Option<String>,
    /// HTTP basic auth, `user:password[,user2:password2]` (as A1111's --api-auth).
    #[arg(long, value_name = "USER:PASS")]
    api_auth: Option<String>,
    /// Jobs that may wait while one runs; one more is answered 503 with Retry-After.
    #[arg(long, default_value_t = 8)]
    queue: usize,
    /// Largest request body, in MiB.
    #[arg(long, default_value_t = 64)]
    max_body_mib: usize,
    /// Execution provider: auto, cpu, cuda (cuda = strict, no fallback).
    #[arg(long, default_value = "auto")]
    device: String,
}

pub fn run(
    args: &ServeArgs,
    schedulers_toml: Option<PathBuf>,
    models_toml: Option<PathBuf>,
) -> Result<()> {
    let device = match args.device.as_str() {
        "auto" => DevicePreference::Auto,
        "cpu" => DevicePreference::Cpu,
        "cuda" => DevicePreference::CudaStrict,
        other => bail!("--device {other}: valid values are auto, cpu, cuda"),
    };
    let auth = args
        .api_auth
        .as_deref()
        .map(Credentials::parse)
        .transpose()
        .map_err(|e| anyhow::anyhow!("--api-auth: {e}"))?;
    let config = ServerConfig {
        addr: SocketAddr::new(args.host, args.port),
        model: args.model.clone(),
        backend: BackendConfig {
            schedulers_toml,
            models_toml,
            ..Default::default()
        },
        session: SessionOptions {
            device,
            ..Default::default()
        },
        auth,
        queue: args.queue,
        body_limit: args.max_body_mib.saturating_mul(1 << 20),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        let server = Server::bind(config).await?;
        let addr = server.local_addr()?;
        match &args.model {
            Some(model) => eprintln!("sdxl serve: {model} loaded; listening on http://{addr}"),
            None => eprintln!(
                "sdxl serve: no model loaded (POST /sdapi/v1/options sd_model_checkpoint); listening on http://{addr}"
            ),
        }
        server.run(shutdown_signal()).await?;
        eprintln!("sdxl serve: stopped");
        Ok(())
    })
}
