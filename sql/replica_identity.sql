-- Published tables of publication $1 whose UPDATEs and DELETEs cannot be captured (and,
-- on the primary, fail with 55000 "does not have a replica identity"): REPLICA IDENTITY
-- NOTHING, DEFAULT without a primary key, or USING INDEX whose index is gone. Only
-- publications that publish updates or deletes are concerned.
SELECT pt.schemaname, pt.tablename, c.relreplident::text,
       EXISTS (SELECT 1 FROM pg_catalog.pg_index i WHERE i.indrelid = c.oid AND i.indisprimary)
FROM pg_catalog.pg_publication p
JOIN pg_catalog.pg_publication_tables pt ON pt.pubname = p.pubname
JOIN pg_catalog.pg_namespace n ON n.nspname = pt.schemaname
JOIN pg_catalog.pg_class c ON c.relnamespace = n.oid AND c.relname = pt.tablename
WHERE p.pubname = $1
  AND (p.pubupdate OR p.pubdelete)
  AND (c.relreplident = 'n'
       OR (c.relreplident = 'd' AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_index i
                                                WHERE i.indrelid = c.oid AND i.indisprimary))
       OR (c.relreplident = 'i' AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_index i
                                                WHERE i.indrelid = c.oid AND i.indisreplident)))
ORDER BY 1, 2
