-- column_types.sql for a table's description from the catalog (describeOID: TableInfo,
-- selections), with its key's comparison operators. $1: type OIDs, $2: type
-- modifiers, $3: whether each is a key column, in column order. format_type gives the
-- SQL name with and without the modifier. The decoding path's descriptions use
-- column_types.sql, which is planned and run several times faster.
--
-- For key columns (NULL for the others: the lookup costs a fraction of a millisecond
-- per column), the last two columns are the schemas and names of the comparison operators of the
-- type's default B-tree operator class, for strategies 3 (=), 5 (>), 2 (<=) and 4 (>=)
-- in that order (NULL: the type has none, so its values have no order a keyset scan
-- could follow). They are the operators ORDER BY and the key's index use; selections
-- name them with their schemas (keyOperators), since a bare operator is looked up on
-- the search_path, where a schema before theirs may hold an exact match. A domain's
-- class is its base type's (followed through domains over domains, typbasetype). As
-- PostgreSQL's GetDefaultOpClass, the class for the type itself comes first, then one
-- for a type it is binary coercible to (varchar: text_ops) or a pseudo-type it
-- matches (anyenum, anyarray, anyrange, anymultirange, record).
WITH x AS (
    SELECT *
    FROM ROWS FROM (pg_catalog.unnest($1::pg_catalog.oid[]), pg_catalog.unnest($2::pg_catalog.int4[]), pg_catalog.unnest($3::pg_catalog.bool[]))
         WITH ORDINALITY AS x(typid, typmod, iskey, ord)
), keyops AS (
    SELECT x.ord, ops.schemas, ops.names
    FROM x
    CROSS JOIN LATERAL (
    WITH RECURSIVE dom(typid, depth) AS (
        SELECT x.typid, 0
        UNION ALL
        SELECT t.typbasetype, dom.depth OPERATOR(pg_catalog.+) 1
        FROM dom JOIN pg_catalog.pg_type t ON t.oid OPERATOR(pg_catalog.=) dom.typid
        WHERE t.typtype OPERATOR(pg_catalog.=) 'd' AND dom.depth OPERATOR(pg_catalog.<) 64
    ), base AS (
        SELECT b.oid, b.typtype, b.typsubscript
        FROM dom JOIN pg_catalog.pg_type b ON b.oid OPERATOR(pg_catalog.=) dom.typid
        ORDER BY dom.depth DESC
        LIMIT 1
    ), opc AS (
        SELECT oc.opcmethod, oc.opcfamily, oc.opcintype
        FROM base, pg_catalog.pg_opclass oc
        JOIN pg_catalog.pg_am am ON am.oid OPERATOR(pg_catalog.=) oc.opcmethod
        WHERE am.amname OPERATOR(pg_catalog.=) 'btree' AND oc.opcdefault
          AND (oc.opcintype OPERATOR(pg_catalog.=) base.oid
               OR EXISTS (SELECT FROM pg_catalog.pg_cast c
                          WHERE c.castsource OPERATOR(pg_catalog.=) base.oid
                            AND c.casttarget OPERATOR(pg_catalog.=) oc.opcintype
                            AND c.castmethod OPERATOR(pg_catalog.=) 'b'
                            AND c.castcontext OPERATOR(pg_catalog.=) 'i')
               OR (oc.opcintype OPERATOR(pg_catalog.=) 'pg_catalog.anyenum'::pg_catalog.regtype AND base.typtype OPERATOR(pg_catalog.=) 'e')
               OR (oc.opcintype OPERATOR(pg_catalog.=) 'pg_catalog.anyarray'::pg_catalog.regtype
                   AND base.typsubscript OPERATOR(pg_catalog.=) 'pg_catalog.array_subscript_handler'::pg_catalog.regproc)
               OR (oc.opcintype OPERATOR(pg_catalog.=) 'pg_catalog.anyrange'::pg_catalog.regtype AND base.typtype OPERATOR(pg_catalog.=) 'r')
               OR (oc.opcintype OPERATOR(pg_catalog.=) 'pg_catalog.anymultirange'::pg_catalog.regtype AND base.typtype OPERATOR(pg_catalog.=) 'm')
               OR (oc.opcintype OPERATOR(pg_catalog.=) 'pg_catalog.record'::pg_catalog.regtype AND base.typtype OPERATOR(pg_catalog.=) 'c'))
        ORDER BY oc.opcintype OPERATOR(pg_catalog.=) base.oid DESC
        LIMIT 1
    )
    SELECT pg_catalog.array_agg(n.nspname::pg_catalog.text ORDER BY s.ord) AS schemas,
           pg_catalog.array_agg(o.oprname::pg_catalog.text ORDER BY s.ord) AS names
    FROM opc
    CROSS JOIN (VALUES (3::pg_catalog.int2, 1), (5::pg_catalog.int2, 2), (2::pg_catalog.int2, 3), (4::pg_catalog.int2, 4)) AS s(strategy, ord)
    JOIN pg_catalog.pg_amop a ON a.amopfamily OPERATOR(pg_catalog.=) opc.opcfamily
                             AND a.amopmethod OPERATOR(pg_catalog.=) opc.opcmethod
                             AND a.amopstrategy OPERATOR(pg_catalog.=) s.strategy
                             AND a.amoplefttype OPERATOR(pg_catalog.=) opc.opcintype
                             AND a.amoprighttype OPERATOR(pg_catalog.=) opc.opcintype
    JOIN pg_catalog.pg_operator o ON o.oid OPERATOR(pg_catalog.=) a.amopopr
    JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) o.oprnamespace
    ) ops
    WHERE x.iskey
)
SELECT pg_catalog.format_type(x.typid, x.typmod), pg_catalog.format_type(x.typid, NULL), keyops.schemas, keyops.names
FROM x LEFT JOIN keyops ON keyops.ord OPERATOR(pg_catalog.=) x.ord
ORDER BY x.ord
