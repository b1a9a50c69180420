//! The messaging runtime the airline services share.
//!
//! - [`config`]: environment variables and their defaults;
//! - [`db`]: PostgreSQL connection (the database is created if missing) and
//!   per-schema migrations;
//! - [`broker`]: the RabbitMQ connection with automatic recovery, and publishing
//!   with confirms and `mandatory`; [`topology`]: the exchanges, queues and
//!   bindings (one shared dead-letter queue, shared delay tiers);
//! - [`outbox`] and [`consumer`]: a handler's writes, its inbox row and its outgoing
//!   messages commit in one transaction; the delivery is acked after the commit; a
//!   relay publishes the outbox; undecodable or refused messages are dead-lettered
//!   with their reason;
//! - [`prune`]: the inbox's old rows deleted in small batches;
//! - [`descriptor`]: a service as one value (name, migrations, consumers, jobs,
//!   gauges), which every binary, `airline up`, the metrics and the chaos run read;
//! - [`Refusal`]: the caller's mistake (exit status 2), as opposed to a failure of
//!   the database or broker;
//! - [`service`]: starting and stopping a service, `/healthz`, and the `main` of the
//!   worker binaries.

pub mod broker;
pub mod config;
pub mod consumer;
pub mod db;
pub mod descriptor;
pub mod metrics;
pub mod outbox;
pub mod prune;
mod refusal;
pub mod retry;
pub mod service;
pub mod telemetry;
#[cfg(feature = "testing")]
pub mod testing;
pub mod topology;
pub mod validation;

pub use config::Config;
pub use refusal::Refusal;

/// The hex SHA-256 of `parts`, separated by NUL bytes (ids of dead-letter groups,
/// drain keys, API keys, request fingerprints).
#[must_use]
pub fn sha256_hex(parts: &[&[u8]]) -> String {
    use sha2::{Digest as _, Sha256};
    let mut h = Sha256::new();
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            h.update([0]);
        }
        h.update(p);
    }
    hex::encode(h.finalize())
}

/// The one way to build an HTTP client in this workspace: it installs the TLS
/// provider first (see [`install_tls`]), without which reqwest panics, and turns
/// Nagle's algorithm off (small requests and their answers go out at once).
pub fn http_client() -> reqwest::ClientBuilder {
    install_tls();
    reqwest::Client::builder().tcp_nodelay(true)
}

/// Makes ring the process's TLS crypto provider. The workspace builds reqwest with
/// `rustls-no-provider` (notify's https webhooks; ring builds faster than the
/// default aws-lc-rs), and with that feature every reqwest client, plain http ones
/// included, panics when built before a provider is installed: call this first
/// in every binary and test that builds one. Calling it again does nothing.
pub fn install_tls() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
pub use consumer::{Handler, HandlerError, Incoming, Outcome, process_batch};
pub use descriptor::{Consumer, Gauge, Service};
pub use service::Runtime;

/// Re-exported so that services implement [`Handler`] with the same macro.
pub use async_trait::async_trait;
