//! Writing results: PNGs that carry their generation parameters in the AUTOMATIC1111
//! `parameters` text chunk, and atomic file writes (a temporary file renamed into place, so a
//! failure never leaves a partial file).

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::pipeline::RgbImage;

/// Errors writing outputs.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    /// Encoding the PNG failed.
    #[error("cannot encode PNG: {0}")]
    Encode(String),
    /// Writing the file failed (nothing was left at the destination).
    #[error("cannot write {}: {reason}", path.display())]
    Write {
        /// The destination.
        path: PathBuf,
        /// The OS error.
        reason: String,
    },
}

/// The fields of an A1111 infotext.
#[derive(Debug, Clone, Default)]
pub struct Infotext {
    /// Prompt.
    pub prompt: String,
    /// Negative prompt (omitted when empty).
    pub negative_prompt: String,
    /// `Key: value` pairs in order (Steps, Sampler, Schedule type, CFG scale, Seed, Size, Model, ...).
    pub fields: Vec<(String, String)>,
}

impl Infotext {
    /// Renders `prompt\nNegative prompt: ...\nSteps: N, Sampler: ..., ...` as A1111 writes it.
    pub fn render(&self) -> String {
        let mut text = self.prompt.clone();
        if !self.negative_prompt.is_empty() {
            text.push_str("\nNegative prompt: ");
            text.push_str(&self.negative_prompt);
        }
        let fields: Vec<String> = self
            .fields
            .iter()
            .map(|(k, v)| format!("{k}: {}", quote_if_needed(v)))
            .collect();
        text.push('\n');
        text.push_str(&fields.join(", "));
        text
    }

    /// Parses the text back (prompt, negative prompt, fields), as image browsers do.
    pub fn parse(text: &str) -> Self {
        let mut lines: Vec<&str> = text.lines().collect();
        let last = lines.pop().unwrap_or_default();
        let fields = split_fields(last);
        let mut prompt_lines = Vec::new();
        let mut negative_lines = Vec::new();
        let mut in_negative = false;
        for line in lines {
            if let Some(rest) = line.strip_prefix("Negative prompt: ") {
                in_negative = true;
                negative_lines.push(rest);
            } else if in_negative {
                negative_lines.push(line);
            } else {
                prompt_lines.push(line);
            }
        }
        Self {
            prompt: prompt_lines.join("\n"),
            negative_prompt: negative_lines.join("\n"),
            fields,
        }
    }

    /// The value of field `key`.
    pub fn field(&self, key: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

fn quote_if_needed(value: &str) -> String {
    if value.contains(',') || value.contains(':') || value.contains('"') {
        format!("\"{}\"", value.replace('"', "\\\""))
    } else {
        value.to_string()
    }
}

fn split_fields(line: &str) -> Vec<(String, String)> {
    let mut fields = Vec::new();
    let mut rest = line.trim();
    while let Some(colon) = rest.find(": ") {
        let key = rest[..colon].trim().to_string();
        let after = &rest[colon + 2..];
        let (value, remaining) = if let Some(quoted) = after.strip_prefix('"') {
            let mut end = 0;
            let bytes = quoted.as_bytes();
            while end < bytes.len()
                && !(bytes[end] == b'"' && (end == 0 || bytes[end - 1] != b'\\'))
            {
                end += 1;
            }
            let value = quoted[..end.min(quoted.len())].replace("\\\"", "\"");
            let remaining = quoted
                .get(end + 1..)
                .unwrap_or("")
                .trim_start_matches(',')
                .trim_start();
            (value, remaining)
        } else {
            match after.find(", ") {
                Some(comma) => (after[..comma].to_string(), &after[comma + 2..]),
                None => (after.to_string(), ""),
            }
        };
        fields.push((key, value));
        rest = remaining;
    }
    fields
}

/// Encodes an 8-bit RGB PNG with a `parameters` tEXt chunk (when `parameters` is given).
pub fn encode_png(image: &RgbImage, parameters: Option<&str>) -> Result<Vec<u8>, OutputError> {
    let mut bytes = Vec::new();
    {
        let mut encoder = png::Encoder::new(&mut bytes, image.width, image.height);
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        if let Some(text) = parameters {
            // tEXt is Latin-1; A1111 writes UTF-8 prompts as iTXt.
            if text.is_ascii() {
                encoder
                    .add_text_chunk("parameters".to_string(), text.to_string())
                    .map_err(|e| OutputError::Encode(e.to_string()))?;
            } else {
                encoder
                    .add_itxt_chunk("parameters".to_string(), text.to_string())
                    .map_err(|e| OutputError::Encode(e.to_string()))?;
            }
        }
        let mut writer = encoder
            .write_header()
            .map_err(|e| OutputError::Encode(e.to_string()))?;
        writer
            .write_image_data(&image.pixels)
            .map_err(|e| OutputError::Encode(e.to_string()))?;
    }
    Ok(bytes)
}

/// Reads the `parameters` text (tEXt or iTXt) of a PNG.
pub fn read_png_parameters(bytes: &[u8]) -> Option<String> {
    let decoder = png::Decoder::new(std::io::Cursor::new(bytes));
    let reader = decoder.read_info().ok()?;
    let info = reader.info();
    info.uncompressed_latin1_text
        .iter()
        .find(|chunk| chunk.keyword == "parameters")
        .map(|chunk| chunk.text.clone())
        .or_else(|| {
            info.utf8_text
                .iter()
                .find(|chunk| chunk.keyword == "parameters")
                .and_then(|chunk| chunk.get_text().ok())
        })
}

/// Writes `bytes` to `path` through a temporary file in the same directory and a rename, so
/// the destination is either the old file or the complete new one.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), OutputError> {
    let error = |reason: String| OutputError::Write {
        path: path.to_path_buf(),
        reason,
    };
    let dir = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let file_name = path
        .file_name()
        .ok_or_else(|| error("not a file path".to_string()))?;
    let temp = dir.join(format!(
        ".{}.tmp-{}",
        file_name.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| -> std::io::Result<()> {
        let mut file = std::fs::File::create(&temp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&temp, path)
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&temp);
        return Err(error(e.to_string()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn infotext_round_trips() {
        let info = Infotext {
            prompt: "a cat, sitting".into(),
            negative_prompt: "blurry".into(),
            fields: vec![
                ("Steps".into(), "20".into()),
                ("Sampler".into(), "DPM++ 2M".into()),
                ("Schedule type".into(), "Karras".into()),
                ("Model".into(), "a, b".into()),
            ],
        };
        let text = info.render();
        assert_eq!(
            text,
            "a cat, sitting\nNegative prompt: blurry\nSteps: 20, Sampler: DPM++ 2M, Schedule type: Karras, Model: \"a, b\""
        );
        let parsed = Infotext::parse(&text);
        assert_eq!(parsed.prompt, info.prompt);
        assert_eq!(parsed.negative_prompt, info.negative_prompt);
        assert_eq!(parsed.fields, info.fields);
    }

    #[test]
    fn png_carries_the_parameters_chunk() {
        let image = RgbImage {
            width: 2,
            height: 1,
            pixels: vec![255, 0, 0, 0, 0, 255],
        };
        for text in ["ascii prompt\nSteps: 1", "ünïcode prompt\nSteps: 1"] {
            let bytes = encode_png(&image, Some(text)).unwrap();
            assert_eq!(read_png_parameters(&bytes).as_deref(), Some(text));
            assert_eq!(RgbImage::from_png(&bytes).unwrap(), image);
        }
    }

    #[test]
    fn atomic_write_leaves_no_partial_file_on_failure() {
        let dir = tempfile::tempdir().unwrap();
        let missing_dir = dir.path().join("no-such-dir").join("out.png");
        assert!(write_atomically(&missing_dir, b"x").is_err());
        let target = dir.path().join("out.png");
        write_atomically(&target, b"data").unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"data");
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temporary file left"
        );
    }
}
