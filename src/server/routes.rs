//! The `/sdapi/v1/...` endpoints and the router.
//!
//! Generations and model loads go through the [`JobQueue`](super::JobQueue) (one at a time, on
//! a blocking thread); listings, `/progress`, `/interrupt`, `/unload-checkpoint` and `/memory`
//! answer at once.

use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

use super::error::ApiError;
use super::queue::{JobHandle, timestamp};
use super::request::{A1111Request, Fields, Mode, parse_randn_source, randn_source_name};
use super::response::{self, Outcome};
use super::{AppState, auth, samplers};
use crate::backend::{GenerateRequest, GenerateResult};
use crate::error::Error;
use crate::memory::release_free_memory;
use crate::model_loader::{find_local_checkpoint, search_roots};

type Shared = State<Arc<AppState>>;

/// All endpoints behind the auth check and the body size limit.
pub fn router(state: Arc<AppState>, body_limit: usize) -> Router {
    Router::new()
        .route("/sdapi/v1/txt2img", post(txt2img))
        .route("/sdapi/v1/img2img", post(img2img))
        .route("/sdapi/v1/samplers", get(list_samplers))
        .route("/sdapi/v1/schedulers", get(list_schedulers))
        .route("/sdapi/v1/sd-models", get(list_models))
        .route("/sdapi/v1/options", get(get_options).post(set_options))
        .route("/sdapi/v1/progress", get(progress))
        .route("/sdapi/v1/interrupt", post(interrupt))
        .route("/sdapi/v1/unload-checkpoint", post(unload_checkpoint))
        .route("/sdapi/v1/reload-checkpoint", post(reload_checkpoint))
        .route("/sdapi/v1/refresh-checkpoints", post(empty_object))
        .route("/sdapi/v1/memory", get(memory))
        .route("/sdapi/v1/scripts", get(scripts))
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(
            state.clone(),
            auth::require_auth,
        ))
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(state)
}

async fn txt2img(State(state): Shared, body: Bytes) -> Result<Json<Value>, ApiError> {
    generate(state, &body, Mode::Txt2Img).await
}

async fn img2img(State(state): Shared, body: Bytes) -> Result<Json<Value>, ApiError> {
    generate(state, &body, Mode::Img2Img).await
}

/// Parses, resolves names (a typo is a 422 before queueing), queues, runs the `n_iter`
/// sub-jobs and answers in A1111's shape.
async fn generate(state: Arc<AppState>, body: &[u8], mode: Mode) -> Result<Json<Value>, ApiError> {
    let request = A1111Request::parse(body, mode)?;
    let seed = request.resolved_seed();
    let settings = state.settings();
    let first = request.to_generate(&state.backend.registries().schedulers, seed, settings.rng)?;
    let ticket = state.queue.admit()?;
    let kind = match mode {
        Mode::Txt2Img => "txt2img",
        Mode::Img2Img => "img2img",
    };
    let job_timestamp = timestamp(SystemTime::now());
    let sub_jobs = request.n_iter as usize;
    let batch = u64::from(request.batch_size);
    let worker = state.clone();
    let (results, interrupted, model) = state
        .queue
        .run(Some(ticket), kind, sub_jobs, move |job| {
            run_sub_jobs(&worker, first, sub_jobs, batch, job)
        })
        .await??;
    let outcome = Outcome {
        seed,
        results,
        interrupted,
        timestamp: job_timestamp,
    };
    Ok(Json(response::generation(&request, &outcome, &model)))
}

type SubJobs = (Vec<GenerateResult>, bool, String);

/// Runs on the blocking thread: A1111's `n_iter` batches, each continuing the seeds of the one
/// before; an interrupt keeps the finished batches.
fn run_sub_jobs(
    state: &AppState,
    first: GenerateRequest,
    sub_jobs: usize,
    batch: u64,
    job: &JobHandle,
) -> Result<SubJobs, ApiError> {
    let first_seed = first.seed.unwrap_or(0);
    let mut model = ensure_loaded(state)?;
    let mut results = Vec::with_capacity(sub_jobs);
    for index in 0..sub_jobs {
        if job.token().is_cancelled() {
            return Ok((results, true, model));
        }
        let mut request = first.clone();
        request.seed = Some(first_seed + (index as u64 * batch) as i64);
        let mut progress = |p| job.progress(index, p);
        let mut outcome = state
            .backend
            .generate_with(&request, &mut progress, job.token());
        if matches!(outcome, Err(Error::NotLoaded)) {
            // `/unload-checkpoint` does not wait for the queue; load again and go on.
            model = ensure_loaded(state)?;
            outcome = state
                .backend
                .generate_with(&request, &mut progress, job.token());
        }
        match outcome {
            Ok(result) => {
                model = result.parameters.model.clone();
                results.push(result);
            }
            Err(error) if error.is_cancelled() => return Ok((results, true, model)),
            Err(error) => return Err(error.into()),
        }
    }
    Ok((results, false, model))
}

/// The loaded model's name; after an unload, loads the last model again (as A1111 does).
fn ensure_loaded(state: &AppState) -> Result<String, ApiError> {
    if let Some(model) = state.backend.status().model {
        return Ok(model);
    }
    let checkpoint = state.settings().checkpoint.ok_or(ApiError::NoModel)?;
    tracing::info!("loading {checkpoint} again (it was unloaded)");
    state
        .backend
        .init_backend(&checkpoint, state.session.clone())?;
    Ok(state.backend.status().model.unwrap_or(checkpoint))
}

async fn list_samplers(State(state): Shared) -> Json<Value> {
    Json(samplers::samplers_listing(
        &state.backend.registries().schedulers,
    ))
}

async fn list_schedulers(State(state): Shared) -> Json<Value> {
    Json(samplers::schedulers_listing(
        &state.backend.registries().schedulers,
    ))
}

async fn list_models(State(state): Shared) -> Json<Value> {
    let roots = search_roots(None);
    let status = state.backend.status();
    let loaded = status.model.as_deref().zip(status.model_dir.as_deref());
    Json(response::sd_models(
        &state.backend.registries().models,
        |entry| find_local_checkpoint(entry, &roots),
        loaded,
    ))
}

async fn get_options(State(state): Shared) -> Json<Value> {
    let settings = state.settings();
    let checkpoint = state.backend.status().model.or(settings.checkpoint);
    Json(json!({
        "sd_model_checkpoint": checkpoint,
        "sd_checkpoint_hash": null,
        "randn_source": randn_source_name(settings.rng),
        "samples_format": "png",
        "sd_vae": "Automatic",
        "CLIP_stop_at_last_layers": 1,
        "eta_noise_seed_delta": 0,
    }))
}

/// A1111 accepts a checkpoint's title with its hash ("name.safetensors [abc123]").
fn checkpoint_name(title: &str) -> &str {
    let title = title.trim();
    match title.rfind(" [") {
        Some(cut) if title.ends_with(']') => title[..cut].trim(),
        _ => title,
    }
}

/// `POST /sdapi/v1/options`: `sd_model_checkpoint` loads that model (after the jobs queued
/// before it), `randn_source` picks the noise generator; other keys are ignored, as A1111 ignores
/// unknown ones. Answers `null`, as A1111 does.
async fn set_options(State(state): Shared, body: Bytes) -> Result<Json<Value>, ApiError> {
    let fields = Fields::parse(&body)?;
    let rng = match fields.get::<String>("randn_source")? {
        Some(name) => Some(parse_randn_source(&name).ok_or_else(|| {
            ApiError::invalid(
                "randn_source",
                format!("\"{name}\": valid \"CPU\", \"GPU\", \"NV\""),
            )
        })?),
        None => None,
    };
    if let Some(title) = fields.get::<String>("sd_model_checkpoint")? {
        let name = checkpoint_name(&title).to_string();
        load_checkpoint(&state, name).await?;
    }
    if let Some(rng) = rng {
        state.update_settings(|settings| settings.rng = rng);
    }
    Ok(Json(Value::Null))
}

/// Loads `name` on the queue (never beside a running generation); a no-op when it is loaded.
async fn load_checkpoint(state: &Arc<AppState>, name: String) -> Result<(), ApiError> {
    let registries = state.backend.registries();
    let canonical = registries
        .models
        .model(&name)
        .map_or_else(|| name.clone(), |entry| entry.id.clone());
    if state.backend.status().model.as_deref() == Some(canonical.as_str()) {
        state.update_settings(|settings| settings.checkpoint = Some(canonical));
        return Ok(());
    }
    if registries.models.model(&name).is_none() && !is_listed_directory(state, Path::new(&name)) {
        return Err(ApiError::invalid(
            "sd_model_checkpoint",
            format!(
                "model {name:?} not found; give a title from GET /sdapi/v1/sd-models (known ids: {})",
                registries.models.ids().join(", ")
            ),
        ));
    }
    let worker = state.clone();
    state
        .queue
        .run(None, "load checkpoint", 1, move |_| {
            worker.backend.init_backend(&name, worker.session.clone())
        })
        .await?
        .map_err(|error| match error {
            Error::Model(_) => ApiError::invalid("sd_model_checkpoint", error.to_string()),
            other => other.into(),
        })?;
    let loaded = state.backend.status().model;
    state.update_settings(|settings| settings.checkpoint = loaded);
    Ok(())
}

/// Whether `dir` is a directory `/sd-models` lists (a registry model's local copy, or the model
/// loaded now or last): a client may not make the server open arbitrary paths.
fn is_listed_directory(state: &AppState, dir: &Path) -> bool {
    let Ok(dir) = dir.canonicalize() else {
        return false;
    };
    let roots = search_roots(None);
    let same = |other: &Path| other.canonicalize().is_ok_and(|other| other == dir);
    let status = state.backend.status();
    let last = state.settings().checkpoint;
    status.model_dir.as_deref().is_some_and(same)
        || last.as_deref().is_some_and(|last| same(Path::new(last)))
        || state
            .backend
            .registries()
            .models
            .models()
            .filter_map(|entry| find_local_checkpoint(entry, &roots))
            .any(|found| same(&found))
}

async fn progress(State(state): Shared) -> Json<Value> {
    let job = state.queue.current();
    Json(response::progress(job.as_ref(), state.queue.admitted()))
}

/// `POST /sdapi/v1/interrupt`: the running job stops within one model evaluation.
async fn interrupt(State(state): Shared) -> Json<Value> {
    if state.queue.interrupt() {
        tracing::info!("interrupting the running job");
    }
    Json(json!({}))
}

/// `POST /sdapi/v1/unload-checkpoint`: frees the model now (a running job keeps its own
/// reference until it ends); the next generation loads it again.
async fn unload_checkpoint(State(state): Shared) -> Json<Value> {
    state.backend.unload_backend();
    release_free_memory();
    Json(json!({}))
}

/// `POST /sdapi/v1/reload-checkpoint`: loads the last model again.
async fn reload_checkpoint(State(state): Shared) -> Result<Json<Value>, ApiError> {
    let checkpoint = state.settings().checkpoint.ok_or(ApiError::NoModel)?;
    let worker = state.clone();
    state
        .queue
        .run(None, "load checkpoint", 1, move |_| {
            worker
                .backend
                .init_backend(&checkpoint, worker.session.clone())
        })
        .await??;
    Ok(Json(json!({})))
}

async fn memory(State(state): Shared) -> Json<Value> {
    Json(response::memory(&state.backend.memory_status()))
}

/// `GET /sdapi/v1/scripts`: none (clients such as `webuiapi` probe it for extensions).
async fn scripts() -> Json<Value> {
    Json(json!({"txt2img": [], "img2img": []}))
}

async fn empty_object() -> Json<Value> {
    Json(json!({}))
}

async fn not_found() -> Response {
    (StatusCode::NOT_FOUND, Json(json!({"detail": "Not Found"}))).into_response()
}
