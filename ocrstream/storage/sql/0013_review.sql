-- Review (services/store/review.py, the query API's /v1/review, /v1/regions/{id}/verify and the /review page).
-- * regions.id: a stable number for one region row (the review API's {id}); regions.char_probs: the
--   recogniser's per-character probabilities of raw_text (the page marks the uncertain characters);
--   regions.verified_by: the API key name of who verified the text (verified_text/verified_at: 0008).
-- * region_corrections: earlier verified texts of a region, kept when a later correction replaces one
--   (newest OCRSTREAM_REVIEW_HISTORY_MAX per region; older ones are dropped by the verify transaction).
-- * ocrstream_review: the role the query API verifies as (NOLOGIN; reads the tables, may update only
--   the three verified columns of regions and write region_corrections). Created like ocrstream_read
--   (0009) when the migrating user may create roles; otherwise a NOTICE.
ALTER TABLE regions ADD COLUMN id bigserial;
CREATE UNIQUE INDEX regions_id_idx ON regions (id);
ALTER TABLE regions ADD COLUMN char_probs jsonb;
ALTER TABLE regions ADD COLUMN verified_by text;
CREATE INDEX regions_review_idx ON regions (document_id) WHERE needs_review AND verified_text IS NULL;

CREATE TABLE region_corrections (
    id          bigserial PRIMARY KEY,
    document_id text NOT NULL,
    region_id   text NOT NULL,
    text        text NOT NULL,
    verified_by text,
    verified_at timestamptz,
    replaced_by text,
    replaced_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX region_corrections_region_idx ON region_corrections (document_id, region_id, id);

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'ocrstream_review') THEN
        IF (SELECT rolsuper OR rolcreaterole FROM pg_roles WHERE rolname = current_user) THEN
            BEGIN
                CREATE ROLE ocrstream_review NOLOGIN;
            EXCEPTION WHEN duplicate_object THEN NULL;
            END;
        ELSE
            RAISE NOTICE 'role ocrstream_review not created (% may not create roles): the query API '
                'verifies as the store user', current_user;
            RETURN;
        END IF;
    END IF;
    EXECUTE format('GRANT USAGE ON SCHEMA %I TO ocrstream_review', current_schema());
    EXECUTE format('GRANT SELECT ON ALL TABLES IN SCHEMA %I TO ocrstream_review', current_schema());
    GRANT UPDATE (verified_text, verified_at, verified_by) ON regions TO ocrstream_review;
    GRANT SELECT, INSERT, DELETE ON region_corrections TO ocrstream_review;
    GRANT USAGE ON SEQUENCE region_corrections_id_seq TO ocrstream_review;
END
$$;
