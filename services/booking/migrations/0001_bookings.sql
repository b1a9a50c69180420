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
    -- When the saga gives up waiting in its current state (NULL once terminal).
    deadline_at        timestamptz,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX bookings_customer ON booking.bookings (customer_id, id);
CREATE INDEX bookings_state ON booking.bookings (state, updated_at);
CREATE INDEX bookings_deadline ON booking.bookings (deadline_at) WHERE deadline_at IS NOT NULL;

CREATE TABLE booking.saga_history (
    id                 bigserial   PRIMARY KEY,
    booking_id         uuid        NOT NULL REFERENCES booking.bookings (id),
    version            integer     NOT NULL,
    from_state         text,
    to_state           text        NOT NULL,
    trigger_type       text        NOT NULL,
    trigger_message_id text,
    -- Deliveries the triggering step took (1 unless it was retried).
    step_attempts      integer     NOT NULL DEFAULT 1,
    note               text        NOT NULL,
    at                 timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX saga_history_booking ON booking.saga_history (booking_id, id);
