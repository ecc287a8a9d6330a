-- One replication slot's state with the server's current WAL positions and version.
-- $1: slot name. No row when the slot does not exist. LSNs as text (NULL when unset:
-- restart_lsn is NULL once the slot is invalidated).
SELECT s.slot_name,
       COALESCE(s.plugin, ''),
       COALESCE(s.slot_type, ''),
       COALESCE(s.database, ''),
       s.active,
       COALESCE(s.active_pid, 0),
       s.confirmed_flush_lsn::pg_catalog.text,
       s.restart_lsn::pg_catalog.text,
       COALESCE(s.wal_status, ''),
       pg_catalog.pg_current_wal_lsn()::pg_catalog.text,
       pg_catalog.pg_current_wal_flush_lsn()::pg_catalog.text,
       pg_catalog.current_setting('server_version_num')::int
FROM pg_catalog.pg_replication_slots s
WHERE s.slot_name OPERATOR(pg_catalog.=) $1
