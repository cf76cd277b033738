-- namedpiper schema: the eight columns of the log events, plus rejected lines.
-- Idempotent: every statement may run again on an existing database.

CREATE TABLE IF NOT EXISTS logs (
    time                TIMESTAMPTZ       NOT NULL,
    application_name    TEXT              NOT NULL,
    environment_name    TEXT              NOT NULL,
    log_event           TEXT              NOT NULL,
    trace_id            TEXT              NOT NULL,
    file_path           TEXT              NOT NULL,
    host_ip             TEXT              NOT NULL,
    data                JSONB             NULL
);

CREATE INDEX IF NOT EXISTS logs_time_idx ON logs (time DESC);

-- Every line the collector could not store, with the reason, so nothing is dropped silently. raw keeps the
-- line's first --reject-keep-bytes (64 KiB), raw_length its full length and raw_sha256 the SHA-256 of all of it
-- (NULL for a line longer than --max-line-bytes, which is never whole in memory; NULL in rows from before).
CREATE TABLE IF NOT EXISTS logs_rejected (
    received_at         TIMESTAMPTZ       NOT NULL DEFAULT now(),
    reason              TEXT              NOT NULL,
    raw                 BYTEA             NOT NULL,
    raw_length          BIGINT            NULL,
    raw_sha256          BYTEA             NULL
);

-- The harness ties rejected lines to a run by received_at (they have lost their bookkeeping): through this index,
-- not a scan of every run's rejections. Rejections are rare, so the index costs the collector next to nothing.
CREATE INDEX IF NOT EXISTS logs_rejected_received_at_idx ON logs_rejected (received_at);

-- The two columns came later: add them to a table created before. Checked first, because ALTER TABLE wants the
-- table's owner and an exclusive lock even when the column is there.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = 'logs_rejected'::regclass
                   AND attname = 'raw_length' AND NOT attisdropped) THEN
        ALTER TABLE logs_rejected ADD COLUMN raw_length BIGINT NULL;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = 'logs_rejected'::regclass
                   AND attname = 'raw_sha256' AND NOT attisdropped) THEN
        ALTER TABLE logs_rejected ADD COLUMN raw_sha256 BYTEA NULL;
    END IF;
END
$$;

-- How far a collector's journal is committed: rows and this offset change in one transaction, so after a
-- crash the collector replays exactly the bytes whose rows are not in the database (exactly-once).
CREATE TABLE IF NOT EXISTS np_collector_offsets (
    journal_id          TEXT              PRIMARY KEY,
    committed           BIGINT            NOT NULL,
    updated_at          TIMESTAMPTZ       NOT NULL DEFAULT now()
);
