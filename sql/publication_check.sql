-- Whether a selection can work through the publication: $1 is the publication, $2/$3
-- the selected table's schema and name, $4/$5 the watermark table's. One row (none
-- when the publication does not exist): whether the publication publishes INSERTs
-- (watermarks are inserts), whether the selected table is published and its row
-- filter, whether the watermark table is, the watermark table's row filter and its
-- published columns, and whether the publication publishes partitions' changes under
-- their partitioned table (publish_via_partition_root). pg_publication_tables'
-- rowfilter and attnames columns (PostgreSQL 15) are read through to_jsonb, so that
-- older servers answer NULL instead of failing.
SELECT p.pubinsert,
       t.tablename IS NOT NULL,
       pg_catalog.to_jsonb(t) OPERATOR(pg_catalog.->>) 'rowfilter',
       w.tablename IS NOT NULL,
       pg_catalog.to_jsonb(w) OPERATOR(pg_catalog.->>) 'rowfilter',
       ARRAY(SELECT pg_catalog.jsonb_array_elements_text(COALESCE(pg_catalog.to_jsonb(w) OPERATOR(pg_catalog.->) 'attnames', '[]'))),
       p.pubviaroot
FROM pg_catalog.pg_publication p
LEFT JOIN pg_catalog.pg_publication_tables t
       ON t.pubname OPERATOR(pg_catalog.=) p.pubname
      AND t.schemaname OPERATOR(pg_catalog.=) $2
      AND t.tablename OPERATOR(pg_catalog.=) $3
LEFT JOIN pg_catalog.pg_publication_tables w
       ON w.pubname OPERATOR(pg_catalog.=) p.pubname
      AND w.schemaname OPERATOR(pg_catalog.=) $4
      AND w.tablename OPERATOR(pg_catalog.=) $5
WHERE p.pubname OPERATOR(pg_catalog.=) $1
