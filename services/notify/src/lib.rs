//! Notify: listens to the booking outcomes and loyalty awards on the fan-out, writes
//! each to the notification log once per booking and event type, and tells the
//! booking's owner through its webhooks. Unlike the sample's notifier, which called
//! every outcome "confirmed", the log records the typed event as it was published.
//!
//! - [`LogNotification`] (queues `notify.booking-outcomes` and `loyalty.awarded`):
//!   the log row and, in the same transaction, one `webhook.deliver` command per
//!   enabled endpoint of the API key that made the booking and wants the event;
//! - [`delivery::DeliverWebhooks`] (queue `notify.webhook-deliveries`): the signed
//!   POST, retried through the runtime's retry tiers;
//! - [`endpoints`]: the endpoints table, which the gateway's `/v1/webhooks` routes
//!   also use; [`destination`]: which URLs may be called; [`signature`]: Standard
//!   Webhooks signing.

use std::sync::Arc;

use airline_contracts::Message;
use airline_contracts::messages::DeliverWebhook;
use airline_contracts::topology::{LOYALTY_AWARDED, NOTIFY_OUTCOMES, WEBHOOK_DELIVERIES};
use airline_runtime::{Consumer, Handler, HandlerError, Incoming, Service, async_trait};
use sha2::{Digest as _, Sha256};
use sqlx::PgConnection;
use sqlx::migrate::Migrator;
use time::OffsetDateTime;
use uuid::Uuid;

pub mod delivery;
pub mod destination;
pub mod endpoints;
pub mod signature;

/// The notify schema's migrations.
pub static MIGRATIONS: Migrator = sqlx::migrate!("./migrations");

/// The queue of webhook deliveries (logical name).
pub const WEBHOOK_QUEUE: &str = WEBHOOK_DELIVERIES.name;

/// The notify service: schema `notify`, the notification log and webhooks.
pub static SERVICE: Service = Service {
    name: "notify",
    migrations: &MIGRATIONS,
    reads: &[],
    consumers: &[
        Consumer {
            queues: &[&NOTIFY_OUTCOMES, &LOYALTY_AWARDED],
            handler: |_, _| Ok(Arc::new(LogNotification)),
        },
        Consumer {
            queues: &[&WEBHOOK_DELIVERIES],
            handler: |config, pool| {
                Ok(Arc::new(delivery::DeliverWebhooks::new(
                    pool,
                    config.webhooks.allow_private,
                    config.webhooks.disable_after,
                )?))
            },
        },
    ],
    jobs: &[],
    gauges: &[],
};

/// Writes an outcome to `notify.notifications` and sends its webhooks.
#[derive(Debug, Clone, Copy)]
pub struct LogNotification;

#[async_trait]
impl Handler for LogNotification {
    async fn handle(
        &self,
        tx: &mut PgConnection,
        msg: &Incoming,
    ) -> Result<Vec<Message>, HandlerError> {
        // Only these four events reach notify, and none carries a card token: the
        // log and the webhook payloads hold them whole.
        let (customer_id, occurred_at) = match &msg.message {
            Message::BookingConfirmed(m) => (&m.customer_id, Some(m.confirmed_at)),
            Message::BookingFailed(m) => (&m.customer_id, Some(m.failed_at)),
            Message::BookingCancelled(m) => (&m.customer_id, Some(m.cancelled_at)),
            Message::LoyaltyAwarded(m) => (&m.customer_id, None),
            _ => return Err(HandlerError::Rejected("not a notification event".into())),
        };
        let event_type = msg.message.message_type().name;
        let booking_id = msg.message.booking_id();
        let data =
            serde_json::to_value(&msg.message).map_err(|e| HandlerError::Unexpected(e.into()))?;
        let logged = sqlx::query(
            "INSERT INTO notify.notifications (event_type, booking_id, customer_id, payload)
             VALUES ($1, $2, $3, $4) ON CONFLICT (booking_id, event_type) DO NOTHING",
        )
        .bind(event_type)
        .bind(booking_id)
        .bind(customer_id)
        .bind(&data)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if logged == 0 {
            // Logged before, under another message id: its webhooks went out then.
            return Ok(Vec::new());
        }
        let endpoints = endpoints::subscribers(&mut *tx, booking_id, event_type).await?;
        if endpoints.is_empty() {
            return Ok(Vec::new());
        }
        let timestamp = occurred_at
            .unwrap_or_else(OffsetDateTime::now_utc)
            .format(&time::format_description::well_known::Rfc3339)
            .map_err(|e| HandlerError::Unexpected(e.into()))?;
        let payload = serde_json::json!({
            "type": event_type,
            "timestamp": timestamp,
            "data": data,
        });
        Ok(endpoints
            .into_iter()
            .map(|endpoint_id| {
                Message::DeliverWebhook(DeliverWebhook {
                    booking_id,
                    endpoint_id,
                    event_id: event_id(endpoint_id, booking_id, event_type),
                    event_type: event_type.to_owned(),
                    payload: payload.clone(),
                })
            })
            .collect())
    }
}

/// The `webhook-id` of an event at an endpoint: the same however often the event is
/// delivered or retried, as notify sends each booking's event once. A name-based
/// UUID (version 8) from SHA-256 of the endpoint, the booking and the event type.
#[must_use]
pub fn event_id(endpoint: Uuid, booking: Uuid, event_type: &str) -> Uuid {
    let digest = Sha256::new()
        .chain_update(b"airline.webhook-event\0")
        .chain_update(endpoint.as_bytes())
        .chain_update(booking.as_bytes())
        .chain_update(event_type.as_bytes())
        .finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_custom_bytes(bytes).into_uuid()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_ids_are_stable_and_distinct() {
        let (endpoint, other, booking) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        let id = event_id(endpoint, booking, "booking.confirmed");
        assert_eq!(id, event_id(endpoint, booking, "booking.confirmed"));
        assert_eq!(id.get_version_num(), 8);
        assert_ne!(id, event_id(other, booking, "booking.confirmed"));
        assert_ne!(id, event_id(endpoint, booking, "loyalty.awarded"));
    }
}
