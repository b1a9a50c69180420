-- The x-request-id of the request that started the booking, so that messages the
-- deadline sweeper sends carry it too.
ALTER TABLE booking.bookings ADD COLUMN request_id text;
