-- Start (or restart) a table's snapshot progress. $1: slot, $2: "schema.table",
-- $3: key columns (text[]), $4: chunk size, $5: the table's relation OID.
INSERT INTO {{ns}}.snapshot_progress AS p (slot_name, table_name, key_columns, chunk_size, relation_oid)
VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (slot_name, table_name) DO UPDATE
SET key_columns = EXCLUDED.key_columns, relation_oid = EXCLUDED.relation_oid, last_key = NULL, chunk_size = EXCLUDED.chunk_size,
    chunks_done = 0, rows_done = 0, started_at = pg_catalog.now(), updated_at = pg_catalog.now(), finished_at = NULL
