-- The dead-letter store: what `airline dlq drain` moved out of the broker's DLQs,
-- kept with everything needed to understand it, fix it and send it again.
CREATE TABLE IF NOT EXISTS messaging.dead_letters (
    id                 bigserial   PRIMARY KEY,
    -- sha256 over the queue, the message's properties (redelivery counters aside)
    -- and its body: a dead letter drained twice (a crash between the commit and the
    -- ack) is stored once.
    drain_key          text        NOT NULL UNIQUE,
    -- The logical name of the queue it died in (`payment.collect`, `booking.dlq`).
    queue              text        NOT NULL,
    message_id         text,
    message_type       text,
    correlation_id     text,
    -- Where it was first published (broker names; '' = the default exchange).
    original_exchange  text        NOT NULL,
    original_routing_key text      NOT NULL,
    properties         jsonb       NOT NULL,
    headers            jsonb       NOT NULL,
    body               bytea       NOT NULL,
    error_kind         text        NOT NULL,
    error              text        NOT NULL,
    -- Failures with the same type, kind and error text (numbers and ids aside)
    -- share a group.
    group_id           text        NOT NULL,
    failed_at          timestamptz,
    drained_at         timestamptz NOT NULL DEFAULT now(),
    -- stored: waiting for an operator; replayed; discarded (archived).
    status             text        NOT NULL DEFAULT 'stored'
                       CHECK (status IN ('stored', 'replayed', 'discarded')),
    -- An operator's corrected body: replays send it instead of `body`.
    edited_body        bytea,
    edited_at          timestamptz,
    edited_by          text,
    replays            integer     NOT NULL DEFAULT 0,
    replayed_at        timestamptz,
    replayed_by        text,
    replay_message_id  uuid,
    discarded_at       timestamptz,
    discarded_by       text,
    -- When it left `stored`: the retention period counts from here.
    resolved_at        timestamptz
);

CREATE INDEX IF NOT EXISTS dead_letters_status ON messaging.dead_letters (status, id);
CREATE INDEX IF NOT EXISTS dead_letters_group ON messaging.dead_letters (group_id, status);
CREATE INDEX IF NOT EXISTS dead_letters_resolved ON messaging.dead_letters (resolved_at)
    WHERE resolved_at IS NOT NULL;
