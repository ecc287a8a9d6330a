-- pg_type rows for type OIDs pgtype has no codec for (domains, enums, arrays of
-- those, composite and other user types). $1: type OIDs. The last column says whether
-- the type's values are read and printed as arrays (array_in): int2vector and oidvector
-- are filed as arrays (typcategory 'A', an element type) but have a text form of their
-- own ("1 2"). The last but one is a domain's base type's name (Refresh key casts).
SELECT t.oid, t.typtype::pg_catalog.text, t.typcategory::pg_catalog.text, t.typbasetype, t.typelem, pg_catalog.format_type(t.oid, NULL), t.typdelim::pg_catalog.text,
       t.typinput OPERATOR(pg_catalog.=) 'pg_catalog.array_in'::pg_catalog.regproc,
       pg_catalog.format_type(t.typbasetype, NULL)
FROM pg_catalog.pg_type t
WHERE t.oid OPERATOR(pg_catalog.=) ANY ($1::pg_catalog.oid[])
