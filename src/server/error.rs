//! Errors as HTTP responses, in the shapes A1111 (FastAPI) answers with:
//!
//! - 422: `{"error": "ValidationError", "field": F, "detail": [{"loc": ["body", F], "msg", "type"}]}`
//!   (FastAPI's validation error, plus `field` at the top for convenience);
//! - others: `{"error": KIND, "detail": MESSAGE, "body": "", "errors": MESSAGE}` (A1111's
//!   `api_middleware` handler), with `Retry-After` on 503 and `WWW-Authenticate` on 401.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::queue::QueueError;
use crate::error::Error;
use crate::pipeline::PipelineError;

/// A request that could not be served.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A field has a wrong type or value (422).
    #[error("invalid field `{field}`: {message}")]
    Invalid {
        /// The A1111 field name.
        field: String,
        /// What is wrong and what is valid.
        message: String,
    },
    /// Missing or wrong basic-auth credentials (401).
    #[error("Incorrect username or password")]
    Unauthorized,
    /// The queue is full (503 with `Retry-After`).
    #[error("the queue is full ({queued} jobs); retry in {retry_after} s")]
    QueueFull {
        /// Jobs admitted now.
        queued: usize,
        /// Seconds to wait.
        retry_after: u64,
    },
    /// The server is shutting down (503).
    #[error("the server is shutting down")]
    ShuttingDown,
    /// No model is loaded and none was ever chosen (409).
    #[error(
        "no model is loaded: start `sdxl serve --model ID` or POST /sdapi/v1/options {{\"sd_model_checkpoint\": ID}}"
    )]
    NoModel,
    /// Anything else: a backend failure or a bug (500).
    #[error("{0}")]
    Internal(String),
}

impl ApiError {
    /// A 422 for `field`.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        ApiError::Invalid {
            field: field.into(),
            message: message.into(),
        }
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Invalid { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::QueueFull { .. } | ApiError::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::NoModel => StatusCode::CONFLICT,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// The A1111 name of a `GenerateRequest` field named in a backend error.
pub fn a1111_field(field: &str) -> &str {
    match field {
        "guidance_scale" => "cfg_scale",
        "strength" => "denoising_strength",
        "init_image" => "init_images",
        "sampler" | "scheduler" => "sampler_name",
        "schedule" => "scheduler",
        other => other,
    }
}

impl From<Error> for ApiError {
    fn from(error: Error) -> Self {
        match &error {
            Error::InvalidRequest { field, message } => {
                ApiError::invalid(a1111_field(field), message.clone())
            }
            Error::Lookup(lookup) => {
                let field = if lookup.kind == "schedule" {
                    "scheduler"
                } else {
                    "sampler_name"
                };
                ApiError::invalid(field, lookup.to_string())
            }
            Error::Pipeline(pipeline) => match pipeline.as_ref() {
                PipelineError::InvalidRequest { field, message } => {
                    ApiError::invalid(a1111_field(field), message.clone())
                }
                PipelineError::Lookup(lookup) => {
                    ApiError::invalid("sampler_name", lookup.to_string())
                }
                _ => ApiError::Internal(error.to_string()),
            },
            Error::NotLoaded => ApiError::NoModel,
            _ => ApiError::Internal(error.to_string()),
        }
    }
}

impl From<QueueError> for ApiError {
    fn from(error: QueueError) -> Self {
        match error {
            QueueError::Full {
                queued,
                retry_after,
            } => ApiError::QueueFull {
                queued,
                retry_after,
            },
            QueueError::ShuttingDown => ApiError::ShuttingDown,
            QueueError::Panicked(message) => {
                ApiError::Internal(format!("the job failed: {message}"))
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let message = self.to_string();
        let body = match &self {
            ApiError::Invalid { field, message } => json!({
                "error": "ValidationError",
                "field": field,
                "detail": [{"loc": ["body", field], "msg": message, "type": "value_error"}],
            }),
            _ => {
                let kind = match &self {
                    ApiError::Internal(_) => "RuntimeError",
                    _ => "HTTPException",
                };
                json!({"error": kind, "detail": message, "body": "", "errors": message})
            }
        };
        let mut response = (status, axum::Json(body)).into_response();
        let headers = response.headers_mut();
        match &self {
            ApiError::QueueFull { retry_after, .. } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(*retry_after));
            }
            ApiError::ShuttingDown => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(5u64));
            }
            ApiError::Unauthorized => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Basic"));
            }
            _ => {}
        }
        if status.is_server_error() && status != StatusCode::SERVICE_UNAVAILABLE {
            tracing::error!("{message}");
        }
        response
    }
}
