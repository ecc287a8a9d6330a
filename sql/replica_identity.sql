-- Published tables of publication $1 whose UPDATEs and DELETEs cannot be captured (and,
-- on the primary, fail with 55000 "does not have a replica identity"): REPLICA IDENTITY
-- NOTHING, DEFAULT without a primary key, or USING INDEX whose index is gone. Then the
-- tables whose replica identity is usable but whose key holds a generated column
-- (generated_key: its first such column by attnum, '' for none). The key is the one
-- sql/table_columns.sql gives dbsync: the key columns (the first indnkeyatts of
-- indkey, not the columns a covering index INCLUDEs) of the replica identity index
-- when there is one, else of the primary key. PostgreSQL 15's pgoutput never sends
-- generated columns, so such a table's changes carry no whole key and get no record
-- ID; a generated column the index only INCLUDEs is no key column and harms nothing.
-- Only publications that publish updates or deletes are concerned.
WITH published AS (
    SELECT pt.schemaname, pt.tablename, c.oid, c.relreplident,
           EXISTS (SELECT 1 FROM pg_catalog.pg_index i
                   WHERE i.indrelid = c.oid AND i.indisprimary) AS has_pk,
           EXISTS (SELECT 1 FROM pg_catalog.pg_index i
                   WHERE i.indrelid = c.oid AND i.indisreplident) AS has_replident_index
    FROM pg_catalog.pg_publication p
    JOIN pg_catalog.pg_publication_tables pt ON pt.pubname = p.pubname
    JOIN pg_catalog.pg_namespace n ON n.nspname = pt.schemaname
    JOIN pg_catalog.pg_class c ON c.relnamespace = n.oid AND c.relname = pt.tablename
    WHERE p.pubname = $1
      AND (p.pubupdate OR p.pubdelete)
), checked AS (
    SELECT published.*,
           (relreplident = 'n'
            OR (relreplident = 'd' AND NOT has_pk)
            OR (relreplident = 'i' AND NOT has_replident_index)) AS no_identity,
           COALESCE((SELECT a.attname::text
                     FROM (SELECT (i.indkey::int2[])[0:i.indnkeyatts - 1] AS attnums
                           FROM pg_catalog.pg_index i
                           WHERE i.indrelid = published.oid AND (i.indisprimary OR i.indisreplident)
                           ORDER BY i.indisreplident DESC
                           LIMIT 1) k
                     JOIN pg_catalog.pg_attribute a
                       ON a.attrelid = published.oid AND a.attnum = ANY (k.attnums)
                     WHERE a.attgenerated <> '' AND NOT a.attisdropped
                     ORDER BY a.attnum
                     LIMIT 1), '') AS generated_key
    FROM published
)
SELECT schemaname, tablename, relreplident::text, has_pk,
       CASE WHEN no_identity THEN '' ELSE generated_key END
FROM checked
WHERE no_identity OR generated_key <> ''
ORDER BY 1, 2
