//! Bad messages are dead-lettered at once with their reason; the consumer goes on.

use airline_contracts::Message;
use airline_contracts::messages::SeatReserved;
use airline_runtime::broker::{Envelope, properties};
use lapin::types::AMQPValue;
use uuid::Uuid;

use crate::helpers::{TestApp, spawn_app};

fn header(message: &lapin::message::BasicGetMessage, name: &str) -> String {
    match message
        .delivery
        .properties
        .headers()
        .as_ref()
        .and_then(|h| h.inner().get(name).cloned())
    {
        Some(AMQPValue::LongString(s)) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

fn raw(app: &TestApp, message_id: Option<&str>, message_type: &str, body: &[u8]) -> Envelope {
    let mut props = properties(
        message_id.unwrap_or(""),
        message_type,
        None,
        "upstream",
        None,
        None,
    );
    if message_id.is_none() {
        props = lapin::BasicProperties::default().with_type(message_type.into());
    }
    Envelope {
        exchange: app.names.resolve("events"),
        routing_key: "booking.requested".into(),
        properties: props,
        body: body.to_vec(),
    }
}

#[tokio::test]
async fn undecodable_messages_are_dead_lettered_with_their_reason_and_bookings_go_on() {
    let app = spawn_app().await;
    let flight = app.create_flight(5).await;
    let id = Uuid::now_v7().to_string();
    let missing_field = format!(
        r#"{{"bookingId":"{}","customerId":"c","paymentToken":"tok_visa","requestedAt":"2026-01-01T00:00:00Z"}}"#,
        Uuid::now_v7()
    );
    let cases: Vec<(Envelope, &str, &str)> = vec![
        (
            raw(&app, Some(&id), "booking.requested.v1", b"{not json"),
            "invalid-body",
            "not a valid",
        ),
        (
            raw(&app, Some(&id), "booking.exploded.v1", b"{}"),
            "unknown-type",
            "booking.exploded.v1",
        ),
        (
            raw(&app, Some(&id), "booking.requested.v7", b"{}"),
            "unsupported-version",
            "v7",
        ),
        (
            raw(
                &app,
                Some(&id),
                "booking.requested.v1",
                missing_field.as_bytes(),
            ),
            "invalid-body",
            "outboundFlightId",
        ),
        (
            raw(&app, None, "booking.requested.v1", b"{}"),
            "missing-message-id",
            "message_id",
        ),
        (
            Envelope {
                properties: properties(&id, "booking.requested.v1", None, "upstream", None, None)
                    .with_content_type("text/plain".into()),
                ..raw(&app, Some(&id), "booking.requested.v1", b"hello")
            },
            "wrong-content-type",
            "text/plain",
        ),
        (
            raw(
                &app,
                Some(&id),
                "booking.requested.v1",
                &vec![b' '; 10 * 1024 * 1024],
            ),
            "body-too-large",
            "exceeds the limit",
        ),
    ];

    for (envelope, kind, mentions) in cases {
        app.publish(std::slice::from_ref(&envelope)).await;
        let dead = app.dead_letter("booking.requested").await;

        assert_eq!(header(&dead, "x-error-kind"), kind);
        assert!(
            header(&dead, "x-error").contains(mentions),
            "{kind}: {}",
            header(&dead, "x-error")
        );
        assert_eq!(header(&dead, "x-service"), "booking");
        assert_eq!(header(&dead, "x-original-routing-key"), "booking.requested");
        assert_eq!(
            header(&dead, "x-original-exchange"),
            app.names.resolve("events")
        );
        assert!(!header(&dead, "x-first-failure-at").is_empty());
        assert_eq!(dead.delivery.data, envelope.body, "the body is untouched");
    }

    let booking = app.book(flight, "cust-after-poison", "tok_visa").await;
    assert_eq!(app.settled(booking).await["status"], "CONFIRMED");
}

#[tokio::test]
async fn a_reply_for_a_booking_that_does_not_exist_is_dead_lettered() {
    let app = spawn_app().await;
    let ghost = Uuid::now_v7();
    let reply = Message::SeatReserved(SeatReserved {
        booking_id: ghost,
        flight_id: Uuid::now_v7(),
        ticket_price: 100,
        ticket_currency: "EUR".into(),
    });

    app.publish(&[app.envelope(&reply, &Uuid::now_v7().to_string())])
        .await;
    let dead = app.dead_letter("flight.seat-reserved").await;

    assert_eq!(header(&dead, "x-error-kind"), "rejected");
    assert!(header(&dead, "x-error").contains(&ghost.to_string()));
    assert_eq!(header(&dead, "x-booking-id"), ghost.to_string());
}
