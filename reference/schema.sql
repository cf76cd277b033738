-- namedpiper schema: the eight columns of the original README, plus rejected lines.
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

-- Every line the collector could not store, with its raw bytes and the reason, so nothing is dropped silently.
CREATE TABLE IF NOT EXISTS logs_rejected (
    received_at         TIMESTAMPTZ       NOT NULL DEFAULT now(),
    reason              TEXT              NOT NULL,
    raw                 BYTEA             NOT NULL
);

-- How far a collector's journal is committed: rows and this offset change in one transaction, so after a
-- crash the collector replays exactly the bytes whose rows are not in the database (exactly-once).
CREATE TABLE IF NOT EXISTS np_collector_offsets (
    journal_id          TEXT              PRIMARY KEY,
    committed           BIGINT            NOT NULL,
    updated_at          TIMESTAMPTZ       NOT NULL DEFAULT now()
);
