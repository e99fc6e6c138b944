"""Where documents live: the object store (claim checks), crop packs, the PostgreSQL repository,
its migrations (``sql/``) and full-text search."""
