//! The dead-letter store: operators drain the broker's DLQs into
//! `messaging.dead_letters`, look at failures grouped by cause, fix them, replay
//! them or discard them (`airline dlq`, and the gateway's `/v1/admin/dead-letters`).
//! It is a crate of its own so that the workers, which only dead-letter messages
//! (airline-runtime's consumer), do not link the operators' tools; the table
//! belongs to the messaging schema and its migration stays in airline-runtime.
//!
//! - **Explain** ([`explain`](mod@explain)) reads why a message died from its
//!   headers (ours, then the broker's `x-death`, then a parked saga's body) and
//!   groups failures by message type, error kind and the error text without the
//!   numbers and ids that differ between occurrences. **Redact** ([`redact`]) hides
//!   card tokens and card-like numbers in everything shown.
//! - **Drain** ([`drain`](mod@drain)) takes dead letters off the DLQs with
//!   `basic.get`, stores a batch in one transaction and acks it only after the
//!   commit. Each dead letter has a `drain_key` (a hash of its queue, properties and
//!   body), so one drained again after a crash between the commit and the ack is
//!   recognised and not stored twice. The store is bounded: at `AIRLINE_DLQ_MAX`
//!   rows draining stops and says so, and replayed or discarded rows are deleted
//!   after `AIRLINE_DLQ_RETENTION` ([`purge`]).
//! - **Queries** ([`queries`]): counts per queue, groups, lists and one dead letter
//!   in full, picked by a [`Filter`] ([`filter`]).
//! - **Replay** ([`replay`](mod@replay)) writes an outbox row (producer
//!   [`OPERATOR`]) and marks the dead letter replayed in one transaction, then
//!   publishes the outbox: a replay is sent once, even if the command runs twice or
//!   dies midway. The copy goes back to the queue the message died in (not to a
//!   fan-out exchange, where every subscriber would get it again), with a new
//!   message id and `x-causation-id` naming the original.
//! - **Edit** ([`edit`](mod@edit)) stores a corrected body beside the original; a
//!   replay sends the edited body, never the original.
//! - **Discard** ([`discard`](mod@discard)) archives dead letters for the retention
//!   period.
//!
//! What the operator got wrong is a [`Refusal`] (airline-runtime's, so that every
//! binary exits 2 on it and the gateway answers 4xx); everything else is a failure
//! of the database or broker. Rendering for people is the CLI's.

pub mod discard;
pub mod drain;
pub mod edit;
pub mod explain;
pub mod filter;
pub mod queries;
pub mod redact;
pub mod replay;

pub use airline_runtime::Refusal;
pub use discard::{discard, purge};
pub use drain::{DrainReport, Origin, depth, dlqs, drain};
pub use edit::{Edit, edit, set_path};
pub use explain::{
    Explanation, amqp_to_json, drain_key, explain, group_of, normalise, properties_to_json,
    table_to_json,
};
pub use filter::{Filter, Selection};
pub use queries::{Detail, Group, QueueCount, Summary, counts, groups, list, show};
pub use redact::{display_body, mask_secrets};
pub use replay::{ReplayReport, flush, replay};

/// The outbox producer of replays.
pub const OPERATOR: &str = "operator";
