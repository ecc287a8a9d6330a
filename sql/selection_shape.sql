-- The relation a selection's table name holds now and its columns as pgoutput sends
-- them (live, not generated, in attnum order): one row per column, none when the name
-- holds no relation. $1: schema, $2: table. Run after LOCK TABLE in the selection's
-- transaction, so it describes the table the selection reads (selectionGuard).
SELECT c.oid, a.attname, a.atttypid, a.atttypmod, pg_catalog.format_type(a.atttypid, a.atttypmod)
FROM pg_catalog.pg_class c
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = ''
WHERE n.nspname = $1 AND c.relname = $2
ORDER BY a.attnum
