-- An event its producer hands on itself (the workers' orders.process fans out the status change
-- it has just written, issue 11): the relay leaves it alone until held_until, and publishes it
-- after that only if the producer has not marked it published by then. NULL: the relay's at once.
-- Expand-only: a relay of the previous release ignores the column and publishes a held event
-- too, which its consumers, idempotent, turn into nothing new.
ALTER TABLE outbox_events ADD COLUMN held_until timestamptz;
