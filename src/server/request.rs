//! A1111's `txt2img` / `img2img` bodies (`StableDiffusionTxt2ImgProcessingAPI` and the img2img
//! one in A1111's `modules/api/models.py`) into a [`GenerateRequest`].
//!
//! The body is read field by field from a JSON object: unknown fields are ignored (A1111 ignores
//! them too, and clients such as `webuiapi` send dozens), `null` means "default", and a wrong
//! type or a value this engine cannot honour is a 422 naming the field. Defaults are A1111's,
//! except `steps`, `cfg_scale`, `width`, `height` and the sampler: omitted, they are the loaded
//! model's defaults from `models.toml` (A1111's 512x512 / 50 steps / CFG 7 suit SD 1.5, not SDXL).

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use super::error::ApiError;
use super::samplers;
use crate::backend::{GenerateRequest, ImageInput, RngKind};
use crate::registry::SchedulerRegistry;
use crate::rng::random_seed;

/// Which endpoint a body came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `/sdapi/v1/txt2img`.
    Txt2Img,
    /// `/sdapi/v1/img2img`.
    Img2Img,
}

/// A JSON object read one field at a time.
pub struct Fields(Map<String, Value>);

impl Fields {
    /// Parses a body that must be a JSON object.
    pub fn parse(body: &[u8]) -> Result<Self, ApiError> {
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(Self(Map::new()));
        }
        match serde_json::from_slice::<Value>(body) {
            Ok(Value::Object(map)) => Ok(Self(map)),
            Ok(other) => Err(ApiError::invalid(
                "body",
                format!("expected a JSON object, got {}", json_kind(&other)),
            )),
            Err(error) => Err(ApiError::invalid(
                "body",
                format!("not valid JSON: {error}"),
            )),
        }
    }

    /// Field `name`: `None` when absent or `null`; a 422 naming it when it has the wrong type.
    pub fn get<T: DeserializeOwned>(&self, name: &str) -> Result<Option<T>, ApiError> {
        match self.0.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(value) => serde_json::from_value(value.clone())
                .map(Some)
                .map_err(|error| ApiError::invalid(name, error.to_string())),
        }
    }
}

fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A1111's `randn_source` option onto the noise generator: "CPU" is `torch.Generator("cpu")`;
/// "GPU" and "NV" are torch's CUDA Philox generator (bit-exact with A1111 on NVIDIA GPUs).
pub fn parse_randn_source(value: &str) -> Option<RngKind> {
    match value.trim().to_ascii_uppercase().as_str() {
        "CPU" => Some(RngKind::Cpu),
        "GPU" | "NV" => Some(RngKind::Philox),
        _ => None,
    }
}

/// The A1111 name of a noise generator.
pub fn randn_source_name(rng: RngKind) -> &'static str {
    match rng {
        RngKind::Cpu => "CPU",
        RngKind::Philox => "NV",
    }
}

/// The fields of a generation request this engine reads, with A1111's defaults; serialised, it
/// is the response's `parameters` (A1111 echoes the request model the same way).
#[derive(Debug, Clone, Serialize)]
pub struct A1111Request {
    /// Prompt.
    pub prompt: String,
    /// Negative prompt (A1111 encodes an empty one rather than zeroing it).
    pub negative_prompt: String,
    /// Prompt styles (none exist here; accepted and ignored).
    pub styles: Vec<String>,
    /// Seed; -1 picks one at random.
    pub seed: i64,
    /// Variation seed (only strength 0 is supported).
    pub subseed: i64,
    /// Variation strength.
    pub subseed_strength: f64,
    /// Sampler label, preset label or legacy combined name.
    pub sampler_name: Option<String>,
    /// Schedule type ("Automatic": the sampler's own).
    pub scheduler: Option<String>,
    /// Images per model call.
    pub batch_size: u32,
    /// Model calls in sequence (seeds continue across them).
    pub n_iter: u32,
    /// Steps (omitted: the model's default).
    pub steps: Option<u32>,
    /// Guidance scale (omitted: the model's default).
    pub cfg_scale: Option<f64>,
    /// Width (omitted: the model's default, or the init image's).
    pub width: Option<u32>,
    /// Height.
    pub height: Option<u32>,
    /// img2img strength (A1111 default 0.75); ignored by txt2img.
    pub denoising_strength: Option<f64>,
    /// Settings for this request only (`randn_source` is honoured).
    pub override_settings: Map<String, Value>,
    /// Return the images (false: `images` is empty).
    pub send_images: bool,
    /// Saving on the server is not done; accepted and ignored.
    pub save_images: bool,
    /// img2img: how the input is fitted (only 0, "just resize").
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resize_mode: Option<u32>,
    /// img2img: echo `init_images` in `parameters`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub include_init_images: Option<bool>,
    /// img2img input images (base64, a `data:` URL is fine); echoed only when asked.
    #[serde(skip)]
    pub init_images: Vec<String>,
}

impl A1111Request {
    /// Reads and checks a body for `mode`.
    pub fn parse(body: &[u8], mode: Mode) -> Result<Self, ApiError> {
        let f = Fields::parse(body)?;
        let img2img = mode == Mode::Img2Img;
        let sampler_name = f
            .get::<String>("sampler_name")?
            .or(f.get::<String>("sampler_index")?);
        let request = Self {
            prompt: f.get("prompt")?.unwrap_or_default(),
            negative_prompt: f.get("negative_prompt")?.unwrap_or_default(),
            styles: f.get("styles")?.unwrap_or_default(),
            seed: f.get("seed")?.unwrap_or(-1),
            subseed: f.get("subseed")?.unwrap_or(-1),
            subseed_strength: f.get("subseed_strength")?.unwrap_or(0.0),
            sampler_name,
            scheduler: f.get("scheduler")?,
            batch_size: f.get("batch_size")?.unwrap_or(1),
            n_iter: f.get("n_iter")?.unwrap_or(1),
            steps: f.get("steps")?,
            cfg_scale: f.get("cfg_scale")?,
            width: f.get("width")?,
            height: f.get("height")?,
            denoising_strength: f.get("denoising_strength")?.or(img2img.then_some(0.75)),
            override_settings: f.get("override_settings")?.unwrap_or_default(),
            send_images: f.get("send_images")?.unwrap_or(true),
            save_images: f.get("save_images")?.unwrap_or(false),
            resize_mode: if img2img {
                Some(f.get("resize_mode")?.unwrap_or(0))
            } else {
                None
            },
            include_init_images: if img2img {
                Some(f.get("include_init_images")?.unwrap_or(false))
            } else {
                None
            },
            init_images: if img2img {
                f.get("init_images")?.unwrap_or_default()
            } else {
                Vec::new()
            },
        };
        refuse_unsupported(&f, mode)?;
        request.check(mode)?;
        Ok(request)
    }

    fn check(&self, mode: Mode) -> Result<(), ApiError> {
        if !(1..=64).contains(&self.batch_size) {
            return Err(ApiError::invalid(
                "batch_size",
                format!("{}: valid 1 to 64", self.batch_size),
            ));
        }
        if !(1..=100).contains(&self.n_iter) {
            return Err(ApiError::invalid(
                "n_iter",
                format!("{}: valid 1 to 100", self.n_iter),
            ));
        }
        if self.subseed_strength != 0.0 {
            return Err(ApiError::invalid(
                "subseed_strength",
                "variation seeds are not supported; use 0",
            ));
        }
        if let Some(value) = self.override_settings.get("randn_source")
            && value.as_str().and_then(parse_randn_source).is_none()
        {
            return Err(ApiError::invalid(
                "override_settings",
                format!("randn_source {value}: valid \"CPU\", \"GPU\", \"NV\""),
            ));
        }
        if mode == Mode::Img2Img {
            if self.init_images.len() != 1 {
                return Err(ApiError::invalid(
                    "init_images",
                    format!(
                        "give exactly one base64 image (got {})",
                        self.init_images.len()
                    ),
                ));
            }
            if self.resize_mode.is_some_and(|mode| mode != 0) {
                return Err(ApiError::invalid(
                    "resize_mode",
                    "only 0 (just resize) is supported",
                ));
            }
        }
        Ok(())
    }

    /// The seed to run with: the request's, or a random one (reported back in `info`).
    pub fn resolved_seed(&self) -> u64 {
        if self.seed >= 0 {
            self.seed as u64
        } else {
            random_seed()
        }
    }

    /// The backend request for the first sub-job, whose first image has `seed`; `default_rng`
    /// is the `randn_source` option (an `override_settings` value wins).
    pub fn to_generate(
        &self,
        registry: &SchedulerRegistry,
        seed: u64,
        default_rng: RngKind,
    ) -> Result<GenerateRequest, ApiError> {
        let selection = samplers::resolve(
            registry,
            self.sampler_name.as_deref(),
            self.scheduler.as_deref(),
        )?;
        let rng = self
            .override_settings
            .get("randn_source")
            .and_then(Value::as_str)
            .and_then(parse_randn_source)
            .unwrap_or(default_rng);
        let img2img = !self.init_images.is_empty();
        Ok(GenerateRequest {
            prompt: self.prompt.clone(),
            negative_prompt: Some(self.negative_prompt.clone()),
            width: self.width,
            height: self.height,
            steps: self.steps,
            guidance_scale: self.cfg_scale,
            scheduler: selection.preset,
            sampler: selection.sampler,
            schedule: selection.schedule,
            seed: Some(seed as i64),
            batch_size: Some(self.batch_size),
            init_image: self.init_images.first().cloned().map(ImageInput::Base64),
            strength: if img2img {
                self.denoising_strength
            } else {
                None
            },
            rng,
            ..Default::default()
        })
    }
}

/// A1111 features this engine does not have: asking for them is a 422, not a silent
/// difference in the image.
fn refuse_unsupported(f: &Fields, mode: Mode) -> Result<(), ApiError> {
    let unsupported: &[(&str, &str)] = match mode {
        Mode::Txt2Img => &[("enable_hr", "hires fix is not supported")],
        Mode::Img2Img => &[],
    };
    for (field, why) in unsupported {
        if f.get::<bool>(field)?.unwrap_or(false) {
            return Err(ApiError::invalid(*field, *why));
        }
    }
    for (field, why) in [
        ("restore_faces", "face restoration is not supported"),
        ("tiling", "tiling is not supported"),
    ] {
        if f.get::<bool>(field)?.unwrap_or(false) {
            return Err(ApiError::invalid(field, why));
        }
    }
    if mode == Mode::Img2Img && f.get::<String>("mask")?.is_some_and(|m| !m.is_empty()) {
        return Err(ApiError::invalid("mask", "inpainting is not supported"));
    }
    if let Some(script) = f.get::<String>("script_name")?.filter(|s| !s.is_empty()) {
        return Err(ApiError::invalid(
            "script_name",
            format!("Script '{script}' not found"),
        ));
    }
    let always_on: Map<String, Value> = f.get("alwayson_scripts")?.unwrap_or_default();
    if let Some(name) = always_on.keys().next() {
        return Err(ApiError::invalid(
            "alwayson_scripts",
            format!("always on script {name} not found"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field_of(result: Result<A1111Request, ApiError>) -> String {
        match result {
            Err(ApiError::Invalid { field, .. }) => field,
            other => panic!("expected a 422, got {other:?}"),
        }
    }

    #[test]
    fn defaults_and_unknown_fields() {
        let body = br#"{"prompt": "a cat", "hr_checkpoint_name": null, "eta": 1.0, "sampler_name": null, "sampler_index": "Euler a", "enable_hr": false}"#;
        let request = A1111Request::parse(body, Mode::Txt2Img).unwrap();
        assert_eq!(request.prompt, "a cat");
        assert_eq!(request.seed, -1);
        assert_eq!((request.batch_size, request.n_iter), (1, 1));
        assert_eq!(request.sampler_name.as_deref(), Some("Euler a"));
        assert_eq!(request.denoising_strength, None);
        let img2img = A1111Request::parse(br#"{"init_images": ["AAAA"]}"#, Mode::Img2Img).unwrap();
        assert_eq!(img2img.denoising_strength, Some(0.75));
        assert!(A1111Request::parse(b"", Mode::Txt2Img).is_ok());
    }

    #[test]
    fn bad_values_name_the_field() {
        let parse = |body: &str, mode| field_of(A1111Request::parse(body.as_bytes(), mode));
        assert_eq!(parse(r#"{"steps": "many"}"#, Mode::Txt2Img), "steps");
        assert_eq!(parse(r#"{"width": -64}"#, Mode::Txt2Img), "width");
        assert_eq!(parse(r#"{"batch_size": 0}"#, Mode::Txt2Img), "batch_size");
        assert_eq!(parse(r#"{"enable_hr": true}"#, Mode::Txt2Img), "enable_hr");
        assert_eq!(parse(r#"[1, 2]"#, Mode::Txt2Img), "body");
        assert_eq!(parse(r#"{"prompt": "x"}"#, Mode::Img2Img), "init_images");
        assert_eq!(
            parse(r#"{"init_images": ["A"], "mask": "B"}"#, Mode::Img2Img),
            "mask"
        );
        assert_eq!(
            parse(
                r#"{"override_settings": {"randn_source": "TPU"}}"#,
                Mode::Txt2Img
            ),
            "override_settings"
        );
    }

    #[test]
    fn randn_sources() {
        assert_eq!(parse_randn_source("cpu"), Some(RngKind::Cpu));
        assert_eq!(parse_randn_source("GPU"), Some(RngKind::Philox));
        assert_eq!(parse_randn_source("NV"), Some(RngKind::Philox));
        assert_eq!(parse_randn_source("tpu"), None);
    }
}
