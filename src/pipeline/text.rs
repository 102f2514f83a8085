//! Prompt encoding with SDXL's two text encoders (diffusers `StableDiffusionXLPipeline.encode_prompt`).
//!
//! Each encoder contributes its penultimate hidden state (`hidden_states.{layers - 1}`, or further
//! back with `clip_skip`); the two are concatenated along the feature axis. The pooled embedding
//! is `text_embeds` of `text_encoder_2`. In the refiner (no `text_encoder`) only the second
//! encoder runs, on the first prompt, as diffusers' `zip` over the encoders does.

use ndarray::{Array2, Array3, ArrayD, Axis, Ix2, Ix3, concatenate};

use super::PipelineError;
use super::components::{Components, hidden_state_count};
use super::graph::{Graph, Input};
use super::tokenizer::ClipTokenizer;

/// Embeddings of one prompt (batch 1).
#[derive(Debug, Clone, PartialEq)]
pub struct PromptEmbeddings {
    /// Concatenated hidden states, [1, 77, D].
    pub hidden: Array3<f32>,
    /// Pooled, projected embedding of text_encoder_2, [1, P].
    pub pooled: Array2<f32>,
}

impl PromptEmbeddings {
    /// All zeros with the same shapes (diffusers' `force_zeros_for_empty_prompt`).
    pub fn zeros_like(&self) -> Self {
        Self {
            hidden: Array3::zeros(self.hidden.raw_dim()),
            pooled: Array2::zeros(self.pooled.raw_dim()),
        }
    }
}

/// Runs one encoder on one prompt: (hidden state at `layer_from_end`, pooled output if asked).
fn run_encoder(
    graph: &Graph,
    tokenizer: &ClipTokenizer,
    text: &str,
    layer_from_end: usize,
    pooled: bool,
    warnings: &mut Vec<String>,
) -> Result<(ArrayD<f32>, Option<ArrayD<f32>>), PipelineError> {
    let tokens = tokenizer.encode(text)?;
    if !tokens.truncated_text.is_empty() {
        let message = format!(
            "the prompt is longer than {} CLIP tokens; this part was cut: {:?}",
            tokenizer.max_length() - 2,
            tokens.truncated_text
        );
        tracing::warn!("{message}");
        if !warnings.contains(&message) {
            warnings.push(message);
        }
    }
    let ids = ndarray::Array2::from_shape_vec((1, tokens.ids.len()), tokens.ids)
        .map_err(|e| PipelineError::Internal(e.to_string()))?
        .into_dyn();
    // hidden_states.0 is the embedding layer; hidden_states.L the last layer.
    let layers = hidden_state_count(graph) - 1;
    let index =
        layers
            .checked_sub(layer_from_end)
            .ok_or_else(|| PipelineError::InvalidRequest {
                field: "clip_skip",
                message: format!("{} has only {layers} layers", graph.path.display()),
            })?;
    let hidden_name = format!("hidden_states.{index}");
    let mut wanted = vec![hidden_name.as_str()];
    if pooled {
        wanted.push("text_embeds");
    }
    let mut outputs = graph
        .run(&[("input_ids", Input::Int(ids.view()))], &wanted)?
        .into_iter();
    let hidden = outputs
        .next()
        .ok_or_else(|| PipelineError::Internal("missing hidden state".into()))?;
    Ok((hidden, outputs.next()))
}

/// Encodes a prompt pair. `clip_skip` = None uses the penultimate layer (diffusers' default);
/// `Some(k)` goes k layers further back.
pub fn encode_prompt(
    components: &Components,
    prompt: &str,
    prompt_2: &str,
    clip_skip: Option<usize>,
    warnings: &mut Vec<String>,
) -> Result<PromptEmbeddings, PipelineError> {
    let layer_from_end = 1 + clip_skip.unwrap_or(0);
    let mut encoders: Vec<(&Graph, &ClipTokenizer, bool)> = Vec::new();
    if let (Some(graph), Some(tokenizer)) = (&components.text_encoder, &components.tokenizer) {
        encoders.push((graph, tokenizer, false));
    }
    encoders.push((&components.text_encoder_2, &components.tokenizer_2, true));
    let mut hidden_parts = Vec::with_capacity(2);
    let mut pooled = None;
    for ((graph, tokenizer, is_second), text) in encoders.into_iter().zip([prompt, prompt_2]) {
        let (hidden, pool) =
            run_encoder(graph, tokenizer, text, layer_from_end, is_second, warnings)?;
        hidden_parts.push(
            hidden
                .into_dimensionality::<Ix3>()
                .map_err(|e| PipelineError::Internal(e.to_string()))?,
        );
        if is_second {
            pooled = pool;
        }
    }
    let views: Vec<_> = hidden_parts.iter().map(|h| h.view()).collect();
    let hidden = concatenate(Axis(2), &views).map_err(|e| PipelineError::Graph {
        path: components.text_encoder_2.path.clone(),
        message: format!("text encoder outputs cannot be concatenated: {e}"),
    })?;
    let pooled = pooled
        .ok_or_else(|| PipelineError::Internal("text_encoder_2 gave no text_embeds".into()))?
        .into_dimensionality::<Ix2>()
        .map_err(|e| PipelineError::Graph {
            path: components.text_encoder_2.path.clone(),
            message: format!("output `text_embeds` is not [batch, dim]: {e}"),
        })?;
    Ok(PromptEmbeddings { hidden, pooled })
}
