-- The messaging runtime's tables, shared by every service in the database:
-- the inbox de-duplicates deliveries per consumer; the outbox holds messages written
-- in the same transaction as a handler's effects until the relay has published them.
CREATE TABLE IF NOT EXISTS messaging.inbox (
    consumer    text        NOT NULL,
    message_id  text        NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now(),
    -- Deliveries of the same message after the first: recognised and ignored.
    duplicates  integer     NOT NULL DEFAULT 0,
    PRIMARY KEY (consumer, message_id)
);

CREATE TABLE IF NOT EXISTS messaging.outbox (
    id             bigserial   PRIMARY KEY,
    producer       text        NOT NULL,
    message_id     uuid        NOT NULL UNIQUE,
    exchange       text        NOT NULL,
    routing_key    text        NOT NULL,
    message_type   text        NOT NULL,
    correlation_id uuid,
    causation_id   text,
    traceparent    text,
    body           bytea       NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX IF NOT EXISTS outbox_producer_id ON messaging.outbox (producer, id);
