//! JSON Schemas of the message bodies and the AsyncAPI document, generated from the
//! Rust types. `cargo test -p airline-contracts` fails when the files in
//! `contracts/` differ from what is generated here; `UPDATE_CONTRACTS=1` rewrites them.

use schemars::generate::SchemaSettings;
use serde_json::{Map, Value, json};

use crate::messages::{Message, MessageKind, MessageType};
use crate::topology::{
    COMMANDS_EXCHANGE, DEAD_LETTER_EXCHANGE, DEAD_LETTERS, EVENTS_EXCHANGE, Names,
    ORIGIN_QUEUE_HEADER, PARKING, QUEUES, RETRY_EXCHANGE, RETRY_TIER_HEADER, consumed_queues,
    exchange_of,
};

/// The JSON Schema (draft-07, subschemas inlined, as AsyncAPI 3 expects) of a body.
#[must_use]
pub fn schema_of<T: schemars::JsonSchema>() -> schemars::Schema {
    let mut settings = SchemaSettings::draft07();
    settings.inline_subschemas = true;
    settings.into_generator().into_root_schema_for::<T>()
}

/// The file name of a message type's schema under `contracts/schemas/`.
#[must_use]
pub fn schema_file_name(t: &MessageType) -> String {
    format!("{t}.json")
}

/// Every message schema as (file name, pretty JSON text).
#[must_use]
pub fn schema_files() -> Vec<(String, String)> {
    Message::schemas()
        .into_iter()
        .map(|(t, schema)| {
            let mut text = serde_json::to_string_pretty(&schema).unwrap_or_default();
            text.push('\n');
            (schema_file_name(&t), text)
        })
        .collect()
}

/// The AsyncAPI 3.0 document of the whole topology under the default prefix.
#[must_use]
pub fn asyncapi() -> Value {
    let names = Names::default();
    let mut channels = Map::new();
    let mut operations = Map::new();
    let mut messages = Map::new();

    let exchange = |logical: &str, kind: &str| json!({ "name": names.resolve(logical), "type": kind, "durable": true, "autoDelete": false, "vhost": "/" });

    for (t, schema) in Message::schemas() {
        let id = t.to_string();
        let (exchange_name, exchange_kind) = match t.kind {
            MessageKind::Command => (COMMANDS_EXCHANGE, "direct"),
            MessageKind::Event => (EVENTS_EXCHANGE, "topic"),
        };
        messages.insert(
            id.clone(),
            json!({
                "name": t.name,
                "title": id,
                "summary": t.summary,
                "contentType": "application/json",
                "correlationId": { "description": "The booking id, in the AMQP correlation_id property.", "location": "$message.header#/correlation_id" },
                "headers": headers_schema(),
                "payload": schema,
                "bindings": { "amqp": { "messageType": id, "bindingVersion": "0.3.0" } },
            }),
        );
        channels.insert(
            t.name.to_owned(),
            json!({
                "address": t.name,
                "description": format!("Routing key `{}` on the `{}` exchange.", t.name, names.resolve(exchange_of(t.kind))),
                "messages": { id.clone(): { "$ref": format!("#/components/messages/{id}") } },
                "bindings": { "amqp": { "is": "routingKey", "exchange": exchange(exchange_name, exchange_kind), "bindingVersion": "0.3.0" } },
            }),
        );
        operations.insert(
            format!("{}.publish.{}", t.producer, t.name),
            json!({
                "action": "send",
                "summary": format!("{} publishes {id} with publisher confirms and mandatory.", t.producer),
                "channel": { "$ref": format!("#/channels/{}", t.name) },
                "messages": [{ "$ref": format!("#/channels/{}/messages/{id}", t.name) }],
                "bindings": { "amqp": { "deliveryMode": 2, "mandatory": true, "bindingVersion": "0.3.0" } },
            }),
        );
    }

    for queue in QUEUES {
        let channel_id = format!("queue.{}", queue.name);
        let refs: Map<String, Value> = queue
            .message_types()
            .map(|t| {
                let id = t.to_string();
                (
                    id.clone(),
                    json!({ "$ref": format!("#/components/messages/{id}") }),
                )
            })
            .collect();
        let description = if queue.watches_dead_letters {
            format!(
                "Watch queue consumed by {}; bound to the `{}` exchange with the routing keys {}: it receives a copy of every message dead-lettered from those queues (with its `x-error-*` headers), and holds the saga waiting on it. Failed deliveries are retried, then dead-lettered to `{}`.",
                queue.consumer,
                names.resolve(DEAD_LETTER_EXCHANGE),
                queue
                    .messages
                    .iter()
                    .map(|m| format!("`{}`", names.resolve(m)))
                    .collect::<Vec<_>>()
                    .join(", "),
                names.dead_letters(),
            )
        } else if queue.consumer == PARKING {
            format!(
                "Parking queue for operators, bound to {}: no service consumes it; it has no dead-letter queue and no retries.",
                queue.messages.join(", ")
            )
        } else {
            format!(
                "Work queue consumed by {}; bound to {}. Failed deliveries are retried through the shared delay tiers (the `{}` exchange, routing key `{}`), then dead-lettered through the `{}` exchange to `{}`.",
                queue.consumer,
                queue.messages.join(", "),
                names.resolve(RETRY_EXCHANGE),
                names.resolve(queue.name),
                names.resolve(DEAD_LETTER_EXCHANGE),
                names.dead_letters(),
            )
        };
        channels.insert(
            channel_id.clone(),
            json!({
                "address": names.resolve(queue.name),
                "description": description,
                "messages": refs,
                "bindings": { "amqp": {
                    "is": "queue",
                    "queue": { "name": names.resolve(queue.name), "durable": true, "exclusive": false, "autoDelete": false, "vhost": "/" },
                    "bindingVersion": "0.3.0",
                } },
            }),
        );
        if queue.consumer == PARKING {
            continue;
        }
        let message_refs: Vec<Value> = queue
            .message_types()
            .map(|t| json!({ "$ref": format!("#/channels/{channel_id}/messages/{t}") }))
            .collect();
        operations.insert(
            format!("{}.consume.{}", queue.consumer, queue.name),
            json!({
                "action": "receive",
                "summary": format!("{} consumes {} (manual ack after the database commit).", queue.consumer, names.resolve(queue.name)),
                "channel": { "$ref": format!("#/channels/{channel_id}") },
                "messages": message_refs,
                "bindings": { "amqp": { "ack": true, "bindingVersion": "0.3.0" } },
            }),
        );
    }

    // What the consumed queues carry: what can be retried or dead-lettered.
    let consumed: Map<String, Value> = consumed_queues()
        .flat_map(|q| q.message_types())
        .map(|t| {
            let id = t.to_string();
            (
                id.clone(),
                json!({ "$ref": format!("#/components/messages/{id}") }),
            )
        })
        .collect();
    let queue_binding = |name: String| {
        json!({ "amqp": {
        "is": "queue",
        "queue": { "name": name, "durable": true, "exclusive": false, "autoDelete": false, "vhost": "/" },
        "bindingVersion": "0.3.0",
    } })
    };
    channels.insert(
        format!("queue.{DEAD_LETTERS}"),
        json!({
            "address": names.dead_letters(),
            "description": format!(
                "The deployment's one dead-letter queue, shared by every work queue: bound to the `{}` exchange under each consumed queue's full name, it receives the consumers' own dead letters (bodies untouched, the reason in x-error-* headers, the queue in `{ORIGIN_QUEUE_HEADER}` (logical name) and `x-queue` (full name)) and the broker's (rejected, delivery limit: the queue in `x-death`). No service consumes it: `airline dlq drain` moves it into the dead-letter store, recording each dead letter under its origin queue.",
                names.resolve(DEAD_LETTER_EXCHANGE),
            ),
            "messages": consumed.clone(),
            "bindings": queue_binding(names.dead_letters()),
        }),
    );
    channels.insert(
        RETRY_EXCHANGE.to_owned(),
        json!({
            "address": null,
            "description": format!(
                "Deliveries waiting to be retried: published by the failing consumer to the `{}` headers exchange with routing key = the full name of the work queue to come back to and the header `{RETRY_TIER_HEADER}` naming the delay (`1000ms`). Each distinct delay of the retry policies is one shared quorum queue `{}.<ms>ms` (bound with x-match all on that header; per-message expiration = the delay ±20%); on expiry it dead-letters the message through the default exchange under its routing key, back to its work queue.",
                names.resolve(RETRY_EXCHANGE),
                names.resolve(RETRY_EXCHANGE),
            ),
            "messages": consumed,
            "bindings": { "amqp": { "is": "routingKey", "exchange": exchange(RETRY_EXCHANGE, "headers"), "bindingVersion": "0.3.0" } },
        }),
    );

    json!({
        "asyncapi": "3.0.0",
        "info": {
            "title": "Airline booking pipeline",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Commands and events of the booking saga on RabbitMQ. Generated from the airline-contracts crate; do not edit by hand (UPDATE_CONTRACTS=1 cargo test -p airline-contracts). Names carry the prefix `airline.` (AIRLINE_PREFIX). AMQP properties: message_id (UUID, de-duplication key), type (`name.vN`), correlation_id (booking id), timestamp, app_id (producing service), content_type application/json, delivery_mode 2. Headers: x-causation-id, traceparent.",
        },
        "defaultContentType": "application/json",
        "servers": {
            "local": { "host": "127.0.0.1:5672", "protocol": "amqp", "protocolVersion": "0.9.1", "description": "RabbitMQ, vhost /" },
        },
        "channels": channels,
        "operations": operations,
        "components": { "messages": messages },
    })
}

fn headers_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "x-causation-id": { "type": "string", "format": "uuid", "description": "The message_id of the message whose handling produced this one." },
            "traceparent": { "type": "string", "description": "W3C trace context." },
        },
    })
}

/// Renders a JSON value as block-style YAML. Strings are written in JSON's
/// double-quoted form, which YAML reads the same, so no escaping rule is invented here.
#[must_use]
pub fn to_yaml(value: &Value) -> String {
    let mut out = String::new();
    write_block(&mut out, value, 0);
    out
}

fn scalar(value: &Value) -> Option<String> {
    match value {
        Value::Object(m) if m.is_empty() => Some("{}".into()),
        Value::Array(a) if a.is_empty() => Some("[]".into()),
        Value::Object(_) | Value::Array(_) => None,
        other => Some(other.to_string()),
    }
}

fn key(k: &str) -> String {
    let plain = k
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '$' || c == '_')
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || "$_.-/".contains(c));
    if plain {
        k.to_owned()
    } else {
        Value::String(k.to_owned()).to_string()
    }
}

fn write_block(out: &mut String, value: &Value, indent: usize) {
    let pad = " ".repeat(indent);
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                match scalar(v) {
                    Some(s) => out.push_str(&format!("{pad}{}: {s}\n", key(k))),
                    None => {
                        out.push_str(&format!("{pad}{}:\n", key(k)));
                        write_block(out, v, indent + 2);
                    }
                }
            }
        }
        Value::Array(items) => {
            for item in items {
                match scalar(item) {
                    Some(s) => out.push_str(&format!("{pad}- {s}\n")),
                    None => {
                        let mut nested = String::new();
                        write_block(&mut nested, item, indent + 2);
                        out.push_str(&pad);
                        out.push_str("- ");
                        out.push_str(&nested[indent + 2..]);
                    }
                }
            }
        }
        other => {
            out.push_str(&pad);
            out.push_str(&scalar(other).unwrap_or_default());
            out.push('\n');
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_nests_maps_and_lists() {
        let yaml = to_yaml(&json!({
            "a": { "b": "c d", "e": [1, { "f": true, "g": null }], "h": {} },
            "weird key": [],
        }));
        assert_eq!(
            yaml,
            "a:\n  b: \"c d\"\n  e:\n    - 1\n    - f: true\n      g: null\n  h: {}\n\"weird key\": []\n"
        );
    }

    #[test]
    fn every_message_has_a_channel_and_a_schema_naming_its_fields() {
        let doc = asyncapi();
        for t in Message::TYPES {
            assert!(doc["channels"][t.name].is_object(), "{}", t.name);
            let payload = &doc["components"]["messages"][t.to_string()]["payload"];
            assert!(payload["properties"]["bookingId"].is_object(), "{}", t.name);
        }
    }

    #[test]
    fn the_shared_dead_letter_queue_and_the_retry_exchange_have_channels() {
        let doc = asyncapi();
        let channels = doc["channels"].as_object().expect("channels");
        assert_eq!(
            doc["channels"]["queue.dead-letters"]["address"],
            "airline.dead-letters"
        );
        assert_eq!(
            doc["channels"]["retry"]["bindings"]["amqp"]["exchange"]["type"],
            "headers"
        );
        // No per-queue DLQ: the booking DLQ is the one queue named `.dlq`.
        let dlqs: Vec<_> = channels.keys().filter(|k| k.ends_with(".dlq")).collect();
        assert_eq!(dlqs, ["queue.booking.dlq"]);
    }
}
