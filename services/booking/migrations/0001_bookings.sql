-- A booking is its saga: state and version here, every transition in saga_history.
CREATE TABLE booking.bookings (
    id                 uuid        PRIMARY KEY,
    customer_id        text        NOT NULL,
    outbound_flight_id uuid        NOT NULL,
    -- Kept only while the saga may still need to charge; cleared at the end.
    payment_token      text,
    state              text        NOT NULL,
    version            integer     NOT NULL,
    failure_reason     text,
    booking_reference  text        UNIQUE,
    ticket_price       bigint,
    ticket_currency    text,
    charge_id          text,
    checked_in         boolean     NOT NULL DEFAULT false,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX bookings_customer ON booking.bookings (customer_id, id);
CREATE INDEX bookings_state ON booking.bookings (state, updated_at);

CREATE TABLE booking.saga_history (
    id                 bigserial   PRIMARY KEY,
    booking_id         uuid        NOT NULL REFERENCES booking.bookings (id),
    version            integer     NOT NULL,
    from_state         text,
    to_state           text        NOT NULL,
    trigger_type       text        NOT NULL,
    trigger_message_id text,
    note               text        NOT NULL,
    at                 timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX saga_history_booking ON booking.saga_history (booking_id, id);
