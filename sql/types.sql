-- pg_type rows for type OIDs pgtype has no codec for (domains, enums, arrays of
-- those, composite and other user types). $1: type OIDs.
SELECT t.oid, t.typtype::text, t.typcategory::text, t.typbasetype, t.typelem, format_type(t.oid, NULL), t.typdelim::text
FROM pg_catalog.pg_type t
WHERE t.oid = ANY ($1::oid[])
