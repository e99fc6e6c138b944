-- ocrstream schema v1: documents > pages > regions. Applied once by services/store/migrate.py.
CREATE TABLE documents (
    document_id     text PRIMARY KEY,
    status          text NOT NULL CHECK (status IN ('done', 'failed')),
    source          text,
    filename        text,
    object_key      text,
    content_sha256  text,
    size_bytes      bigint,
    text            text NOT NULL DEFAULT '',
    recognizer      text,
    provider        text,
    error_stage     text,
    error_type      text,
    error_message   text,
    submitted_at    timestamptz,
    ingested_at     timestamptz,
    preprocessed_at timestamptz,
    recognized_at   timestamptz,
    stored_at       timestamptz NOT NULL DEFAULT now(),
    -- the document version this row holds (the recognized/failed event's timestamp) and when its
    -- results event was acked by the broker: a redelivered event of a published version is skipped
    version         text NOT NULL,
    published_at    timestamptz
);
CREATE INDEX documents_status_idx ON documents (status, stored_at);
CREATE INDEX documents_sha_idx ON documents (content_sha256);

CREATE TABLE pages (
    document_id text NOT NULL REFERENCES documents ON DELETE CASCADE,
    page_index  integer NOT NULL,
    width       integer NOT NULL,
    height      integer NOT NULL,
    PRIMARY KEY (document_id, page_index)
);

CREATE TABLE regions (
    document_id     text NOT NULL,
    region_id       text NOT NULL,
    page_index      integer NOT NULL,
    line_index      integer NOT NULL,
    reading_order   integer NOT NULL,
    x0 real NOT NULL, y0 real NOT NULL, x1 real NOT NULL, y1 real NOT NULL,  -- page pixels
    quad            jsonb,
    crop_key        text,
    detection_score real,
    text            text NOT NULL,
    confidence      real NOT NULL,
    PRIMARY KEY (document_id, region_id),
    FOREIGN KEY (document_id, page_index) REFERENCES pages ON DELETE CASCADE
);
