-- The transactions, other than this session's, that hold a lock on relation $1 of
-- the kinds writing it takes (RowExclusiveLock: INSERT, UPDATE, DELETE, MERGE; the
-- stronger table locks of LOCK TABLE and DDL), as virtual transaction IDs. A
-- Snapshot waits for them to end before its first chunk (waitForTableWriters).
-- The partitions of a partitioned table (every level) count as it: a transaction
-- writing a partition by its own name locks the partition, not the partitioned table,
-- and under publish_via_partition_root its changes are the partitioned table's.
-- ShareUpdateExclusiveLock (VACUUM, ANALYZE, ALTER PUBLICATION itself) writes no rows
-- and is left out, so autovacuum is never waited for.
SELECT COALESCE(pg_catalog.array_agg(DISTINCT l.virtualtransaction ORDER BY l.virtualtransaction), '{}')
FROM pg_catalog.pg_locks l
WHERE l.locktype OPERATOR(pg_catalog.=) 'relation'
  AND l.database OPERATOR(pg_catalog.=) (SELECT oid FROM pg_catalog.pg_database WHERE datname OPERATOR(pg_catalog.=) pg_catalog.current_database())
  AND (l.relation OPERATOR(pg_catalog.=) $1
       OR l.relation OPERATOR(pg_catalog.=) ANY (SELECT relid FROM pg_catalog.pg_partition_tree($1::pg_catalog.oid::pg_catalog.regclass)))
  AND l.granted
  AND l.mode OPERATOR(pg_catalog.=) ANY ('{RowExclusiveLock,ShareRowExclusiveLock,ExclusiveLock,AccessExclusiveLock}')
  AND (l.pid IS NULL OR l.pid OPERATOR(pg_catalog.<>) pg_catalog.pg_backend_pid())
