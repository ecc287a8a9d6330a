package dbsync

import (
	"context"
	"fmt"
	"strings"

	"github.com/lib/pq"
)

// ReplicaIdentityProblem is a published table whose UPDATEs and DELETEs logical
// decoding cannot capture, or cannot give a record ID.
//
// With GeneratedKey, PublishedAs empty, the table has no usable replica identity: PostgreSQL rejects
// its UPDATEs and DELETEs on the primary (SQLSTATE 55000, "cannot update table ...
// because it does not have a replica identity and publishes updates") while it is in a
// publication that publishes them. See "REPLICA IDENTITY" in the ALTER TABLE
// documentation.
//
// With GeneratedKey set, the replica identity is usable but the table's key (the key
// columns of its replica identity index, else of its primary key: the key record IDs
// are made of) holds a generated column (GENERATED ALWAYS AS (...) STORED); a generated
// column the index only INCLUDEs is not a key column and is not reported. PostgreSQL
// 15's pgoutput never sends generated columns, under any replica identity (REPLICA
// IDENTITY FULL included), so the table's changes carry no whole key: Change.Key is
// "", and Refresh and Snapshot refuse the table with ErrNoPrimaryKey. A table whose replica identity
// is unusable is reported for that alone; its key is checked once that is fixed.
//
// With MissingKey set, the table is a partition whose changes the publication
// publishes under partitioned table PublishedAs (publish_via_partition_root = true),
// and the partition's replica identity (REPLICA IDENTITY USING INDEX of an index of
// its own) lacks column MissingKey of PublishedAs's key: PostgreSQL logs the old key
// of its DELETEs and key-changing UPDATEs by the partition's identity, so they reach
// the slot as PublishedAs's rows with that key column NULL, and get no record ID
// (DecodeChange and GetRecordID fail with ErrNoKey).
//
// With PartialOldRow set, the table is such a partition, PublishedAs has REPLICA
// IDENTITY FULL and the partition does not: pgoutput marks the partition's old keys
// as whole old rows ('O') of PublishedAs, with every other column NULL, so Change.Old
// of its DELETEs and key-changing UPDATEs shows those columns as NULL, and an
// unchanged TOASTed value of a key-changing UPDATE is filled in (Change.Filled) as
// NULL.
//
// A partitioned table published via the root is reported without a usable replica
// identity when it has no key, but PostgreSQL checks its partitions' instead, so its
// partitions' changes are captured, with no record ID (String says so).
//
// A partitioned table has no rows: PostgreSQL checks and logs each partition's own
// replica identity, which ALTER TABLE on the partitioned table does not change. The
// partitions (every level) of a table published via the root are checked and
// reported by their own names; without publish_via_partition_root the publication
// lists them itself.
type ReplicaIdentityProblem struct {
	Schema, Table string
	// ReplicaIdentity is pg_class.relreplident. With GeneratedKey and PublishedAs
	// empty: 'd' (DEFAULT, no primary key), 'n' (NOTHING) or 'i' (USING INDEX whose
	// index is gone). With GeneratedKey set: 'd' or 'f' (FULL), the key being the
	// primary key, or 'i', the key being the replica identity index. With MissingKey
	// set: 'i'; with PartialOldRow: 'd' or 'i'.
	ReplicaIdentity byte
	// GeneratedKey names the key's first generated column (by column number, as
	// ErrNoPrimaryKey does); "" when the problem is the replica identity.
	GeneratedKey string
	// PublishedAs is "schema.table", the partitioned table whose name the partition's
	// changes carry, set with MissingKey or PartialOldRow, else "". MissingKey is the
	// first column (by column number) of that table's key that the partition's
	// replica identity lacks; "" unless that is the problem.
	PublishedAs, MissingKey string
	// PartialOldRow: PublishedAs has REPLICA IDENTITY FULL, the partition does not.
	PartialOldRow bool

	hasPK       bool // the table has a primary key (REPLICA IDENTITY DEFAULT would use it)
	partitioned bool // a partitioned table, listed via the root (no rows of its own)
}

// Fix returns the statement that makes the table's changes capturable without a key
// (adding a primary key is the better fix when the table has a natural one).
//
// It returns "" for a GeneratedKey problem, which no such statement fixes: REPLICA
// IDENTITY FULL still sends no generated column. The table needs a key of columns
// that are not generated (a primary key on them, or REPLICA IDENTITY USING INDEX of a
// unique index on NOT NULL columns that are not generated), which is the schema
// owner's choice; String says so.
//
// For a partition (PublishedAs set) the statement fixes the problem. For a partitioned
// table without a key, it sets the partitioned table alone, whose partitions then
// need it too (else they are reported with PartialOldRow):
// WithReplicaIdentityFull of the partitioned table sets them all.
func (p ReplicaIdentityProblem) Fix() string {
	if p.GeneratedKey != "" {
		return ""
	}
	return "ALTER TABLE " + qualifiedTable{p.Schema, p.Table}.quoted() + " REPLICA IDENTITY FULL"
}

// String describes the problem for a log line or an error: the table, why its UPDATEs
// and DELETEs cannot be captured, and the statement or option that fixes it.
func (p ReplicaIdentityProblem) String() string {
	if p.GeneratedKey != "" {
		return p.generatedKeyString()
	}
	if p.PartialOldRow {
		return fmt.Sprintf("table %s.%s is a partition whose changes are published under %s (publish_via_partition_root = true), which has REPLICA IDENTITY FULL while the partition does not: pgoutput sends the partition's old keys as whole old rows of %s with its other columns NULL, so the old row of a DELETE or key-changing UPDATE (Change.Old) reads NULL there, and an unchanged TOASTed value of a key-changing UPDATE is filled in as NULL; run %s (or dbsync.WithReplicaIdentityFull(%q), which sets every partition)",
			p.Schema, p.Table, p.PublishedAs, p.PublishedAs, p.Fix(), p.PublishedAs)
	}
	if p.MissingKey != "" {
		q := qualifiedTable{p.Schema, p.Table}.quoted()
		return fmt.Sprintf("table %s.%s is a partition whose changes are published under %s (publish_via_partition_root = true), and its replica identity index lacks %s's key column %q: its DELETEs and key-changing UPDATEs reach the slot without that column's old value, so they get no record ID (ErrNoKey); run ALTER TABLE %s REPLICA IDENTITY DEFAULT (its primary key is %s's) or %s",
			p.Schema, p.Table, p.PublishedAs, p.PublishedAs, p.MissingKey, q, p.PublishedAs, p.Fix())
	}
	why := map[byte]string{'d': "has no primary key and REPLICA IDENTITY DEFAULT", 'n': "has REPLICA IDENTITY NOTHING",
		'i': "has REPLICA IDENTITY USING INDEX but the index is gone"}[p.ReplicaIdentity]
	if p.partitioned {
		// PostgreSQL checks and logs the partitions' replica identity (reported on
		// their own), not this one: the changes are captured, but keyless.
		return fmt.Sprintf("table %s.%s is a partitioned table whose partitions' changes are published under it (publish_via_partition_root = true), and it %s: its partitions' UPDATEs and DELETEs are captured but carry no key of it, so they get no record ID (Change.Key \"\") and Refresh and Snapshot refuse it; give it a primary key, or run dbsync.WithReplicaIdentityFull(%q) (REPLICA IDENTITY FULL on it and every partition) for whole old rows",
			p.Schema, p.Table, why, p.Schema+"."+p.Table)
	}
	if p.hasPK && p.ReplicaIdentity != 'd' {
		// The primary key is there: going back to DEFAULT keys the changes by it.
		return fmt.Sprintf("table %s.%s %s: its UPDATEs and DELETEs cannot be captured (and fail on the primary); it has a primary key, so run ALTER TABLE %s REPLICA IDENTITY DEFAULT (or %s)",
			p.Schema, p.Table, why, qualifiedTable{p.Schema, p.Table}.quoted(), p.Fix())
	}
	return fmt.Sprintf("table %s.%s %s: its UPDATEs and DELETEs cannot be captured (and fail on the primary); add a primary key or run %s (or dbsync.WithReplicaIdentityFull)",
		p.Schema, p.Table, why, p.Fix())
}

func (p ReplicaIdentityProblem) generatedKeyString() string {
	index := "ALTER TABLE " + qualifiedTable{p.Schema, p.Table}.quoted() +
		" REPLICA IDENTITY USING INDEX <name> naming a unique index on NOT NULL columns that are not generated"
	key, fix := "primary key", "make columns that are not generated its primary key, or run "+index
	if p.ReplicaIdentity == 'i' {
		key, fix = "replica identity index", "run "+index+", or REPLICA IDENTITY DEFAULT if its primary key holds no generated column"
	}
	return fmt.Sprintf("table %s.%s: its %s holds generated column %q, which pgoutput never sends (PostgreSQL 15; REPLICA IDENTITY FULL does not change that), so its changes carry no whole key: they get no record ID (Change.Key \"\") and Refresh and Snapshot refuse the table (ErrNoPrimaryKey); key it by columns that are not generated: %s",
		p.Schema, p.Table, key, p.GeneratedKey, fix)
}

// CheckReplicaIdentity lists the tables of the Syncer's publication whose updates and
// deletes cannot be captured, or whose key holds a generated column so that their
// changes cannot be given a record ID, and the partitions published under their
// partitioned table whose replica identity lacks its key (ReplicaIdentityProblem),
// in schema and table order. A partitioned table's partitions are checked by their
// own replica identity, the one PostgreSQL uses. Setup calls it and logs a warning per table (an error with
// WithStrictReplicaIdentity). Read-only. Returns ErrPublicationMissing when the
// publication does not exist, ErrClosed after Close, ErrStatementCancelled when the
// server cancelled its statement (a statement_timeout of dbsync's role: raise it). When
// ctx ended, the error wraps ctx's error and names the call.
func (s *Syncer) CheckReplicaIdentity(ctx context.Context) ([]ReplicaIdentityProblem, error) {
	if err := s.checkOpen("CheckReplicaIdentity"); err != nil {
		return nil, err
	}
	problems, err := s.checkReplicaIdentity(ctx)
	return problems, withCtxErr(ctx, "CheckReplicaIdentity", errCancelledCall(ctx, "CheckReplicaIdentity", err))
}

// checkReplicaIdentity is CheckReplicaIdentity for setup (whose caller calls Setup
// again, not CheckReplicaIdentity).
func (s *Syncer) checkReplicaIdentity(ctx context.Context) ([]ReplicaIdentityProblem, error) {
	// The planner cannot know how many tables the publication lists or how many
	// partitions each has (pg_get_publication_tables, pg_partition_tree: 1,000 rows
	// each by default), so it costs the query far above jit_above_cost; on a server
	// built with JIT the compilation alone took ~2 s for a publication of two tables,
	// every setup (a role's 500 ms statement_timeout failed it: TestStatementTimeoutOfRole).
	// It reads a few catalog rows: JIT is off for it, in a transaction of its own.
	// (A plain transaction: the pool may be of any driver, and not every one takes
	// sql.TxOptions{ReadOnly: true}.)
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return nil, classify(err, "check replica identity of published tables")
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, `SET LOCAL jit = off`); err != nil {
		return nil, classify(err, "check replica identity of published tables")
	}
	rows, err := tx.QueryContext(ctx, sqlText("replica_identity.sql"), s.publication)
	if err != nil {
		return nil, classify(err, "check replica identity of published tables")
	}
	defer rows.Close()
	var out []ReplicaIdentityProblem
	for rows.Next() {
		var p ReplicaIdentityProblem
		var ident string
		if err := rows.Scan(&p.Schema, &p.Table, &ident, &p.hasPK, &p.GeneratedKey, &p.PublishedAs, &p.MissingKey, &p.PartialOldRow, &p.partitioned); err != nil {
			return nil, fmt.Errorf("check replica identity: %w", err)
		}
		p.ReplicaIdentity = ident[0]
		out = append(out, p)
	}
	if err := rows.Err(); err != nil {
		return nil, classify(err, "check replica identity of published tables")
	}
	if len(out) == 0 {
		// No problem, or no publication: the query lists none for a missing one.
		var exists bool
		if err := tx.QueryRowContext(ctx, `SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_publication WHERE pubname OPERATOR(pg_catalog.=) $1)`,
			s.publication).Scan(&exists); err != nil {
			return nil, classify(err, "check replica identity of published tables")
		}
		if !exists {
			return nil, fmt.Errorf("%w: %q: no published table to check; create it (CREATE PUBLICATION %s FOR TABLE ...), or pass ForTables to NewSyncer",
				ErrPublicationMissing, s.publication, pq.QuoteIdentifier(s.publication))
		}
	}
	return out, nil
}

// ensureReplicaIdentity sets REPLICA IDENTITY FULL on the WithReplicaIdentityFull
// tables, then reports published tables whose changes cannot be captured. A
// partitioned table's partitions (every level) are set too: PostgreSQL uses each
// partition's own replica identity, and ALTER TABLE on the partitioned table does not
// pass it on.
func (s *Syncer) ensureReplicaIdentity(ctx context.Context) error {
	if err := s.setReplicaIdentityFull(ctx); err != nil {
		return err
	}
	problems, err := s.checkReplicaIdentity(ctx)
	if err != nil {
		return err
	}
	if len(problems) == 0 {
		return nil
	}
	if s.strictReplIdent {
		msgs := make([]string, len(problems))
		for i, p := range problems {
			msgs[i] = p.String()
		}
		return fmt.Errorf("%w: %s", ErrReplicaIdentity, strings.Join(msgs, "; "))
	}
	for _, p := range problems {
		attrs := []any{"schema", p.Schema, "table", p.Table, "replica_identity", string(p.ReplicaIdentity)}
		if p.GeneratedKey != "" {
			attrs = append(attrs, "generated_key", p.GeneratedKey)
		}
		if p.MissingKey != "" {
			attrs = append(attrs, "published_as", p.PublishedAs, "missing_key", p.MissingKey)
		}
		if p.PartialOldRow {
			attrs = append(attrs, "published_as", p.PublishedAs, "partial_old_row", true)
		}
		s.log.Warn("dbsync: "+p.String(), attrs...)
	}
	return nil
}

// setReplicaIdentityFull sets REPLICA IDENTITY FULL on the WithReplicaIdentityFull
// tables and their partitions that lack it. The names are resolved, and the tables'
// members and replica identities read, in one query each whatever their number;
// then one ALTER TABLE per table that needs it. A name that does not resolve fails
// it (ErrConfig) before any table is altered.
func (s *Syncer) setReplicaIdentityFull(ctx context.Context) error {
	if len(s.replIdentFull) == 0 {
		return nil
	}
	tables, err := resolveTables(ctx, s.db, s.replIdentFull)
	if err != nil {
		return err
	}
	schemas, names := make([]string, len(tables)), make([]string, len(tables))
	for i, t := range tables {
		schemas[i], names[i] = t.schema, t.name
	}
	// Each table and, when it is partitioned, its partitions (pg_partition_tree
	// lists none for a table that is neither partitioned nor a partition).
	rows, err := s.db.QueryContext(ctx, `WITH r AS (SELECT u.i, pg_catalog.format('%I.%I', u.s, u.r)::pg_catalog.regclass AS oid
				FROM ROWS FROM (pg_catalog.unnest($1::pg_catalog.text[]), pg_catalog.unnest($2::pg_catalog.text[])) WITH ORDINALITY u(s, r, i)),
			members AS (SELECT r.i, r.oid AS relid, 0 AS level FROM r
				UNION SELECT r.i, p.relid, p.level FROM r, pg_catalog.pg_partition_tree(r.oid) p)
			SELECT m.i, n.nspname, c.relname, c.relreplident::pg_catalog.text
			FROM members m
			JOIN pg_catalog.pg_class c ON c.oid OPERATOR(pg_catalog.=) m.relid
			JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) c.relnamespace
			ORDER BY m.i, m.level, n.nspname, c.relname`, pq.Array(schemas), pq.Array(names))
	if err != nil {
		return classify(err, "read replica identity of the WithReplicaIdentityFull tables")
	}
	type member struct {
		name string // the WithReplicaIdentityFull name it is set for
		t    qualifiedTable
		cur  string
	}
	var members []member
	seen := map[qualifiedTable]bool{}
	for rows.Next() {
		var m member
		var i int
		if err := rows.Scan(&i, &m.t.schema, &m.t.name, &m.cur); err != nil {
			rows.Close()
			return fmt.Errorf("read replica identity of the WithReplicaIdentityFull tables: %w", err)
		}
		if i < 1 || i > len(s.replIdentFull) || seen[m.t] {
			continue
		}
		seen[m.t], m.name = true, s.replIdentFull[i-1]
		members = append(members, m)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return classify(err, "read replica identity of the WithReplicaIdentityFull tables")
	}
	for _, m := range members {
		if m.cur == "f" {
			continue
		}
		if _, err := s.db.ExecContext(ctx, "ALTER TABLE "+m.t.quoted()+" REPLICA IDENTITY FULL"); err != nil {
			if hasSQLState(err, "42501") {
				return fmt.Errorf("%w: WithReplicaIdentityFull(%q): the role does not own %s: have its owner (or a superuser) run\n  ALTER TABLE %s REPLICA IDENTITY FULL;\nthen set up again (no replication slot was created): %w",
					ErrInsufficientPrivilege, m.name, m.t.quoted(), m.t.quoted(), err)
			}
			return classify(err, "set REPLICA IDENTITY FULL on "+m.t.schema+"."+m.t.name)
		}
		s.log.Info("dbsync: set REPLICA IDENTITY FULL", "schema", m.t.schema, "table", m.t.name, "was", m.cur)
	}
	return nil
}
