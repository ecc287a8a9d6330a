-- Mark a table's snapshot finished: every chunk was delivered (snapshot_progress_chunk)
-- and the rows moved during it were read again. $1: slot, $2: "schema.table".
UPDATE {{ns}}.snapshot_progress
SET finished_at = pg_catalog.now(), updated_at = pg_catalog.now()
WHERE slot_name OPERATOR(pg_catalog.=) $1 AND table_name OPERATOR(pg_catalog.=) $2
