//! Integration tests of the whole pipeline against the real RabbitMQ and PostgreSQL.
//! Each test runs its own system in its own database and broker namespace.

mod audit;
mod cancel;
mod dlq;
mod edge;
mod failures;
mod helpers;
mod http;
mod idempotency;
mod json_output;
mod poison;
mod saga;
mod topology;
mod webhooks;
