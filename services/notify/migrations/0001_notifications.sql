-- The notification log: one row per outcome event received from the fan-out.
CREATE TABLE notify.notifications (
    id          bigserial   PRIMARY KEY,
    event_type  text        NOT NULL,
    booking_id  uuid        NOT NULL,
    customer_id text        NOT NULL,
    payload     jsonb       NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (booking_id, event_type)
);

CREATE INDEX notifications_customer ON notify.notifications (customer_id, id);
