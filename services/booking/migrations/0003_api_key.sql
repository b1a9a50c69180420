-- The API key the booking was requested under (gateway.api_keys.id, carried by
-- booking.requested): its owner, who may cancel it and whose webhooks hear about
-- it. NULL for bookings published onto the broker by other systems. No foreign key:
-- the booking schema migrates without the gateway's.
ALTER TABLE booking.bookings ADD COLUMN IF NOT EXISTS api_key_id uuid;
