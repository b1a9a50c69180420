//! API keys and rate limits: who is calling, what they may do, and how fast.
//!
//! A key is `air_` + 64 hex digits (256 random bits from the operating system's
//! random number generator). It is shown once, at creation; the database keeps its SHA-256
//! and its first 12 characters, to tell keys apart in listings. A fast hash is
//! right for a random key of this length: there is nothing to guess.
//!
//! Every `/v1` request must send `x-api-key`. The gateway keeps what it learnt of
//! a key for [`CACHE_FOR`], so a revocation takes effect within that time, and a
//! flood of requests costs one database lookup per key per period, not one per
//! request. Each key has its own token bucket (`rate` per second, `burst` at once),
//! held in the gateway's memory: with several gateways, each enforces the limit on
//! its own (docs/decisions.md).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use sqlx::{PgExecutor, Row};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::Problem;

/// Requests per second a key may make unless it was created with another rate.
pub const DEFAULT_RATE: u32 = 100;
/// Requests a key may make at once unless it was created with another burst.
pub const DEFAULT_BURST: u32 = 50;
/// How long the gateway trusts what it read about a key (revocations take effect
/// within this time).
pub const CACHE_FOR: Duration = Duration::from_secs(5);
/// The header a key is sent in.
pub const HEADER: &str = "x-api-key";

/// What a key may do: `client` books and reads; `admin` also creates flights and
/// works the admin routes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Search, book, cancel, check in, webhooks.
    Client,
    /// Everything a client may do, plus flights and `/v1/admin/*`.
    Admin,
}

impl Scope {
    /// The name stored and shown.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Client => "client",
            Self::Admin => "admin",
        }
    }

    /// Parses `client` or `admin`.
    #[must_use]
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "client" => Some(Self::Client),
            "admin" => Some(Self::Admin),
            _ => None,
        }
    }
}

/// The authenticated caller of a request (a request extension, set by
/// [`authenticate`] before any `/v1` handler runs).
#[derive(Debug, Clone)]
pub struct Caller {
    /// The API key's id.
    pub key_id: Uuid,
    /// The API key's name.
    pub name: String,
    /// What it may do.
    pub scope: Scope,
    /// Its token bucket's refill rate, per second.
    pub rate: u32,
    /// Its token bucket's size.
    pub burst: u32,
}

/// A key as listed (never the key itself).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyInfo {
    pub id: Uuid,
    pub name: String,
    /// The key's first characters.
    pub prefix: String,
    pub scope: Scope,
    pub rate: u32,
    pub burst: u32,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    pub revoked_at: Option<OffsetDateTime>,
}

/// A new key's settings.
#[derive(Debug, Clone)]
pub struct NewKey {
    pub name: String,
    pub scope: Scope,
    pub rate: u32,
    pub burst: u32,
}

/// Why a key could not be created or revoked: the caller's mistake.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

fn hash(key: &str) -> String {
    airline_runtime::sha256_hex(&[key.as_bytes()])
}

fn new_secret() -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)?;
    Ok(format!("air_{}", hex::encode(bytes)))
}

/// Creates a key; returns its record and the key, which exists nowhere else.
///
/// # Errors
/// [`KeyError::Invalid`] for a bad name, rate or burst, or a name in use.
pub async fn create(db: impl PgExecutor<'_>, new: &NewKey) -> Result<(KeyInfo, String), KeyError> {
    let name = new.name.trim();
    if name.is_empty()
        || name.chars().count() > 64
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.@".contains(c))
    {
        return Err(KeyError::Invalid(
            "the name must be 1 to 64 letters, digits, '-', '_', '.' or '@'".into(),
        ));
    }
    if new.rate == 0 || new.burst == 0 || new.rate > 1_000_000 || new.burst > 1_000_000 {
        return Err(KeyError::Invalid(
            "rate and burst must be from 1 to 1000000".into(),
        ));
    }
    // The OS generator failing is the machine's fault, not the caller's: reported
    // as an I/O error, like the database's.
    let key = new_secret()
        .map_err(|e| KeyError::Database(sqlx::Error::Io(std::io::Error::other(e.to_string()))))?;
    let id = Uuid::now_v7();
    let prefix: String = key.chars().take(12).collect();
    let row = sqlx::query(
        "INSERT INTO gateway.api_keys (id, name, prefix, key_hash, scope, rate, burst)
         VALUES ($1, $2, $3, $4, $5, $6, $7)
         ON CONFLICT (name) DO NOTHING
         RETURNING created_at",
    )
    .bind(id)
    .bind(name)
    .bind(&prefix)
    .bind(hash(&key))
    .bind(new.scope.as_str())
    .bind(i32::try_from(new.rate).unwrap_or(i32::MAX))
    .bind(i32::try_from(new.burst).unwrap_or(i32::MAX))
    .fetch_optional(db)
    .await?
    .ok_or_else(|| KeyError::Invalid(format!("a key named {name} exists already")))?;
    let info = KeyInfo {
        id,
        name: name.to_owned(),
        prefix,
        scope: new.scope,
        rate: new.rate,
        burst: new.burst,
        created_at: row.try_get("created_at")?,
        revoked_at: None,
    };
    Ok((info, key))
}

/// Every key, oldest first, revoked ones included.
///
/// # Errors
/// Database errors.
pub async fn list(db: impl PgExecutor<'_>) -> sqlx::Result<Vec<KeyInfo>> {
    sqlx::query(
        "SELECT id, name, prefix, scope, rate, burst, created_at, revoked_at
           FROM gateway.api_keys ORDER BY created_at, name",
    )
    .fetch_all(db)
    .await?
    .iter()
    .map(|r| {
        let key = caller_of(r)?;
        Ok(KeyInfo {
            id: key.key_id,
            name: key.name,
            prefix: r.try_get("prefix")?,
            scope: key.scope,
            rate: key.rate,
            burst: key.burst,
            created_at: r.try_get("created_at")?,
            revoked_at: r.try_get("revoked_at")?,
        })
    })
    .collect()
}

/// Revokes the key named `name`.
///
/// # Errors
/// [`KeyError::Invalid`] when no live key has that name.
pub async fn revoke(db: impl PgExecutor<'_>, name: &str) -> Result<(), KeyError> {
    let done = sqlx::query(
        "UPDATE gateway.api_keys SET revoked_at = now() WHERE name = $1 AND revoked_at IS NULL",
    )
    .bind(name)
    .execute(db)
    .await?;
    if done.rows_affected() == 0 {
        return Err(KeyError::Invalid(format!("no live key is named {name}")));
    }
    Ok(())
}

async fn lookup(db: impl PgExecutor<'_>, key: &str) -> sqlx::Result<Option<Caller>> {
    let row = sqlx::query(
        "SELECT id, name, scope, rate, burst FROM gateway.api_keys
          WHERE key_hash = $1 AND revoked_at IS NULL",
    )
    .bind(hash(key))
    .fetch_optional(db)
    .await?;
    row.as_ref().map(caller_of).transpose()
}

/// A key's identity and limits from a row of `gateway.api_keys`.
fn caller_of(r: &sqlx::postgres::PgRow) -> sqlx::Result<Caller> {
    Ok(Caller {
        key_id: r.try_get("id")?,
        name: r.try_get("name")?,
        scope: Scope::parse(r.try_get("scope")?).unwrap_or(Scope::Client),
        rate: u32::try_from(r.try_get::<i32, _>("rate")?).unwrap_or(1),
        burst: u32::try_from(r.try_get::<i32, _>("burst")?).unwrap_or(1),
    })
}

/// A token bucket: `burst` tokens at most, refilled at `rate` per second; a
/// request takes one.
#[derive(Debug, Clone, Copy)]
pub struct Bucket {
    tokens: f64,
    at: Instant,
}

/// What a bucket said about one request.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Verdict {
    /// Whether the request may go ahead.
    pub admitted: bool,
    /// Whole tokens left after it.
    pub remaining: u64,
    /// Seconds until the bucket is full again.
    pub reset: u64,
    /// Seconds until one token is available (0 when admitted).
    pub retry_after: u64,
}

impl Bucket {
    /// A full bucket.
    #[must_use]
    pub fn full(burst: u32, now: Instant) -> Self {
        Self {
            tokens: f64::from(burst),
            at: now,
        }
    }

    /// Refills for the time since the last request, then takes a token if one is
    /// there.
    pub fn take(&mut self, rate: u32, burst: u32, now: Instant) -> Verdict {
        let (rate, burst) = (f64::from(rate.max(1)), f64::from(burst.max(1)));
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate).min(burst);
        self.at = now;
        let admitted = self.tokens >= 1.0;
        if admitted {
            self.tokens -= 1.0;
        }
        let secs = |x: f64| {
            // Non-negative and far below u64::MAX: burst and rate are at most 10^6.
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            let s = x.max(0.0).ceil() as u64;
            s
        };
        Verdict {
            admitted,
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            remaining: self.tokens.floor().max(0.0) as u64,
            reset: secs((burst - self.tokens) / rate),
            retry_after: if admitted {
                0
            } else {
                secs((1.0 - self.tokens) / rate).max(1)
            },
        }
    }
}

/// What the gateway knows of keys: a short-lived cache of lookups and a bucket per
/// key.
#[derive(Debug, Default)]
pub struct Keys {
    known: Mutex<HashMap<String, (Option<Caller>, Instant)>>,
    buckets: Mutex<HashMap<Uuid, Bucket>>,
}

/// Lookups kept at most (a flood of made-up keys cannot grow the cache further:
/// it is emptied and refilled).
const CACHE_ENTRIES: usize = 10_000;

impl Keys {
    async fn caller(&self, pool: &sqlx::PgPool, key: &str) -> sqlx::Result<Option<Caller>> {
        let now = Instant::now();
        let digest = hash(key);
        if let Some((caller, at)) = self.known.lock().ok().and_then(|m| m.get(&digest).cloned())
            && now.duration_since(at) < CACHE_FOR
        {
            return Ok(caller);
        }
        let caller = lookup(pool, key).await?;
        if let Ok(mut known) = self.known.lock() {
            if known.len() >= CACHE_ENTRIES {
                known.clear();
            }
            known.insert(digest, (caller.clone(), now));
        }
        Ok(caller)
    }

    fn take(&self, caller: &Caller) -> Verdict {
        let now = Instant::now();
        let Ok(mut buckets) = self.buckets.lock() else {
            // A poisoned lock means a panic elsewhere; do not punish the caller.
            return Verdict {
                admitted: true,
                remaining: 0,
                reset: 0,
                retry_after: 0,
            };
        };
        buckets
            .entry(caller.key_id)
            .or_insert_with(|| Bucket::full(caller.burst, now))
            .take(caller.rate, caller.burst, now)
    }
}

/// The admin guard, a route layer on the routes that need an admin key
/// (creating flights, `/v1/admin/*`), behind [`authenticate`]: 403 for a client
/// key. The refusal carries no `RateLimit` headers.
pub async fn require_admin(request: Request, next: Next) -> Response {
    match request.extensions().get::<Caller>() {
        Some(caller) if caller.scope == Scope::Admin => next.run(request).await,
        Some(caller) => {
            let mut r = Problem::plain(
                StatusCode::FORBIDDEN,
                "Forbidden",
                format!(
                    "key {} has the client scope; this route needs an admin key",
                    caller.name
                ),
            )
            .into_response();
            r.extensions_mut().insert(ScopeRefused);
            r
        }
        // Only reachable if the layer were put outside `authenticate`.
        None => unauthorized("send your API key in the x-api-key header"),
    }
}

/// Marks an answer [`require_admin`] refused: [`authenticate`] adds no rate-limit
/// headers to it.
#[derive(Debug, Clone, Copy)]
struct ScopeRefused;

/// The `/v1` guard: 401 without a live key, 403 for a client key on an admin
/// route, 429 over the key's rate; otherwise the request goes on with its
/// [`Caller`], and the answer carries the `RateLimit` headers.
pub async fn authenticate(
    State(state): State<crate::AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    let path = request.uri().path().to_owned();
    if !(path == "/v1" || path.starts_with("/v1/")) {
        return next.run(request).await;
    }
    let Some(key) = request
        .headers()
        .get(HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|k| !k.is_empty())
        .map(str::to_owned)
    else {
        return unauthorized("send your API key in the x-api-key header");
    };
    let caller = match state.keys.caller(&state.pool, &key).await {
        Ok(Some(caller)) => caller,
        Ok(None) => return unauthorized("the x-api-key is not a live API key"),
        Err(e) => return Problem::from(e).into_response(),
    };
    let verdict = state.keys.take(&caller);
    let policy = format!(
        "\"default\";q={};w={}",
        caller.burst,
        caller.burst.div_ceil(caller.rate.max(1)).max(1)
    );
    let limit = format!("\"default\";r={};t={}", verdict.remaining, verdict.reset);
    let mut response = if verdict.admitted {
        request.extensions_mut().insert(caller);
        next.run(request).await
    } else {
        let mut r = Problem::plain(
            StatusCode::TOO_MANY_REQUESTS,
            "Too many requests",
            format!(
                "key {} may make {} requests per second, {} at once; try again in {} s",
                caller.name, caller.rate, caller.burst, verdict.retry_after
            ),
        )
        .into_response();
        r.headers_mut()
            .insert("retry-after", HeaderValue::from(verdict.retry_after));
        r
    };
    if response.extensions().get::<ScopeRefused>().is_some() {
        return response;
    }
    let headers = response.headers_mut();
    for (name, value) in [("ratelimit-policy", policy), ("ratelimit", limit)] {
        if let Ok(v) = HeaderValue::from_str(&value) {
            headers.insert(name, v);
        }
    }
    response
}

fn unauthorized(detail: &str) -> Response {
    let mut r = Problem::plain(StatusCode::UNAUTHORIZED, "Unauthorized", detail).into_response();
    r.headers_mut().insert(
        "www-authenticate",
        HeaderValue::from_static("ApiKey header=\"x-api-key\""),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_admits_its_burst_then_its_rate() {
        let start = Instant::now();
        let mut b = Bucket::full(50, start);
        let admitted = (0..200).filter(|_| b.take(100, 50, start).admitted).count();
        assert_eq!(admitted, 50);
        let refused = b.take(100, 50, start);
        assert!(!refused.admitted);
        assert_eq!(refused.retry_after, 1);
        assert_eq!(refused.remaining, 0);
        // 100 ms later, 10 tokens have come back.
        let later = start + Duration::from_millis(100);
        let admitted = (0..200).filter(|_| b.take(100, 50, later).admitted).count();
        assert_eq!(admitted, 10);
        // Never more than the burst, however long it rested.
        let much_later = start + Duration::from_secs(3600);
        let v = b.take(100, 50, much_later);
        assert!(v.admitted);
        assert_eq!(v.remaining, 49);
        assert_eq!(v.reset, 1);
    }

    #[test]
    fn a_slow_key_is_told_how_long_to_wait() {
        let start = Instant::now();
        let mut b = Bucket::full(1, start);
        assert!(b.take(1, 1, start).admitted);
        let v = b.take(1, 1, start + Duration::from_millis(200));
        assert!(!v.admitted);
        assert_eq!(v.retry_after, 1);
        // A rate below one per second cannot be set; a burst of 5 at 1/s resets in 5 s.
        let mut b = Bucket::full(5, start);
        let v = b.take(1, 5, start);
        assert_eq!((v.remaining, v.reset), (4, 1));
    }

    #[test]
    fn keys_are_long_random_and_prefixed() {
        let a = new_secret().expect("random");
        let b = new_secret().expect("random");
        assert_ne!(a, b);
        assert!(a.starts_with("air_"));
        assert_eq!(a.len(), 4 + 64);
        assert_eq!(hash(&a).len(), 64);
    }
}
