-- One row per (event, channel): the unique constraint is what makes a redelivered fan-out
-- create nothing new. Admin sends have no event (event_id NULL never conflicts).
CREATE TABLE notifications (
    id                   uuid PRIMARY KEY,
    event_id             uuid,
    event_type           text,
    template             text NOT NULL,
    channel              text NOT NULL CHECK (channel IN ('email', 'sms', 'push')),
    user_id              uuid,
    recipient            text NOT NULL,
    context              jsonb NOT NULL,
    trace_id             text,
    created_by           uuid,
    status               text NOT NULL DEFAULT 'queued'
                         CHECK (status IN ('queued', 'sending', 'sent', 'failed', 'dead')),
    attempts             integer NOT NULL DEFAULT 0,
    last_error           text,
    provider_message_id  text,
    -- While status = 'sending': when the current attempt began and until when its worker owns it.
    claimed_at           timestamptz,
    lease_until          timestamptz,
    created_at           timestamptz NOT NULL DEFAULT now(),
    updated_at           timestamptz NOT NULL DEFAULT now(),
    sent_at              timestamptz,
    CONSTRAINT notifications_event_channel_key UNIQUE (event_id, channel)
);

CREATE INDEX notifications_user_created_idx ON notifications (user_id, created_at DESC, id);
CREATE INDEX notifications_created_idx ON notifications (created_at DESC, id);
CREATE INDEX notifications_status_idx ON notifications (status) WHERE status IN ('queued', 'sending');

-- Every try at a notification, including one cut short by a dying worker.
CREATE TABLE notification_attempts (
    id                   bigserial PRIMARY KEY,
    notification_id      uuid NOT NULL REFERENCES notifications (id) ON DELETE CASCADE,
    attempt              integer NOT NULL,
    started_at           timestamptz NOT NULL,
    finished_at          timestamptz NOT NULL DEFAULT now(),
    outcome              text NOT NULL
                         CHECK (outcome IN ('sent', 'transient_error', 'permanent_error', 'interrupted')),
    error                text,
    provider_message_id  text,
    CONSTRAINT notification_attempts_number_key UNIQUE (notification_id, attempt)
);
