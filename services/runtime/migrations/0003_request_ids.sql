-- The x-request-id of the HTTP request a flow began with, published as a header
-- of every message the flow sends.
ALTER TABLE messaging.outbox ADD COLUMN IF NOT EXISTS request_id text;
