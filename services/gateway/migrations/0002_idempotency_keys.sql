-- Idempotency-Key on POST /v1/bookings: the first request under a key wins; a
-- repeat with the same body gets the same booking, another body gets 422. The
-- fingerprint is a SHA-256 of the request's fields, so no card token is stored.
CREATE TABLE gateway.idempotency_keys (
    key         text        PRIMARY KEY,
    fingerprint text        NOT NULL,
    booking_id  uuid        NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
