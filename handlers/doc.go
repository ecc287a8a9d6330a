// Package handlers holds ready-made dbsync.MessageHandler implementations:
//
//   - EchoMessageHandler writes one human-readable line per message to an io.Writer.
//   - JSONLinesWriter writes one JSON object per row change (and per TRUNCATE of a
//     table, per logical decoding message and per row read by Syncer.Snapshot or
//     Refresh) to an io.Writer; see the schema below.
//   - Cache keeps an in-memory copy of the published tables (table -> record ID -> row).
//     It applies each transaction at its COMMIT and drops re-delivered ones (commit LSN
//     not after the last applied one), so at-least-once delivery leaves it exact.
//     One Syncer feeds a Cache (two Syncers need two Caches: interleaved transactions
//     are refused with ErrCacheSequence); its readers are safe concurrently. It follows
//     RELATION messages: a dropped column leaves the cached rows, a renamed table keeps
//     its rows (tracked by relation OID); see Cache for what schema changes it cannot
//     know (an added column's default, a retyped column's new values). Within a
//     transaction it follows rows, not only keys, so two rows holding one DEFERRABLE
//     key for a moment (a swap) both survive.
//
// Embed dbsync.DefaultMessageHandler in your own handler to implement only the methods
// you need.
//
// # JSON-lines schema (JSONLinesWriter)
//
// Every line is one JSON object; "type" says which kind. Keys always appear in the order
// below. Column values are the values dbsync decodes (typed: see docs/VALUES.md),
// rendered by PGTableInfo.JSONRow: numbers, strings, booleans and null as such,
// json/jsonb documents inline (encoding/json drops their insignificant whitespace),
// numeric as an exact JSON number, NaN/Infinity and
// infinite dates as strings, other types as PostgreSQL's text form.
//
// A row change, "type":"change":
//
//	{"type":"change","commit_lsn":"0/1A2B3C8","xid":735,"commit_time":"2026-11-21T21:53:36.123456Z",
//	 "op":"update","schema":"public","table":"items","key":{"id":"1"},"old_key":{"id":"7"},
//	 "new":{"id":"1","name":"c"},"old":{"id":"7"},"unchanged":["body"]}
//
// Its fields:
//
//   - commit_lsn: LSN of the transaction's commit record (pgoutput Begin.FinalLSN), as
//     PostgreSQL prints a pg_lsn; xid: the transaction ID; commit_time: the commit
//     timestamp in RFC 3339 with nanoseconds, UTC. All changes of a transaction carry
//     the same three values; transactions appear in commit order.
//   - op: "insert", "update" or "delete".
//   - schema, table: the table's namespace and name, unquoted.
//   - key: the key columns of the row after the change (of the deleted row for a
//     delete), column name -> value: the replica identity index's columns where there
//     is one, else the primary key's (PGTableInfo.PrimaryKey, the columns of
//     Change.Key); {} when the table has neither.
//   - old_key: only on an update that changed the key: the key before it.
//   - new: the new row (insert, update), null for a delete. Columns listed in
//     "unchanged" are absent from it.
//   - old: what PostgreSQL sent of the old row, null when nothing was sent: the key
//     columns of a delete or key-changing update under REPLICA IDENTITY DEFAULT/INDEX
//     (other columns are omitted), or the whole old row under REPLICA IDENTITY FULL.
//   - unchanged: only when present: columns of "new" whose value was not sent because
//     it is an unchanged TOASTed value. A consumer must keep its previous value; it is
//     NOT null.
//
// Applying change lines one by one by key (delete old_key, or key for a delete; store
// new under key) is exact only when no two rows ever hold one key. Under a DEFERRABLE
// key they can, for a moment inside a transaction (PostgreSQL will not use a deferrable
// unique index as replica identity, so such a table runs under REPLICA IDENTITY FULL
// and "old" is the whole old row): a swap, UPDATE t SET id = 3 - id, writes an update
// with key 2 and old_key 1, then one with key 1 and old_key 2, whose delete of key 2
// would remove the row just stored there. For such tables apply a transaction's lines
// (one commit_lsn) together: the row leaving a key is the one the transaction stored
// there whose values equal "old", else the one that was there before the transaction.
// Cache does this.
//
// Nor is it exact across schema changes the lines do not spell out: a renamed table's
// lines carry its new name (set Relations: relation_id stays), a key moved to other
// columns or a retyped key column ("relation" lines show both) gives rows other keys
// than the ones they are stored under. Cache's documentation lists what it does for
// each; Snapshot the table again where a store cannot follow.
//
// Delivery is at least once: after a failed COMMIT handler, a failed forward of the
// slot or a crash, transactions already written are written again, with the same
// commit_lsn. Commit LSNs of new transactions increase strictly, so skip a
// transaction whose commit_lsn is not after the last one applied (as Cache does):
// applying it again is not harmless (a key-changing update would take "unchanged"
// values from a row a later transaction stored there).
//
// A table truncated, "type":"truncate" (one object per table of the TRUNCATE):
//
//	{"type":"truncate","commit_lsn":"0/1A2B3C8","xid":736,"commit_time":"...","schema":"public","table":"items","cascade":false,"restart_identity":false}
//
// A pg_logical_emit_message() message, "type":"message":
//
//	{"type":"message","commit_lsn":"0/1A2B3C8","xid":737,"commit_time":"...","lsn":"0/1A2B300","transactional":true,"prefix":"app","content":"hello"}
//
// commit_lsn, xid and commit_time are present only for a transactional message (a
// non-transactional one is delivered as soon as it is decoded, outside any
// transaction). content is the payload when it is valid UTF-8; otherwise it is absent
// and content_base64 holds the payload in standard base64.
//
// A row read by Syncer.Snapshot or Refresh (HandleRefresh), "type":"refresh":
//
//	{"type":"refresh","schema":"public","table":"items","key":{"id":"1"},"new":{"id":"1","name":"c","body":"..."}}
//
// key and new as in a change (new: the columns the selection returned; a Refresh
// query may name some). No commit_lsn, xid or commit_time: a refresh row belongs to no
// transaction. It is written with the high watermark's transaction, after every change
// committed before it; merge it into what you store (it is at least as new).
//
// With JSONLinesWriter.Relations set, a RELATION message (sent before the first change
// of each table in every poll and after the table was altered) gives "type":"relation":
//
//	{"type":"relation","commit_lsn":"...","xid":735,"commit_time":"...","schema":"public","table":"items","relation_id":16385,"replica_identity":"d",
//	 "columns":[{"name":"id","type_oid":23,"type_modifier":-1,"key":true},{"name":"name","type_oid":25,"type_modifier":-1,"key":false}]}
//
// Lines of a transaction are written to the underlying writer together when its
// COMMIT arrives (and flushed if the writer has a Flush method), so the slot is
// never forwarded past a change that was not written out.
package handlers
