//! `sdxl`: the command line over the sdxl-backend library.
//!
//! JSON goes to stdout, logs to stderr (`RUST_LOG` sets the level), errors are one paragraph
//! with a non-zero exit code.

mod cli;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};
use cli::models::ModelsAction;
use cli::schedulers::SchedulersAction;
use sdxl_backend::registry::{MODELS_TOML_ENV, Registries, SCHEDULERS_TOML_ENV};

#[derive(Parser)]
#[command(name = "sdxl", version, about = "Stable Diffusion XL on ONNX Runtime")]
struct Cli {
    /// A schedulers.toml layered over the built-in one (default: $SDXL_SCHEDULERS_TOML).
    #[arg(long, global = true, value_name = "PATH")]
    schedulers_toml: Option<PathBuf>,
    /// A models.toml layered over the built-in one (default: $SDXL_MODELS_TOML).
    #[arg(long, global = true, value_name = "PATH")]
    models_toml: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Scheduler presets (diffusers classes or sampler + schedule pairs).
    Schedulers {
        #[command(subcommand)]
        action: SchedulersAction,
    },
    /// Samplers (stepping algorithms).
    Samplers {
        #[command(subcommand)]
        action: ListAction,
    },
    /// Sigma schedules.
    Schedules {
        #[command(subcommand)]
        action: ListAction,
    },
    /// Known checkpoints.
    Models {
        #[command(subcommand)]
        action: ModelsAction,
    },
    /// Generate images (text-to-image, or image-to-image with --init-image).
    Generate(Box<cli::generate::GenerateArgs>),
    /// Serve the AUTOMATIC1111 web UI API (/sdapi/v1/txt2img, img2img, options, ...) over HTTP.
    Serve(cli::serve::ServeArgs),
    /// ONNX Runtime: which library was loaded and from where.
    Info {
        /// Also open this ONNX graph and print its inputs and outputs.
        #[arg(long, value_name = "MODEL.onnx")]
        graph: Option<PathBuf>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum ListAction {
    /// List the entries.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    let env_path = |var: &str| {
        std::env::var_os(var)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    let schedulers_toml = cli
        .schedulers_toml
        .clone()
        .or_else(|| env_path(SCHEDULERS_TOML_ENV));
    let models_toml = cli
        .models_toml
        .clone()
        .or_else(|| env_path(MODELS_TOML_ENV));
    let registries = || -> Result<Registries> {
        Ok(Registries::load(
            schedulers_toml.as_deref(),
            models_toml.as_deref(),
        )?)
    };
    match &cli.command {
        Command::Schedulers {
            action: SchedulersAction::List { json },
        } => cli::schedulers::list_presets(&registries()?, *json),
        Command::Schedulers {
            action: SchedulersAction::Show(args),
        } => cli::schedulers::show(args, &registries()?),
        Command::Samplers {
            action: ListAction::List { json },
        } => cli::schedulers::list_samplers(&registries()?, *json),
        Command::Schedules {
            action: ListAction::List { json },
        } => cli::schedulers::list_schedules(&registries()?, *json),
        Command::Models { action } => cli::models::run(action, &registries()?),
        Command::Generate(args) => {
            cli::generate::run(args, schedulers_toml.clone(), models_toml.clone())
        }
        Command::Info { graph, json } => cli::info::run(graph.as_deref(), *json),
        Command::Serve(args) => cli::serve::run(args, schedulers_toml.clone(), models_toml.clone()),
    }
}
