-- Type names of a RELATION message's columns. $1: type OIDs, $2: type modifiers, in
-- column order. format_type gives the SQL name with and without the modifier.
SELECT pg_catalog.format_type(x.typid, x.typmod), pg_catalog.format_type(x.typid, NULL)
FROM ROWS FROM (pg_catalog.unnest($1::pg_catalog.oid[]), pg_catalog.unnest($2::pg_catalog.int4[])) WITH ORDINALITY AS x(typid, typmod, ord)
ORDER BY x.ord
