-- Type names of a RELATION message's columns. $1: type OIDs, $2: type modifiers, in
-- column order. format_type gives the SQL name with and without the modifier.
SELECT format_type(x.typid, x.typmod), format_type(x.typid, NULL)
FROM unnest($1::oid[], $2::int4[]) WITH ORDINALITY AS x(typid, typmod, ord)
ORDER BY x.ord
