-- Forget the snapshot progress of the slot's tables that no longer exist (their
-- relation OID is gone from pg_class): run when a snapshot starts, so that rows of
-- tables dropped since (a staging table or partition a day) do not pile up for good.
-- A dropped table's snapshot could never resume anyway (a table created again under
-- its name has another OID and starts over). Rows without relation_oid (written by
-- an older dbsync) are kept: it cannot be told what they were of. $1: slot.
DELETE FROM {{ns}}.snapshot_progress p
WHERE p.slot_name OPERATOR(pg_catalog.=) $1 AND p.relation_oid IS NOT NULL
  AND NOT EXISTS (SELECT FROM pg_catalog.pg_class c WHERE c.oid OPERATOR(pg_catalog.=) p.relation_oid)
