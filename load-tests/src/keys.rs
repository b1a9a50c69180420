//! API keys for the HTTP modes: the caller's (`--api-key`), or one made for the run.

use std::time::Duration;

use airline_gateway::auth::{self, NewKey, Scope};

/// `key` if given; otherwise a new admin key with limits far above any rate this
/// tool sends (`airline-load-<id>`), written straight into the system's database, so
/// a load run measures the system, not its own rate limit.
///
/// # Errors
/// When the key cannot be created (the gateway's schema is missing: start the
/// system first).
pub async fn key_for_run(pool: &sqlx::PgPool, key: Option<String>) -> anyhow::Result<String> {
    if let Some(key) = key {
        return Ok(key);
    }
    let new = NewKey {
        name: format!("airline-load-{}", uuid::Uuid::now_v7().simple()),
        scope: Scope::Admin,
        rate: 1_000_000,
        burst: 1_000_000,
    };
    let (_, key) = auth::create(pool, &new)
        .await
        .map_err(|e| anyhow::anyhow!("cannot create an API key for the run: {e}"))?;
    Ok(key)
}

/// An HTTP client that sends `key` as `x-api-key`.
///
/// # Errors
/// When the key is not a valid header value.
pub fn client(key: &str, timeout: Option<Duration>) -> anyhow::Result<reqwest::Client> {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(auth::HEADER, reqwest::header::HeaderValue::from_str(key)?);
    let mut builder = airline_runtime::http_client().default_headers(headers);
    if let Some(t) = timeout {
        builder = builder.timeout(t);
    }
    Ok(builder.build()?)
}
