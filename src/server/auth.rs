//! Optional HTTP basic auth on every endpoint, as A1111's `--api-auth user:pass[,user2:pass2]`.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;

use super::AppState;
use super::error::ApiError;

/// Accepted user/password pairs.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials(Vec<(String, String)>);

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let users: Vec<&str> = self.0.iter().map(|(user, _)| user.as_str()).collect();
        write!(f, "Credentials({users:?}, passwords hidden)")
    }
}

impl Credentials {
    /// Parses `user:pass[,user2:pass2]` (a password may contain `:`).
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut pairs = Vec::new();
        for item in text
            .split(',')
            .map(str::trim)
            .filter(|item| !item.is_empty())
        {
            match item.split_once(':') {
                Some((user, password)) if !user.is_empty() => {
                    pairs.push((user.to_string(), password.to_string()));
                }
                _ => return Err(format!("\"{item}\" is not user:password")),
            }
        }
        if pairs.is_empty() {
            return Err("expected user:password[,user2:password2]".into());
        }
        Ok(Self(pairs))
    }

    /// Whether an `Authorization` header value carries accepted credentials.
    pub fn accepts(&self, authorization: &str) -> bool {
        let Some(encoded) = authorization
            .strip_prefix("Basic ")
            .or_else(|| authorization.strip_prefix("basic "))
        else {
            return false;
        };
        let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(encoded.trim()) else {
            return false;
        };
        let Ok(decoded) = String::from_utf8(decoded) else {
            return false;
        };
        let Some((user, password)) = decoded.split_once(':') else {
            return false;
        };
        // Every pair is compared in full so the time taken does not reveal which part differed.
        self.0.iter().fold(false, |found, (u, p)| {
            let matches = constant_time_eq(u.as_bytes(), user.as_bytes())
                & constant_time_eq(p.as_bytes(), password.as_bytes());
            found | matches
        })
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut difference = a.len() ^ b.len();
    for (i, x) in a.iter().enumerate() {
        difference |= usize::from(x ^ b.get(i).copied().unwrap_or(!x));
    }
    difference == 0
}

/// Middleware: 401 with `WWW-Authenticate: Basic` unless the request carries accepted
/// credentials (a no-op when the server has none).
pub async fn require_auth(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    let Some(credentials) = &state.auth else {
        return next.run(request).await;
    };
    let accepted = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| credentials.accepts(value));
    if accepted {
        next.run(request).await
    } else {
        ApiError::Unauthorized.into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basic(user_password: &str) -> String {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(user_password)
        )
    }

    #[test]
    fn parses_and_checks_pairs() {
        let credentials = Credentials::parse("alice:s3cr:et, bob:pw").unwrap();
        assert!(credentials.accepts(&basic("alice:s3cr:et")));
        assert!(credentials.accepts(&basic("bob:pw")));
        assert!(!credentials.accepts(&basic("bob:pw2")));
        assert!(!credentials.accepts(&basic("bob:p")));
        assert!(!credentials.accepts(&basic("carol:pw")));
        assert!(!credentials.accepts("Bearer abc"));
        assert!(Credentials::parse("nopassword").is_err());
        assert!(Credentials::parse(":pw").is_err());
        assert!(!format!("{credentials:?}").contains("s3cr"));
    }
}
