-- Dead-letter replays (ocrstream dlq replay): how often a document was replayed, and when last.
ALTER TABLE documents ADD COLUMN replays integer NOT NULL DEFAULT 0;
ALTER TABLE documents ADD COLUMN replayed_at timestamptz;
CREATE INDEX documents_error_idx ON documents (error_stage, error_type) WHERE status = 'failed';
