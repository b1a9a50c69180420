-- One row per confirmed booking (kind 'award'); a revocation is its own row later.
CREATE TABLE loyalty.ledger (
    id          bigserial   PRIMARY KEY,
    booking_id  uuid        NOT NULL,
    customer_id text        NOT NULL,
    points      bigint      NOT NULL,
    kind        text        NOT NULL CHECK (kind IN ('award', 'revoke')),
    created_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (booking_id, kind)
);

CREATE INDEX ledger_customer ON loyalty.ledger (customer_id);
