"""The event contracts: typed models of every topic's events (:mod:`.event_models`, msgspec) and
their codec, topic names and versions (:mod:`.events`). Pure data: imports no Kafka, S3 or SQL
client, so the storage layer and the stages share one definition of each event. The JSON Schemas
in ``schemas/`` are generated from these models (``python -m schemas.generate``)."""
