-- Migration 0017 (issue 25): document costs, and webhooks per API key (below).
-- What each document cost (issue 25, ocrstream/storage/usage.py): one row per stored result
-- (document, version), written in the store's transaction with it. Totals over the stages and
-- their breakdown (`stages`: the results event's `costs`), with what `ocrstream usage` groups by:
-- the API key that submitted it (the tenant; NULL without keys), the door and the template.
CREATE TABLE IF NOT EXISTS document_costs (
    document_id text NOT NULL,
    version     text NOT NULL,                -- the documents.version it belongs to
    status      text NOT NULL CHECK (status IN ('done', 'failed')),
    api_key     text,                         -- the key's name, never the key
    door        text,                         -- cli, http, kafka, bucket
    template    text,
    pages       integer NOT NULL DEFAULT 0,
    cpu_s       double precision NOT NULL DEFAULT 0,
    wall_s      double precision NOT NULL DEFAULT 0,
    bytes_in    bigint NOT NULL DEFAULT 0,
    bytes_out   bigint NOT NULL DEFAULT 0,
    stages      jsonb NOT NULL DEFAULT '[]',  -- [{stage, cpu_s, wall_s, bytes_in, bytes_out}, ...]
    stored_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (document_id, version)
);
CREATE INDEX IF NOT EXISTS document_costs_stored_at ON document_costs (stored_at);

-- Completion webhooks per API key (`ocrstream webhook add KEY URL`, ocrstream/storage/outbox.py): the
-- store sends a document's webhook here when its submission named no callback URL of its own.
CREATE TABLE IF NOT EXISTS key_webhooks (
    api_key    text PRIMARY KEY,             -- the key's name, never the key
    url        text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
