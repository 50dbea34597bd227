-- The HTTP status is the handler's choice, not a fact about the order: keys no longer store it.
-- Relaxed rather than dropped, so instances of the previous release (which still write it) keep
-- working during a rolling upgrade; a later migration may drop the column.
ALTER TABLE idempotency_keys ALTER COLUMN response_code DROP NOT NULL;
