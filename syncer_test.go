package dbsync

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dbsync/dbsync/internal/pgtest"
	"github.com/jackc/pglogrepl"
	"github.com/stretchr/testify/require"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

// recorder is a MessageHandler that records every message as a line.
type recorder struct {
	DefaultMessageHandler
	mu    sync.Mutex
	lines []string
	xid   uint32
}

func (r *recorder) add(format string, args ...any) {
	r.mu.Lock()
	r.lines = append(r.lines, fmt.Sprintf(format, args...))
	r.mu.Unlock()
}

func (r *recorder) snapshot() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.lines...)
}

func tupleText(reln *pglogrepl.RelationMessage, t *pglogrepl.TupleData) string {
	if t == nil {
		return "-"
	}
	parts := make([]string, len(t.Columns))
	for i, c := range t.Columns {
		switch c.DataType {
		case 'n':
			parts[i] = reln.Columns[i].Name + "=NULL"
		case 'u':
			parts[i] = reln.Columns[i].Name + "=UNCHANGED"
		default:
			parts[i] = reln.Columns[i].Name + "=" + string(c.Data)
		}
	}
	return strings.Join(parts, ",")
}

func (r *recorder) HandleBeginMessage(_ int, m *pglogrepl.BeginMessage) error {
	r.add("BEGIN")
	return nil
}
func (r *recorder) HandleCommitMessage(_ int, m *pglogrepl.CommitMessage) error {
	r.add("COMMIT")
	return nil
}
func (r *recorder) HandleInsertMessage(_ int, m *pglogrepl.InsertMessage, reln *pglogrepl.RelationMessage, _ *PGTableInfo) error {
	r.add("INSERT %s %s", reln.RelationName, tupleText(reln, m.Tuple))
	return nil
}
func (r *recorder) HandleUpdateMessage(_ int, m *pglogrepl.UpdateMessage, reln *pglogrepl.RelationMessage, _ *PGTableInfo) error {
	r.add("UPDATE %s %s old:%s", reln.RelationName, tupleText(reln, m.NewTuple), tupleText(reln, m.OldTuple))
	return nil
}
func (r *recorder) HandleDeleteMessage(_ int, m *pglogrepl.DeleteMessage, reln *pglogrepl.RelationMessage, _ *PGTableInfo) error {
	r.add("DELETE %s %s", reln.RelationName, tupleText(reln, m.OldTuple))
	return nil
}
func (r *recorder) HandleTruncateMessage(_ int, m *pglogrepl.TruncateMessage, relns []*pglogrepl.RelationMessage, _ []*PGTableInfo) error {
	names := make([]string, len(relns))
	for i, r := range relns {
		names[i] = r.RelationName
	}
	r.add("TRUNCATE %s opt=%d", strings.Join(names, ","), m.Option)
	return nil
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, timeout time.Duration, cond func() bool, msg string, args ...any) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out: "+msg, args...)
		}
		time.Sleep(20 * time.Millisecond)
	}
}


func TestSmokeInsertUpdateDelete(t *testing.T) {
	d := pgtest.NewDatabase(t)
	_, err := d.DB.Exec(`CREATE TABLE items (id int PRIMARY KEY, name text)`)
	require.NoError(t, err)
	rec := &recorder{}
	s, err := NewSyncer(WithPGConnStr(d.DSN()), ForTables("items"),
		WithReplicationSlot(pgtest.Ident(t, "slot")), WithPublication(pgtest.Ident(t, "pub")),
		WithMessageHandler(rec), WithPollBackoff(5*time.Millisecond, 1.5, 50*time.Millisecond))
	require.NoError(t, err)
	defer s.Close()
	_, err = d.DB.Exec(`INSERT INTO items VALUES (1, 'a'), (2, 'b')`)
	require.NoError(t, err)
	_, err = d.DB.Exec(`UPDATE items SET name = 'c' WHERE id = 1`)
	require.NoError(t, err)
	_, err = d.DB.Exec(`DELETE FROM items WHERE id = 2`)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	want := []string{
		"BEGIN", "INSERT items id=1,name=a", "INSERT items id=2,name=b", "COMMIT",
		"BEGIN", "UPDATE items id=1,name=c old:-", "COMMIT",
		"BEGIN", "DELETE items id=2,name=NULL", "COMMIT",
	}
	waitFor(t, 10*time.Second, func() bool { return len(rec.snapshot()) >= len(want) }, "changes")
	cancel()
	require.NoError(t, <-done)
	require.Equal(t, want, rec.snapshot())
}
