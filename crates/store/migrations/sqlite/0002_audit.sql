-- The audit log: entries (leaf bytes), every perfect subtree node (level 0 = leaf hashes), the
-- head (number of entries; appends compare-and-set it), and signed checkpoints.

CREATE TABLE audit_entries (
    seq          INTEGER PRIMARY KEY NOT NULL,
    merchant_id  TEXT,
    time         INTEGER NOT NULL,
    leaf         BLOB NOT NULL
) STRICT;

CREATE TABLE audit_nodes (
    level  INTEGER NOT NULL,
    idx    INTEGER NOT NULL,
    hash   BLOB NOT NULL,
    PRIMARY KEY (level, idx)
) STRICT, WITHOUT ROWID;

CREATE TABLE audit_head (
    singleton  INTEGER PRIMARY KEY NOT NULL CHECK (singleton = 1),
    size       INTEGER NOT NULL
) STRICT;

INSERT INTO audit_head (singleton, size) VALUES (1, 0);

CREATE TABLE audit_checkpoints (
    tree_size   INTEGER PRIMARY KEY NOT NULL,
    root        BLOB NOT NULL,
    note        TEXT NOT NULL,
    created_at  INTEGER NOT NULL
) STRICT;
