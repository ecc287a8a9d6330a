-- The tables whose names (and OIDs) changes of the relations $2[i].$3[i] (schema and
-- name arrays) carry through publication $1: one row per relation, in their order.
-- Under publish_via_partition_root, pgoutput publishes a partition's changes as its
-- topmost ancestor in the publication; otherwise, and for a relation that is not a
-- partition (or does not exist), the relation itself.
SELECT COALESCE(anc.nspname, r.schema), COALESCE(anc.relname, r.name)
FROM ROWS FROM (pg_catalog.unnest($2::pg_catalog.text[]), pg_catalog.unnest($3::pg_catalog.text[])) WITH ORDINALITY AS r(schema, name, ord)
LEFT JOIN LATERAL (
    SELECT n.nspname, c.relname
    FROM pg_catalog.pg_publication p,
         pg_catalog.pg_partition_ancestors(pg_catalog.to_regclass(pg_catalog.format('%I.%I', r.schema, r.name)))
             WITH ORDINALITY AS a(relid, depth)
    JOIN pg_catalog.pg_class c ON c.oid OPERATOR(pg_catalog.=) a.relid
    JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) c.relnamespace
    WHERE p.pubname OPERATOR(pg_catalog.=) $1 AND p.pubviaroot
      AND EXISTS (SELECT 1 FROM pg_catalog.pg_publication_tables pt
                  WHERE pt.pubname OPERATOR(pg_catalog.=) p.pubname
                    AND pt.schemaname OPERATOR(pg_catalog.=) n.nspname
                    AND pt.tablename OPERATOR(pg_catalog.=) c.relname)
    ORDER BY a.depth DESC
    LIMIT 1
) anc ON true
ORDER BY r.ord
