//! The Optimum ONNX layout of an SDXL checkpoint: which graphs and configs exist, what they
//! say, and load-time validation of every graph against what the pipeline feeds it.

use std::path::{Path, PathBuf};

use ort::value::TensorElementType;
use serde_json::Value;

use super::PipelineError;
use super::graph::{Graph, Port};
use super::tokenizer::ClipTokenizer;
use crate::runtime::SessionOptions;
use crate::schedulers::SchedulerConfig;

/// Settings read from `model_index.json` and the component configs.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelSettings {
    /// Negative embeddings are zeros when no negative prompt is given (base models).
    pub force_zeros_for_empty_prompt: bool,
    /// The UNet takes aesthetic scores in its time ids (the refiner).
    pub requires_aesthetics_score: bool,
    /// Latents are divided by this before decoding (0.13025 for SDXL).
    pub scaling_factor: f64,
    /// Pixels per latent cell (2^(VAE blocks - 1), 8 for SDXL).
    pub vae_scale_factor: usize,
    /// Latent channels (4).
    pub latent_channels: usize,
    /// Number of values in `time_ids` (6, or 5 with aesthetic scores).
    pub time_ids_len: usize,
}

/// The loaded graphs and tokenizers of one checkpoint.
#[derive(Debug)]
pub struct Components {
    /// The checkpoint directory.
    pub root: PathBuf,
    /// CLIP ViT-L text encoder (absent in the refiner).
    pub text_encoder: Option<Graph>,
    /// OpenCLIP ViT-bigG text encoder with projection.
    pub text_encoder_2: Graph,
    /// The denoiser.
    pub unet: Graph,
    /// Latents to pixels.
    pub vae_decoder: Graph,
    /// Pixels to the latent distribution (img2img); optional.
    pub vae_encoder: Option<Graph>,
    /// Tokenizer of `text_encoder`.
    pub tokenizer: Option<ClipTokenizer>,
    /// Tokenizer of `text_encoder_2`.
    pub tokenizer_2: ClipTokenizer,
    /// The model's own scheduler config.
    pub scheduler_config: SchedulerConfig,
    /// Its `_class_name` (the scheduler used when a request names none).
    pub scheduler_class: Option<String>,
    /// Settings from the configs.
    pub settings: ModelSettings,
    /// Defaults the loader had to assume (reported with every result).
    pub load_warnings: Vec<String>,
}

/// Reads and parses a JSON config file, naming the file in errors.
pub(crate) fn read_json(path: &Path) -> Result<Value, PipelineError> {
    let text = std::fs::read_to_string(path).map_err(|e| PipelineError::missing(path, e))?;
    serde_json::from_str(&text).map_err(|e| PipelineError::Config {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

fn optional_graph(
    root: &Path,
    component: &str,
    options: &SessionOptions,
) -> Result<Option<Graph>, PipelineError> {
    let path = root.join(component).join("model.onnx");
    if path.is_file() {
        Graph::open(&path, options).map(Some)
    } else {
        Ok(None)
    }
}

fn required_file(root: &Path, relative: &str, why: &str) -> Result<PathBuf, PipelineError> {
    let path = root.join(relative);
    if path.is_file() {
        Ok(path)
    } else {
        Err(PipelineError::MissingFile {
            path,
            reason: why.to_string(),
        })
    }
}

impl Components {
    /// Loads and validates the checkpoint in `root`.
    pub fn load(root: &Path, options: &SessionOptions) -> Result<Self, PipelineError> {
        let index_path = required_file(
            root,
            "model_index.json",
            "every diffusers/Optimum checkpoint has one",
        )?;
        let index = read_json(&index_path)?;
        let flag = |key: &str| index.get(key).and_then(Value::as_bool);
        let unet_path = required_file(root, "unet/model.onnx", "the denoising UNet")?;
        let te2_path = required_file(
            root,
            "text_encoder_2/model.onnx",
            "SDXL's second text encoder",
        )?;
        let vae_path = required_file(root, "vae_decoder/model.onnx", "the VAE decoder")?;
        let scheduler_path = required_file(
            root,
            "scheduler/scheduler_config.json",
            "the model's scheduler settings",
        )?;
        let scheduler_text = std::fs::read_to_string(&scheduler_path)
            .map_err(|e| PipelineError::missing(&scheduler_path, e))?;
        let scheduler_config =
            SchedulerConfig::from_json(&scheduler_text).map_err(|e| PipelineError::Config {
                path: scheduler_path.clone(),
                message: e.to_string(),
            })?;
        let scheduler_class = serde_json::from_str::<Value>(&scheduler_text)
            .ok()
            .and_then(|v| {
                v.get("_class_name")
                    .and_then(Value::as_str)
                    .map(str::to_string)
            });
        if !scheduler_config.unknown.is_empty() {
            let keys: Vec<_> = scheduler_config.unknown.keys().collect();
            tracing::debug!(?keys, "scheduler_config.json keys the crate does not use");
        }

        let vae_config_path = root.join("vae_decoder").join("config.json");
        let vae_config = if vae_config_path.is_file() {
            read_json(&vae_config_path)?
        } else {
            Value::Null
        };
        // Missing VAE settings fall back to SDXL's values, never silently: each is reported.
        let mut warnings = Vec::new();
        let mut vae_setting = |key: &str, value: Option<f64>, sdxl_default: f64| {
            value.unwrap_or_else(|| {
                let message = format!(
                    "{} has no `{key}`; using SDXL's {sdxl_default}",
                    vae_config_path.display()
                );
                tracing::warn!("{message}");
                warnings.push(message);
                sdxl_default
            })
        };
        let scaling_factor = vae_setting(
            "scaling_factor",
            vae_config.get("scaling_factor").and_then(Value::as_f64),
            0.13025,
        );
        let vae_blocks = vae_setting(
            "block_out_channels",
            vae_config
                .get("block_out_channels")
                .and_then(Value::as_array)
                .map(|b| b.len() as f64),
            4.0,
        ) as usize;
        let latent_channels = vae_setting(
            "latent_channels",
            vae_config
                .get("latent_channels")
                .and_then(Value::as_u64)
                .map(|c| c as f64),
            4.0,
        ) as usize;
        let usable = scaling_factor.is_finite()
            && scaling_factor > 0.0
            && (1..=8).contains(&vae_blocks)
            && latent_channels > 0;
        if !usable {
            return Err(PipelineError::Config {
                path: vae_config_path,
                message: format!(
                    "scaling_factor {scaling_factor}, {vae_blocks} blocks, {latent_channels} latent channels: expected a positive scaling factor, 1 to 8 blocks, at least 1 channel"
                ),
            });
        }

        let text_encoder = optional_graph(root, "text_encoder", options)?;
        let tokenizer = match &text_encoder {
            Some(_) => Some(ClipTokenizer::load(&root.join("tokenizer"))?),
            None => None,
        };
        let text_encoder_2 = Graph::open(&te2_path, options)?;
        let tokenizer_2 = ClipTokenizer::load(&root.join("tokenizer_2"))?;
        let unet = Graph::open(&unet_path, options)?;
        let vae_decoder = Graph::open(&vae_path, options)?;
        let vae_encoder = optional_graph(root, "vae_encoder", options)?;

        let time_ids_len = validate_unet(&unet, latent_channels)?;
        let requires_aesthetics_score =
            flag("requires_aesthetics_score").unwrap_or(time_ids_len == 5);
        let settings = ModelSettings {
            force_zeros_for_empty_prompt: flag("force_zeros_for_empty_prompt").unwrap_or(true),
            requires_aesthetics_score,
            scaling_factor,
            vae_scale_factor: 1 << (vae_blocks.max(1) - 1),
            latent_channels,
            time_ids_len,
        };
        if let Some(te) = &text_encoder {
            validate_text_encoder(te, false)?;
        }
        validate_text_encoder(&text_encoder_2, true)?;
        expect_input(&vae_decoder, "latent_sample", 4)?;
        expect_output(&vae_decoder, "sample", 4)?;
        if let Some(encoder) = &vae_encoder {
            expect_input(encoder, "sample", 4)?;
            expect_output(encoder, "latent_parameters", 4)?;
        }
        Ok(Self {
            root: root.to_path_buf(),
            text_encoder,
            text_encoder_2,
            unet,
            vae_decoder,
            vae_encoder,
            tokenizer,
            tokenizer_2,
            scheduler_config,
            scheduler_class,
            settings,
            load_warnings: warnings,
        })
    }

    /// The UNet's native latent size from `unet/config.json` (`sample_size`), if stated.
    pub fn unet_sample_size(&self) -> Option<usize> {
        let config = read_json(&self.root.join("unet").join("config.json")).ok()?;
        config
            .get("sample_size")
            .and_then(Value::as_u64)
            .map(|v| v as usize)
    }

    /// Every graph, for reporting (provider, fallbacks).
    pub fn graphs(&self) -> impl Iterator<Item = &Graph> {
        self.text_encoder
            .iter()
            .chain([&self.text_encoder_2, &self.unet, &self.vae_decoder])
            .chain(self.vae_encoder.iter())
    }
}

fn is_float(ty: TensorElementType) -> bool {
    matches!(ty, TensorElementType::Float32 | TensorElementType::Float16)
}

fn expect_port<'a>(
    graph: &'a Graph,
    port: Option<&'a Port>,
    kind: &str,
    name: &str,
    rank: usize,
) -> Result<&'a Port, PipelineError> {
    let port = port.ok_or_else(|| {
        let have: Vec<_> = if kind == "input" { &graph.inputs } else { &graph.outputs }.iter().map(|p| p.name.as_str()).collect();
        PipelineError::Graph {
            path: graph.path.clone(),
            message: format!("has no {kind} named `{name}` (it has: {}); is this an SDXL graph in the Optimum layout?", have.join(", ")),
        }
    })?;
    if port.shape.len() != rank {
        return Err(PipelineError::Graph {
            path: graph.path.clone(),
            message: format!(
                "{kind} `{name}` has rank {} (shape {:?}), expected rank {rank}",
                port.shape.len(),
                port.shape
            ),
        });
    }
    Ok(port)
}

fn expect_input<'a>(graph: &'a Graph, name: &str, rank: usize) -> Result<&'a Port, PipelineError> {
    let port = expect_port(graph, graph.input(name), "input", name, rank)?;
    if !is_float(port.ty) {
        return Err(PipelineError::Graph {
            path: graph.path.clone(),
            message: format!(
                "input `{name}` has type {:?}, expected float32 or float16",
                port.ty
            ),
        });
    }
    Ok(port)
}

fn expect_output<'a>(graph: &'a Graph, name: &str, rank: usize) -> Result<&'a Port, PipelineError> {
    expect_port(graph, graph.output(name), "output", name, rank)
}

/// Checks the UNet is an SDXL UNet and returns its number of time ids.
fn validate_unet(unet: &Graph, latent_channels: usize) -> Result<usize, PipelineError> {
    let sample = expect_input(unet, "sample", 4)?;
    if sample.shape[1] > 0 && sample.shape[1] as usize != latent_channels {
        return Err(PipelineError::Graph {
            path: unet.path.clone(),
            message: format!(
                "input `sample` has {} channels, the VAE has {latent_channels}",
                sample.shape[1]
            ),
        });
    }
    if unet.input("text_embeds").is_none() || unet.input("time_ids").is_none() {
        return Err(PipelineError::Graph {
            path: unet.path.clone(),
            message: "has no `text_embeds`/`time_ids` inputs: this looks like an SD 1.x/2.x UNet, not SDXL (SDXL's UNet takes sample, timestep, encoder_hidden_states, text_embeds, time_ids)".to_string(),
        });
    }
    let timestep = unet.input("timestep").ok_or_else(|| PipelineError::Graph {
        path: unet.path.clone(),
        message: "has no input named `timestep`".to_string(),
    })?;
    if timestep.shape.len() > 1 {
        return Err(PipelineError::Graph {
            path: unet.path.clone(),
            message: format!(
                "input `timestep` has shape {:?}; expected a scalar or [1]",
                timestep.shape
            ),
        });
    }
    expect_input(unet, "encoder_hidden_states", 3)?;
    expect_input(unet, "text_embeds", 2)?;
    let time_ids = expect_input(unet, "time_ids", 2)?;
    expect_output(unet, "out_sample", 4)?;
    match time_ids.shape[1] {
        5 | 6 => Ok(time_ids.shape[1] as usize),
        -1 => Ok(6),
        other => Err(PipelineError::Graph {
            path: unet.path.clone(),
            message: format!(
                "input `time_ids` has {other} values per sample; SDXL uses 6 (base) or 5 (refiner)"
            ),
        }),
    }
}

fn validate_text_encoder(graph: &Graph, projected: bool) -> Result<(), PipelineError> {
    let ids = expect_port(graph, graph.input("input_ids"), "input", "input_ids", 2)?;
    if !matches!(ids.ty, TensorElementType::Int64 | TensorElementType::Int32) {
        return Err(PipelineError::Graph {
            path: graph.path.clone(),
            message: format!("input `input_ids` has type {:?}, expected int64", ids.ty),
        });
    }
    if hidden_state_count(graph) == 0 {
        return Err(PipelineError::Graph {
            path: graph.path.clone(),
            message: "has no `hidden_states.N` outputs; export it with output_hidden_states (Optimum does)".to_string(),
        });
    }
    if projected {
        expect_output(graph, "text_embeds", 2)?;
    }
    Ok(())
}

/// Number of `hidden_states.N` outputs (layers + 1, the embeddings being `hidden_states.0`).
pub fn hidden_state_count(graph: &Graph) -> usize {
    graph
        .outputs
        .iter()
        .filter(|p| p.name.starts_with("hidden_states."))
        .count()
}
