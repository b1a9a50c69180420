//! Where the gateway sends the outbox rows it has just committed.

use std::sync::Mutex;

use airline_runtime::outbox::{Dispatcher, Pending};

/// Publishes outbox rows the request has committed, right behind the answer. It
/// is best effort: the outbox relay publishes whatever this misses, so a
/// publisher never fails a request.
pub trait Publisher: Send + Sync + std::fmt::Debug + 'static {
    /// Hands over `pending`, already committed.
    fn publish(&self, pending: Pending);
}

impl Publisher for Dispatcher {
    fn publish(&self, pending: Pending) {
        let dispatcher = self.clone();
        tokio::spawn(async move { dispatcher.dispatch(&[pending]).await });
    }
}

/// A publisher that only records what it was given, for tests to read.
#[derive(Debug, Default)]
pub struct Recorder {
    seen: Mutex<Vec<Pending>>,
}

impl Recorder {
    /// What was published so far, oldest first.
    #[must_use]
    pub fn published(&self) -> Vec<Pending> {
        self.seen.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

impl Publisher for Recorder {
    fn publish(&self, pending: Pending) {
        if let Ok(mut seen) = self.seen.lock() {
            seen.push(pending);
        }
    }
}
