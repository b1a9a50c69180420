//! Notify: listens to the booking outcomes and loyalty awards on the fan-out and
//! writes each to the notification log, once per booking and event type. Unlike the
//! sample's notifier, which called every outcome "confirmed", the log records the
//! typed event as it was published.

use std::sync::Arc;

use airline_contracts::Message;
use airline_contracts::topology::queues_of;
use airline_runtime::{Handler, HandlerError, Handlers, Incoming, Runtime, async_trait};
use sqlx::PgConnection;
use sqlx::migrate::Migrator;

/// The notify schema's migrations.
pub static MIGRATIONS: Migrator = sqlx::migrate!("./migrations");

/// The notify service's consumers.
#[must_use]
pub fn handlers(_rt: &Runtime) -> Handlers {
    queues_of("notify")
        .map(|q| (q, Arc::new(LogNotification) as Arc<dyn Handler>))
        .collect()
}

/// Writes an outcome to `notify.notifications`.
#[derive(Debug, Clone, Copy)]
pub struct LogNotification;

#[async_trait]
impl Handler for LogNotification {
    async fn handle(
        &self,
        tx: &mut PgConnection,
        msg: &Incoming,
    ) -> Result<Vec<Message>, HandlerError> {
        let customer_id = match &msg.message {
            Message::BookingConfirmed(m) => &m.customer_id,
            Message::BookingFailed(m) => &m.customer_id,
            Message::LoyaltyAwarded(m) => &m.customer_id,
            _ => return Err(HandlerError::Rejected("not a notification event".into())),
        };
        let payload =
            serde_json::to_value(&msg.message).map_err(|e| HandlerError::Unexpected(e.into()))?;
        sqlx::query(
            "INSERT INTO notify.notifications (event_type, booking_id, customer_id, payload)
             VALUES ($1, $2, $3, $4) ON CONFLICT (booking_id, event_type) DO NOTHING",
        )
        .bind(msg.message.message_type().name)
        .bind(msg.message.booking_id())
        .bind(customer_id)
        .bind(payload)
        .execute(&mut *tx)
        .await?;
        Ok(Vec::new())
    }
}
