package dbsync

import (
	"context"
	"fmt"
	"strings"
)

// ReplicaIdentityProblem is a published table whose UPDATEs and DELETEs logical
// decoding cannot capture: PostgreSQL rejects them on the primary (SQLSTATE 55000,
// "cannot update table ... because it does not have a replica identity and publishes
// updates") while it is in a publication that publishes them. See "REPLICA IDENTITY"
// in the ALTER TABLE documentation.
type ReplicaIdentityProblem struct {
	Schema, Table string
	// ReplicaIdentity is pg_class.relreplident: 'd' (DEFAULT, no primary key), 'n'
	// (NOTHING) or 'i' (USING INDEX whose index is gone).
	ReplicaIdentity byte
}

// Fix returns the statement that makes the table's changes capturable without a key
// (adding a primary key is the better fix when the table has a natural one).
func (p ReplicaIdentityProblem) Fix() string {
	return "ALTER TABLE " + qualifiedTable{p.Schema, p.Table}.quoted() + " REPLICA IDENTITY FULL"
}

func (p ReplicaIdentityProblem) String() string {
	why := map[byte]string{'d': "has no primary key and REPLICA IDENTITY DEFAULT", 'n': "has REPLICA IDENTITY NOTHING",
		'i': "has REPLICA IDENTITY USING INDEX but the index is gone"}[p.ReplicaIdentity]
	return fmt.Sprintf("table %s.%s %s: its UPDATEs and DELETEs cannot be captured (and fail on the primary); add a primary key or run %s (or dbsync.WithReplicaIdentityFull)",
		p.Schema, p.Table, why, p.Fix())
}

// CheckReplicaIdentity lists the tables of the Syncer's publication whose updates and
// deletes cannot be captured (ReplicaIdentityProblem). Setup calls it and logs a warning
// per table (an error with WithStrictReplicaIdentity). Read-only.
func (s *Syncer) CheckReplicaIdentity(ctx context.Context) ([]ReplicaIdentityProblem, error) {
	rows, err := s.db.QueryContext(ctx, sqlText("replica_identity.sql"), s.publication)
	if err != nil {
		return nil, classify(err, "check replica identity of published tables")
	}
	defer rows.Close()
	var out []ReplicaIdentityProblem
	for rows.Next() {
		var p ReplicaIdentityProblem
		var ident string
		var hasPK bool
		if err := rows.Scan(&p.Schema, &p.Table, &ident, &hasPK); err != nil {
			return nil, fmt.Errorf("check replica identity: %w", err)
		}
		p.ReplicaIdentity = ident[0]
		out = append(out, p)
	}
	return out, classify(rows.Err(), "check replica identity of published tables")
}

// ensureReplicaIdentity sets REPLICA IDENTITY FULL on the WithReplicaIdentityFull
// tables, then reports published tables whose changes cannot be captured.
func (s *Syncer) ensureReplicaIdentity(ctx context.Context) error {
	for _, name := range s.replIdentFull {
		t, err := resolveTable(ctx, s.db, name)
		if err != nil {
			return err
		}
		var cur string
		if err := s.db.QueryRowContext(ctx, `SELECT c.relreplident::text FROM pg_catalog.pg_class c
			JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = $1 AND c.relname = $2`,
			t.schema, t.name).Scan(&cur); err != nil {
			return classify(err, "read replica identity of "+t.schema+"."+t.name)
		}
		if cur == "f" {
			continue
		}
		if _, err := s.db.ExecContext(ctx, "ALTER TABLE "+t.quoted()+" REPLICA IDENTITY FULL"); err != nil {
			return classify(err, "set REPLICA IDENTITY FULL on "+t.schema+"."+t.name)
		}
		s.log.Info("dbsync: set REPLICA IDENTITY FULL", "schema", t.schema, "table", t.name, "was", cur)
	}
	problems, err := s.CheckReplicaIdentity(ctx)
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
		s.log.Warn("dbsync: "+p.String(), "schema", p.Schema, "table", p.Table, "replica_identity", string(p.ReplicaIdentity))
	}
	return nil
}
