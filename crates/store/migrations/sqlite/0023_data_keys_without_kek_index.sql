-- Every new customer's data key is written in the vault's group commit beside its first token;
-- each index on `vault_data_keys` is one more entry (and its share of the write-ahead log) per
-- new customer. The index by key-encryption key version served only operator commands: the
-- rewrap walks the keys in id order from where it stopped (`kek_version < $1 AND id > $2 ORDER
-- BY id`, on the primary key), so it still reads each key once; retiring a version and counting
-- keys per version (`strongroom keys status`) read the whole table once instead, which an
-- operator's command can afford.
DROP INDEX vault_data_keys_by_kek;
