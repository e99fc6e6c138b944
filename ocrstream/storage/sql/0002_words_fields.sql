-- Word boxes per region, template field specs, and the template a document named at ingest.
ALTER TABLE regions ADD COLUMN words jsonb NOT NULL DEFAULT '[]'::jsonb;
ALTER TABLE regions ADD COLUMN field jsonb;
ALTER TABLE documents ADD COLUMN template text;
