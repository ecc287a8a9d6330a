package dbsync

import (
	"context"
	"testing"

	"github.com/dbsync/dbsync/internal/pgtest"
	"github.com/stretchr/testify/require"
)

// TestReplicaIdentityIndexKeysRows: a table with a primary key (id) and REPLICA
// IDENTITY USING INDEX on another unique index (code). pgoutput's old-key tuples
// hold the replica identity's columns, not the primary key's: an UPDATE of id alone
// carries no old tuple, and a DELETE carries code only. Rows are therefore keyed by
// the replica identity index, so every key change is visible: an UPDATE of id keeps
// the row's record ID (no stale refresh row of a key that is gone), an UPDATE of
// code carries its old key, and a DELETE can be keyed. Snapshot chunks by it too.
func TestReplicaIdentityIndexKeysRows(t *testing.T) {
	d := pgtest.NewDatabase(t)
	execAll(t, d.DB, `CREATE TABLE ri (id int PRIMARY KEY, code text NOT NULL, v text)`,
		`CREATE UNIQUE INDEX ri_code ON ri (code)`,
		`ALTER TABLE ri REPLICA IDENTITY USING INDEX ri_code`,
		`INSERT INTO ri VALUES (1, 'a', 'x'), (2, 'b', 'y'), (3, 'c', 'z')`,
		`CREATE TABLE pkfull (id int PRIMARY KEY, code text NOT NULL UNIQUE)`,
		`ALTER TABLE pkfull REPLICA IDENTITY FULL`)
	h := newCacheHandler()
	s, _ := startSyncer(t, d.DSN(), pgtest.Ident(t, "slot"), h, ForTables("ri", "pkfull"), WithSnapshotChunkSize(2))
	ctx := context.Background()
	info, err := s.TableInfo(ctx, "ri")
	require.NoError(t, err)
	require.Equal(t, []string{"code"}, info.PrimaryKey)
	require.Equal(t, 1, info.ColInfo["code"].KeyPosition)
	require.Zero(t, info.ColInfo["id"].KeyPosition)
	full, err := s.TableInfo(ctx, "pkfull")
	require.NoError(t, err)
	require.Equal(t, []string{"id"}, full.PrimaryKey, "other replica identities keep the primary key")

	// The primary key changes inside the first chunk's window: the row keeps its
	// record ID, so the window drops it and no refresh row of it follows.
	selects := 0
	s.win.afterSelect = func() {
		if selects++; selects == 1 {
			execAll(t, d.DB, `UPDATE ri SET id = 100 WHERE id = 1`)
		}
	}
	require.NoError(t, s.Snapshot(ctx, "ri"))
	require.Equal(t, []string{`update public.ri ["a"]`, `refresh public.ri ["b"]`, `refresh public.ri ["c"]`}, h.eventList())

	// The key changes inside a Refresh window: the change carries the old key, which
	// the window drops and the cache removes.
	s.win.afterSelect = func() { execAll(t, d.DB, `UPDATE ri SET code = 'bb' WHERE code = 'b'`) }
	stats, err := s.RefreshContext(ctx, `SELECT * FROM ri ORDER BY code`)
	require.NoError(t, err)
	require.Equal(t, RefreshStats{Selected: 3, Emitted: 2}, stats)
	s.win.afterSelect = nil
	execAll(t, d.DB, `DELETE FROM ri WHERE id = 3`)
	catchUp(t, s)
	require.Equal(t, []string{`update public.ri ["bb"]`, `refresh public.ri ["a"]`, `refresh public.ri ["c"]`,
		`delete public.ri ["c"]`}, h.eventList()[3:])
	require.Equal(t, map[string]StringMap{
		`["a"]`:  {"id": int32(100), "code": "a", "v": "x"},
		`["bb"]`: {"id": int32(2), "code": "bb", "v": "y"},
	}, h.tableRows("public.ri"))
	require.Empty(t, mismatches(h.tableRows("public.ri"), dbRows(t, d.DB, "ri")))

	// Back to REPLICA IDENTITY DEFAULT (PostgreSQL clears indisreplident): the
	// primary key keys the rows again.
	execAll(t, d.DB, `ALTER TABLE ri REPLICA IDENTITY DEFAULT`)
	info, err = s.TableInfo(ctx, "ri")
	require.NoError(t, err)
	require.Equal(t, []string{"id"}, info.PrimaryKey)
}

// TestReplicaIdentityChangedInBacklog: the replica identity changes while changes wait
// in the slot. Each change is keyed by the replica identity of the RELATION message
// in force for it: a DELETE written under the old identity carries the old key
// columns only, so it is keyed by them, not by today's catalog key (which it does
// not hold: before, ErrNoKey stopped the Syncer on it for good).
func TestReplicaIdentityChangedInBacklog(t *testing.T) {
	d := pgtest.NewDatabase(t)
	execAll(t, d.DB, `CREATE TABLE ri (id int PRIMARY KEY, code text NOT NULL, v text)`,
		`CREATE UNIQUE INDEX ri_code ON ri (code)`)
	h := newCacheHandler()
	s := newTestSyncer(t, d, ForTables("ri"), WithMessageHandler(h)) // the slot exists from here
	execAll(t, d.DB, `INSERT INTO ri VALUES (1, 'a', 'x'), (2, 'b', 'y')`,
		`DELETE FROM ri WHERE id = 1`,
		`ALTER TABLE ri REPLICA IDENTITY USING INDEX ri_code`,
		`DELETE FROM ri WHERE id = 2`)
	r := runInBackground(s)
	waitCaughtUp(t, d.DB, s.ReplicationSlot())
	require.NoError(t, r.stop(t))
	require.Equal(t, []string{`insert public.ri ["1"]`, `insert public.ri ["2"]`, `delete public.ri ["1"]`,
		`delete public.ri ["b"]`}, h.eventList())
}
