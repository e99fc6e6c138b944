-- Templated documents searchable by their fields' words (issue 27): a template field's region holds only
-- its value ("13.2"), so "haemoglobin" found nothing. A region's searchable text is now its text with,
-- for a template field, the field's name (underscores as spaces) before it and its unit after it
-- ("haemoglobin 13.2 g/dL"); free-text regions search their text as before. Both indexes (full text and
-- trigram) are rebuilt over it; ocrstream/storage/search.py reads search_text.
CREATE FUNCTION ocrstream_search_text(region_text text, field jsonb) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN coalesce(replace(field ->> 'name', '_', ' ') || ' ', '') || coalesce(region_text, '')
           || coalesce(' ' || (field ->> 'unit'), '');
ALTER TABLE regions DROP COLUMN tsv;  -- drops regions_tsv_idx with it
DROP INDEX regions_trgm_idx;
ALTER TABLE regions ADD COLUMN search_text text
    GENERATED ALWAYS AS (ocrstream_search_text(text, field)) STORED;
ALTER TABLE regions ADD COLUMN tsv tsvector
    GENERATED ALWAYS AS (to_tsvector('simple'::regconfig, ocrstream_search_text(text, field))) STORED;
CREATE INDEX regions_tsv_idx ON regions USING gin (tsv);
CREATE INDEX regions_trgm_idx ON regions USING gin (search_text gin_trgm_ops);
