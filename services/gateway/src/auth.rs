//! API keys: who is calling, and what they may do.

use uuid::Uuid;

/// What a key may do: `client` books and reads; `admin` also creates flights and
/// works the admin routes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Search, book, cancel, check in, webhooks.
    Client,
    /// Everything a client may do, plus flights and `/v1/admin/*`.
    Admin,
}

/// The authenticated caller of a request (a request extension, set by the API-key
/// middleware before any `/v1` handler runs).
#[derive(Debug, Clone)]
pub struct Caller {
    /// The API key's id.
    pub key_id: Uuid,
    /// The API key's name.
    pub name: String,
    /// What it may do.
    pub scope: Scope,
}
