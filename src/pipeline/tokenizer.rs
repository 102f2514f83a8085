//! The CLIP BPE tokenizer of SDXL's two text encoders, built with the `tokenizers` crate.
//!
//! A `tokenizer.json` is used as is when present. Real SDXL repositories ship only `vocab.json`
//! and `merges.txt` (the slow CLIPTokenizer files); the tokenizer is then assembled exactly as
//! transformers' `CLIPConverter` builds the fast one: NFC + whitespace folding + lowercase, the
//! CLIP split regex, byte-level BPE with the `</w>` suffix. Every special token of
//! `special_tokens_map.json` is an added token, so the `!` pad token of `tokenizer_2` becomes
//! id 0 wherever it appears in a prompt, as it does in diffusers.

use std::path::{Path, PathBuf};

use serde_json::Value;
use tokenizers::models::bpe::BPE;
use tokenizers::normalizers::{Lowercase, NFC, Replace, Sequence as NormalizerSequence};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence as PreTokenizerSequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::processors::roberta::RobertaProcessing;
use tokenizers::{AddedToken, SplitDelimiterBehavior, Tokenizer};

use super::PipelineError;
use super::components::read_json;

/// The pattern of transformers' CLIPConverter (and OpenAI's SimpleTokenizer).
const CLIP_SPLIT: &str = r"'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+";

/// Token ids of one prompt, padded to the model length.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenizedPrompt {
    /// `max_length` ids: BOS, at most `max_length - 2` content tokens, EOS, padding.
    pub ids: Vec<i64>,
    /// Content tokens that did not fit, decoded (empty when nothing was cut).
    pub truncated_text: String,
}

/// A CLIP tokenizer with its special tokens and model length.
pub struct ClipTokenizer {
    tokenizer: Tokenizer,
    bos: u32,
    eos: u32,
    pad: u32,
    max_length: usize,
    dir: PathBuf,
}

impl std::fmt::Debug for ClipTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClipTokenizer")
            .field("dir", &self.dir)
            .field("max_length", &self.max_length)
            .finish()
    }
}

/// A special token's text: either a string or `{"content": "..."}` (both formats exist).
fn token_text(value: Option<&Value>) -> Option<String> {
    match value? {
        Value::String(s) => Some(s.clone()),
        Value::Object(map) => map
            .get("content")
            .and_then(Value::as_str)
            .map(str::to_string),
        _ => None,
    }
}

impl ClipTokenizer {
    /// Loads the tokenizer in `dir` (`tokenizer.json`, or `vocab.json` + `merges.txt`).
    pub fn load(dir: &Path) -> Result<Self, PipelineError> {
        let special_path = dir.join("special_tokens_map.json");
        let special = if special_path.is_file() {
            read_json(&special_path)?
        } else {
            Value::Null
        };
        let config_path = dir.join("tokenizer_config.json");
        let config = if config_path.is_file() {
            read_json(&config_path)?
        } else {
            Value::Null
        };
        let lookup =
            |key: &str| token_text(special.get(key)).or_else(|| token_text(config.get(key)));
        let bos_text = lookup("bos_token").unwrap_or_else(|| "<|startoftext|>".to_string());
        let eos_text = lookup("eos_token").unwrap_or_else(|| "<|endoftext|>".to_string());
        let unk_text = lookup("unk_token").unwrap_or_else(|| eos_text.clone());
        let pad_text = lookup("pad_token").unwrap_or_else(|| eos_text.clone());
        let max_length = config
            .get("model_max_length")
            .and_then(Value::as_u64)
            .filter(|&n| (3..=4096).contains(&n))
            .unwrap_or(77) as usize;

        let json_path = dir.join("tokenizer.json");
        let mut tokenizer = if json_path.is_file() {
            Tokenizer::from_file(&json_path).map_err(|e| PipelineError::Config {
                path: json_path.clone(),
                message: e.to_string(),
            })?
        } else {
            Self::from_vocab_and_merges(dir, &unk_text, &bos_text, &eos_text)?
        };
        let specials: Vec<AddedToken> = [&bos_text, &eos_text, &unk_text, &pad_text]
            .into_iter()
            .map(|text| AddedToken::from(text.clone(), true))
            .collect();
        tokenizer.add_special_tokens(&specials);
        let id = |text: &str| {
            tokenizer
                .token_to_id(text)
                .ok_or_else(|| PipelineError::Config {
                    path: dir.to_path_buf(),
                    message: format!("special token {text:?} is not in the vocabulary"),
                })
        };
        Ok(Self {
            bos: id(&bos_text)?,
            eos: id(&eos_text)?,
            pad: id(&pad_text)?,
            max_length,
            dir: dir.to_path_buf(),
            tokenizer,
        })
    }

    fn from_vocab_and_merges(
        dir: &Path,
        unk: &str,
        bos: &str,
        eos: &str,
    ) -> Result<Tokenizer, PipelineError> {
        let vocab = dir.join("vocab.json");
        let merges = dir.join("merges.txt");
        for file in [&vocab, &merges] {
            if !file.is_file() {
                return Err(PipelineError::MissingFile {
                    path: file.clone(),
                    reason: "a tokenizer needs tokenizer.json, or vocab.json and merges.txt"
                        .to_string(),
                });
            }
        }
        let config_error = |message: String| PipelineError::Config {
            path: dir.to_path_buf(),
            message,
        };
        let bpe = BPE::from_file(&vocab.to_string_lossy(), &merges.to_string_lossy())
            .continuing_subword_prefix(String::new())
            .end_of_word_suffix("</w>".to_string())
            .unk_token(unk.to_string())
            .fuse_unk(false)
            .build()
            .map_err(|e| config_error(format!("cannot build the BPE model: {e}")))?;
        let mut tokenizer = Tokenizer::new(bpe);
        let whitespace = Replace::new(
            tokenizers::normalizers::replace::ReplacePattern::Regex(r"\s+".into()),
            " ",
        )
        .map_err(|e| config_error(e.to_string()))?;
        tokenizer.with_normalizer(Some(NormalizerSequence::new(vec![
            NFC.into(),
            whitespace.into(),
            Lowercase.into(),
        ])));
        let split = Split::new(
            SplitPattern::Regex(CLIP_SPLIT.to_string()),
            SplitDelimiterBehavior::Removed,
            true,
        )
        .map_err(|e| config_error(e.to_string()))?;
        tokenizer.with_pre_tokenizer(Some(PreTokenizerSequence::new(vec![
            split.into(),
            ByteLevel::new(false, true, false).into(),
        ])));
        tokenizer.with_decoder(Some(ByteLevel::default()));
        let bos_id = tokenizer.token_to_id(bos).unwrap_or(0);
        let eos_id = tokenizer.token_to_id(eos).unwrap_or(0);
        tokenizer.with_post_processor(Some(
            RobertaProcessing::new((eos.to_string(), eos_id), (bos.to_string(), bos_id))
                .add_prefix_space(false)
                .trim_offsets(false),
        ));
        Ok(tokenizer)
    }

    /// Model length (77 for CLIP).
    pub fn max_length(&self) -> usize {
        self.max_length
    }

    /// Tokenizes like `tokenizer(prompt, padding="max_length", max_length=77, truncation=True)`:
    /// BOS, the first `max_length - 2` tokens, EOS, then padding; what was cut is returned.
    pub fn encode(&self, prompt: &str) -> Result<TokenizedPrompt, PipelineError> {
        let encoding = self
            .tokenizer
            .encode(prompt, false)
            .map_err(|e| PipelineError::Config {
                path: self.dir.clone(),
                message: format!("cannot tokenize the prompt: {e}"),
            })?;
        let content = encoding.get_ids();
        let keep = content.len().min(self.max_length - 2);
        let truncated_text = if keep < content.len() {
            self.tokenizer
                .decode(&content[keep..], true)
                .unwrap_or_default()
        } else {
            String::new()
        };
        let mut ids = Vec::with_capacity(self.max_length);
        ids.push(i64::from(self.bos));
        ids.extend(content[..keep].iter().map(|&id| i64::from(id)));
        ids.push(i64::from(self.eos));
        ids.resize(self.max_length, i64::from(self.pad));
        Ok(TokenizedPrompt {
            ids,
            truncated_text,
        })
    }
}
