-- Versioned results (`ocrstream reprocess`, ocrstream/ops/reprocess.py): a document read again keeps
-- its earlier results. documents.result_version numbers the current one (1, 2, ...); when the store
-- replaces a done result by a new one it snapshots the old (the query API's document JSON) into
-- document_versions. Verified text is carried to the new regions by box overlap
-- (services/store/stage.py); a verified region without a match stays, renamed kept-<n>-<region_id>.
ALTER TABLE documents ADD COLUMN result_version integer NOT NULL DEFAULT 1;
CREATE TABLE document_versions (
    document_id    text NOT NULL REFERENCES documents ON DELETE CASCADE,
    result_version integer NOT NULL,
    model          text,
    stored_at      timestamptz,
    result         jsonb NOT NULL,
    PRIMARY KEY (document_id, result_version)
);
