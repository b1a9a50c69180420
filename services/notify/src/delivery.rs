//! Delivering one `webhook.deliver`: a signed POST to the endpoint.
//!
//! 2xx is delivered. 410 Gone disables the endpoint (its receiver asked to stop).
//! Anything else, a timeout or a connection error is a failure: recorded on the
//! endpoint outside the handler's transaction (which rolls back), then returned as
//! transient, so the runtime retries it through the queue's retry tiers and finally
//! dead-letters it with the last error. A failure after the endpoint has been failing
//! for longer than `AIRLINE_WEBHOOK_DISABLE_AFTER` disables it; deliveries for a
//! disabled or deleted endpoint are dropped with a log line.

use std::sync::Arc;
use std::time::Duration;

use airline_contracts::Message;
use airline_contracts::messages::DeliverWebhook;
use airline_runtime::{Handler, HandlerError, Incoming, async_trait};
use reqwest::StatusCode;
use sqlx::postgres::PgPoolOptions;
use sqlx::{PgConnection, PgPool};
use time::OffsetDateTime;
use tracing::Instrument as _;

use crate::destination::{self, PublicOnly, WebhookUrl};
use crate::endpoints;

/// How long one delivery may take, connecting included.
pub const DELIVERY_TIMEOUT: Duration = Duration::from_secs(10);

/// The most of a receiver's error answer kept in `last_error`.
const MAX_ERROR_LEN: usize = 500;

/// Handles `notify.webhook-deliveries`.
#[derive(Debug, Clone)]
pub struct DeliverWebhooks {
    /// Two connections of its own for recording failures: the handler's connection
    /// is in a transaction that rolls back, and when slow receivers hold every
    /// connection of the shared pool a failure must still be recorded.
    failures: PgPool,
    client: reqwest::Client,
    allow_private: bool,
    disable_after: Duration,
}

/// Why an attempt did not deliver.
enum Undelivered {
    /// The receiver answered 410 Gone: it wants no more deliveries.
    Gone,
    /// The destination is not allowed (a private address): retrying will not help.
    Refused(String),
    /// The receiver answered something other than 2xx, or could not be reached.
    Failed(String),
}

impl DeliverWebhooks {
    /// A delivery handler on `pool`'s database. Without `allow_private`, its client
    /// connects only to public addresses.
    ///
    /// # Errors
    /// When the HTTP client cannot be built (its TLS configuration).
    pub fn new(
        pool: &PgPool,
        allow_private: bool,
        disable_after: Duration,
    ) -> anyhow::Result<Self> {
        let mut builder = airline_runtime::http_client()
            .timeout(DELIVERY_TIMEOUT)
            // A redirect would send the delivery somewhere nobody vetted; the
            // specification counts a 3xx as a failure anyway.
            .redirect(reqwest::redirect::Policy::none())
            // A proxy would resolve the name itself, past the address check.
            .no_proxy()
            .user_agent(concat!("airline-webhooks/", env!("CARGO_PKG_VERSION")));
        if !allow_private {
            builder = builder.dns_resolver(Arc::new(PublicOnly));
        }
        let failures = PgPoolOptions::new()
            .max_connections(2)
            .acquire_timeout(Duration::from_secs(30))
            .connect_lazy_with(pool.connect_options().as_ref().clone());
        Ok(Self {
            failures,
            client: builder.build()?,
            allow_private,
            disable_after,
        })
    }

    async fn attempt(
        &self,
        target: &endpoints::Target,
        delivery: &DeliverWebhook,
    ) -> Result<(), Undelivered> {
        let url =
            WebhookUrl::parse(&target.url).map_err(|e| Undelivered::Refused(e.to_string()))?;
        if !self.allow_private {
            destination::check_literal(&url).map_err(|e| Undelivered::Refused(e.to_string()))?;
        }
        let id = delivery.event_id.to_string();
        let timestamp = OffsetDateTime::now_utc().unix_timestamp();
        let body = serde_json::to_vec(&delivery.payload)
            .map_err(|e| Undelivered::Failed(format!("payload: {e}")))?;
        let signature = target
            .secret
            .sign(&id, timestamp, &body)
            .map_err(|e| Undelivered::Refused(format!("cannot sign: {e}")))?;
        let mut response = self
            .client
            .post(url.as_url().clone())
            .header("content-type", "application/json")
            .header("webhook-id", &id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(body)
            .send()
            .await
            .map_err(|e| {
                if let Some(refusal) = destination::refusal_in(&e) {
                    return Undelivered::Refused(refusal.to_string());
                }
                // Without the URL: it may carry a token of the receiver's.
                let e = e.without_url();
                if e.is_timeout() {
                    Undelivered::Failed(format!("no answer within {}s", DELIVERY_TIMEOUT.as_secs()))
                } else {
                    Undelivered::Failed(format!("{:#}", anyhow::Error::from(e)))
                }
            })?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        if status == StatusCode::GONE {
            return Err(Undelivered::Gone);
        }
        // Only the start of the answer: a receiver's body may be as large as it likes.
        let mut head = Vec::new();
        while head.len() < MAX_ERROR_LEN * 4 {
            match response.chunk().await {
                Ok(Some(chunk)) => head.extend_from_slice(&chunk),
                Ok(None) | Err(_) => break,
            }
        }
        let excerpt: String = String::from_utf8_lossy(&head)
            .chars()
            .filter(|c| !c.is_control())
            .take(MAX_ERROR_LEN)
            .collect();
        Err(Undelivered::Failed(if excerpt.trim().is_empty() {
            format!("the receiver answered {status}")
        } else {
            format!("the receiver answered {status}: {}", excerpt.trim())
        }))
    }

    /// Records a failure and says whether to retry (transient) or not (the
    /// endpoint is now disabled: dead-lettered at once, with the reason).
    async fn failed(&self, delivery: &DeliverWebhook, error: String) -> HandlerError {
        let endpoint = delivery.endpoint_id;
        match endpoints::record_failure(&self.failures, endpoint, &error, self.disable_after).await
        {
            Ok(Some(reason)) => {
                tracing::warn!(%endpoint, event_id = %delivery.event_id, reason, "webhook endpoint disabled");
                HandlerError::Rejected(format!("webhook endpoint {endpoint} is disabled: {reason}"))
            }
            Ok(None) => HandlerError::Transient(anyhow::anyhow!(
                "webhook delivery to endpoint {endpoint} failed: {error}"
            )),
            Err(e) => HandlerError::Unexpected(anyhow::Error::from(e).context(format!(
                "recording a failed delivery to endpoint {endpoint} ({error})"
            ))),
        }
    }
}

#[async_trait]
impl Handler for DeliverWebhooks {
    async fn handle(
        &self,
        tx: &mut PgConnection,
        msg: &Incoming,
    ) -> Result<Vec<Message>, HandlerError> {
        let Message::DeliverWebhook(delivery) = &msg.message else {
            return Err(HandlerError::Rejected("expected webhook.deliver".into()));
        };
        let span = tracing::info_span!(
            "webhook",
            endpoint = %delivery.endpoint_id,
            event_id = %delivery.event_id,
            event_type = %delivery.event_type,
            booking_id = %delivery.booking_id,
            attempt = msg.attempt,
        );
        self.deliver(tx, delivery).instrument(span).await?;
        Ok(Vec::new())
    }

    /// Each delivery is an HTTP request to a receiver: never several in one
    /// transaction.
    fn batches(&self) -> bool {
        false
    }
}

impl DeliverWebhooks {
    async fn deliver(
        &self,
        tx: &mut PgConnection,
        delivery: &DeliverWebhook,
    ) -> Result<(), HandlerError> {
        let endpoint = delivery.endpoint_id;
        let Some(target) = endpoints::target(&mut *tx, endpoint).await? else {
            tracing::info!("webhook endpoint deleted; delivery dropped");
            return Ok(());
        };
        if target.status != "enabled" {
            tracing::info!("webhook endpoint disabled; delivery dropped");
            return Ok(());
        }
        match self.attempt(&target, delivery).await {
            Ok(()) => {
                endpoints::record_success(&mut *tx, endpoint).await?;
                tracing::info!("webhook delivered");
                Ok(())
            }
            Err(Undelivered::Gone) => {
                endpoints::disable(&mut *tx, endpoint, "its receiver answered 410 Gone").await?;
                tracing::warn!("webhook endpoint disabled: its receiver answered 410 Gone");
                Ok(())
            }
            Err(Undelivered::Refused(reason)) => {
                // Recorded on the endpoint, then dead-lettered at once: the same
                // destination would be refused the same way next time.
                let recorded = format!("refused: {reason}");
                tracing::warn!(reason, "webhook delivery refused");
                Err(match self.failed(delivery, recorded.clone()).await {
                    HandlerError::Transient(_) => HandlerError::Rejected(format!(
                        "webhook delivery to endpoint {endpoint} {recorded}"
                    )),
                    other => other,
                })
            }
            Err(Undelivered::Failed(error)) => {
                tracing::info!(error, "webhook delivery failed");
                Err(self.failed(delivery, error).await)
            }
        }
    }
}
