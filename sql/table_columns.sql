-- Columns, key and replica identity of one relation, from the catalog.
-- $1: relation OID. One row per live column, in attnum order.
SELECT n.nspname,
       c.relname,
       c.relreplident::text,
       a.attname,
       a.attnum,
       a.atttypid,
       format_type(a.atttypid, a.atttypmod),
       a.atttypmod,
       a.attnotnull,
       COALESCE((SELECT k.n FROM unnest(pk.indkey) WITH ORDINALITY AS k(attnum, n)
                 WHERE k.attnum = a.attnum), 0)::int
FROM pg_catalog.pg_class c
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
LEFT JOIN pg_catalog.pg_index pk ON pk.indrelid = c.oid AND pk.indisprimary
WHERE c.oid = $1
ORDER BY a.attnum
