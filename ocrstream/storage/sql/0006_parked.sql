-- Dead letters the store could not record as a failed row (after sanitising): kept whole so
-- nothing is dropped; counted by ocrstream_dead_letters_parked_total.
CREATE TABLE parked_events (
    id          bigserial PRIMARY KEY,
    topic       text NOT NULL,
    part        integer NOT NULL,
    "offset"    bigint NOT NULL,
    payload     bytea NOT NULL,
    error       text NOT NULL,
    parked_at   timestamptz NOT NULL DEFAULT now(),
    UNIQUE (topic, part, "offset")
);
