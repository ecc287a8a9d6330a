-- The relation a selection's table name holds now and its columns as pgoutput sends
-- them (live, not generated, in attnum order): one row per column, none when the name
-- holds no relation. $1: schema, $2: table. Run after LOCK TABLE in the selection's
-- transaction, so it describes the table the selection reads (selectionGuard).
SELECT c.oid, a.attname, a.atttypid, a.atttypmod, pg_catalog.format_type(a.atttypid, a.atttypmod)
FROM pg_catalog.pg_class c
JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) c.relnamespace
JOIN pg_catalog.pg_attribute a ON a.attrelid OPERATOR(pg_catalog.=) c.oid
                              AND a.attnum OPERATOR(pg_catalog.>) 0
                              AND NOT a.attisdropped
                              AND a.attgenerated OPERATOR(pg_catalog.=) ''
WHERE n.nspname OPERATOR(pg_catalog.=) $1 AND c.relname OPERATOR(pg_catalog.=) $2
ORDER BY a.attnum
