-- Intrusion detection's shared counts (issue 15): what each detection point saw per actor (a
-- client, an API key, an account) in fixed windows, shared by every node. `counter` names the
-- point, the merchant and the actor (a client address or network, an API key id, an account id;
-- never an email or a card number, which are counted by keyed hash), and is gone when its window is;
-- `detection_counts` holds one row per counter and window (every observation, and how many of
-- them were distinct), `detection_items` the distinct items seen (at most a few hundred per
-- window: detection thresholds are far lower). Both are added to by one upsert whose returned
-- count decides whether this observation crossed a threshold, so exactly one observation per
-- window detects. Rows past `expires_at` are purged by a job.
CREATE TABLE detection_counts (
    counter TEXT NOT NULL,
    window_start BIGINT NOT NULL,
    hits BIGINT NOT NULL,
    distinct_items BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    PRIMARY KEY (counter, window_start)
);
CREATE INDEX detection_counts_expiry ON detection_counts (expires_at);
CREATE TABLE detection_items (
    counter TEXT NOT NULL,
    window_start BIGINT NOT NULL,
    item BYTEA NOT NULL,
    expires_at BIGINT NOT NULL,
    PRIMARY KEY (counter, window_start, item)
);
CREATE INDEX detection_items_expiry ON detection_items (expires_at);
