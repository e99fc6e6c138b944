-- Post-processing (services/store/postprocess.py): raw and corrected text both kept, typed
-- field values, validation and the review flag.
ALTER TABLE regions ADD COLUMN raw_text text;
ALTER TABLE regions ADD COLUMN value jsonb;
ALTER TABLE regions ADD COLUMN valid boolean;
ALTER TABLE regions ADD COLUMN reason text;
ALTER TABLE regions ADD COLUMN needs_review boolean NOT NULL DEFAULT false;
ALTER TABLE documents ADD COLUMN needs_review boolean NOT NULL DEFAULT false;
ALTER TABLE documents ADD COLUMN fields jsonb;
CREATE INDEX documents_review_idx ON documents (needs_review) WHERE needs_review;
