package dbsync

import (
	"context"
	"testing"
	"time"

	"github.com/dbsync/dbsync/internal/pgtest"
	"github.com/stretchr/testify/require"
)

// TestPreparedDDLDoesNotStallRun: a prepared transaction that altered a published
// table holds its ACCESS EXCLUSIVE lock until COMMIT PREPARED. A Syncer running, and
// one started meanwhile (its setup finds the table in the publication already), go
// on delivering the other tables' changes; the altered table's changes arrive after
// COMMIT PREPARED, with its new shape.
func TestPreparedDDLDoesNotStallRun(t *testing.T) {
	srv := twoPhaseServer(t)
	d := srv.NewDatabase(t)
	execAll(t, d.DB, `CREATE TABLE dt (id int PRIMARY KEY)`, `CREATE TABLE du (id int PRIMARY KEY)`)
	rec := &recorder{}
	s := newTestSyncer(t, d, ForTables("dt", "du"), WithMessageHandler(rec))
	r := runInBackground(s)
	execAll(t, d.DB, `INSERT INTO dt VALUES (1)`)
	catchUp(t, s)
	prepare(t, d.DB, "dt_ddl", `ALTER TABLE dt ADD COLUMN extra int DEFAULT 5`, `INSERT INTO dt VALUES (2, 6)`)
	execAll(t, d.DB, `INSERT INTO du VALUES (1)`)
	catchUp(t, s)
	require.NoError(t, r.stop(t))
	require.NoError(t, s.Close())

	rec2 := &recorder{}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	s2, err := NewSyncerContext(ctx, WithPGConnStr(d.DSN()), WithReplicationSlot(pgtest.Ident(t, "slot")), WithPublication(pgtest.Ident(t, "pub")),
		WithPollBackoff(5*time.Millisecond, 2, 50*time.Millisecond), ForTables("dt", "du"), WithMessageHandler(rec2))
	require.NoError(t, err)
	t.Cleanup(func() { s2.Close() })
	r2 := runInBackground(s2)
	execAll(t, d.DB, `INSERT INTO du VALUES (2)`)
	catchUp(t, s2)
	execAll(t, d.DB, `COMMIT PREPARED 'dt_ddl'`, `INSERT INTO dt VALUES (3)`)
	catchUp(t, s2)
	require.NoError(t, r2.stop(t))
	require.Equal(t, []string{
		"BEGIN", "INSERT public.dt id=1", "COMMIT",
		"BEGIN", "INSERT public.du id=1", "COMMIT",
	}, rec.snapshot())
	require.Equal(t, []string{
		"BEGIN", "INSERT public.du id=2", "COMMIT",
		"BEGIN", "INSERT public.dt id=2,extra=6", "COMMIT",
		"BEGIN", "INSERT public.dt id=3,extra=5", "COMMIT",
	}, rec2.snapshot())
}
