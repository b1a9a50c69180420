//! The caller's mistake, as opposed to a failure of the database or broker.

/// A problem with what the caller asked for (exit status 2 from
/// [`main_with`](crate::service::main_with), HTTP 4xx from the gateway), as opposed
/// to a failure of the database or broker. The dead-letter store and the CLI's
/// commands return it inside their `anyhow::Error`s.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    /// No such dead letter.
    #[error("no dead letter {0}")]
    NotFound(i64),
    /// The arguments are wrong (a bad path, an edited body that does not decode).
    #[error("{0}")]
    Invalid(String),
    /// The thing asked about is not in a state that allows this (a dead letter
    /// replayed, discarded or parked).
    #[error("{0}")]
    Conflict(String),
}
