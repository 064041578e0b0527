-- Shared rate limits: one row per limited key (a limit's name, the merchant and the actor, such
-- as a client address or an API key id) holding its theoretical arrival time (`tat`, unix ms) of
-- the generic cell rate algorithm. A request is allowed when pushing `tat` on by one emission
-- interval keeps it within one period of now; the upsert that pushes it is conditional on that,
-- so its affected-row count decides and no two nodes can both take the last unit of an
-- allowance. A row whose `tat` has passed holds a full allowance, the same as no row, and is
-- purged by a job.
CREATE TABLE rate_limits (
    limit_key TEXT PRIMARY KEY,
    tat BIGINT NOT NULL
);
CREATE INDEX rate_limits_tat ON rate_limits (tat);
