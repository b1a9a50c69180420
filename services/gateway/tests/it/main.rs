//! The gateway's HTTP layer, called in-process with `oneshot` on a router whose
//! state has no broker (AMQP_URL points at a closed port): each test has a
//! database of its own, migrated with every schema the gateway reads, and dropped
//! when the test ends, also when it fails.

mod bookings;
mod edge;
mod flights;
mod helpers;
mod openapi;
mod tidy;
