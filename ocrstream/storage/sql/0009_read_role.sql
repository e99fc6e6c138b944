-- The read-only role of the query API (`ocrstream run api`, services/core/db.py create_read_pool):
-- NOLOGIN, SELECT on every table of this schema, now and later (default privileges of the
-- migrating user). Created only when the migrating user may create roles (the embedded stack's
-- superuser can); otherwise a NOTICE, and an administrator creates it with these statements.
-- Roles are cluster-wide: a second database of the same cluster finds it and only grants.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'ocrstream_read') THEN
        IF (SELECT rolsuper OR rolcreaterole FROM pg_roles WHERE rolname = current_user) THEN
            BEGIN
                CREATE ROLE ocrstream_read NOLOGIN;
            EXCEPTION WHEN duplicate_object THEN NULL;  -- created meanwhile by another database
            END;
        ELSE
            RAISE NOTICE 'role ocrstream_read not created (% may not create roles): the query API '
                'falls back to read-only transactions as the store user', current_user;
            RETURN;
        END IF;
    END IF;
    EXECUTE format('GRANT USAGE ON SCHEMA %I TO ocrstream_read', current_schema());
    EXECUTE format('GRANT SELECT ON ALL TABLES IN SCHEMA %I TO ocrstream_read', current_schema());
    EXECUTE format('ALTER DEFAULT PRIVILEGES IN SCHEMA %I GRANT SELECT ON TABLES TO ocrstream_read',
                   current_schema());
END
$$;
