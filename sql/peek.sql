-- One poll: pgoutput rows of the slot up to $2 (an LSN; transactions committing at or
-- after it are not returned) and at most about $3 rows (checked at transaction
-- boundaries; NULL: no bound). $4 is the publication_names option: a comma-separated
-- list of quoted identifiers. $5 is pgoutput's binary option ('true' or 'false').
--
-- pgoutput's text values are the output functions' text in THIS session, so the
-- settings that shape it are pinned for this statement only (set_config(..., true) ends
-- with the statement's transaction): DateStyle, IntervalStyle, bytea_output and
-- extra_float_digits as dbsync's decoders expect them, TimeZone UTC. OFFSET 0 and the
-- LATERAL reference make PostgreSQL apply them before the slot is decoded. Selections
-- pin the same (sql/selection_begin.sql): keep the lists equal.
SELECT p.lsn, p.xid, p.data
FROM (SELECT pg_catalog.concat(pg_catalog.set_config('DateStyle', 'ISO, MDY', true),
          pg_catalog.set_config('IntervalStyle', 'postgres', true),
          pg_catalog.set_config('bytea_output', 'hex', true),
          pg_catalog.set_config('extra_float_digits', '3', true),
          pg_catalog.set_config('TimeZone', 'UTC', true)) AS applied
      OFFSET 0) AS fmt,
     LATERAL pg_catalog.pg_logical_slot_peek_binary_changes(
         CASE WHEN fmt.applied IS NOT NULL THEN $1::pg_catalog.name END, $2::pg_catalog.pg_lsn, $3::int,
         'proto_version', '1',
         'publication_names', $4,
         'messages', 'true',
         'binary', $5) AS p
