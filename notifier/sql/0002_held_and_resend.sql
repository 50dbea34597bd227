-- A notification that meets a template error is held, not failed: it waits for a template set
-- other than the one it failed with (held_fingerprint) and is released once one is loaded.
ALTER TABLE notifications DROP CONSTRAINT notifications_status_check;
ALTER TABLE notifications ADD CONSTRAINT notifications_status_check
    CHECK (status IN ('queued', 'sending', 'sent', 'failed', 'dead', 'held'));

ALTER TABLE notifications
    -- sha256 of the template set whose rendering held the row.
    ADD COLUMN held_fingerprint      text,
    -- When a process last enqueued the held row for another try; a sweep sends another deliver
    -- message only once this is old enough (the first one may have been lost).
    ADD COLUMN release_requested_at  timestamptz,
    -- An admin's resend of a failed or dead row: how many, the last one, by whom (NULL: the CLI).
    ADD COLUMN resends               integer NOT NULL DEFAULT 0,
    ADD COLUMN resent_at             timestamptz,
    ADD COLUMN resent_by             uuid;

CREATE INDEX notifications_held_idx ON notifications (created_at, id) WHERE status = 'held';
CREATE INDEX notifications_template_created_idx ON notifications (template, created_at);

ALTER TABLE notification_attempts DROP CONSTRAINT notification_attempts_outcome_check;
ALTER TABLE notification_attempts ADD CONSTRAINT notification_attempts_outcome_check
    CHECK (outcome IN ('sent', 'transient_error', 'permanent_error', 'interrupted', 'held'));
