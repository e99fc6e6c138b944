"""Shared stage plumbing: settings, events, errors, Kafka stage loop, metrics, object store.

Every stage (ingest, preprocess, recognize, store) is built from these pieces and nothing
else is shared between stages, so a stage's own logic stays in its ``stage.py``.
"""
