//! The message contracts of the airline booking pipeline.
//!
//! Everything that crosses the broker is defined here, and only here:
//!
//! - [`messages`]: every command and event of the booking flow as a typed, versioned
//!   payload, and [`Message`], the closed set a consumer can decode;
//! - [`topology`]: the exchange, routing-key and queue names, with the configurable
//!   prefix, and which service consumes which queue;
//! - [`schema`]: a JSON Schema for every message body and the AsyncAPI document
//!   (`contracts/asyncapi.yaml`), both generated from the Rust types. A test keeps the
//!   files in the repository equal to what the types generate, so they cannot drift.
//!
//! On the wire a message is a JSON body (camelCase fields) plus AMQP properties: the
//! `type` property names the message and its version (`booking.requested.v1`), the
//! `message_id` property is a stable id used for de-duplication, and the
//! `correlation_id` is the booking id. See `docs/messages.md`.
//!
//! This crate depends on serde, serde_json, uuid, time and schemars only, so that an upstream
//! system can publish valid messages without pulling in the services' runtime.

pub mod messages;
pub mod schema;
pub mod topology;
mod values;

pub use messages::{DecodeError, Message, MessageKind, MessageType};
pub use topology::{Names, QUEUES, QueueSpec};
pub use values::{FailureReason, PaymentToken, PaymentTokenError, SeatUnavailableReason};
