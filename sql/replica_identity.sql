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
--
-- A partitioned table has no rows: PostgreSQL logs each row's old key by the replica
-- identity of the leaf partition that holds it (and rejects the leaf's UPDATEs and
-- DELETEs when that leaf has none), whatever the partitioned table's own identity,
-- which ALTER TABLE does not pass on to partitions. pg_publication_tables lists the
-- leaves themselves, unless the publication publishes via the partitioned table
-- (publish_via_partition_root): then it lists that table, and its leaves (every
-- level) are checked here too. Such a leaf's DELETEs and key-changing UPDATEs are
-- published under the partitioned table with the leaf's old key only, so a leaf whose
-- identity (its replica identity index, or primary key) lacks a column of the
-- partitioned table's key sends old rows without that key: published_as names the
-- partitioned table, key_missing the first such column ('' for none; a leaf with
-- REPLICA IDENTITY FULL sends every column). partial_old: the partitioned table has
-- REPLICA IDENTITY FULL and the leaf does not, so pgoutput marks the leaf's old keys
-- as whole old rows ('O') of the partitioned table, their other columns NULL.
-- partitioned: the row is a partitioned table (listed via the root), whose own
-- replica identity PostgreSQL never checks: without a key its partitions' changes
-- are captured, but get no record ID.
WITH listed AS (
    SELECT pt.schemaname, pt.tablename, c.oid, c.relreplident
    FROM pg_catalog.pg_publication p
    JOIN pg_catalog.pg_publication_tables pt ON pt.pubname OPERATOR(pg_catalog.=) p.pubname
    JOIN pg_catalog.pg_namespace n ON n.nspname OPERATOR(pg_catalog.=) pt.schemaname
    JOIN pg_catalog.pg_class c ON c.relnamespace OPERATOR(pg_catalog.=) n.oid AND c.relname OPERATOR(pg_catalog.=) pt.tablename
    WHERE p.pubname OPERATOR(pg_catalog.=) $1
      AND (p.pubupdate OR p.pubdelete)
), tables AS (
    SELECT schemaname, tablename, oid, NULL::pg_catalog.oid AS root_oid, '' AS published_as, ''::pg_catalog."char" AS root_replident
    FROM listed
    UNION ALL
    SELECT ln.nspname, lc.relname, lc.oid, listed.oid, pg_catalog.format('%s.%s', listed.schemaname, listed.tablename),
           listed.relreplident
    FROM listed
    CROSS JOIN LATERAL pg_catalog.pg_partition_tree(listed.oid) tree
    JOIN pg_catalog.pg_class lc ON lc.oid OPERATOR(pg_catalog.=) tree.relid
    JOIN pg_catalog.pg_namespace ln ON ln.oid OPERATOR(pg_catalog.=) lc.relnamespace
    WHERE tree.isleaf AND tree.relid OPERATOR(pg_catalog.<>) listed.oid
), keys AS (
    -- The key of each table involved, as dbsync takes it (sql/table_columns.sql): the
    -- key columns (the first indnkeyatts of indkey) of its replica identity index when
    -- it has one, else of its primary key. A leaf whose identity is USING INDEX of an
    -- index that is gone, or NOTHING, has no usable identity and is reported for that
    -- alone (its key_missing is not reported).
    SELECT k.indrelid AS relid, a.attnum, a.attname, a.attgenerated
    FROM (SELECT DISTINCT ON (i.indrelid) i.indrelid, (i.indkey::pg_catalog.int2[])[0:i.indnkeyatts OPERATOR(pg_catalog.-) 1] AS attnums
          FROM pg_catalog.pg_index i
          WHERE (i.indisprimary OR i.indisreplident)
            AND i.indrelid OPERATOR(pg_catalog.=) ANY (SELECT oid FROM tables UNION ALL SELECT root_oid FROM tables)
          ORDER BY i.indrelid, i.indisreplident DESC) k
    JOIN pg_catalog.pg_attribute a ON a.attrelid OPERATOR(pg_catalog.=) k.indrelid AND a.attnum OPERATOR(pg_catalog.=) ANY (k.attnums)
    WHERE NOT a.attisdropped
), published AS (
    SELECT t.schemaname, t.tablename, t.oid, t.root_oid, t.published_as, c.relreplident,
           c.relkind OPERATOR(pg_catalog.=) 'p' AS partitioned,
           (t.root_oid IS NOT NULL AND t.root_replident OPERATOR(pg_catalog.=) 'f' AND c.relreplident OPERATOR(pg_catalog.<>) 'f') AS partial_old,
           EXISTS (SELECT 1 FROM pg_catalog.pg_index i
                   WHERE i.indrelid OPERATOR(pg_catalog.=) c.oid AND i.indisprimary) AS has_pk,
           EXISTS (SELECT 1 FROM pg_catalog.pg_index i
                   WHERE i.indrelid OPERATOR(pg_catalog.=) c.oid AND i.indisreplident) AS has_replident_index
    FROM tables t
    JOIN pg_catalog.pg_class c ON c.oid OPERATOR(pg_catalog.=) t.oid
), checked AS (
    SELECT published.*,
           (relreplident OPERATOR(pg_catalog.=) 'n'
            OR (relreplident OPERATOR(pg_catalog.=) 'd' AND NOT has_pk)
            OR (relreplident OPERATOR(pg_catalog.=) 'i' AND NOT has_replident_index)) AS no_identity,
           COALESCE((SELECT k.attname::pg_catalog.text FROM keys k
                     WHERE k.relid OPERATOR(pg_catalog.=) published.oid AND k.attgenerated OPERATOR(pg_catalog.<>) ''
                     ORDER BY k.attnum LIMIT 1), '') AS generated_key,
           CASE WHEN root_oid IS NULL OR relreplident OPERATOR(pg_catalog.=) 'f' THEN '' ELSE
           COALESCE((SELECT rk.attname::pg_catalog.text FROM keys rk
                     WHERE rk.relid OPERATOR(pg_catalog.=) published.root_oid
                       AND NOT EXISTS (SELECT 1 FROM keys lk
                                       WHERE lk.relid OPERATOR(pg_catalog.=) published.oid AND lk.attname OPERATOR(pg_catalog.=) rk.attname)
                     ORDER BY rk.attnum LIMIT 1), '') END AS key_missing
    FROM published
)
SELECT schemaname, tablename, relreplident::pg_catalog.text, has_pk,
       CASE WHEN no_identity THEN '' ELSE generated_key END,
       CASE WHEN no_identity OR generated_key OPERATOR(pg_catalog.<>) '' THEN '' ELSE published_as END,
       CASE WHEN no_identity OR generated_key OPERATOR(pg_catalog.<>) '' THEN '' ELSE key_missing END,
       NOT no_identity AND generated_key OPERATOR(pg_catalog.=) '' AND key_missing OPERATOR(pg_catalog.=) '' AND partial_old,
       partitioned
FROM checked
WHERE no_identity OR generated_key OPERATOR(pg_catalog.<>) '' OR key_missing OPERATOR(pg_catalog.<>) '' OR partial_old
ORDER BY 1, 2
