package dbsync

import (
	"github.com/jackc/pglogrepl"
)

// StringMap is one row's values: column name to typed Go value (see PGColumnInfo.DecodeText).
type StringMap = map[string]any

// PGMSG is one row of pg_logical_slot_peek_binary_changes: the pgoutput message Data
// (first byte is the message type), the row's LSN and the transaction's xid.
//
// LSN follows PostgreSQL's rules (shared/reference §2): BEGIN and RELATION rows carry
// the LSN of the transaction's first change, change rows the start of their WAL
// record, and the COMMIT row the end of the commit record — the position to forward
// the slot to once the transaction is processed.
type PGMSG struct {
	LSN  pglogrepl.LSN
	Xid  uint32
	Data []byte
}

// MessageHandler receives decoded changes one message at a time, in commit order:
// for each transaction Begin, then Relation (before the first change of each table in
// every poll, and after the table changed), Insert/Update/Delete/Truncate and logical
// decoding messages, then Commit. idx is the message's position in the current poll.
//
// Returning an error stops delivery; the slot is never forwarded past the transaction
// that failed (see HandlerErrorPolicy). Returning ErrStopProcessingMessages stops the
// Syncer cleanly after forwarding the transactions completed before it; returned by
// HandleCommitMessage, it counts that transaction as completed (forwarded past, and
// handed to the Batcher), from any other method it leaves the transaction to come
// again whole.
//
// Delivery is at-least-once: after a restart or a failure the last, unforwarded
// transactions come again. Embed DefaultMessageHandler to implement only what you need.
type MessageHandler interface {
	HandleBeginMessage(idx int, msg *pglogrepl.BeginMessage) error
	HandleCommitMessage(idx int, msg *pglogrepl.CommitMessage) error
	HandleRelationMessage(idx int, msg *pglogrepl.RelationMessage, tableInfo *PGTableInfo) error
	HandleInsertMessage(idx int, msg *pglogrepl.InsertMessage, reln *pglogrepl.RelationMessage, tableInfo *PGTableInfo) error
	HandleUpdateMessage(idx int, msg *pglogrepl.UpdateMessage, reln *pglogrepl.RelationMessage, tableInfo *PGTableInfo) error
	HandleDeleteMessage(idx int, msg *pglogrepl.DeleteMessage, reln *pglogrepl.RelationMessage, tableInfo *PGTableInfo) error
	// HandleTruncateMessage gets the truncated relations (CASCADE and RESTART IDENTITY
	// are flags in msg.Option: pglogrepl.TruncateOptionCascade/RestartIdentity).
	// dbsync's own tables (the watermark table, snapshot_progress) are left out of
	// relns, tableInfos and msg.RelationIDs; a TRUNCATE of them alone is not delivered.
	HandleTruncateMessage(idx int, msg *pglogrepl.TruncateMessage, relns []*pglogrepl.RelationMessage, tableInfos []*PGTableInfo) error
	// HandleLogicalMessage gets pg_logical_emit_message() messages.
	HandleLogicalMessage(idx int, msg *pglogrepl.LogicalDecodingMessage) error
	// HandleRefresh gets a row read by Refresh or a snapshot chunk that no change
	// inside the chunk's watermark window touched: its value is current as of the
	// high watermark. key is item.Key.
	HandleRefresh(key string, item DBItem) error
}

// DBItem is a row read from a table by Refresh or a snapshot chunk.
type DBItem struct {
	// Table is the table the row belongs to, described as when the row was read. If
	// the table was renamed (or moved to another schema) after that and a change
	// delivered before the row named it so, Table carries that new name.
	Table *PGTableInfo
	// Key is the row's record ID (PGTableInfo.GetRecordID of its primary key).
	Key string
	// Values holds every selected column, typed as in changes. It is nil for rows
	// handed to a RefreshRowHandler (RefreshRow.Values decodes them on demand).
	Values StringMap

	row *RefreshRow // the row as read, for a RefreshRowHandler; nil otherwise
}

// EventsProcessor consumes whole polls of raw rows instead of a MessageHandler. It
// returns how many rows (from the front of msgs) it processed and whether the Syncer
// should stop. The slot is forwarded to the COMMIT row of the last transaction that
// lies entirely within the processed rows, or to a later non-transactional logical
// message among them; when every row of a poll not cut short (MaxMessagesToRead) was
// processed, to the poll's WAL bound, so other tables' writes are not retained. A
// transaction cut by numProcessed comes again whole in the next poll: at once when
// the slot moved, after the idle backoff (DelayBetweenPeekRetries, growing to
// MaxDelayBetweenEmptyPeeks) when nothing it could move past was processed (0, or part
// of the first transaction); a processor that never takes a whole transaction makes no
// progress. It is not called for a poll without rows. err is non-nil when a poll failed
// (not when Run's context ended while it read: that is a stop); msgs is then nil and
// the return values are ignored. msgs holds the whole poll in memory, and a poll reads
// all that was flushed, up to 1 GiB of WAL: bound its rows with WithMaxMessagesToRead
// to bound the memory of a catch-up (see Batcher).
type EventsProcessor func(msgs []PGMSG, err error) (numProcessed int, stop bool)

// Batcher receives each poll's net effect per table before the slot is forwarded:
// rows to upsert (record ID -> values) and record IDs to delete; applied in any
// order, they leave each record ID as the poll's transactions did. doctype is the
// table's "schema.table" (PGTableInfo.QualifiedName: both parts quoted when one holds
// a dot, as in "a.b"."c"). The net effect follows rows, not only keys: under a
// DEFERRABLE key (with REPLICA IDENTITY FULL, which PostgreSQL then requires for
// updates and deletes) two rows may hold one record ID inside a transaction, as in a
// swap (UPDATE ... SET id = 3 - id); the whole old rows tell which one moved. An upserted doc lacks the columns whose value PostgreSQL did
// not send because an update left a TOASTed value unchanged (Change.Unchanged, see
// docs/VALUES.md): merge docs into what you store, do not replace them (after a
// key-changing update there is nothing under the new record ID to merge with: such a
// column stays missing unless the table has REPLICA IDENTITY FULL). A change of
// a table with neither a primary key nor a replica identity index (no record ID)
// ends the poll with an error wrapping ErrNoKey before the MessageHandler gets it:
// the poll's transactions before that change's transaction are handed to the Batcher
// and forwarded past, nothing of its transaction is.
//
// The net effect of a poll is held in memory until the Batcher gets it: every distinct
// row the poll's transactions left, values included. A poll reads all that was
// flushed, up to 1 GiB of WAL, so catching up a backlog holds up to that much of it
// (compressed TOAST values take little WAL and much memory: 6,000 rows of 100 KB in
// one poll peaked at 840 MiB of Go heap). WithMaxMessagesToRead bounds a poll by rows
// (it still ends at a transaction's end): with 300, the same backlog peaked at 74 MiB.
type Batcher interface {
	BatchUpsert(doctype string, docs map[string]StringMap) (any, error)
	BatchDelete(doctype string, docids []string) (any, error)
}

// BatchTruncater is an optional interface of a Batcher: BatchTruncate empties doctype
// (a "schema.table", as PGTableInfo.QualifiedName, that a TRUNCATE emptied). Within a poll's net effect it comes
// before that table's deletes and upserts, which are then only what was written after
// the TRUNCATE. A TRUNCATE of a published table reaching a Batcher that does not
// implement it ends the poll with ErrConfig before the handler gets the TRUNCATE or
// the slot is forwarded: implement it, or leave TRUNCATE out of the publication
// (CREATE PUBLICATION ... WITH (publish = 'insert, update, delete')).
type BatchTruncater interface {
	BatchTruncate(doctype string) (any, error)
}

// DefaultMessageHandler implements every MessageHandler method as a no-op. Embed it
// in your handler so it keeps compiling when methods are added.
type DefaultMessageHandler struct{}

func (DefaultMessageHandler) HandleBeginMessage(int, *pglogrepl.BeginMessage) error   { return nil }
func (DefaultMessageHandler) HandleCommitMessage(int, *pglogrepl.CommitMessage) error { return nil }
func (DefaultMessageHandler) HandleRelationMessage(int, *pglogrepl.RelationMessage, *PGTableInfo) error {
	return nil
}
func (DefaultMessageHandler) HandleInsertMessage(int, *pglogrepl.InsertMessage, *pglogrepl.RelationMessage, *PGTableInfo) error {
	return nil
}
func (DefaultMessageHandler) HandleUpdateMessage(int, *pglogrepl.UpdateMessage, *pglogrepl.RelationMessage, *PGTableInfo) error {
	return nil
}
func (DefaultMessageHandler) HandleDeleteMessage(int, *pglogrepl.DeleteMessage, *pglogrepl.RelationMessage, *PGTableInfo) error {
	return nil
}
func (DefaultMessageHandler) HandleTruncateMessage(int, *pglogrepl.TruncateMessage, []*pglogrepl.RelationMessage, []*PGTableInfo) error {
	return nil
}
func (DefaultMessageHandler) HandleLogicalMessage(int, *pglogrepl.LogicalDecodingMessage) error {
	return nil
}
func (DefaultMessageHandler) HandleRefresh(string, DBItem) error { return nil }
