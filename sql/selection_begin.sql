-- The first statement of a selection's READ ONLY, REPEATABLE READ transaction: the
-- snapshot every later statement of the transaction sees (pg_current_snapshot()), and
-- the settings that shape values' text output pinned for the rest of the transaction
-- (set_config(..., true)) to what the peek pins (sql/peek.sql): so a row read by a
-- selection prints its values as its changes do (the same record IDs, the same
-- values), whatever the database's or role's DateStyle, IntervalStyle, bytea_output,
-- extra_float_digits or TimeZone. Keep the two lists equal. Besides those, and for
-- selections only (the peek reads no table): row_security off, so that a SELECT of a
-- table whose row-level security policies apply to the role fails (42501, "query would
-- be affected by row-level security policy") instead of silently missing the rows they
-- hide, as pg_dump does (Syncer.rlsRefused).
SELECT pg_catalog.pg_current_snapshot()::pg_catalog.text,
       pg_catalog.concat(pg_catalog.set_config('DateStyle', 'ISO, MDY', true),
       pg_catalog.set_config('IntervalStyle', 'postgres', true),
       pg_catalog.set_config('bytea_output', 'hex', true),
       pg_catalog.set_config('extra_float_digits', '3', true),
       pg_catalog.set_config('TimeZone', 'UTC', true),
       pg_catalog.set_config('row_security', 'off', true))
