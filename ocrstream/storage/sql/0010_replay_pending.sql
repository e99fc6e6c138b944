-- Dead-letter replays in flight (ocrstream dlq replay): set when a replay is sent, cleared by the
-- store when the document's next outcome (done, or failed again) is stored. A replay is not sent
-- again while one is pending (unless forced).
ALTER TABLE documents ADD COLUMN replay_pending_since timestamptz;
