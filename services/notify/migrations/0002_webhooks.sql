-- Webhook endpoints: where an API key's clients want to hear about their bookings.
-- An endpoint belongs to the API key that created it (gateway.api_keys; no foreign
-- key, so the notify schema migrates on its own) and receives the events it
-- subscribed to about bookings made with that key (gateway.booking_requests.api_key_id).
--
-- The secret (`whsec_` + base64 of 32 random bytes) is kept as it is: the notify
-- service needs it to sign every delivery. The API returns it once, when the
-- endpoint is created, and no log line carries it.
CREATE TABLE notify.webhook_endpoints (
    id              uuid        PRIMARY KEY,
    api_key_id      uuid        NOT NULL,
    url             text        NOT NULL,
    events          text[]      NOT NULL CHECK (cardinality(events) > 0),
    secret          text        NOT NULL,
    status          text        NOT NULL DEFAULT 'enabled' CHECK (status IN ('enabled', 'disabled')),
    disabled_reason text,
    -- The first failure of the current run of failures; cleared by a success. An
    -- endpoint failing for longer than AIRLINE_WEBHOOK_DISABLE_AFTER is disabled.
    failing_since   timestamptz,
    last_success_at timestamptz,
    last_failure_at timestamptz,
    last_error      text,
    created_at      timestamptz NOT NULL DEFAULT now()
);

-- The caller's endpoints (the API), and the fan-out's lookup by owner.
CREATE INDEX webhook_endpoints_owner ON notify.webhook_endpoints (api_key_id, created_at, id);
