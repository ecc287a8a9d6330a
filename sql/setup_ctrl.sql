-- Watermark table and snapshot progress table in the control schema, which setup
-- creates first (CREATE SCHEMA) when it is missing. Run only when one of the tables is
-- missing: CREATE TABLE IF NOT EXISTS needs CREATE on the schema even when the table
-- exists, which a role using a control schema an administrator set up may lack.
-- {{ns}} and {{wm}} are replaced with quoted identifiers (pq.QuoteIdentifier) before
-- execution; nothing else is substituted. Types, functions and operators are named
-- in pg_catalog: the role's search_path could otherwise resolve them to objects of
-- another schema (CVE-2018-1058), which the tables would keep.
CREATE TABLE IF NOT EXISTS {{ns}}.{{wm}} (
    selection_id pg_catalog.text        NOT NULL,
    wm_type      pg_catalog.text        NOT NULL CHECK (wm_type OPERATOR(pg_catalog.=) ANY ('{low,high}')),
    created_at   pg_catalog.timestamptz NOT NULL DEFAULT pg_catalog.clock_timestamp(),
    PRIMARY KEY (selection_id, wm_type)
);
-- Progress of chunked table snapshots (Syncer.Snapshot), one row per slot and table:
-- a restarted snapshot resumes after last_key, the primary key (key_columns, in key
-- order) of the last row of the last chunk whose refresh rows were delivered, each
-- value in its type's text output form. finished_at is set when the last chunk was
-- delivered; a new Snapshot of a finished table starts over. relation_oid is the OID
-- of the table the snapshot read: a table of the same name dropped and created again
-- since is another table, whose snapshot starts over (a control schema created before
-- the column existed gets it from setup: ensureProgressRelationOID).
CREATE TABLE IF NOT EXISTS {{ns}}.snapshot_progress (
    slot_name    pg_catalog.text        NOT NULL,
    table_name   pg_catalog.text        NOT NULL,
    relation_oid pg_catalog.oid,
    key_columns  pg_catalog.text[]      NOT NULL,
    last_key     pg_catalog.text[],
    chunk_size   int                    NOT NULL,
    chunks_done  bigint                 NOT NULL DEFAULT 0,
    rows_done    bigint                 NOT NULL DEFAULT 0,
    started_at   pg_catalog.timestamptz NOT NULL DEFAULT pg_catalog.now(),
    updated_at   pg_catalog.timestamptz NOT NULL DEFAULT pg_catalog.now(),
    finished_at  pg_catalog.timestamptz,
    PRIMARY KEY (slot_name, table_name)
);
