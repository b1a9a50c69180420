-- API keys: stored as the SHA-256 of the key (a key is 256 random bits, so a fast
-- hash is enough; nothing here can give a key back), with a short prefix to tell
-- keys apart in listings. Revoked keys stay for the record.
CREATE TABLE gateway.api_keys (
    id          uuid        PRIMARY KEY,
    name        text        NOT NULL UNIQUE,
    prefix      text        NOT NULL,
    key_hash    text        NOT NULL UNIQUE,
    scope       text        NOT NULL CHECK (scope IN ('client', 'admin')),
    rate        integer     NOT NULL CHECK (rate > 0),
    burst       integer     NOT NULL CHECK (burst > 0),
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz
);

-- The key a booking was made with: its webhooks hear about it. NULL for bookings
-- published straight onto the broker by an upstream system.
ALTER TABLE gateway.booking_requests ADD COLUMN api_key_id uuid REFERENCES gateway.api_keys (id);

-- Idempotency keys belong to the API key that sent them, and cover cancellations
-- too (operation 'cancel', whose booking_id is the booking cancelled).
ALTER TABLE gateway.idempotency_keys ADD COLUMN api_key_id uuid REFERENCES gateway.api_keys (id);
ALTER TABLE gateway.idempotency_keys ADD COLUMN operation text NOT NULL DEFAULT 'book';
ALTER TABLE gateway.idempotency_keys DROP CONSTRAINT idempotency_keys_pkey;
CREATE UNIQUE INDEX idempotency_keys_scope ON gateway.idempotency_keys
    (COALESCE(api_key_id, '00000000-0000-0000-0000-000000000000'::uuid), operation, key);
CREATE INDEX idempotency_keys_age ON gateway.idempotency_keys (created_at);

-- Cancellations the gateway accepted: one per booking, written with the
-- booking.cancel outbox row, so a second request gets 409 at once.
CREATE TABLE gateway.cancel_requests (
    booking_id   uuid        PRIMARY KEY,
    api_key_id   uuid        REFERENCES gateway.api_keys (id),
    requested_at timestamptz NOT NULL DEFAULT now()
);
