-- Transactional outbox: an event row is written in the same transaction as the change it
-- describes; the relay publishes it to RabbitMQ afterwards and marks it published.
CREATE TABLE outbox_events (
    id            bigserial PRIMARY KEY,
    event_id      uuid NOT NULL UNIQUE,
    event_type    text NOT NULL,
    aggregate_id  text NOT NULL,
    payload       jsonb NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    published_at  timestamptz,
    attempts      integer NOT NULL DEFAULT 0,
    last_error    text
);

CREATE INDEX outbox_events_pending_idx ON outbox_events (id) WHERE published_at IS NULL;
CREATE INDEX outbox_events_aggregate_pending_idx
    ON outbox_events (aggregate_id, id) WHERE published_at IS NULL;
