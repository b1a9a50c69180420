-- Bookings the gateway accepted, written in the same transaction as their
-- booking.requested outbox row, so a booking reads PENDING from the moment the
-- client gets its 202, before the saga has started.
CREATE TABLE gateway.booking_requests (
    id                 uuid        PRIMARY KEY,
    customer_id        text        NOT NULL,
    outbound_flight_id uuid        NOT NULL,
    created_at         timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX booking_requests_customer ON gateway.booking_requests (customer_id, id);
