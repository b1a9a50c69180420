CREATE TABLE catalog.flights (
    id                     uuid        PRIMARY KEY,
    flight_number          integer     NOT NULL CHECK (flight_number BETWEEN 1 AND 9999),
    departure_airport_code text        NOT NULL,
    departure_airport_name text        NOT NULL,
    departure_city         text        NOT NULL,
    departure_locale       text        NOT NULL,
    departure_date         timestamptz NOT NULL,
    arrival_airport_code   text        NOT NULL,
    arrival_airport_name   text        NOT NULL,
    arrival_city           text        NOT NULL,
    arrival_locale         text        NOT NULL,
    arrival_date           timestamptz NOT NULL,
    ticket_price           bigint      NOT NULL CHECK (ticket_price > 0),
    ticket_currency        text        NOT NULL,
    seats_total            integer     NOT NULL CHECK (seats_total >= 0),
    seats_left             integer     NOT NULL CHECK (seats_left >= 0 AND seats_left <= seats_total),
    created_at             timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX flights_search
    ON catalog.flights (departure_airport_code, arrival_airport_code, departure_date, id);

-- One row per booking that asked for a seat: makes reserve and release idempotent
-- per booking, whatever the message ids.
CREATE TABLE catalog.seat_reservations (
    booking_id  uuid        PRIMARY KEY,
    flight_id   uuid        NOT NULL,
    status      text        NOT NULL CHECK (status IN ('pending', 'reserved', 'refused', 'released')),
    refusal     text,
    reserved_at timestamptz NOT NULL DEFAULT now(),
    released_at timestamptz
);

CREATE INDEX seat_reservations_flight ON catalog.seat_reservations (flight_id, status);
