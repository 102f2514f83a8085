//! `sdxl`: the command line over the sdxl-backend library.
//!
//! JSON goes to stdout, logs to stderr (`RUST_LOG` sets the level), errors are one paragraph
//! with a non-zero exit code.

use std::path::PathBuf;
use std::process::ExitCode;

mod cli;

use anyhow::Result;
use clap::{Parser, Subcommand};
use sdxl_backend::registry::{PresetKind, Registries};
use sdxl_backend::runtime;
use serde::Serialize;

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
        action: ListAction,
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
        action: ListAction,
    },
    /// Generate images (text-to-image, or image-to-image with --init-image).
    Generate(Box<cli::generate::GenerateArgs>),
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
    let registries = || -> Result<Registries> {
        let env_path = |var: &str| {
            std::env::var_os(var)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        let schedulers = cli
            .schedulers_toml
            .clone()
            .or_else(|| env_path(sdxl_backend::registry::SCHEDULERS_TOML_ENV));
        let models = cli
            .models_toml
            .clone()
            .or_else(|| env_path(sdxl_backend::registry::MODELS_TOML_ENV));
        Ok(Registries::load(schedulers.as_deref(), models.as_deref())?)
    };
    match &cli.command {
        Command::Schedulers {
            action: ListAction::List { json },
        } => {
            let registries = registries()?;
            let presets: Vec<_> = registries.schedulers.presets().collect();
            let rows = presets
                .iter()
                .map(|p| vec![p.name.clone(), p.label.clone(), describe_preset(&p.kind)])
                .collect();
            emit(*json, &presets, &["NAME", "LABEL", "RUNS"], rows)
        }
        Command::Samplers {
            action: ListAction::List { json },
        } => {
            let registries = registries()?;
            let samplers: Vec<_> = registries.schedulers.samplers().collect();
            let rows = samplers
                .iter()
                .map(|s| {
                    vec![
                        s.name.clone(),
                        s.label.clone(),
                        if s.stochastic { "yes" } else { "no" }.to_string(),
                        s.order.to_string(),
                        s.model_calls_per_step.to_string(),
                        s.default_schedule.clone(),
                    ]
                })
                .collect();
            emit(
                *json,
                &samplers,
                &[
                    "NAME",
                    "LABEL",
                    "STOCHASTIC",
                    "ORDER",
                    "CALLS/STEP",
                    "DEFAULT SCHEDULE",
                ],
                rows,
            )
        }
        Command::Schedules {
            action: ListAction::List { json },
        } => {
            let registries = registries()?;
            let schedules: Vec<_> = registries.schedulers.schedules().collect();
            let rows = schedules
                .iter()
                .map(|s| vec![s.name.clone(), s.label.clone(), s.aliases.join(", ")])
                .collect();
            emit(*json, &schedules, &["NAME", "LABEL", "ALIASES"], rows)
        }
        Command::Models {
            action: ListAction::List { json },
        } => {
            let registries = registries()?;
            let models: Vec<_> = registries.models.models().collect();
            let rows = models
                .iter()
                .map(|m| {
                    let source = m
                        .repo
                        .clone()
                        .or_else(|| m.bundled.clone())
                        .unwrap_or_default();
                    vec![
                        m.id.clone(),
                        format!("{:?}", m.kind).to_lowercase(),
                        source,
                        m.label.clone(),
                    ]
                })
                .collect();
            emit(*json, &models, &["ID", "KIND", "SOURCE", "LABEL"], rows)
        }
        Command::Generate(args) => cli::generate::run(args, &registries()?),
        Command::Info { graph, json } => {
            let info = runtime::ensure_runtime()?;
            let graph = graph.as_deref().map(describe_graph).transpose()?;
            if *json {
                let value = serde_json::json!({ "runtime": info, "graph": graph });
                println!("{}", serde_json::to_string_pretty(&value)?);
            } else {
                println!("ONNX Runtime: {}", info.dylib_path.display());
                println!("found by:     {}", info.found_by);
                println!("build:        {}", info.build_info);
                if let Some(graph) = graph {
                    println!("graph:        {}", serde_json::to_string_pretty(&graph)?);
                }
            }
            Ok(())
        }
    }
}

/// Opens `path` on the default device and lists its inputs and outputs with their types.
fn describe_graph(path: &std::path::Path) -> Result<serde_json::Value> {
    let opened = runtime::create_session(path, &runtime::SessionOptions::default())?;
    let outlets = |outlets: &[ort::value::Outlet]| -> Vec<serde_json::Value> {
        outlets
            .iter()
            .map(|o| serde_json::json!({ "name": o.name(), "type": o.dtype().to_string() }))
            .collect()
    };
    Ok(serde_json::json!({
        "path": path,
        "provider": opened.provider,
        "fallback": opened.fallback,
        "inputs": outlets(opened.session.inputs()),
        "outputs": outlets(opened.session.outputs()),
    }))
}

fn describe_preset(kind: &PresetKind) -> String {
    match kind {
        PresetKind::Diffusers { class, config } => {
            let overrides = serde_json::to_string(config).unwrap_or_default();
            if overrides == "{}" {
                class.to_string()
            } else {
                format!("{class} {overrides}")
            }
        }
        PresetKind::Sampling { sampler, schedule } => {
            format!("sampler {sampler} + schedule {schedule}")
        }
    }
}

/// Prints `items` as JSON, or `rows` as an aligned table under `header`.
fn emit<T: Serialize>(
    json: bool,
    items: &T,
    header: &[&str],
    rows: Vec<Vec<String>>,
) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(items)?);
        return Ok(());
    }
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let header_row: Vec<String> = header.iter().map(|h| h.to_string()).collect();
    for row in std::iter::once(&header_row).chain(&rows) {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        println!("{}", cells.join("  ").trim_end());
    }
    Ok(())
}
