package handlers

import (
	"errors"
	"fmt"
	"sync"

	"github.com/dbsync/dbsync"
	"github.com/jackc/pglogrepl"
)

// ErrCacheSequence is returned by a Cache's handler methods when the messages it is
// fed are not one Syncer's delivery: a BEGIN of a later transaction while another is
// open, a COMMIT that is not the open transaction's, a change outside a transaction.
// It means two Syncers (or other callers) feed one Cache, which is not supported.
var ErrCacheSequence = errors.New("handlers: Cache: messages out of transaction order (a Cache must be fed by one Syncer)")

// Cache is a dbsync.MessageHandler that keeps an in-memory copy of the published
// tables: table ("schema.table", PGTableInfo.QualifiedName) -> record ID
// (PGTableInfo.GetRecordID of the primary key) -> row (column -> value, as
// dbsync.DecodeChange decodes it).
//
// Changes of a transaction are staged and applied together when its COMMIT arrives,
// so readers never see half a transaction. Applying follows PostgreSQL's rules
// (shared/reference/pg-logical-decoding.md §5):
//   - insert stores the new row;
//   - update stores the new row; a column listed in Change.Unchanged (an unchanged
//     TOASTed value, not sent) keeps its previous value from the cached row, or from
//     the old row under REPLICA IDENTITY FULL; it never becomes NULL. If neither
//     knows it, the column is left out of the row and counted in Stats().UnknownUnchanged;
//   - a key-changing update (Change.OldKey) removes the row under the old key and
//     takes previous values from it;
//   - delete removes the row; TRUNCATE empties the tables.
//
// A change of a table with neither a primary key nor a replica identity index (no
// record ID: Change.Key "") is refused with an error wrapping dbsync.ErrNoKey.
//
// # Re-delivery
//
// Delivery is at least once: after a failed forward of the slot, a handler error or
// a server crash, transactions the Cache applied come again. The Cache applies a
// transaction only if its commit LSN (BeginMessage.FinalLSN, CommitMessage.CommitLSN)
// is after Stats().LastCommitLSN, the last one it applied: commit LSNs of new
// transactions increase strictly in delivery order, so anything else is a re-delivery
// and is dropped whole (counted in Stats().Redelivered). Applying it again would not
// be harmless: an update that left a TOASTed column unchanged takes that column from
// the cached row, which by then holds a later transaction's value, and an older
// transaction would undo later ones until they come again. A transaction that never
// reached its COMMIT is dropped at the next BEGIN; its re-delivery starts there.
//
// HandleRefresh rows (Snapshot, Refresh) arrive inside the high watermark's
// transaction, just before its COMMIT, with the rows' values as of that point: they are
// staged and applied at that COMMIT, and dropped with it when it is a re-delivery (a
// later change may have been applied over them already). Called outside a transaction,
// HandleRefresh upserts at once.
//
// # One Syncer per Cache
//
// A Cache must be fed by one Syncer: its staged transaction and its last commit LSN
// belong to one stream of transactions. Two Syncers (two slots, or two servers) need
// two Caches. Misuse is detected where the sequence shows it — a BEGIN of a later
// transaction while one is open, a COMMIT that is not the open transaction's, a change
// or TRUNCATE outside a transaction are errors wrapping ErrCacheSequence, and the open
// transaction is dropped — but not always: another Syncer's whole transaction whose
// commit LSN is not after the last applied one looks like a re-delivery and is
// dropped. The reading methods (Snapshot, Row, Len, TableInfo, Stats) are safe for
// concurrent use with the feeding Syncer and with each other.
type Cache struct {
	dbsync.DefaultMessageHandler

	mu     sync.RWMutex
	tables map[string]map[string]dbsync.StringMap
	infos  map[string]*dbsync.PGTableInfo
	tx     cacheTx
	stats  CacheStats
}

// cacheTx is the transaction being received: between BEGIN and COMMIT.
type cacheTx struct {
	open bool
	lsn  pglogrepl.LSN // BeginMessage.FinalLSN
	skip bool          // a re-delivery: lsn is not after the last applied commit
	ops  []cacheOp
}

// CacheStats counts what a Cache applied.
type CacheStats struct {
	// Transactions is the number of COMMITs applied.
	Transactions int64
	// Redelivered is the number of transactions dropped because their commit LSN was
	// not after LastCommitLSN: they had been applied already.
	Redelivered int64
	// Changes is the number of inserts, updates and deletes applied.
	Changes int64
	// Truncates is the number of tables truncated.
	Truncates int64
	// Refreshes is the number of rows upserted by HandleRefresh.
	Refreshes int64
	// KeptUnchanged counts unchanged TOASTed columns of updates that kept their
	// previous value.
	KeptUnchanged int64
	// KeyChanges counts updates that changed the primary key.
	KeyChanges int64
	// UnknownUnchanged counts unchanged TOASTed columns whose previous value was not
	// known (the row was not in the cache): they are missing from the cached row.
	UnknownUnchanged int64
	// LastCommitLSN is the commit LSN (CommitMessage.CommitLSN) of the last applied
	// transaction.
	LastCommitLSN pglogrepl.LSN
}

// cacheOp is one staged operation of a transaction; exactly one field is set.
type cacheOp struct {
	change   *dbsync.Change
	truncate string // table name when the op is a TRUNCATE
	refresh  *cacheRefresh
}

type cacheRefresh struct {
	key  string
	item dbsync.DBItem
}

// NewCache returns an empty Cache.
func NewCache() *Cache {
	return &Cache{tables: map[string]map[string]dbsync.StringMap{}, infos: map[string]*dbsync.PGTableInfo{}}
}

func (c *Cache) init() {
	if c.tables == nil {
		c.tables = map[string]map[string]dbsync.StringMap{}
		c.infos = map[string]*dbsync.PGTableInfo{}
	}
}

// HandleBeginMessage opens a transaction. Staged changes of a transaction that never
// reached its COMMIT are dropped (its re-delivery starts again here). A transaction
// whose commit LSN is not after the last applied one is a re-delivery: its messages
// are dropped.
func (c *Cache) HandleBeginMessage(_ int, m *pglogrepl.BeginMessage) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.tx.open && m.FinalLSN > c.tx.lsn {
		// One Syncer delivers the open transaction again (from its BEGIN), or an
		// earlier one after a failed forward, never a later one first.
		open := c.tx.lsn
		return c.sequenceErr("BEGIN of the transaction committing at %s while the one committing at %s is open", m.FinalLSN, open)
	}
	last := c.stats.LastCommitLSN
	c.tx = cacheTx{open: true, lsn: m.FinalLSN, skip: last != 0 && m.FinalLSN <= last, ops: c.tx.ops[:0]}
	return nil
}

// HandleCommitMessage applies the transaction's staged changes, unless it is a
// re-delivery.
func (c *Cache) HandleCommitMessage(_ int, m *pglogrepl.CommitMessage) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.tx.open {
		return c.sequenceErr("COMMIT at %s without its BEGIN", m.CommitLSN)
	}
	if m.CommitLSN != c.tx.lsn {
		open := c.tx.lsn
		return c.sequenceErr("COMMIT at %s while the transaction committing at %s is open", m.CommitLSN, open)
	}
	if c.tx.skip {
		c.stats.Redelivered++
		c.tx = cacheTx{ops: c.tx.ops[:0]}
		return nil
	}
	c.init()
	for _, op := range c.tx.ops {
		switch {
		case op.change != nil:
			c.apply(op.change)
		case op.refresh != nil:
			c.applyRefresh(op.refresh.key, op.refresh.item)
		default:
			c.tables[op.truncate] = map[string]dbsync.StringMap{}
			c.stats.Truncates++
		}
	}
	for i := range c.tx.ops {
		c.tx.ops[i] = cacheOp{} // let go of the changes
	}
	c.tx = cacheTx{ops: c.tx.ops[:0]}
	c.stats.Transactions++
	c.stats.LastCommitLSN = m.CommitLSN
	return nil
}

// sequenceErr drops the open transaction and returns an error wrapping
// ErrCacheSequence; c.mu is held.
func (c *Cache) sequenceErr(format string, args ...any) error {
	c.tx = cacheTx{ops: c.tx.ops[:0]}
	return fmt.Errorf("%w: "+format, append([]any{ErrCacheSequence}, args...)...)
}

func (c *Cache) stage(what string, msg pglogrepl.Message, reln *pglogrepl.RelationMessage, info *dbsync.PGTableInfo) error {
	c.mu.RLock()
	open, skip := c.tx.open, c.tx.skip
	c.mu.RUnlock()
	if !open {
		c.mu.Lock()
		defer c.mu.Unlock()
		return c.sequenceErr("%s of %s.%s outside a transaction", what, reln.Namespace, reln.RelationName)
	}
	if skip {
		return nil
	}
	if info == nil {
		return fmt.Errorf("handlers: Cache: no table info for relation %s.%s", reln.Namespace, reln.RelationName)
	}
	ch, err := dbsync.DecodeChange(msg, reln, info)
	if err != nil {
		return fmt.Errorf("handlers: Cache: %s: %w", info.QualifiedName(), err)
	}
	if ch.Key == "" {
		return fmt.Errorf("handlers: Cache: %w: %s has neither a primary key nor a replica identity index, so its rows cannot be cached by key; add a primary key, or leave the table out of the publication",
			dbsync.ErrNoKey, info.QualifiedName())
	}
	c.mu.Lock()
	c.tx.ops = append(c.tx.ops, cacheOp{change: ch})
	c.mu.Unlock()
	return nil
}

// HandleInsertMessage stages an insert.
func (c *Cache) HandleInsertMessage(_ int, m *pglogrepl.InsertMessage, reln *pglogrepl.RelationMessage, info *dbsync.PGTableInfo) error {
	return c.stage("INSERT", m, reln, info)
}

// HandleUpdateMessage stages an update.
func (c *Cache) HandleUpdateMessage(_ int, m *pglogrepl.UpdateMessage, reln *pglogrepl.RelationMessage, info *dbsync.PGTableInfo) error {
	return c.stage("UPDATE", m, reln, info)
}

// HandleDeleteMessage stages a delete.
func (c *Cache) HandleDeleteMessage(_ int, m *pglogrepl.DeleteMessage, reln *pglogrepl.RelationMessage, info *dbsync.PGTableInfo) error {
	return c.stage("DELETE", m, reln, info)
}

// HandleTruncateMessage stages emptying each truncated table.
func (c *Cache) HandleTruncateMessage(_ int, _ *pglogrepl.TruncateMessage, relns []*pglogrepl.RelationMessage, infos []*dbsync.PGTableInfo) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.tx.open {
		return c.sequenceErr("TRUNCATE outside a transaction")
	}
	if c.tx.skip {
		return nil
	}
	for i, r := range relns {
		name := r.Namespace + "." + r.RelationName
		if i < len(infos) && infos[i] != nil {
			name = infos[i].QualifiedName()
		}
		c.tx.ops = append(c.tx.ops, cacheOp{truncate: name})
	}
	return nil
}

// HandleRefresh upserts item.Values under item.Table and key: at the COMMIT of the
// transaction it arrives in (the high watermark's), or at once outside a transaction.
func (c *Cache) HandleRefresh(key string, item dbsync.DBItem) error {
	if item.Table == nil {
		return fmt.Errorf("handlers: Cache: HandleRefresh(%q) without a table", key)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case !c.tx.open:
		c.init()
		c.applyRefresh(key, item)
	case !c.tx.skip:
		c.tx.ops = append(c.tx.ops, cacheOp{refresh: &cacheRefresh{key: key, item: item}})
	}
	return nil
}

func (c *Cache) applyRefresh(key string, item dbsync.DBItem) {
	name := item.Table.QualifiedName()
	c.infos[name] = item.Table
	c.rows(name)[key] = copyRow(item.Values)
	c.stats.Refreshes++
}

func (c *Cache) rows(table string) map[string]dbsync.StringMap {
	rows := c.tables[table]
	if rows == nil {
		rows = map[string]dbsync.StringMap{}
		c.tables[table] = rows
	}
	return rows
}

// apply applies one change; c.mu is held.
func (c *Cache) apply(ch *dbsync.Change) {
	name := ch.Table.QualifiedName()
	c.infos[name] = ch.Table
	rows := c.rows(name)
	c.stats.Changes++
	switch ch.Op {
	case dbsync.OpDelete:
		delete(rows, ch.Key)
		return
	case dbsync.OpInsert, dbsync.OpUpdate:
	default:
		return
	}
	prevKey := ch.Key
	if ch.OldKey != "" {
		prevKey = ch.OldKey
	}
	prev := rows[prevKey]
	row := copyRow(ch.New)
	for _, col := range ch.Unchanged {
		if v, ok := prev[col]; ok {
			row[col] = v
			c.stats.KeptUnchanged++
		} else if v, ok := ch.Old[col]; ok {
			row[col] = v
			c.stats.KeptUnchanged++
		} else {
			c.stats.UnknownUnchanged++
		}
	}
	if ch.OldKey != "" {
		delete(rows, ch.OldKey)
		c.stats.KeyChanges++
	}
	rows[ch.Key] = row
}

// Snapshot returns a deep copy of the cached tables: "schema.table" -> record ID ->
// row. Tables that were truncated or emptied appear with no rows.
func (c *Cache) Snapshot() map[string]map[string]dbsync.StringMap {
	c.mu.RLock()
	defer c.mu.RUnlock()
	out := make(map[string]map[string]dbsync.StringMap, len(c.tables))
	for t, rows := range c.tables {
		cp := make(map[string]dbsync.StringMap, len(rows))
		for k, r := range rows {
			cp[k] = copyRow(r)
		}
		out[t] = cp
	}
	return out
}

// Row returns a copy of one cached row and whether it is present.
func (c *Cache) Row(table, key string) (dbsync.StringMap, bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	r, ok := c.tables[table][key]
	if !ok {
		return nil, false
	}
	return copyRow(r), true
}

// Len returns the number of cached rows of table.
func (c *Cache) Len(table string) int {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return len(c.tables[table])
}

// TableInfo returns the PGTableInfo last seen for table (nil if none).
func (c *Cache) TableInfo(table string) *dbsync.PGTableInfo {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.infos[table]
}

// Stats returns counters of what the Cache applied.
func (c *Cache) Stats() CacheStats {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.stats
}

func copyRow(r dbsync.StringMap) dbsync.StringMap {
	if r == nil {
		return dbsync.StringMap{}
	}
	cp := make(dbsync.StringMap, len(r))
	for k, v := range r {
		cp[k] = v
	}
	return cp
}
