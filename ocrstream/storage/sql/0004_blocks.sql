-- Block (paragraph) of each region within its page (services/preprocess/layout.py).
ALTER TABLE regions ADD COLUMN block_index integer NOT NULL DEFAULT 0;
