-- What a failed slot function's SQLSTATE meant, read from the catalog rather than
-- from the error's message (which follows the server's lc_messages). $1 is the slot
-- name, $2 the publication name. One row: whether the slot exists, its wal_status
-- ('' when missing), its slot_type, plugin and database ('' when missing or not set),
-- the current database, whether the publication exists, wal_level, whether the server
-- is a standby, and whether the current role may use replication slots.
SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_replication_slots WHERE slot_name OPERATOR(pg_catalog.=) $1),
       COALESCE((SELECT wal_status FROM pg_catalog.pg_replication_slots WHERE slot_name OPERATOR(pg_catalog.=) $1), ''),
       COALESCE((SELECT slot_type FROM pg_catalog.pg_replication_slots WHERE slot_name OPERATOR(pg_catalog.=) $1), ''),
       COALESCE((SELECT plugin::pg_catalog.text FROM pg_catalog.pg_replication_slots WHERE slot_name OPERATOR(pg_catalog.=) $1), ''),
       COALESCE((SELECT database::pg_catalog.text FROM pg_catalog.pg_replication_slots WHERE slot_name OPERATOR(pg_catalog.=) $1), ''),
       pg_catalog.current_database()::pg_catalog.text,
       EXISTS (SELECT 1 FROM pg_catalog.pg_publication WHERE pubname OPERATOR(pg_catalog.=) $2),
       pg_catalog.current_setting('wal_level'),
       pg_catalog.pg_is_in_recovery(),
       COALESCE((SELECT r.rolsuper OR r.rolreplication FROM pg_catalog.pg_roles r WHERE r.rolname OPERATOR(pg_catalog.=) current_user), false)
