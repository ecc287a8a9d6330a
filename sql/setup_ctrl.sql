-- Control schema and watermark table. {{ns}} and {{wm}} are replaced with quoted
-- identifiers (pq.QuoteIdentifier) before execution; nothing else is substituted.
CREATE SCHEMA IF NOT EXISTS {{ns}};
CREATE TABLE IF NOT EXISTS {{ns}}.{{wm}} (
    selection_id text        NOT NULL,
    wm_type      text        NOT NULL CHECK (wm_type IN ('low', 'high')),
    created_at   timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (selection_id, wm_type)
);
