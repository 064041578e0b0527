-- The audit log: entries (leaf bytes), every perfect subtree node (level 0 = leaf hashes), the
-- head (number of entries; appends compare-and-set it), and signed checkpoints.

CREATE TABLE audit_entries (
    seq          BIGINT PRIMARY KEY,
    merchant_id  TEXT,
    time         BIGINT NOT NULL,
    leaf         BYTEA NOT NULL
);

CREATE TABLE audit_nodes (
    level  INTEGER NOT NULL,
    idx    BIGINT NOT NULL,
    hash   BYTEA NOT NULL,
    PRIMARY KEY (level, idx)
);

CREATE TABLE audit_head (
    singleton  INTEGER PRIMARY KEY CHECK (singleton = 1),
    size       BIGINT NOT NULL
);

INSERT INTO audit_head (singleton, size) VALUES (1, 0);

CREATE TABLE audit_checkpoints (
    tree_size   BIGINT PRIMARY KEY,
    root        BYTEA NOT NULL,
    note        TEXT NOT NULL,
    created_at  BIGINT NOT NULL
);
