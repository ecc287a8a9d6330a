package handlers

import (
	"errors"
	"fmt"
	"slices"
	"sync"

	"github.com/dbsync/dbsync"
	"github.com/dbsync/dbsync/internal/rowmatch"
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
// Within a transaction the Cache follows rows, not only keys: under a DEFERRABLE key
// (which PostgreSQL will not use as replica identity, so the table runs under REPLICA
// IDENTITY FULL) two rows can hold one key for a moment, as in a swap (UPDATE ... SET
// id = 3 - id), a row moved onto a held key and on again, or the holder deleted after
// another row moved onto its key. A change taking a row away from a key (a delete, or
// an update's old row) takes the row the transaction put there whose values agree with
// the old row PostgreSQL sent, else the row that was there before the transaction.
//
// A change of a table without a record ID (Change.Key "": neither a primary key nor a
// replica identity index, or a key holding a generated column, which pgoutput never
// sends) is refused with an error wrapping dbsync.ErrNoKey.
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
//
// # Schema changes
//
// The Cache follows each table's shape from its RELATION messages (and the table
// descriptions changes carry), in transaction order:
//   - DROP COLUMN: the column is removed from every cached row of the table (counted
//     in Stats().DroppedColumns), as SELECT * no longer shows it. A column dropped and
//     added again under its name (DROP COLUMN c, ADD COLUMN c) is told apart by its
//     attribute number when the Syncer described the table before and after (live):
//     the old c leaves the rows, and the new c is an added column. Read from a backlog
//     whose shapes were all described after the ADD, the two look alike, and rows not
//     changed since keep the old c's value. A refresh row read before the DROP and
//     delivered after it (the DROP and a change of the table inside its window) does
//     not bring c back, unless c was the table's last column (attribute numbers then
//     do not tell it from a column added since);
//   - ADD COLUMN: rows cached before it lack the column until they change or are
//     refreshed. SELECT * shows the column's default there (NULL without one); the
//     RELATION message does not carry the default, so the Cache does not guess it:
//     Snapshot the table again (or Refresh those rows) where that matters;
//   - ALTER COLUMN ... TYPE: rows cached before it keep the value decoded with the old
//     type until they change or are refreshed (PostgreSQL rewrites the table without
//     logging row changes, and a USING expression can compute anything). When it
//     retypes a key column, the rewritten key values can have other record IDs
//     (numeric(10,2) makes 1 into 1.00), so the cached rows leave the Cache, counted
//     in Stats().UnkeyedRows (Snapshot the table to get them back), unless the
//     type stays among int2, int4 and int8 or among text and varchar;
//   - RENAME COLUMN looks like a drop and an add (RELATION messages carry names, not
//     attribute numbers): the old name is removed from cached rows and the new one is
//     missing until the rows change or are refreshed;
//   - RENAME TABLE (or SET SCHEMA): tables are tracked by relation OID, so the rows
//     move to the new name with the table's first RELATION message after the rename
//     (sent before its next change or TRUNCATE); until then they stay under the old
//     name, unless another table takes that name first (two tables swapping names,
//     only one of them changed since): then they are out of sight until the table's
//     own RELATION message names it. A table that takes over a name another relation
//     held (dropped or renamed since) starts empty;
//   - DROP TABLE is not decoded: the table's rows stay in the Cache (in memory, out
//     of sight once another table takes the name); nor are ATTACH and DETACH
//     PARTITION (under publish_via_partition_root, a detached partition's rows stay
//     under the partitioned table, an attached table's rows are missing from it;
//     without it, a detached partition's rows stay under its name, no longer
//     changed, and an attached table has only the rows changed since);
//   - a new key (the primary key moved to other columns, another replica identity
//     index), from its first RELATION message, change or refresh row: the cached rows
//     are keyed again from their values (a renamed key column keeps their IDs); rows
//     lacking a column of the new key (one added since they were cached) leave the
//     Cache, counted in Stats().UnkeyedRows: Snapshot the table to get them back.
type Cache struct {
	dbsync.DefaultMessageHandler

	mu     sync.RWMutex
	tables map[string]*cacheTable // by "schema.table": the table holding that name
	byOID  map[uint32]*cacheTable // by relation OID
	tx     cacheTx
	stats  CacheStats
	// touched are the tables whose held the transaction being applied set.
	touched []*cacheTable
}

// cacheTable is one cached table.
type cacheTable struct {
	oid  uint32
	name string // "schema.table" as last seen
	// info is the description last seen (TableInfo); shape the one whose columns the
	// cached rows follow: a RELATION message's or a change's, or a refresh row's table
	// until one of those comes (nil: none yet).
	info, shape *dbsync.PGTableInfo
	// keyInfo is the description the rows are keyed by (nil: none yet): its key
	// (PrimaryKey, never empty) and its key columns' types, which their record IDs
	// follow (keyRetyped). It is the last one rekey took, so that the refresh rows of
	// a Snapshot taken after a key column's ALTER COLUMN ... TYPE, described by the
	// new type before the stream's RELATION message (shape) is, are not taken for
	// another retype one by one.
	keyInfo *dbsync.PGTableInfo
	rows    map[string]dbsync.StringMap
	// held is what the transaction being applied did at each record ID it touched,
	// kept from the table's first change in it under REPLICA IDENTITY FULL (a key
	// under DEFAULT or USING INDEX is never DEFERRABLE: PostgreSQL uses only an
	// immediate unique index as replica identity); nil otherwise, and outside
	// HandleCommitMessage.
	held map[string]cacheHeld
}

// cacheHeld is what the transaction being applied did at one record ID: the rows it
// put there that are still there (more than one only while a DEFERRABLE key is
// violated), the row that was there before the transaction (nil: none cached), and
// whether that row left.
type cacheHeld struct {
	top     dbsync.StringMap   // the one put last (nil: none): the one in rows
	under   []dbsync.StringMap // the ones put before, oldest first
	pre     dbsync.StringMap
	preGone bool
}

// n is the number of rows the transaction put at the record ID that are still there.
func (h *cacheHeld) n() int {
	if h.top == nil {
		return 0
	}
	return len(h.under) + 1
}

// at is the i-th of them, oldest first.
func (h *cacheHeld) at(i int) dbsync.StringMap {
	if i < len(h.under) {
		return h.under[i]
	}
	return h.top
}

// remove takes the i-th of them away.
func (h *cacheHeld) remove(i int) {
	switch {
	case i < len(h.under):
		h.under = slices.Delete(h.under, i, i+1)
	case len(h.under) > 0:
		h.top = h.under[len(h.under)-1]
		h.under = h.under[:len(h.under)-1]
	default:
		h.top = nil
	}
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
	// DroppedColumns counts columns removed from a table's cached rows because a
	// RELATION message of the table no longer had them (ALTER TABLE ... DROP COLUMN).
	DroppedColumns int64
	// UnkeyedRows counts cached rows removed because the table's key changed and they
	// could not be keyed by the new one (it holds a column added since they were
	// cached), or a key column changed type (ALTER COLUMN ... TYPE): Snapshot the
	// table to get them back.
	UnkeyedRows int64
	// LastCommitLSN is the commit LSN (CommitMessage.CommitLSN) of the last applied
	// transaction.
	LastCommitLSN pglogrepl.LSN
}

// cacheOp is one staged operation of a transaction; exactly one field is set.
type cacheOp struct {
	change   *dbsync.Change
	relation *dbsync.PGTableInfo // a RELATION message's table description
	truncate *cacheTruncate
	refresh  *cacheRefresh
}

type cacheTruncate struct {
	oid  uint32
	name string
	info *dbsync.PGTableInfo // nil when the Syncer had none
}

type cacheRefresh struct {
	key  string
	item dbsync.DBItem
}

// NewCache returns an empty Cache.
func NewCache() *Cache {
	c := &Cache{}
	c.init()
	return c
}

func (c *Cache) init() {
	if c.tables == nil {
		c.tables = map[string]*cacheTable{}
		c.byOID = map[uint32]*cacheTable{}
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
		case op.relation != nil:
			c.relation(op.relation)
		case op.truncate != nil:
			c.applyTruncate(op.truncate)
		case op.refresh != nil:
			c.applyRefresh(op.refresh.key, op.refresh.item)
		}
	}
	for _, t := range c.touched {
		t.held = nil
	}
	clear(c.touched)
	c.touched = c.touched[:0]
	for i := range c.tx.ops {
		c.tx.ops[i] = cacheOp{} // let go of the changes
	}
	c.tx = cacheTx{ops: c.tx.ops[:0]}
	c.stats.Transactions++
	c.stats.LastCommitLSN = m.CommitLSN
	return nil
}

// HandleRelationMessage stages the table's shape: columns it no longer has are
// removed from its cached rows at COMMIT. Outside a transaction it is applied at once.
// It applies to a table the Cache holds; it does not make a new one.
func (c *Cache) HandleRelationMessage(_ int, _ *pglogrepl.RelationMessage, info *dbsync.PGTableInfo) error {
	if info == nil {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case !c.tx.open:
		c.init()
		c.relation(info)
	case !c.tx.skip:
		c.tx.ops = append(c.tx.ops, cacheOp{relation: info})
	}
	return nil
}

// relation applies a RELATION message to the table it describes, if the Cache holds
// it (by relation OID). A table the Cache does not hold yet is made by its first
// change, TRUNCATE or refresh row, which carry the same description: a RELATION
// message alone does not make one, as pgoutput also sends one for each partition
// whose changes it publishes under the partitioned table (publish_via_partition_root),
// and no row is ever cached under the partition's name. c.mu is held.
func (c *Cache) relation(info *dbsync.PGTableInfo) {
	if c.byOID[info.RelationID] == nil {
		return
	}
	c.reshape(c.table(info.RelationID, info.QualifiedName()), info)
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
		return fmt.Errorf("handlers: Cache: %w: %s has no key its changes carry (neither a primary key nor a replica identity index, or a key holding a generated column, which pgoutput never sends), so its rows cannot be cached by key; key it by columns that are not generated, or leave the table out of the publication",
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
		op := &cacheTruncate{oid: r.RelationID, name: r.Namespace + "." + r.RelationName}
		if i < len(infos) && infos[i] != nil {
			op.info = infos[i]
			op.name = infos[i].QualifiedName()
		}
		c.tx.ops = append(c.tx.ops, cacheOp{truncate: op})
	}
	return nil
}

// HandleRefresh upserts item.Values under item.Table and key: at the COMMIT of the
// transaction it arrives in (the high watermark's), or at once outside a transaction.
// Columns of the table the selection did not return (a Refresh query naming some
// columns) keep their cached values.
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

// table returns the cached table with relation OID oid (0: unknown) now named name,
// creating it. A table renamed since is moved to its new name; a table that takes
// over the name of another (dropped or renamed) starts empty. c.mu is held.
func (c *Cache) table(oid uint32, name string) *cacheTable {
	if t := c.byOID[oid]; oid != 0 && t != nil {
		if t.name != name || c.tables[name] != t {
			if c.tables[t.name] == t {
				delete(c.tables, t.name)
			}
			t.name = name
			c.tables[name] = t
		}
		return t
	}
	if t := c.tables[name]; t != nil && (oid == 0 || t.oid == 0) {
		if t.oid == 0 && oid != 0 {
			t.oid = oid
			c.byOID[oid] = t
		}
		return t
	}
	t := &cacheTable{oid: oid, name: name, rows: map[string]dbsync.StringMap{}}
	c.tables[name] = t
	if oid != 0 {
		c.byOID[oid] = t
	}
	return t
}

// reshape makes info the table's shape: when its key is not the previous shape's, the
// cached rows are keyed again (rekey); columns of the previous shape that info no
// longer has are removed from every cached row. c.mu is held.
func (c *Cache) reshape(t *cacheTable, info *dbsync.PGTableInfo) {
	t.info = info
	c.rekey(t, t.shape, info)
	if info == t.shape {
		return
	}
	if t.shape != nil {
		var gone []string
		for _, col := range t.shape.Columns {
			if !hasColumn(info, col.ColumnName) || recreated(t.shape, col, info) {
				gone = append(gone, col.ColumnName)
			}
		}
		if len(gone) > 0 {
			drop := func(r dbsync.StringMap) {
				for _, g := range gone {
					delete(r, g)
				}
			}
			for _, r := range t.rows {
				drop(r)
			}
			for _, h := range t.held { // rows two held under one key
				for _, r := range h.under {
					drop(r)
				}
				drop(h.top)
				drop(h.pre)
			}
			c.stats.DroppedColumns += int64(len(gone))
		}
	}
	t.shape = info
}

// rekey keys the cached rows of t by info's key when it is not prev's (ALTER TABLE ...
// DROP CONSTRAINT, ADD PRIMARY KEY; REPLICA IDENTITY USING INDEX of another index):
// changes from now on carry record IDs of the new key, and a row left under its old ID
// would never be updated or deleted again. Where the new key's columns are columns of
// prev, each row's new ID is made from its values; a row without them all (an
// unchanged TOASTed key value the Cache never learned) leaves the Cache. Where a key
// column is renamed (the old key's column gone, the new one unknown to prev, at the
// same attribute number as far as both descriptions know it), the IDs, made of the
// same values, stay. Otherwise the key moved to a column added since the rows were
// cached, which they lack: they leave the Cache. Rows that leave are counted in
// Stats().UnkeyedRows; Snapshot the table to get them back. c.mu is held.
func (c *Cache) rekey(t *cacheTable, prev, info *dbsync.PGTableInfo) {
	if len(info.PrimaryKey) == 0 {
		return // without a key the table's changes are refused (ErrNoKey)
	}
	keyedBy := t.keyInfo
	t.keyInfo = info
	if keyedBy == nil {
		return // the first key: nothing is keyed otherwise yet
	}
	old := keyedBy.PrimaryKey
	if !slices.Equal(old, info.PrimaryKey) {
		// What the transaction did is known by IDs of the new key from now on.
		// PostgreSQL refuses to change a table's key while its DEFERRABLE key is
		// violated (pending trigger events), so each ID holds one row here.
		t.held = nil
	}
	if prev == nil || len(t.rows) == 0 {
		return
	}
	if keyRetyped(keyedBy, info) {
		// ALTER COLUMN ... TYPE of a key column rewrote its values (int 1 became
		// numeric 1.00, or whatever a USING expression made), logging no row change:
		// the IDs of the rows' old values are not the IDs changes carry now.
		c.stats.UnkeyedRows += int64(len(t.rows))
		t.rows = map[string]dbsync.StringMap{}
		t.held = nil
		return
	}
	if slices.Equal(old, info.PrimaryKey) {
		return
	}
	byValue := true
	for _, k := range info.PrimaryKey {
		byValue = byValue && hasColumn(prev, k)
	}
	if !byValue {
		if keyRenamed(prev, old, info) {
			return
		}
		c.stats.UnkeyedRows += int64(len(t.rows))
		t.rows = map[string]dbsync.StringMap{}
		return
	}
	rows := make(map[string]dbsync.StringMap, len(t.rows))
	for _, r := range t.rows {
		id, err := info.GetRecordID(r)
		if err != nil {
			c.stats.UnkeyedRows++
			continue
		}
		rows[id] = r
	}
	t.rows = rows
}

// keyRetyped tells whether a column of info's key is a column of prev (the
// description the cached rows are keyed by: cacheTable.keyInfo) of another type
// (TypeOID or TypeModifier) whose values may have record IDs other than the old
// values': any change but one among int2, int4 and int8 (the same decimal text) or
// among text and varchar (the same string). A USING expression that changes the
// values keeping the type (ALTER COLUMN id TYPE int USING id + 1) leaves the RELATION
// message as it was and cannot be seen.
func keyRetyped(prev, info *dbsync.PGTableInfo) bool {
	for _, k := range info.PrimaryKey {
		o, n := columnInfo(prev, k), columnInfo(info, k)
		if o == nil || n == nil || (o.TypeOID == n.TypeOID && o.TypeModifier == n.TypeModifier) {
			continue
		}
		if f := idFamily(o.TypeOID); f == 0 || f != idFamily(n.TypeOID) {
			return true
		}
	}
	return false
}

// idFamily groups types whose equal values have equal record IDs (0: none).
func idFamily(oid uint32) int {
	switch oid {
	case 21, 23, 20: // int2, int4, int8
		return 1
	case 25, 1043: // text, varchar
		return 2
	}
	return 0
}

func columnInfo(info *dbsync.PGTableInfo, name string) *dbsync.PGColumnInfo {
	if info.ColInfo != nil {
		return info.ColInfo[name]
	}
	for _, col := range info.Columns {
		if col.ColumnName == name {
			return col
		}
	}
	return nil
}

// keyRenamed tells whether info's key is the key old (of columns of prev) with key
// columns renamed: as many columns, each the same name or an old column info lacks
// renamed to a new column prev lacks, of the same type and, where both descriptions
// know it (OrdinalPosition not 0: a description read after a rename does not know
// the old name), the same attribute number.
func keyRenamed(prev *dbsync.PGTableInfo, old []string, info *dbsync.PGTableInfo) bool {
	if len(old) != len(info.PrimaryKey) {
		return false
	}
	for i, k := range info.PrimaryKey {
		was := old[i]
		if k == was {
			continue
		}
		if hasColumn(info, was) || hasColumn(prev, k) || prev.ColInfo == nil || info.ColInfo == nil {
			return false
		}
		o, n := prev.ColInfo[was], info.ColInfo[k]
		if o == nil || n == nil || o.TypeOID != n.TypeOID ||
			(o.OrdinalPosition != 0 && n.OrdinalPosition != 0 && o.OrdinalPosition != n.OrdinalPosition) {
			return false
		}
	}
	return true
}

// recreated tells whether info's column of col's name is another column than col of
// prev: dropped and added again under the same name (DROP COLUMN c, ADD COLUMN c),
// which RELATION messages, carrying names, do not show. Their attribute numbers
// differ where both descriptions know them: both read from the catalog (not of a
// dropped table) while the column they describe existed, i.e. live; a description
// read after the column was dropped and added again gives the new one's number.
func recreated(prev *dbsync.PGTableInfo, col *dbsync.PGColumnInfo, info *dbsync.PGTableInfo) bool {
	if prev.Dropped || info.Dropped || info.ColInfo == nil {
		return false
	}
	n := info.ColInfo[col.ColumnName]
	return n != nil && col.OrdinalPosition != 0 && n.OrdinalPosition != 0 && col.OrdinalPosition != n.OrdinalPosition
}

// droppedSince tells whether column name of a selection's description sel was dropped
// before shape, the table's description from a later point of the stream, was
// written: a refresh row read before an ALTER TABLE ... DROP COLUMN and delivered at a
// high watermark after it, past a change of the table that carried the new shape.
// shape lacks the column, while it has another column that sel has at the same
// attribute number, created after name's column (a higher number: attribute numbers
// only grow, so name's column existed when shape was written, and was not renamed,
// shape having no column at its number). The last column dropped is not told apart
// from one added after shape was written, and stays.
func droppedSince(sel, shape *dbsync.PGTableInfo, name string) bool {
	if shape == nil || shape == sel || shape.Dropped || sel.Dropped || hasColumn(shape, name) {
		return false
	}
	col := columnInfo(sel, name)
	if col == nil || col.OrdinalPosition == 0 {
		return false
	}
	later := false
	for _, z := range shape.Columns {
		if z.OrdinalPosition == col.OrdinalPosition {
			return false // renamed: which name is the newer is not known
		}
		if z.OrdinalPosition > col.OrdinalPosition {
			if s := columnInfo(sel, z.ColumnName); s != nil && s.OrdinalPosition == z.OrdinalPosition {
				later = true
			}
		}
	}
	return later
}

func hasColumn(info *dbsync.PGTableInfo, name string) bool {
	if info.ColInfo != nil {
		_, ok := info.ColInfo[name]
		return ok
	}
	for _, col := range info.Columns {
		if col.ColumnName == name {
			return true
		}
	}
	return false
}

func (c *Cache) applyTruncate(op *cacheTruncate) {
	t := c.table(op.oid, op.name)
	if op.info != nil {
		c.reshape(t, op.info)
	}
	t.rows = map[string]dbsync.StringMap{}
	t.held = nil
	c.stats.Truncates++
}

func (c *Cache) applyRefresh(key string, item dbsync.DBItem) {
	t := c.table(item.Table.RelationID, item.Table.QualifiedName())
	t.info = item.Table
	// The row is keyed by the selection's key: rows cached under another one (the
	// table's key changed, and no change of it came since) are keyed again by it.
	c.rekey(t, t.shape, item.Table)
	if t.shape == nil {
		// A baseline until a RELATION message comes; never replaces one, as the
		// description a selection used can be older than the stream's.
		t.shape = item.Table
	}
	row := copyRow(item.Values)
	// A column dropped after the selection read the row, which the stream's shape
	// already lacks (the DROP and a change of the table came inside the window), is
	// not put back into the row.
	for col := range row {
		if droppedSince(item.Table, t.shape, col) {
			delete(row, col)
		}
	}
	// A Refresh query may select some of the table's columns: the others keep their
	// cached values (a column the table no longer has is not kept).
	for col, v := range t.rows[key] {
		if _, selected := row[col]; !selected && hasColumn(item.Table, col) {
			row[col] = v
		}
	}
	t.rows[key] = row
	delete(t.held, key) // the one row there now
	c.stats.Refreshes++
}

// apply applies one change; c.mu is held.
func (c *Cache) apply(ch *dbsync.Change) {
	t := c.table(ch.Table.RelationID, ch.Table.QualifiedName())
	c.reshape(t, ch.Table)
	if t.held == nil && ch.Table.ReplicaIdentity == 'f' {
		t.held = map[string]cacheHeld{}
		c.touched = append(c.touched, t)
	}
	c.stats.Changes++
	switch ch.Op {
	case dbsync.OpDelete:
		c.leave(t, ch.Key, ch.Old)
		return
	case dbsync.OpInsert:
		c.put(t, ch.Key, copyRow(ch.New))
		return
	case dbsync.OpUpdate:
	default:
		return
	}
	prevKey := ch.Key
	if ch.OldKey != "" {
		prevKey = ch.OldKey
	}
	var prev dbsync.StringMap
	if t.held == nil && ch.OldKey == "" {
		prev = t.rows[prevKey] // put replaces it
	} else {
		prev = c.leave(t, prevKey, ch.Old)
	}
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
		c.stats.KeyChanges++
	}
	c.put(t, ch.Key, row)
}

// leave takes away from record ID id of t the row that a delete or an update whose old
// row PostgreSQL sent as old (nil: none) removes, and returns it (nil: not cached).
// That is the row the transaction put at id whose values agree with old's (the latest
// such), else the row that was there before the transaction: two rows hold id only
// under a violated DEFERRABLE key, whose table runs under REPLICA IDENTITY FULL, so old
// is the whole row there. Values are compared only when the transaction put a row at
// id before. Without t.held (no table of a DEFERRABLE key), the row at id leaves.
// c.mu is held.
func (c *Cache) leave(t *cacheTable, id string, old dbsync.StringMap) dbsync.StringMap {
	if t.held == nil {
		r := t.rows[id]
		delete(t.rows, id)
		return r
	}
	h, touched := t.held[id]
	if !touched {
		// The row there before the transaction (if cached) leaves.
		r := t.rows[id]
		delete(t.rows, id)
		t.held[id] = cacheHeld{preGone: true}
		return r
	}
	i := rowmatch.Leaving(h.n(), h.at, old, h.preGone)
	var r dbsync.StringMap
	if i >= 0 {
		r = h.at(i)
		h.remove(i)
	} else if !h.preGone {
		r, h.pre, h.preGone = h.pre, nil, true
	}
	switch {
	case h.top != nil:
		t.rows[id] = h.top
	case !h.preGone && h.pre != nil:
		t.rows[id] = h.pre
	default:
		delete(t.rows, id)
	}
	t.held[id] = h
	return r
}

// put puts row at record ID id of t, where other rows may stay for a moment (a
// DEFERRABLE key). c.mu is held.
func (c *Cache) put(t *cacheTable, id string, row dbsync.StringMap) {
	if t.held != nil {
		h, touched := t.held[id]
		if !touched {
			h.pre = t.rows[id]
		}
		if h.top != nil {
			h.under = append(h.under, h.top)
		}
		h.top = row
		t.held[id] = h
	}
	t.rows[id] = row
}

// Snapshot returns a copy of the cached tables: "schema.table" -> record ID -> row,
// new maps down to each row. The values in them are the cached ones, shared, not
// copied: a []byte, json.RawMessage, array ([]any) or numeric must not be modified.
// Tables that were truncated or emptied appear with no rows.
func (c *Cache) Snapshot() map[string]map[string]dbsync.StringMap {
	c.mu.RLock()
	defer c.mu.RUnlock()
	out := make(map[string]map[string]dbsync.StringMap, len(c.tables))
	for name, t := range c.tables {
		cp := make(map[string]dbsync.StringMap, len(t.rows))
		for k, r := range t.rows {
			cp[k] = copyRow(r)
		}
		out[name] = cp
	}
	return out
}

// Row returns a copy of one cached row (a new map; its values are shared, as
// Snapshot's) and whether it is present.
func (c *Cache) Row(table, key string) (dbsync.StringMap, bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	t := c.tables[table]
	if t == nil {
		return nil, false
	}
	r, ok := t.rows[key]
	if !ok {
		return nil, false
	}
	return copyRow(r), true
}

// Len returns the number of cached rows of table.
func (c *Cache) Len(table string) int {
	c.mu.RLock()
	defer c.mu.RUnlock()
	if t := c.tables[table]; t != nil {
		return len(t.rows)
	}
	return 0
}

// TableInfo returns the PGTableInfo last seen for table (nil if none).
func (c *Cache) TableInfo(table string) *dbsync.PGTableInfo {
	c.mu.RLock()
	defer c.mu.RUnlock()
	if t := c.tables[table]; t != nil {
		return t.info
	}
	return nil
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
