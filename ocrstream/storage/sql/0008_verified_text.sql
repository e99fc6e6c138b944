-- A person's verified transcription of a region (a reviewer's correction), the labelled lines that
-- `ocrstream model label-export --from-store` turns into training data. NULL = not reviewed.
ALTER TABLE regions ADD COLUMN verified_text text;
ALTER TABLE regions ADD COLUMN verified_at timestamptz;
CREATE INDEX regions_verified_idx ON regions (verified_at) WHERE verified_text IS NOT NULL;
