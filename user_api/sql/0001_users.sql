CREATE TABLE users (
    id                 uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    email              text NOT NULL,
    name               text NOT NULL,
    password_hash      text NOT NULL,
    role               text NOT NULL DEFAULT 'user' CHECK (role IN ('user', 'admin')),
    phone              text,
    notify_email       boolean NOT NULL DEFAULT true,
    notify_sms         boolean NOT NULL DEFAULT false,
    notify_push        boolean NOT NULL DEFAULT false,
    push_token         text,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    deleted_at         timestamptz
);

-- Emails are stored normalised; a deleted account frees its address for a new registration.
CREATE UNIQUE INDEX users_email_live_key ON users (email) WHERE deleted_at IS NULL;
CREATE INDEX users_created_at_idx ON users (created_at, id) WHERE deleted_at IS NULL;
