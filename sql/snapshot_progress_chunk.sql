-- Record a delivered chunk. $1: slot, $2: "schema.table", $3: last key (text[]; NULL
-- keeps the previous one: an empty chunk), $4: rows selected, $5: chunk size. The
-- snapshot is marked finished separately (snapshot_progress_finish), after the last
-- chunk's follow-ups.
UPDATE {{ns}}.snapshot_progress
SET last_key = COALESCE($3, last_key), rows_done = rows_done OPERATOR(pg_catalog.+) $4, chunks_done = chunks_done OPERATOR(pg_catalog.+) 1,
    chunk_size = $5, updated_at = pg_catalog.now(), finished_at = NULL
WHERE slot_name OPERATOR(pg_catalog.=) $1 AND table_name OPERATOR(pg_catalog.=) $2
