#!/bin/sh
# Runs once when the postgres container creates its database (/docker-entrypoint-initdb.d):
# the read-only group role of the query API and its login role. The store's migration
# 0009_read_role (ocrstream/storage/sql/) grants ocrstream_read SELECT on every table; 0013_review
# grants ocrstream_review (the query API's review routes: storing corrections) what it needs.
set -eu
psql -v ON_ERROR_STOP=1 -v api_password="$POSTGRES_API_PASSWORD" -v review_password="$POSTGRES_REVIEW_PASSWORD" \
     --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" <<'SQL'
CREATE ROLE ocrstream_read NOLOGIN;
CREATE ROLE ocrstream_api LOGIN PASSWORD :'api_password' IN ROLE ocrstream_read;
CREATE ROLE ocrstream_review NOLOGIN;
CREATE ROLE ocrstream_reviewer LOGIN PASSWORD :'review_password' IN ROLE ocrstream_review;
SQL
