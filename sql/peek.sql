-- One poll: pgoutput rows of the slot up to $2 (an LSN; transactions committing at or
-- after it are not returned) and at most about $3 rows (checked at transaction
-- boundaries; NULL: no bound). $4 is the publication_names option: a comma-separated
-- list of quoted identifiers.
SELECT lsn, xid, data
FROM pg_logical_slot_peek_binary_changes($1, $2::pg_lsn, $3::int,
    'proto_version', '1',
    'publication_names', $4,
    'messages', 'true')
