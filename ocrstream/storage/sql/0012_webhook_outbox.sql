-- Completion webhooks (issue 25): one row per (document, version) whose submission named a
-- callback URL, written in the store's transaction with the result (the outbox); the sender
-- (ocrstream/streaming/webhooks.py) claims due rows, POSTs them signed, and marks them.
CREATE TABLE IF NOT EXISTS webhook_outbox (
    webhook_id      text PRIMARY KEY,                 -- the webhook-id header: the receiver's de-duplication key
    document_id     text NOT NULL,
    version         text NOT NULL,                    -- the document version (recognized or failed timestamp)
    url             text NOT NULL,
    payload         text NOT NULL,                    -- the JSON body, as signed
    status          text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    created_at      timestamptz NOT NULL DEFAULT now(),
    delivered_at    timestamptz,
    last_status     integer,                          -- the receiver's last HTTP status, if it answered
    last_error      text
);
CREATE INDEX IF NOT EXISTS webhook_outbox_due ON webhook_outbox (next_attempt_at) WHERE status = 'pending';
CREATE INDEX IF NOT EXISTS webhook_outbox_document ON webhook_outbox (document_id);
