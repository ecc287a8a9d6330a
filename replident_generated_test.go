package dbsync

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/dbsync/dbsync/internal/pgtest"
	"github.com/jackc/pglogrepl"
	"github.com/stretchr/testify/require"
)

// wireRecorder records what pgoutput sent for each change: the RELATION message's
// columns, the old tuple's kind and width, and the decoded record IDs and old row.
type wireRecorder struct {
	DefaultMessageHandler
	mu  sync.Mutex
	got []string
}

func (w *wireRecorder) add(msg pglogrepl.Message, reln *pglogrepl.RelationMessage, info *PGTableInfo, oldKind uint8, old *pglogrepl.TupleData) error {
	ch, err := DecodeChange(msg, reln, info)
	if err != nil {
		return err
	}
	var cols []string
	for _, c := range reln.Columns {
		cols = append(cols, c.Name)
	}
	oldTuple := "none"
	if old != nil {
		oldTuple = fmt.Sprintf("%c/%d", oldKind, len(old.Columns))
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.got = append(w.got, fmt.Sprintf("%s %s cols=%v old=%s key=%q oldrow=%v", ch.Op, reln.RelationName, cols, oldTuple, ch.Key, ch.Old))
	return nil
}

func (w *wireRecorder) HandleInsertMessage(_ int, m *pglogrepl.InsertMessage, r *pglogrepl.RelationMessage, i *PGTableInfo) error {
	return w.add(m, r, i, 0, nil)
}
func (w *wireRecorder) HandleUpdateMessage(_ int, m *pglogrepl.UpdateMessage, r *pglogrepl.RelationMessage, i *PGTableInfo) error {
	return w.add(m, r, i, m.OldTupleType, m.OldTuple)
}
func (w *wireRecorder) HandleDeleteMessage(_ int, m *pglogrepl.DeleteMessage, r *pglogrepl.RelationMessage, i *PGTableInfo) error {
	return w.add(m, r, i, m.OldTupleType, m.OldTuple)
}

func (w *wireRecorder) list() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]string(nil), w.got...)
}

// TestReplicaIdentityFullSendsNoGeneratedKey is what ReplicaIdentityProblem's
// GeneratedKey text rests on: PostgreSQL 15's pgoutput leaves a stored generated
// column out of RELATION messages and of every tuple, the old row of REPLICA IDENTITY
// FULL ('O') included, and out of a replica identity index's old key ('K') even when
// the index is over it. So REPLICA IDENTITY FULL does not give such a table's changes
// their key, and no change of these tables has a record ID.
func TestReplicaIdentityFullSendsNoGeneratedKey(t *testing.T) {
	d := pgtest.NewDatabase(t)
	execAll(t, d.DB, `CREATE TABLE gfull (a int, g int GENERATED ALWAYS AS (a * 2) STORED, PRIMARY KEY (g))`,
		`ALTER TABLE gfull REPLICA IDENTITY FULL`,
		`CREATE TABLE gidx (id int PRIMARY KEY, a int NOT NULL, g int GENERATED ALWAYS AS (a + 1) STORED NOT NULL)`,
		`CREATE UNIQUE INDEX gidx_g ON gidx (g)`,
		`ALTER TABLE gidx REPLICA IDENTITY USING INDEX gidx_g`)
	w := &wireRecorder{}
	s, _ := startSyncer(t, d.DSN(), pgtest.Ident(t, "slot"), w, ForTables("gfull", "gidx"))
	execAll(t, d.DB, `INSERT INTO gfull (a) VALUES (1)`, `UPDATE gfull SET a = 2`, `DELETE FROM gfull`,
		`INSERT INTO gidx (id, a) VALUES (1, 1)`, `UPDATE gidx SET a = 2`, `DELETE FROM gidx`)
	catchUp(t, s)
	waitFor(t, 10*time.Second, func() bool { return len(w.list()) == 6 }, "six changes")
	require.Equal(t, []string{
		`insert gfull cols=[a] old=none key="" oldrow=map[]`,
		`update gfull cols=[a] old=O/1 key="" oldrow=map[a:1]`,
		`delete gfull cols=[a] old=O/1 key="" oldrow=map[a:2]`,
		`insert gidx cols=[id a] old=none key="" oldrow=map[]`,
		// The UPDATE changes g (a + 1): PostgreSQL logs the old key, which pgoutput
		// sends without g, as NULL placeholders for the other columns.
		`update gidx cols=[id a] old=K/2 key="" oldrow=map[]`,
		`delete gidx cols=[id a] old=K/2 key="" oldrow=map[]`,
	}, w.list())
}
