-- Columns, key and replica identity of relations, from the catalog.
-- $1: relation OIDs (oid[]). One row per live column, by relation OID, in attnum
-- order; the first column is the relation's OID. The key is the replica
-- identity index when the table has one (REPLICA IDENTITY USING INDEX), even beside
-- a primary key: pgoutput's old-key tuples (a DELETE's, a key-changing UPDATE's) hold
-- its columns, so only it makes every key change and delete visible. Otherwise it is
-- the primary key. Its key columns are the index's first indnkeyatts columns, in key
-- order: the columns a covering index INCLUDEs follow them in indkey but are not key
-- columns, and pgoutput neither flags them in RELATION messages nor sends them in
-- old-key tuples. (indkey::int2[] keeps int2vector's subscripts, which start at 0;
-- the slice's start at 1.) key_position is the column's 1-based position among the
-- key columns (0: not a key column, INCLUDEd or not); a column an index lists twice
-- ((code, code, id): PostgreSQL accepts it) counts once, at its first place, so the
-- positions have no gaps. generated: a generated column
-- (attgenerated <> ''), which PostgreSQL 15's pgoutput leaves out of RELATION
-- messages and tuples. dropped_before: how many dropped columns have a lower attnum
-- (attribute numbers are never reused or shifted, so where it is 0 a column's place
-- among the columns a RELATION message lists is the number of live columns before it,
-- also in messages written before columns were renamed or added).
WITH rel AS (
    SELECT c.oid, n.nspname, c.relname, c.relreplident
    FROM pg_catalog.pg_class c
    JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) c.relnamespace
    WHERE c.oid OPERATOR(pg_catalog.=) ANY ($1::pg_catalog.oid[])
)
SELECT rel.oid,
       rel.nspname,
       rel.relname,
       rel.relreplident::pg_catalog.text,
       a.attname,
       a.attnum,
       a.atttypid,
       a.atttypmod,
       a.attnotnull,
       COALESCE((SELECT k.pos
                 FROM (SELECT u.attnum, pg_catalog.row_number() OVER (ORDER BY pg_catalog.min(u.ord)) AS pos
                       FROM pg_catalog.unnest(key.attnums) WITH ORDINALITY AS u(attnum, ord)
                       GROUP BY u.attnum) AS k
                 WHERE k.attnum OPERATOR(pg_catalog.=) a.attnum), 0),
       a.attgenerated OPERATOR(pg_catalog.<>) '',
       (SELECT pg_catalog.count(*)
        FROM pg_catalog.pg_attribute d
        WHERE d.attrelid OPERATOR(pg_catalog.=) rel.oid
          AND d.attnum OPERATOR(pg_catalog.>) 0
          AND d.attnum OPERATOR(pg_catalog.<) a.attnum
          AND d.attisdropped)
FROM rel
LEFT JOIN LATERAL (
    SELECT (i.indkey::pg_catalog.int2[])[0:i.indnkeyatts OPERATOR(pg_catalog.-) 1] AS attnums
    FROM pg_catalog.pg_index i
    WHERE i.indrelid OPERATOR(pg_catalog.=) rel.oid AND (i.indisprimary OR i.indisreplident)
    ORDER BY i.indisreplident DESC
    LIMIT 1
) key ON true
JOIN pg_catalog.pg_attribute a ON a.attrelid OPERATOR(pg_catalog.=) rel.oid
                              AND a.attnum OPERATOR(pg_catalog.>) 0
                              AND NOT a.attisdropped
ORDER BY rel.oid, a.attnum
