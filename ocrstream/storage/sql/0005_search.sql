-- Search (services/store/search.py): full-text search over each region's corrected text
-- (tsvector, 'simple' configuration: no stemming or stop words, OCR text is receipts, codes and
-- mixed languages) plus trigram similarity (pg_trgm, shipped with PostgreSQL's contrib) for
-- OCR-noisy words. Both GIN-indexed.
CREATE EXTENSION IF NOT EXISTS pg_trgm;
ALTER TABLE regions ADD COLUMN tsv tsvector
    GENERATED ALWAYS AS (to_tsvector('simple'::regconfig, text)) STORED;
CREATE INDEX regions_tsv_idx ON regions USING gin (tsv);
CREATE INDEX regions_trgm_idx ON regions USING gin (text gin_trgm_ops);
CREATE INDEX documents_stored_idx ON documents (stored_at);
