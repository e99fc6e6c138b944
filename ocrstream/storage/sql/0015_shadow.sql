-- Shadow evaluation (`ocrstream run recognize --shadow SHA`, services/recognize/shadow.py): a candidate
-- model reads the live regions in a consumer group of its own; its readings land here, never in the
-- results. `ocrstream model compare SHA` joins them with the live readings (regions) and verified text.
CREATE TABLE model_shadows (
    sha256         text PRIMARY KEY CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    model_id       text NOT NULL,
    consumer_group text NOT NULL,
    started_at     timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE shadow_readings (
    sha256      text NOT NULL,
    document_id text NOT NULL,
    region_id   text NOT NULL,
    text        text NOT NULL,
    confidence  real NOT NULL,
    cpu_ms      real NOT NULL,   -- the batch's process CPU time spent reading, divided by its lines
    read_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (sha256, document_id, region_id)
);
