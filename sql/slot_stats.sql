-- One replication slot's decoding statistics (PostgreSQL 14 and later).
-- $1: slot name. No row when the slot has no statistics yet.
SELECT s.spill_txns, s.spill_count, s.spill_bytes,
       s.stream_txns, s.stream_bytes,
       s.total_txns, s.total_bytes
FROM pg_catalog.pg_stat_replication_slots s
WHERE s.slot_name OPERATOR(pg_catalog.=) $1
