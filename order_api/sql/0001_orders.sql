-- Orders with exact money (NUMERIC), their lines, their status history and idempotency keys.
-- Limits mirror order_api/schemas.py so a bug in validation cannot store nonsense.
CREATE TABLE orders (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id     uuid NOT NULL,
    status      text NOT NULL DEFAULT 'PENDING'
                CHECK (status IN ('PENDING', 'CONFIRMED', 'SHIPPED', 'DELIVERED', 'CANCELLED', 'REJECTED')),
    currency    char(3) NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    total       numeric(14, 2) NOT NULL CHECK (total >= 0),
    -- The user's contact data at ordering time, copied into every event of the order so the
    -- workers never call user_api back.
    contact     jsonb NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX orders_user_created_idx ON orders (user_id, created_at DESC, id DESC);
CREATE INDEX orders_created_idx ON orders (created_at DESC, id DESC);
CREATE INDEX orders_status_created_idx ON orders (status, created_at DESC, id DESC);

CREATE TABLE order_items (
    order_id    uuid NOT NULL REFERENCES orders (id) ON DELETE CASCADE,
    position    smallint NOT NULL CHECK (position >= 0),
    sku         text NOT NULL,
    name        text NOT NULL,
    quantity    integer NOT NULL CHECK (quantity BETWEEN 1 AND 1000),
    unit_price  numeric(12, 2) NOT NULL CHECK (unit_price > 0),
    line_total  numeric(14, 2) NOT NULL CHECK (line_total = unit_price * quantity),
    PRIMARY KEY (order_id, position),
    UNIQUE (order_id, sku)
);

CREATE TABLE order_status_history (
    id           bigserial PRIMARY KEY,
    order_id     uuid NOT NULL REFERENCES orders (id) ON DELETE CASCADE,
    from_status  text,
    to_status    text NOT NULL,
    changed_by   text NOT NULL,
    reason       text,
    changed_at   timestamptz NOT NULL DEFAULT clock_timestamp()
);

CREATE INDEX order_status_history_order_idx ON order_status_history (order_id, id);

-- A POST with an Idempotency-Key stores the response it produced; the same key and body from
-- the same user within the TTL gets that response back instead of a second order.
CREATE TABLE idempotency_keys (
    user_id        uuid NOT NULL,
    idem_key       text NOT NULL,
    request_hash   text NOT NULL,
    order_id       uuid NOT NULL REFERENCES orders (id) ON DELETE CASCADE,
    response_code  smallint NOT NULL,
    response_body  text NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, idem_key)
);

CREATE INDEX idempotency_keys_created_idx ON idempotency_keys (created_at);
