-- At most one charge and one refund per booking, whatever the message ids.
CREATE TABLE payment.payments (
    booking_id   uuid        PRIMARY KEY,
    customer_id  text,
    -- 'cancelled': a refund came before any collect (the saga gave up waiting), so
    -- a collect arriving later must not charge.
    status       text        NOT NULL CHECK (status IN ('pending', 'captured', 'declined', 'refunded', 'cancelled')),
    amount       bigint      NOT NULL CHECK (amount >= 0),
    currency     text,
    charge_id    text,
    receipt_url  text,
    decline_code text,
    failure      text,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE payment.refunds (
    booking_id uuid        PRIMARY KEY,
    refund_id  text,
    charge_id  text,
    amount     bigint      NOT NULL CHECK (amount >= 0),
    created_at timestamptz NOT NULL DEFAULT now()
);
