package dbsync

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/lib/pq"
)

// PGColumnInfo describes one column of a published table as a RELATION message gives
// it (name, type OID, modifier: the types in force for the changes that follow it),
// completed from the catalog (pg_attribute, pg_type).
type PGColumnInfo struct {
	// ColumnName is the column's name (pg_attribute.attname).
	ColumnName string
	// OrdinalPosition is attnum (1-based; dropped columns leave gaps), or 0 when the
	// catalog no longer has a column of this name (dropped or renamed since).
	OrdinalPosition int
	// TypeOID is the column type's OID as the RELATION message gives it.
	TypeOID uint32
	// ColumnType is the SQL type name with modifier, as format_type() gives it
	// (e.g. "numeric(10,2)", "timestamp with time zone").
	ColumnType string
	// TypeName is the type's name without modifier (format_type(oid, NULL), e.g.
	// "numeric", "character varying", "mood").
	TypeName string
	// TypeModifier is atttypmod (-1 when none).
	TypeModifier int32
	// NotNull is attnotnull.
	NotNull bool
	// KeyPosition is the column's 1-based position in the table's key
	// (PGTableInfo.PrimaryKey), 0 if not a key column.
	KeyPosition int
	// ReplicaIdentity is true when pgoutput flags the column as part of the replica
	// identity (the key sent in 'K' old tuples; every column under FULL).
	ReplicaIdentity bool

	dec *decodeInfo
	// domainBases names (format_type) the base types of a column of a domain type,
	// nearest first (a domain over a domain over integer: the inner domain, integer):
	// a key cast to one of them prints as the key does (checkKeyOutputs).
	domainBases []string
	// ordering is the comparison operators of the type's default B-tree operator
	// class (sql/column_types_keys.sql), which selections compare key columns with
	// (keyOperators); nil when the type has none (orderingLooked) or when it was not
	// looked up: a column not in the key when the table was described, a description
	// of the decoding path (only describeOID's, which selections use, look them up),
	// or a PGColumnInfo built by hand.
	ordering       *btreeOps
	orderingLooked bool
}

// btreeOps names the operators of a default B-tree operator class for the strategies
// selections compare keys with: =, >, <= and >= (btreeOpIndex), each in its schema.
type btreeOps struct {
	schema, name [4]string
}

// btreeOpIndex is op's index in btreeOps: "=" 0, ">" 1, "<=" 2, ">=" 3.
func btreeOpIndex(op string) int {
	switch op {
	case "=":
		return 0
	case ">":
		return 1
	case "<=":
		return 2
	case ">=":
		return 3
	}
	panic("dbsync: no B-tree strategy for operator " + op)
}

// operator is OPERATOR("schema".name) of the class's operator for op (=, >, <=, >=).
func (o *btreeOps) operator(op string) string {
	i := btreeOpIndex(op)
	return "OPERATOR(" + pq.QuoteIdentifier(o.schema[i]) + "." + o.name[i] + ")"
}

// PGTableInfo describes a published table: its schema, columns, primary key and
// replica identity. Columns follow a RELATION message (pgoutput, "Logical Replication
// Message Formats" in the PostgreSQL docs); nullability, key order and type names come
// from the catalog (pg_class, pg_attribute, pg_index, pg_type) read by relation OID.
// dbsync refreshes it whenever a RELATION message shows the table changed.
type PGTableInfo struct {
	// RelationID is the table's OID (pgoutput's relation ID).
	RelationID uint32
	// Namespace and TableName name the table (unquoted) as the RELATION message does:
	// the name when the change was made.
	Namespace string
	TableName string
	// Columns in the RELATION message's order (attnum order).
	Columns []*PGColumnInfo
	// ColInfo maps column names to Columns entries.
	ColInfo map[string]*PGColumnInfo
	// PrimaryKey lists the key columns in key order, the columns record IDs are made
	// of: the replica identity index when the table has one (REPLICA IDENTITY USING
	// INDEX), even if it also has a primary key, since old-key tuples of changes
	// (DELETEs, key-changing UPDATEs) hold that index's columns and an UPDATE of
	// other columns carries none; otherwise the primary key. Only the index's key
	// columns (pg_index.indnkeyatts) are listed, not those a covering index INCLUDEs,
	// which pgoutput neither flags nor sends in old-key tuples. Empty: the table has no
	// key (changes cannot be given a record ID; see CheckReplicaIdentity), or its key
	// holds a generated column, which pgoutput does not send (PostgreSQL 15), so
	// changes carry no whole key either.
	PrimaryKey []string
	// ReplicaIdentity is pg_class.relreplident: 'd' default, 'n' nothing, 'f' full,
	// 'i' index.
	ReplicaIdentity byte
	// Dropped is true when the table was not in the catalog when described: the info
	// comes from the RELATION message alone (key = replica identity columns).
	Dropped bool

	// generatedKey names a generated column of the table's primary key (or replica
	// identity index): pgoutput does not send it, so PrimaryKey is empty.
	generatedKey string

	reln *pglogrepl.RelationMessage
	// partitioned: a partitioned table (relkind 'p') that selections read whole, its
	// rows being its partitions' (fromTable). Set only for tables a selection may
	// read so (tableInfoByName: the publication publishes the partitions' changes
	// under the partitioned table's OID).
	partitioned bool
}

// QualifiedName returns "schema.table" (unquoted), the doctype of Batcher calls and
// the table_name of the control schema's snapshot_progress rows. When the schema or
// the table name holds a dot, both are quoted as SQL identifiers (pq.QuoteIdentifier:
// "a.b"."c", "a"."b.c"), so that no two tables share a name: unquoted, both of those
// would be "a.b.c".
func (t *PGTableInfo) QualifiedName() string { return qualifiedName(t.Namespace, t.TableName) }

// qualifiedName is PGTableInfo.QualifiedName of a schema and table name.
func qualifiedName(schema, table string) string {
	if strings.Contains(schema, ".") || strings.Contains(table, ".") {
		return pq.QuoteIdentifier(schema) + "." + pq.QuoteIdentifier(table)
	}
	return schema + "." + table
}

// Relation returns the RELATION message this description was built from (nil for a
// PGTableInfo built by hand).
func (t *PGTableInfo) Relation() *pglogrepl.RelationMessage { return t.reln }

// maxShapes bounds the RELATION shapes cached per relation: a backlog spanning an ALTER
// sees the old and the new shape in every poll.
const maxShapes = 4

// tableCache caches PGTableInfo per relation ID and RELATION shape, and pg_type rows per
// type OID. RELATION messages arrive before the first change of each table in every
// poll; the catalog is read only when a relation shape is new, or, for a shape whose
// message does not name the key (REPLICA IDENTITY FULL flags every column), to check
// that key: at most once per keyRecheckInterval per table, and at the first RELATION
// message after recheckKeys (forRelation). The keys of every such table due then are
// read in that one query (staleKeysLocked), not one query per table. What it keeps
// of a relation whose last RELATION message is relationIdleTTL old or more goes at
// the start of a poll after one that caught up with the WAL (evictIdle,
// Syncer.evictIdleRelations): a table dropped (or left out of the publication) is
// not kept for the Syncer's life, nor are the pg_type rows only such tables used
// (pruneTypesLocked).
type tableCache struct {
	db      *sql.DB
	mu      sync.Mutex
	shapes  map[uint32][]*PGTableInfo // most recent first
	current map[uint32]*PGTableInfo
	types   map[uint32]pgType
	// keyChecked is when the catalog's key of a relation whose messages do not name it
	// was last read (absent: never, or reset by recheckKeys).
	keyChecked map[uint32]time.Time
	// seen is when a RELATION message of each cached relation was last met.
	seen map[uint32]time.Time
	// lastEvict is when evictIdle last looked at seen.
	lastEvict time.Time
	now       func() time.Time // time.Now; tests move it
}

// relationIdleTTL is how long, at least, what the Syncer keeps of a relation (its
// descriptions, its last RELATION message, its tracking by the refresh window)
// outlives the relation's last RELATION message; it goes at the first poll that finds
// it that old after a poll that caught up with the WAL, while caught up at most twice
// that long after (evictIdle looks once per relationIdleTTL). pgoutput sends one
// before the first change of each table in every poll, so only tables without changes
// for this long lose it: a table that was dropped, or one that changes so rarely that
// reading the catalog again at its next change costs nothing. Without it a Syncer
// under table churn (partitions or staging tables created and dropped) would keep
// every table it ever saw.
const relationIdleTTL = 10 * time.Minute

// keyRecheckInterval is how long the catalog's key of a table whose RELATION messages
// do not name it (REPLICA IDENTITY FULL, or no key flagged) is trusted before it is
// read again at the table's next RELATION message. A primary key moved to other
// columns (or added) under such a table keys its changes within this long; checking at
// every RELATION message would cost a catalog query per such table and poll (up to
// 100 a second at the default MinPollInterval) for a rare DDL. When one table's key is
// due, those of the others due are read in the same query (staleKeysLocked).
const keyRecheckInterval = time.Second

// pgType is the part of a pg_type row decoding needs.
type pgType struct {
	oid      uint32
	typtype  byte // b base, c composite, d domain, e enum, r range, m multirange, p pseudo
	category byte // typcategory; 'A' array
	baseType uint32
	elemType uint32
	name     string
	// delim is typdelim: the character array_out separates this type's elements with
	// in its arrays (',' for nearly every type; ';' for box and domains over it, and a
	// user-defined base type may declare its own).
	delim byte
	// arrayIn says that values of the type are read and printed as arrays (typinput
	// array_in): not so for int2vector and oidvector, filed as arrays (category 'A',
	// an element type) with a text form of their own ("1 2").
	arrayIn bool
	// baseName is a domain's base type's name (format_type).
	baseName string
}

func newTableCache(db *sql.DB) *tableCache {
	return &tableCache{db: db, shapes: map[uint32][]*PGTableInfo{}, current: map[uint32]*PGTableInfo{}, types: map[uint32]pgType{},
		keyChecked: map[uint32]time.Time{}, seen: map[uint32]time.Time{}, now: time.Now}
}

// evictIdle forgets the relations whose last RELATION message is idle old or more,
// and returns their IDs. It looks at most once per idle (nil otherwise), so its cost
// is nothing at most polls. The poller calls it at the start of a poll
// (Syncer.evictIdleRelations), when no RELATION message of an earlier poll is in use
// any more: pgoutput sends each relation's again before its first change in the new
// one.
func (c *tableCache) evictIdle(idle time.Duration) []uint32 {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.now()
	if now.Sub(c.lastEvict) < idle {
		return nil
	}
	c.lastEvict = now
	var out []uint32
	for id, t := range c.seen {
		if now.Sub(t) >= idle {
			delete(c.shapes, id)
			delete(c.current, id)
			delete(c.keyChecked, id)
			delete(c.seen, id)
			out = append(out, id)
		}
	}
	if len(out) > 0 {
		c.pruneTypesLocked()
	}
	return out
}

// pruneTypesLocked forgets the pg_type rows no cached relation's columns use (their
// types, and the domain base and array element types those lead to): the types of
// evicted relations, which may have been dropped with them, would otherwise be kept
// for the Syncer's life under churn of tables with types of their own
// (TestTypeCacheAndProgressBoundedUnderChurn). A type still in use by a relation
// that comes back is read again at its next load. c.mu held.
func (c *tableCache) pruneTypesLocked() {
	keep := make(map[uint32]bool, len(c.types))
	var todo []uint32
	for _, infos := range c.shapes {
		for _, info := range infos {
			for _, col := range info.Columns {
				todo = append(todo, col.TypeOID)
			}
		}
	}
	for len(todo) > 0 {
		oid := todo[len(todo)-1]
		todo = todo[:len(todo)-1]
		t, ok := c.types[oid]
		if !ok || keep[oid] {
			continue
		}
		keep[oid] = true
		todo = append(todo, t.baseType, t.elemType)
	}
	for oid := range c.types {
		if !keep[oid] {
			delete(c.types, oid)
		}
	}
}

// recheckKeys makes the next RELATION message of every table whose messages do not
// name the key read the catalog's key again, whenever it was last read. The poller
// calls it when a poll failed (a key may have been added to fix ErrNoKey, say).
func (c *tableCache) recheckKeys() {
	c.mu.Lock()
	defer c.mu.Unlock()
	clear(c.keyChecked)
}

// forRelation returns the table info for a RELATION message, reading the catalog when
// this shape of the relation was not seen before, or when the message does not name
// the key (keyFromCatalog) and the catalog's key was last read keyRecheckInterval ago
// or more (or before recheckKeys): then it is read again, since it can change while
// the message stays the same.
func (c *tableCache) forRelation(ctx context.Context, reln *pglogrepl.RelationMessage) (*PGTableInfo, error) {
	c.mu.Lock()
	c.seen[reln.RelationID] = c.now()
	var hit *PGTableInfo
	for _, info := range c.shapes[reln.RelationID] {
		if sameRelation(info.reln, reln) {
			hit = info
			break
		}
	}
	if hit != nil && (!keyFromCatalog(reln) || c.keyFresh(reln.RelationID)) {
		c.current[reln.RelationID] = hit
		c.mu.Unlock()
		return hit, nil
	}
	if keyFromCatalog(reln) {
		c.keyChecked[reln.RelationID] = c.now()
	}
	var others []*PGTableInfo
	if hit != nil {
		others = c.staleKeysLocked(reln.RelationID)
	}
	c.mu.Unlock()
	var info *PGTableInfo
	var err error
	if hit != nil {
		info, err = c.recheckKeysOf(ctx, hit, reln, others)
	} else {
		info, err = c.load(ctx, reln)
	}
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	s := c.shapes[reln.RelationID]
	if hit != nil {
		s = slices.Clone(s)
		if i := slices.Index(s, hit); i >= 0 {
			s = slices.Delete(s, i, i+1)
		}
	}
	s = append([]*PGTableInfo{info}, s...)
	if len(s) > maxShapes {
		s = s[:maxShapes]
	}
	c.shapes[reln.RelationID] = s
	c.current[reln.RelationID] = info
	c.mu.Unlock()
	return info, nil
}

// keyFresh tells whether the catalog's key of relID was read less than
// keyRecheckInterval ago (c.mu held).
func (c *tableCache) keyFresh(relID uint32) bool {
	t, ok := c.keyChecked[relID]
	return ok && c.now().Sub(t) < keyRecheckInterval
}

// keyFromCatalog tells whether reln leaves the key to the catalog: it flags every
// column (REPLICA IDENTITY FULL) or none (NOTHING, or no key when it was written).
// Otherwise its flagged columns are the key's (loadTableInfo), whatever the catalog
// says later.
func keyFromCatalog(reln *pglogrepl.RelationMessage) bool {
	return reln.ReplicaIdentity == 'f' || !anyFlagged(reln)
}

// maxBatchedKeyChecks bounds how many other relations a key check reads with the one
// that is due (staleKeysLocked).
const maxBatchedKeyChecks = 1000

// staleKeysLocked returns the current descriptions of relations other than relID
// whose messages leave the key to the catalog and whose key is due to be read again
// (c.mu held), up to maxBatchedKeyChecks, marking them read now: recheckKeysOf reads
// them in the same query as relID's, so that a poll whose transactions touch many such
// tables (REPLICA IDENTITY FULL) reads the catalog once, not once per table.
func (c *tableCache) staleKeysLocked(relID uint32) []*PGTableInfo {
	var out []*PGTableInfo
	now := c.now()
	for id, cur := range c.current {
		if len(out) >= maxBatchedKeyChecks {
			break
		}
		if id == relID || cur.reln == nil || !keyFromCatalog(cur.reln) || c.keyFresh(id) {
			continue
		}
		c.keyChecked[id] = now
		out = append(out, cur)
	}
	return out
}

// recheckKeysOf reads the key of a relation whose RELATION message was described before
// (cached) again, with the keys of others (staleKeysLocked), in one query: the primary
// key may have moved to other columns, or been added, with the message unchanged
// (keyFromCatalog). It returns cached when the key is the same (or the table is gone:
// changes of a dropped table keep the description they had), else a description with
// the new key and cached's column types; others whose key changed are replaced in the
// cache the same way.
func (c *tableCache) recheckKeysOf(ctx context.Context, cached *PGTableInfo, reln *pglogrepl.RelationMessage, others []*PGTableInfo) (*PGTableInfo, error) {
	ids := []uint32{reln.RelationID}
	for _, o := range others {
		ids = append(ids, o.RelationID)
	}
	cat, err := readCatalog(ctx, c.db, ids)
	if err != nil {
		return nil, err
	}
	info, err := recheckKey(cached, reln, cat[reln.RelationID])
	if err != nil {
		return nil, err
	}
	for _, o := range others {
		fresh, err := recheckKey(o, o.reln, cat[o.RelationID])
		if err != nil || fresh == o {
			continue // read again when its next message finds it due
		}
		c.mu.Lock()
		if s := c.shapes[o.RelationID]; s != nil {
			if i := slices.Index(s, o); i >= 0 {
				s = slices.Clone(s)
				s[i] = fresh
				c.shapes[o.RelationID] = s
			}
		}
		if c.current[o.RelationID] == o {
			c.current[o.RelationID] = fresh
		}
		c.mu.Unlock()
	}
	return info, nil
}

// recheckKey is recheckKeysOf of one relation, given its catalog rows.
func recheckKey(cached *PGTableInfo, reln *pglogrepl.RelationMessage, rows []catalogRow) (*PGTableInfo, error) {
	fresh, err := tableInfoFromCatalog(reln, rows)
	if errors.Is(err, ErrUnknownRelation) {
		return cached, nil
	}
	if err != nil {
		return nil, err
	}
	if slices.Equal(fresh.PrimaryKey, cached.PrimaryKey) && fresh.generatedKey == cached.generatedKey {
		return cached, nil
	}
	for i, col := range fresh.Columns { // the same message: the same columns and types
		old := cached.Columns[i]
		col.ColumnType, col.TypeName, col.dec, col.domainBases = old.ColumnType, old.TypeName, old.dec, old.domainBases
		col.ordering, col.orderingLooked = old.ordering, old.orderingLooked
	}
	return fresh, nil
}

// get returns the info of the last RELATION message seen for a relation ID (nil if none).
func (c *tableCache) get(relID uint32) *PGTableInfo {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.current[relID]
}

func sameRelation(a, b *pglogrepl.RelationMessage) bool {
	if a == nil || b == nil {
		return a == b
	}
	if a.RelationID != b.RelationID || a.Namespace != b.Namespace || a.RelationName != b.RelationName || a.ReplicaIdentity != b.ReplicaIdentity || len(a.Columns) != len(b.Columns) {
		return false
	}
	for i := range a.Columns {
		x, y := a.Columns[i], b.Columns[i]
		if x.Name != y.Name || x.DataType != y.DataType || x.TypeModifier != y.TypeModifier || x.Flags != y.Flags {
			return false
		}
	}
	return true
}

// describeOID describes a table by OID from the catalog alone: as a RELATION message
// for its current shape would (catalogRelation), then like any relation.
func (c *tableCache) describeOID(ctx context.Context, relID uint32) (*PGTableInfo, error) {
	reln, err := catalogRelation(ctx, c.db, relID)
	if err != nil {
		return nil, err
	}
	info, err := loadTableInfo(ctx, c.db, reln)
	if err != nil {
		return nil, err
	}
	if err := c.describeTypes(ctx, info, true); err != nil {
		return nil, err
	}
	return info, nil
}

// catalogRelation builds the RELATION message pgoutput would send for a table's current
// shape: live columns in attnum order with their types, the replica identity flag on
// the key columns (every column under REPLICA IDENTITY FULL, none under NOTHING).
// Like pgoutput (PostgreSQL 15: logicalrep_write_attrs), it leaves generated columns
// out: changes never carry them, so neither do rows selected by this description
// (snapshots, SelectList).
// Errors wrap ErrUnknownRelation when the table does not exist.
func catalogRelation(ctx context.Context, db *sql.DB, relID uint32) (*pglogrepl.RelationMessage, error) {
	cat, err := readCatalog(ctx, db, []uint32{relID})
	if err != nil {
		return nil, err
	}
	reln := &pglogrepl.RelationMessage{RelationID: relID}
	for _, r := range cat[relID] {
		reln.Namespace, reln.RelationName, reln.ReplicaIdentity = r.nsp, r.rel, r.ident[0]
		if r.generated {
			continue
		}
		col := &pglogrepl.RelationMessageColumn{Name: r.name, DataType: r.typid, TypeModifier: r.typmod}
		if r.ident == "f" || (r.ident != "n" && r.keyPos > 0) {
			col.Flags = 1
		}
		reln.Columns = append(reln.Columns, col)
	}
	if len(cat[relID]) == 0 {
		return nil, fmt.Errorf("%w: relation %d not found in the catalog", ErrUnknownRelation, relID)
	}
	reln.ColumnNum = uint16(len(reln.Columns))
	return reln, nil
}

// load describes a relation: columns and types from reln, the rest from the catalog.
// A relation missing from the catalog (dropped) is described from reln alone.
func (c *tableCache) load(ctx context.Context, reln *pglogrepl.RelationMessage) (*PGTableInfo, error) {
	info, err := loadTableInfo(ctx, c.db, reln)
	if errors.Is(err, ErrUnknownRelation) {
		info = tableInfoFromRelation(reln)
	} else if err != nil {
		return nil, err
	}
	if err := c.describeTypes(ctx, info, false); err != nil {
		return nil, err
	}
	return info, nil
}

// loadTableInfo reads a relation's description from the catalog by OID and lays it
// over reln's columns (matched by name). The key is the catalog's replica identity
// index, else its primary key (sql/table_columns.sql), when all its columns are in
// reln and, if reln flags replica identity columns, they are those; else reln's
// replica identity columns (the key was renamed, or the replica identity changed,
// since this RELATION message was written).
func loadTableInfo(ctx context.Context, db *sql.DB, reln *pglogrepl.RelationMessage) (*PGTableInfo, error) {
	rows, err := readCatalog(ctx, db, []uint32{reln.RelationID})
	if err != nil {
		return nil, err
	}
	return tableInfoFromCatalog(reln, rows[reln.RelationID])
}

// catalogRow is a row of sql/table_columns.sql: a live column of a relation.
type catalogRow struct {
	nsp, rel, ident, name         string
	attnum, keyPos, droppedBefore int
	typid                         uint32
	typmod                        int32
	notNull, generated            bool
}

// readCatalog reads sql/table_columns.sql for relations relIDs, in one query: their
// live columns in attnum order by relation (none for a relation not in the catalog).
func readCatalog(ctx context.Context, db *sql.DB, relIDs []uint32) (map[uint32][]catalogRow, error) {
	what := fmt.Sprintf("read catalog for relation %d", relIDs[0])
	if len(relIDs) > 1 {
		what = fmt.Sprintf("read catalog for %d relations", len(relIDs))
	}
	ids := make([]int64, len(relIDs))
	for i, id := range relIDs {
		ids[i] = int64(id)
	}
	rows, err := db.QueryContext(ctx, sqlText("table_columns.sql"), pq.Array(ids))
	if err != nil {
		return nil, classify(err, what)
	}
	defer rows.Close()
	out := make(map[uint32][]catalogRow, len(relIDs))
	for rows.Next() {
		var id uint32
		var r catalogRow
		if err := rows.Scan(&id, &r.nsp, &r.rel, &r.ident, &r.name, &r.attnum, &r.typid, &r.typmod, &r.notNull, &r.keyPos, &r.generated, &r.droppedBefore); err != nil {
			return nil, fmt.Errorf("%s: %w", what, err)
		}
		out[id] = append(out[id], r)
	}
	if err := rows.Err(); err != nil {
		return nil, classify(err, what)
	}
	return out, nil
}

// tableInfoFromCatalog is loadTableInfo of reln and its relation's catalog rows.
func tableInfoFromCatalog(reln *pglogrepl.RelationMessage, rows []catalogRow) (*PGTableInfo, error) {
	relID := reln.RelationID
	type catCol struct {
		attnum, keyPos int
		notNull        bool
	}
	cat := map[string]catCol{}
	var keys []string
	// keyPlaces[i] is the place of keys[i] among the live columns that are not
	// generated (pgoutput's columns), -1 when a dropped column precedes it.
	var keyPlaces []int
	live := 0
	var generatedKey string
	for _, r := range rows {
		name, generated := r.name, r.generated
		cc := catCol{attnum: r.attnum, keyPos: r.keyPos, notNull: r.notNull}
		cat[name] = cc
		if generated && cc.keyPos > 0 && generatedKey == "" {
			generatedKey = name
		}
		if cc.keyPos > 0 {
			for len(keys) < cc.keyPos {
				keys = append(keys, "")
				keyPlaces = append(keyPlaces, -1)
			}
			keys[cc.keyPos-1] = name
			if r.droppedBefore == 0 && !generated {
				keyPlaces[cc.keyPos-1] = live
			}
		}
		if !generated {
			live++
		}
	}
	if len(cat) == 0 {
		return nil, fmt.Errorf("%w: relation %d (%s.%s) not found in the catalog (dropped?)", ErrUnknownRelation, relID, reln.Namespace, reln.RelationName)
	}
	info := tableInfoFromRelation(reln)
	info.Dropped = false
	info.ReplicaIdentity = reln.ReplicaIdentity
	for _, col := range info.Columns {
		col.KeyPosition = 0
		if cc, ok := cat[col.ColumnName]; ok {
			col.OrdinalPosition, col.NotNull = cc.attnum, cc.notNull
		} else {
			col.OrdinalPosition = 0
		}
	}
	complete := len(keys) > 0
	for _, k := range keys {
		if k == "" || info.ColInfo[k] == nil {
			complete = false
		}
	}
	if len(keys) > 0 && (reln.ReplicaIdentity == 'f' || !anyFlagged(reln)) {
		// The message does not say which columns are the key (FULL flags every column,
		// NOTHING or a table without a key then none), so the catalog's key is found
		// in it, by place where that is certain: this shape may be older than the
		// columns' names (RENAME COLUMN since; two columns may even have swapped
		// names). Columns are never renumbered, and pgoutput lists them in attnum
		// order, so a key column with no dropped column before it is at the place of
		// its attnum among the live columns in every message of the table (columns
		// added since come after it). Otherwise by name, as above.
		if byPlace, ok := keyColumnsByPlace(reln, keyPlaces); ok {
			keys, complete = byPlace, true
		}
	}
	// The RELATION message flags the replica identity's columns as they were when its
	// changes were written (pgoutput: logicalrep_write_attrs). If they are not the
	// catalog's key, the replica identity changed since (ALTER TABLE ... REPLICA
	// IDENTITY in the middle of a backlog): this shape's old-key tuples (DELETEs,
	// key-changing UPDATEs) hold the flagged columns only, so they are its key.
	// No flagged column: the table had no replica identity then (a key was added since),
	// and the catalog's key is kept.
	if complete && (reln.ReplicaIdentity == 'd' || reln.ReplicaIdentity == 'i') {
		flagged, same := 0, true
		for _, rc := range reln.Columns {
			if rc.Flags&1 != 0 {
				flagged++
				same = same && cat[rc.Name].keyPos > 0
			}
		}
		if flagged > 0 && (!same || flagged != len(keys)) {
			complete = false
		}
	}
	if generatedKey != "" {
		// pgoutput sends no generated column (PostgreSQL 15), key or not: changes carry
		// the other key columns only, which need not be unique. The table has no key
		// that changes can be matched by.
		info.PrimaryKey, info.generatedKey = nil, generatedKey
		return info, nil
	}
	if complete {
		info.PrimaryKey = keys
		for i, k := range keys {
			info.ColInfo[k].KeyPosition = i + 1
		}
	} else {
		info.PrimaryKey = nil
		if reln.ReplicaIdentity != 'f' {
			for _, col := range info.Columns {
				if col.ReplicaIdentity {
					info.PrimaryKey = append(info.PrimaryKey, col.ColumnName)
					col.KeyPosition = len(info.PrimaryKey)
				}
			}
		}
	}
	return info, nil
}

// noKeyReason says why changes of a table whose PrimaryKey is empty carry no record
// ID, for errors (ErrNoKey).
func (t *PGTableInfo) noKeyReason() string {
	if t.generatedKey != "" {
		return fmt.Sprintf("its key holds generated column %q, which pgoutput never sends", t.generatedKey)
	}
	return "dbsync finds no key for its changes (neither a primary key nor a replica identity index, when they were written or now)"
}

// noKeyFix says what gives a table of noKeyReason a key.
func (t *PGTableInfo) noKeyFix() string {
	if t.generatedKey != "" {
		return "key it by columns that are not generated"
	}
	return "add a primary key"
}

// anyFlagged tells whether reln flags any column as part of the replica identity.
func anyFlagged(reln *pglogrepl.RelationMessage) bool {
	for _, c := range reln.Columns {
		if c.Flags&1 != 0 {
			return true
		}
	}
	return false
}

// keyColumnsByPlace names the key columns of reln found at places (loadTableInfo's
// keyPlaces); false when a place is unknown (-1) or past reln's columns (a key column
// added after this message was written).
func keyColumnsByPlace(reln *pglogrepl.RelationMessage, places []int) ([]string, bool) {
	out := make([]string, len(places))
	for i, p := range places {
		if p < 0 || p >= len(reln.Columns) {
			return nil, false
		}
		out[i] = reln.Columns[p].Name
	}
	return out, true
}

// tableInfoFromRelation describes a table from its RELATION message alone (used when the
// table no longer exists in the catalog): the key is the replica identity columns
// (under REPLICA IDENTITY FULL: every column).
func tableInfoFromRelation(reln *pglogrepl.RelationMessage) *PGTableInfo {
	info := &PGTableInfo{RelationID: reln.RelationID, Namespace: reln.Namespace, TableName: reln.RelationName,
		ColInfo: map[string]*PGColumnInfo{}, ReplicaIdentity: reln.ReplicaIdentity, Dropped: true, reln: reln}
	for i, c := range reln.Columns {
		col := &PGColumnInfo{ColumnName: c.Name, OrdinalPosition: i + 1, TypeOID: c.DataType, TypeModifier: c.TypeModifier,
			ReplicaIdentity: c.Flags&1 != 0, dec: resolveDecode(c.DataType, nil)}
		if col.ReplicaIdentity {
			info.PrimaryKey = append(info.PrimaryKey, c.Name)
			col.KeyPosition = len(info.PrimaryKey)
		}
		info.Columns = append(info.Columns, col)
		info.ColInfo[c.Name] = col
	}
	return info
}

// describeTypes fills the columns' type names and decoders: pgtype's codecs for the
// types it knows, pg_type (domains, enums, arrays, user types) for the rest. With
// keyOps it also looks up the comparison operators of the key columns' types
// (PGColumnInfo.ordering), which selections compare keys with.
func (c *tableCache) describeTypes(ctx context.Context, info *PGTableInfo, keyOps bool) error {
	if len(info.Columns) == 0 {
		return nil
	}
	oids := make([]int64, len(info.Columns))
	mods := make([]int64, len(info.Columns))
	keys := make([]bool, len(info.Columns))
	for i, col := range info.Columns {
		oids[i], mods[i] = int64(col.TypeOID), int64(col.TypeModifier)
		keys[i] = slices.Contains(info.PrimaryKey, col.ColumnName)
	}
	var rows *sql.Rows
	var err error
	if keyOps {
		rows, err = c.db.QueryContext(ctx, sqlText("column_types_keys.sql"), pq.Array(oids), pq.Array(mods), pq.Array(keys))
	} else {
		rows, err = c.db.QueryContext(ctx, sqlText("column_types.sql"), pq.Array(oids), pq.Array(mods))
	}
	if err != nil {
		return classify(err, "read column type names of "+info.QualifiedName())
	}
	i := 0
	for rows.Next() && i < len(info.Columns) {
		col := info.Columns[i]
		var schemas, names []sql.NullString
		dest := []any{&col.ColumnType, &col.TypeName}
		if keyOps {
			dest = append(dest, pq.Array(&schemas), pq.Array(&names))
		}
		if err := rows.Scan(dest...); err != nil {
			rows.Close()
			return fmt.Errorf("read column type names of %s: %w", info.QualifiedName(), err)
		}
		col.ordering, col.orderingLooked = nil, keyOps && keys[i]
		if len(schemas) == 4 && len(names) == 4 {
			o := &btreeOps{}
			for j := range schemas {
				o.schema[j], o.name[j] = schemas[j].String, names[j].String
			}
			col.ordering = o
		}
		i++
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return classify(err, "read column type names of "+info.QualifiedName())
	}
	types, err := c.pgTypes(ctx, oids)
	if err != nil {
		return err
	}
	for _, col := range info.Columns {
		col.dec = resolveDecode(col.TypeOID, types)
		// A type no longer in the catalog (a change written before DROP TYPE or DROP
		// EXTENSION, decoded after it) keeps resolveDecode's "oid N": format_type
		// names it "???".
		_, inCatalog := types[col.TypeOID]
		if _, known := refTypes.TypeForOID(col.TypeOID); known {
			inCatalog = true
		}
		if col.dec.kind == kindUnknown && col.TypeName != "" && inCatalog {
			col.dec.name = col.TypeName
		}
		col.domainBases = nil
		for t, ok := types[col.TypeOID]; ok && t.typtype == 'd' && len(col.domainBases) < 16; t, ok = types[t.baseType] {
			col.domainBases = append(col.domainBases, t.baseName)
		}
	}
	return nil
}

// pgTypes returns pg_type rows for the OIDs pgtype does not know among oids, following
// domain base types and array element types.
func (c *tableCache) pgTypes(ctx context.Context, oids []int64) (map[uint32]pgType, error) {
	out := map[uint32]pgType{}
	asked := map[uint32]bool{}
	todo := oids
	for round := 0; len(todo) > 0 && round < 16; round++ {
		var missing []int64
		c.mu.Lock()
		for _, o := range todo {
			oid := uint32(o)
			if _, ok := refTypes.TypeForOID(oid); ok || asked[oid] {
				continue
			}
			asked[oid] = true
			if t, ok := c.types[oid]; ok {
				out[oid] = t
				continue
			}
			missing = append(missing, o)
		}
		c.mu.Unlock()
		var next []int64
		for _, t := range out {
			for _, o := range []uint32{t.baseType, t.elemType} {
				if _, seen := out[o]; o != 0 && !seen {
					if _, ok := refTypes.TypeForOID(o); !ok {
						next = append(next, int64(o))
					}
				}
			}
		}
		if len(missing) > 0 {
			rows, err := c.db.QueryContext(ctx, sqlText("types.sql"), pq.Array(missing))
			if err != nil {
				return nil, classify(err, "read pg_type")
			}
			for rows.Next() {
				var t pgType
				var typtype, category, delim string
				if err := rows.Scan(&t.oid, &typtype, &category, &t.baseType, &t.elemType, &t.name, &delim, &t.arrayIn, &t.baseName); err != nil {
					rows.Close()
					return nil, fmt.Errorf("read pg_type: %w", err)
				}
				t.typtype, t.category, t.delim = typtype[0], category[0], delim[0]
				out[t.oid] = t
				c.mu.Lock()
				c.types[t.oid] = t
				c.mu.Unlock()
				for _, o := range []uint32{t.baseType, t.elemType} {
					if o != 0 {
						next = append(next, int64(o))
					}
				}
			}
			rows.Close()
			if err := rows.Err(); err != nil {
				return nil, classify(err, "read pg_type")
			}
		}
		var filtered []int64
		for _, o := range next {
			if _, seen := out[uint32(o)]; !seen && !asked[uint32(o)] {
				filtered = append(filtered, o)
			}
		}
		todo = filtered
	}
	return out, nil
}
