-- Snapshot progress of one table for one slot. $1: slot name, $2: "schema.table".
SELECT key_columns, last_key, chunks_done, rows_done, finished_at IS NOT NULL, relation_oid
FROM {{ns}}.snapshot_progress
WHERE slot_name OPERATOR(pg_catalog.=) $1 AND table_name OPERATOR(pg_catalog.=) $2
