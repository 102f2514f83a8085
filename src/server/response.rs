//! Response bodies in A1111's shapes: a generation's `images` / `parameters` / `info`
//! (`Processed.js()` in A1111's `modules/processing.py`), `/progress`, `/memory`, `/sd-models`.

use base64::Engine;
use serde_json::{Value, json};

use super::queue::JobState;
use super::request::A1111Request;
use crate::backend::GenerateResult;
use crate::memory::MemorySnapshot;
use crate::output::Infotext;
use crate::registry::ModelRegistry;

/// What the sub-jobs of one request produced.
#[derive(Debug)]
pub struct Outcome {
    /// First seed (image i of the request has seed + i).
    pub seed: u64,
    /// One result per finished sub-job.
    pub results: Vec<GenerateResult>,
    /// `/interrupt` (or shutdown) stopped it; `results` holds what finished before.
    pub interrupted: bool,
    /// The job's `job_timestamp`.
    pub timestamp: String,
}

/// The infotext of each image: the sub-job's infotext with the image's own seed.
fn infotexts(results: &[GenerateResult]) -> Vec<String> {
    let mut texts = Vec::new();
    for result in results {
        let parsed = Infotext::parse(&result.infotext);
        for image in &result.images {
            let mut text = parsed.clone();
            for (key, value) in &mut text.fields {
                if key == "Seed" {
                    *value = image.seed.to_string();
                }
            }
            texts.push(text.render());
        }
    }
    texts
}

fn infotext_field(text: &str, key: &str) -> Option<String> {
    Infotext::parse(text)
        .fields
        .into_iter()
        .find_map(|(k, v)| (k == key).then_some(v))
}

/// `{"images": [base64 PNG...], "parameters": {...}, "info": "<JSON string>"}`.
pub fn generation(request: &A1111Request, outcome: &Outcome, model: &str) -> Value {
    let first = outcome.results.first();
    let used = first.map(|r| &r.parameters);
    let mut parameters = serde_json::to_value(request).unwrap_or_else(|_| json!({}));
    if let Value::Object(map) = &mut parameters {
        // Omitted values report what the model's defaults made of them.
        let mut fill = |key: &str, value: Option<Value>| {
            if map.get(key).is_none_or(Value::is_null)
                && let Some(value) = value
            {
                map.insert(key.to_string(), value);
            }
        };
        fill("steps", used.map(|p| json!(p.steps)));
        fill("cfg_scale", used.map(|p| json!(p.guidance_scale)));
        fill("width", used.map(|p| json!(p.width)));
        fill("height", used.map(|p| json!(p.height)));
        if request.include_init_images.is_some() {
            let echo = request.include_init_images == Some(true);
            map.insert(
                "init_images".into(),
                if echo {
                    json!(request.init_images)
                } else {
                    Value::Null
                },
            );
        }
    }
    let images: Vec<String> = if request.send_images {
        outcome
            .results
            .iter()
            .flat_map(|r| &r.images)
            .map(|image| base64::engine::general_purpose::STANDARD.encode(&image.png))
            .collect()
    } else {
        Vec::new()
    };
    let planned = u64::from(request.batch_size) * u64::from(request.n_iter);
    let all_seeds: Vec<u64> = (0..planned).map(|i| outcome.seed + i).collect();
    let first_text = first.map(|r| r.infotext.as_str()).unwrap_or_default();
    let sampler_name = infotext_field(first_text, "Sampler").or(request.sampler_name.clone());
    let schedule_type = infotext_field(first_text, "Schedule type");
    let mut extra = serde_json::Map::new();
    if let Some(schedule) = &schedule_type {
        extra.insert("Schedule type".into(), json!(schedule));
    }
    let warnings: Vec<&String> = outcome.results.iter().flat_map(|r| &r.warnings).collect();
    let info = json!({
        "prompt": request.prompt,
        "all_prompts": vec![&request.prompt; planned as usize],
        "negative_prompt": request.negative_prompt,
        "all_negative_prompts": vec![&request.negative_prompt; planned as usize],
        "seed": outcome.seed,
        "all_seeds": all_seeds,
        "subseed": request.subseed,
        "all_subseeds": vec![request.subseed; planned as usize],
        "subseed_strength": request.subseed_strength,
        "width": used.map(|p| json!(p.width)).unwrap_or(json!(request.width)),
        "height": used.map(|p| json!(p.height)).unwrap_or(json!(request.height)),
        "sampler_name": sampler_name,
        "scheduler": schedule_type.clone().unwrap_or_else(|| "Automatic".into()),
        "cfg_scale": used.map(|p| json!(p.guidance_scale)).unwrap_or(json!(request.cfg_scale)),
        "steps": used.map(|p| json!(p.steps)).unwrap_or(json!(request.steps)),
        "batch_size": request.batch_size,
        "restore_faces": false,
        "face_restoration_model": null,
        "sd_model_name": model,
        "sd_model_hash": null,
        "sd_vae_name": null,
        "sd_vae_hash": null,
        "seed_resize_from_w": -1,
        "seed_resize_from_h": -1,
        "denoising_strength": used.and_then(|p| p.strength).or(request.denoising_strength),
        "extra_generation_params": extra,
        "index_of_first_image": 0,
        "infotexts": infotexts(&outcome.results),
        "styles": request.styles,
        "job_timestamp": outcome.timestamp,
        "clip_skip": 1,
        "is_using_inpainting_conditioning": false,
        "version": concat!("sdxl-backend ", env!("CARGO_PKG_VERSION")),
        "interrupted": outcome.interrupted,
        "warnings": warnings,
    });
    json!({
        "images": images,
        "parameters": parameters,
        "info": info.to_string(),
    })
}

/// `GET /sdapi/v1/progress` (A1111's `ProgressResponse`; `state` is `shared.state.dict()` plus
/// `queued`, the jobs admitted and waiting).
pub fn progress(job: Option<&JobState>, admitted: usize) -> Value {
    let Some(job) = job else {
        return json!({
            "progress": 0.0,
            "eta_relative": 0.0,
            "state": {
                "skipped": false, "interrupted": false, "stopping_generation": false,
                "job": "", "job_count": 0, "job_timestamp": "0", "job_no": 0,
                "sampling_step": 0, "sampling_steps": 0, "queued": admitted,
            },
            "current_image": null,
            "textinfo": null,
        });
    };
    let within = if job.total > 0 {
        job.step as f64 / job.total as f64
    } else {
        0.0
    };
    let fraction = ((job.job_no as f64 + within) / job.job_count.max(1) as f64).clamp(0.0, 1.0);
    let elapsed = job.started.elapsed().as_secs_f64();
    // A1111's estimate: the time so far scaled to the whole job.
    let eta_relative = if fraction > 0.0 {
        elapsed / fraction - elapsed
    } else {
        0.0
    };
    json!({
        "progress": fraction,
        "eta_relative": eta_relative,
        "state": {
            "skipped": false,
            "interrupted": job.interrupted,
            "stopping_generation": false,
            "job": job.kind,
            "job_count": job.job_count,
            "job_timestamp": job.timestamp,
            "job_no": job.job_no,
            "sampling_step": job.step,
            "sampling_steps": job.total,
            "queued": admitted.saturating_sub(1),
        },
        "current_image": null,
        "textinfo": format!("{} {}/{}", job.kind, job.step, job.total),
    })
}

/// `MemTotal` of `/proc/meminfo`, bytes.
fn system_memory_total() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    text.lines().find_map(|line| {
        let kb = line
            .strip_prefix("MemTotal:")?
            .trim()
            .strip_suffix("kB")?
            .trim();
        kb.parse::<u64>().ok().map(|kb| kb * 1024)
    })
}

/// `GET /sdapi/v1/memory`: A1111's `{"ram": {free, used, total}, "cuda": {...}}` where `used` is
/// this process's resident memory; `cuda` has `system` from NVML or an `error`.
pub fn memory(snapshot: &MemorySnapshot) -> Value {
    let used = snapshot.process_resident_bytes.unwrap_or(0);
    let total = system_memory_total().unwrap_or(0);
    let cuda = match &snapshot.gpu {
        Some(gpu) => json!({
            "system": {"free": gpu.free_bytes, "used": gpu.used_bytes, "total": gpu.total_bytes},
            "process": {"used": gpu.process_bytes},
        }),
        None => json!({"error": "no NVIDIA GPU found (NVML is not available)"}),
    };
    json!({
        "ram": {"free": total.saturating_sub(used), "used": used, "total": total},
        "cuda": cuda,
        "process": {
            "resident": snapshot.process_resident_bytes,
            "peak_resident": snapshot.process_peak_resident_bytes,
        },
    })
}

/// One `/sdapi/v1/sd-models` item (A1111's `SDModelItem`; no hashes: hashing gigabytes of ONNX
/// weights on a listing is not worth it).
fn model_item(title: &str, filename: &str) -> Value {
    json!({
        "title": title,
        "model_name": title,
        "hash": null,
        "sha256": null,
        "filename": filename,
        "config": null,
    })
}

/// `GET /sdapi/v1/sd-models`: registry models with a complete local copy, plus the loaded model
/// when it is a directory outside the registry.
pub fn sd_models(
    models: &ModelRegistry,
    find: impl Fn(&crate::registry::ModelEntry) -> Option<std::path::PathBuf>,
    loaded: Option<(&str, &std::path::Path)>,
) -> Value {
    let mut items: Vec<Value> = models
        .models()
        .filter_map(|entry| {
            let dir = find(entry)?;
            Some(model_item(&entry.id, &dir.display().to_string()))
        })
        .collect();
    if let Some((name, dir)) = loaded
        && models.model(name).is_none()
    {
        items.push(model_item(name, &dir.display().to_string()));
    }
    Value::Array(items)
}
