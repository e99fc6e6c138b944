-- The live recognition model (`ocrstream model promote SHA`, ocrstream/storage/models.py): every
-- promotion is a row, the newest one is live; recognize stages run with
-- OCRSTREAM_FOLLOW_PROMOTED_MODEL poll it and switch between batches. documents.model: the model
-- that read the document (the recognized event's recognizer.model).
CREATE TABLE model_promotions (
    id          bigserial PRIMARY KEY,
    sha256      text NOT NULL CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    model_id    text NOT NULL,
    promoted_at timestamptz NOT NULL DEFAULT now(),
    promoted_by text,
    gate_passed boolean NOT NULL,
    forced      boolean NOT NULL DEFAULT false
);
ALTER TABLE documents ADD COLUMN model text;
