//! Why a message died: AMQP properties and headers as JSON, the failure read from
//! them, the group a failure belongs to and the key that recognises a dead letter
//! drained twice.

use lapin::BasicProperties;
use lapin::types::{AMQPValue, FieldTable};
use serde_json::{Value, json};
use time::OffsetDateTime;

/// An AMQP header value as JSON (byte strings as UTF-8 where they are).
#[must_use]
pub fn amqp_to_json(value: &AMQPValue) -> Value {
    match value {
        AMQPValue::Boolean(b) => json!(b),
        AMQPValue::ShortShortInt(n) => json!(n),
        AMQPValue::ShortShortUInt(n) => json!(n),
        AMQPValue::ShortInt(n) => json!(n),
        AMQPValue::ShortUInt(n) => json!(n),
        AMQPValue::LongInt(n) => json!(n),
        AMQPValue::LongUInt(n) => json!(n),
        AMQPValue::LongLongInt(n) => json!(n),
        AMQPValue::Float(n) => json!(n),
        AMQPValue::Double(n) => json!(n),
        AMQPValue::DecimalValue(d) => json!({ "scale": d.scale, "value": d.value }),
        AMQPValue::ShortString(s) => json!(s.as_str()),
        AMQPValue::LongString(s) => json!(String::from_utf8_lossy(s.as_bytes())),
        AMQPValue::FieldArray(a) => Value::Array(a.as_slice().iter().map(amqp_to_json).collect()),
        AMQPValue::Timestamp(t) => json!(t),
        AMQPValue::FieldTable(t) => table_to_json(t),
        AMQPValue::ByteArray(b) => json!(String::from_utf8_lossy(b.as_slice())),
        AMQPValue::Void => Value::Null,
    }
}

/// A header table as a JSON object (keys sorted).
#[must_use]
pub fn table_to_json(table: &FieldTable) -> Value {
    Value::Object(
        table
            .inner()
            .iter()
            .map(|(k, v)| (k.as_str().to_owned(), amqp_to_json(v)))
            .collect(),
    )
}

/// The AMQP properties other than headers, as JSON.
#[must_use]
pub fn properties_to_json(p: &BasicProperties) -> Value {
    let mut out = serde_json::Map::new();
    let mut put = |k: &str, v: Option<String>| {
        if let Some(v) = v {
            out.insert(k.to_owned(), json!(v));
        }
    };
    put(
        "content_type",
        p.content_type().as_ref().map(|s| s.to_string()),
    );
    put(
        "content_encoding",
        p.content_encoding().as_ref().map(|s| s.to_string()),
    );
    put("message_id", p.message_id().as_ref().map(|s| s.to_string()));
    put("type", p.kind().as_ref().map(|s| s.to_string()));
    put(
        "correlation_id",
        p.correlation_id().as_ref().map(|s| s.to_string()),
    );
    put("app_id", p.app_id().as_ref().map(|s| s.to_string()));
    put("user_id", p.user_id().as_ref().map(|s| s.to_string()));
    put("reply_to", p.reply_to().as_ref().map(|s| s.to_string()));
    put("expiration", p.expiration().as_ref().map(|s| s.to_string()));
    put("delivery_mode", p.delivery_mode().map(|m| m.to_string()));
    put("timestamp", p.timestamp().map(|t| t.to_string()));
    Value::Object(out)
}

/// Why a message died, read from its headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Explanation {
    /// `x-error-kind`, or `broker-<reason>` when the broker dead-lettered it, or
    /// `parked` for a saga in the booking DLQ.
    pub kind: String,
    /// What went wrong, for a person.
    pub error: String,
    /// When it failed (RFC 3339), where known.
    pub failed_at: Option<String>,
    /// The exchange it was first published to (broker name; '' = default).
    pub exchange: String,
    /// Its first routing key.
    pub routing_key: String,
}

fn text_of(headers: &Value, key: &str) -> Option<String> {
    headers.get(key)?.as_str().map(str::to_owned)
}

/// Explains a dead letter from its headers (as JSON), its body and where the DLQ got
/// it from (`delivered_exchange`/`delivered_routing_key`).
#[must_use]
pub fn explain(
    queue: &str,
    headers: &Value,
    body: &[u8],
    delivered_exchange: &str,
    delivered_routing_key: &str,
) -> Explanation {
    let death = headers
        .get("x-death")
        .and_then(Value::as_array)
        .and_then(|a| a.first());
    let death_text = |k: &str| death.and_then(|d| d.get(k)).and_then(Value::as_str);
    let exchange = text_of(headers, "x-original-exchange")
        .or_else(|| death_text("exchange").map(str::to_owned))
        .unwrap_or_else(|| delivered_exchange.to_owned());
    let routing_key = text_of(headers, "x-original-routing-key")
        .or_else(|| {
            death
                .and_then(|d| d.get("routing-keys"))
                .and_then(Value::as_array)
                .and_then(|a| a.first())
                .and_then(Value::as_str)
                .map(str::to_owned)
        })
        .unwrap_or_else(|| delivered_routing_key.to_owned());
    if let Some(kind) = text_of(headers, "x-error-kind") {
        return Explanation {
            kind,
            error: text_of(headers, "x-error").unwrap_or_default(),
            failed_at: text_of(headers, "x-last-failure-at"),
            exchange,
            routing_key,
        };
    }
    if let Some(reason) = death_text("reason") {
        let count = death.and_then(|d| d.get("count")).and_then(Value::as_i64);
        let from = death_text("queue").unwrap_or(queue);
        return Explanation {
            kind: format!("broker-{reason}"),
            error: format!(
                "dead-lettered by the broker from {from} ({reason}{})",
                count.map(|n| format!(", {n} time(s)")).unwrap_or_default()
            ),
            failed_at: death
                .and_then(|d| d.get("time"))
                .and_then(Value::as_i64)
                .and_then(|t| OffsetDateTime::from_unix_timestamp(t).ok())
                .and_then(|t| {
                    t.format(&time::format_description::well_known::Rfc3339)
                        .ok()
                }),
            exchange,
            routing_key,
        };
    }
    let parked: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    if let Some(reason) = parked.get("reason").and_then(Value::as_str) {
        let stuck = parked.get("stuckIn").and_then(Value::as_str).unwrap_or("?");
        return Explanation {
            kind: "parked".into(),
            error: format!("saga parked: {reason} (stuck in {stuck})"),
            failed_at: parked
                .get("parkedAt")
                .and_then(Value::as_str)
                .map(str::to_owned),
            exchange,
            routing_key,
        };
    }
    Explanation {
        kind: "unknown".into(),
        error: "no failure headers".into(),
        failed_at: None,
        exchange,
        routing_key,
    }
}

/// The error text with what varies between occurrences of one failure (numbers,
/// ids, hex) replaced by `#`, so that they group together.
#[must_use]
pub fn normalise(error: &str) -> String {
    let mut out = String::with_capacity(error.len());
    let mut run = String::new();
    let flush = |run: &mut String, out: &mut String| {
        if run.chars().any(|c| c.is_ascii_digit()) {
            out.push('#');
        } else {
            out.push_str(run);
        }
        run.clear();
    };
    for c in error.chars() {
        if c.is_ascii_hexdigit() || (c == '-' && !run.is_empty()) {
            run.push(c);
        } else {
            // A run glued to a word ("v1", "tok_abc12") is part of that word.
            flush(&mut run, &mut out);
            out.push(c);
        }
    }
    flush(&mut run, &mut out);
    out
}

/// The group of a failure: message type, error kind and normalised error text.
#[must_use]
pub fn group_of(message_type: Option<&str>, kind: &str, error: &str) -> String {
    let mut hash = airline_runtime::sha256_hex(&[
        message_type.unwrap_or("").as_bytes(),
        kind.as_bytes(),
        normalise(error).as_bytes(),
    ]);
    hash.truncate(10);
    hash
}

/// The key that recognises one dead letter drained twice: its queue, properties,
/// headers (without the redelivery counter the broker adds, nor `x-origin-queue`,
/// which `airline migrate` adds to what it moves from an old DLQ: the queue is in
/// the key already) and body.
#[must_use]
pub fn drain_key(queue: &str, properties: &Value, headers: &Value, body: &[u8]) -> String {
    let mut headers = headers.clone();
    if let Some(h) = headers.as_object_mut() {
        h.remove("x-delivery-count");
        h.remove(airline_contracts::topology::ORIGIN_QUEUE_HEADER);
    }
    airline_runtime::sha256_hex(&[
        queue.as_bytes(),
        properties.to_string().as_bytes(),
        headers.to_string().as_bytes(),
        body,
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_that_differ_only_in_ids_and_numbers_share_a_group() {
        let a = "gave up after 4 attempts: payment provider unavailable: tok_flaky failed call 2 of 2 for a1000000-0000-4000-8000-000000000001";
        let b = "gave up after 4 attempts: payment provider unavailable: tok_flaky failed call 1 of 2 for 9c0ffee0-1111-4000-8000-00000000beef";
        assert_eq!(normalise(a), normalise(b));
        assert_eq!(
            group_of(Some("payment.collect.v1"), "retries-exhausted", a),
            group_of(Some("payment.collect.v1"), "retries-exhausted", b)
        );
        assert_ne!(
            group_of(Some("payment.collect.v1"), "retries-exhausted", a),
            group_of(Some("payment.collect.v1"), "rejected", a)
        );
        assert_ne!(
            group_of(
                Some("payment.collect.v1"),
                "invalid-body",
                "missing field `amount`"
            ),
            group_of(
                Some("payment.collect.v1"),
                "invalid-body",
                "missing field `currency`"
            )
        );
    }

    #[test]
    fn the_failure_is_read_from_our_headers_then_the_brokers_then_a_parked_body() {
        let ours = json!({
            "x-error-kind": "rejected", "x-error": "no booking",
            "x-original-exchange": "airline.commands", "x-original-routing-key": "payment.collect",
            "x-last-failure-at": "2026-11-27T10:00:00Z",
        });
        let e = explain(
            "airline.payment.collect",
            &ours,
            b"{}",
            "airline.dead-letter",
            "airline.payment.collect",
        );
        assert_eq!(
            (e.kind.as_str(), e.error.as_str()),
            ("rejected", "no booking")
        );
        assert_eq!(
            (e.exchange.as_str(), e.routing_key.as_str()),
            ("airline.commands", "payment.collect")
        );
        assert_eq!(e.failed_at.as_deref(), Some("2026-11-27T10:00:00Z"));

        let broker = json!({ "x-death": [{
            "reason": "delivery_limit", "queue": "airline.payment.collect", "count": 1,
            "exchange": "airline.commands", "routing-keys": ["payment.collect"], "time": 1_800_000_000,
        }]});
        let e = explain(
            "airline.payment.collect",
            &broker,
            b"{}",
            "airline.dead-letter",
            "airline.payment.collect",
        );
        assert_eq!(e.kind, "broker-delivery_limit");
        assert!(e.error.contains("airline.payment.collect"), "{}", e.error);
        assert_eq!(e.routing_key, "payment.collect");
        assert!(e.failed_at.is_some());

        let parked = br#"{"reason":"COMPENSATION_FAILED","stuckIn":"REFUNDING_PAYMENT"}"#;
        let e = explain(
            "airline.booking.dlq",
            &json!({}),
            parked,
            "airline.events",
            "booking.parked",
        );
        assert_eq!(e.kind, "parked");
        assert!(e.error.contains("REFUNDING_PAYMENT"));
        assert_eq!(e.routing_key, "booking.parked");
    }

    #[test]
    fn a_redelivered_dead_letter_has_the_same_drain_key() {
        let props = json!({"message_id": "m1"});
        let first = json!({"x-error": "boom"});
        let again = json!({"x-error": "boom", "x-delivery-count": 1, "x-origin-queue": "q"});
        assert_eq!(
            drain_key("q", &props, &first, b"body"),
            drain_key("q", &props, &again, b"body")
        );
        assert_ne!(
            drain_key("q", &props, &first, b"body"),
            drain_key("other", &props, &first, b"body")
        );
    }
}
