package handlers

import (
	"context"
	"testing"

	"github.com/dbsync/dbsync"
	"github.com/dbsync/dbsync/internal/pgtest"
	"github.com/stretchr/testify/require"
)

// TestCacheRefreshOfSomeColumnsPostgres: a Refresh query may select some of the
// table's columns (docs/SNAPSHOTS.md: "name the columns"). Its rows carry only those;
// the Cache used to replace the cached row with them, so the columns not selected
// (body here) vanished from the Cache while the table still had them. The other
// columns of the table keep their cached values; a column the table no longer has
// (dropped, no change since to bring the RELATION message) still leaves the row, as
// it did; a row the Cache never saw holds what was selected.
func TestCacheRefreshOfSomeColumnsPostgres(t *testing.T) {
	d := pgtest.NewDatabase(t)
	_, err := d.DB.Exec(`CREATE TABLE t (id int PRIMARY KEY, name text, body text, old text)`)
	require.NoError(t, err)
	_, err = d.DB.Exec(`INSERT INTO t VALUES (3, 'c', 'B3', 'o3')`) // before the slot: never streamed
	require.NoError(t, err)
	c := NewCache()
	s := newTestSyncer(t, d, c, "t")
	slot := pgtest.Ident(t, "slot")
	runErr, cancel := runInBackground(s)
	defer cancel()
	_, err = d.DB.Exec(`INSERT INTO t VALUES (1, 'a', 'B1', 'o1'), (2, 'b', 'B2', 'o2')`)
	require.NoError(t, err)
	waitCaughtUp(t, d, slot, runErr)
	_, err = d.DB.Exec(`ALTER TABLE t DROP COLUMN old`)
	require.NoError(t, err)

	st, err := s.RefreshContext(context.Background(), `SELECT id, name FROM t WHERE id IN (1, 3)`)
	require.NoError(t, err)
	require.Equal(t, 2, st.Emitted)
	waitCaughtUp(t, d, slot, runErr)
	require.Equal(t, map[string]map[string]dbsync.StringMap{"public.t": {
		`["1"]`: {"id": int32(1), "name": "a", "body": "B1"},
		`["2"]`: {"id": int32(2), "name": "b", "body": "B2", "old": "o2"}, // not refreshed, no change since the DROP
		`["3"]`: {"id": int32(3), "name": "c"},
	}}, c.Snapshot())
	cancel()
	require.NoError(t, <-runErr)
}

// TestCacheColumnDroppedAndAddedAgainPostgres: ALTER TABLE t DROP COLUMN c, then ADD
// COLUMN c, while the Syncer runs (each step delivered before the next). RELATION
// messages carry names, so the new c looked like the old one, and rows not changed
// since kept the dropped column's value under its name, where SELECT * shows the new
// column's NULL: a value the table no longer has. The descriptions' attribute numbers
// tell the two columns apart: the old c leaves every cached row, as a dropped column
// does, and the new c is missing from rows cached before it, as an added column is.
func TestCacheColumnDroppedAndAddedAgainPostgres(t *testing.T) {
	d := pgtest.NewDatabase(t)
	_, err := d.DB.Exec(`CREATE TABLE t (id int PRIMARY KEY, c text, n text)`)
	require.NoError(t, err)
	c := NewCache()
	s := newTestSyncer(t, d, c, "t")
	slot := pgtest.Ident(t, "slot")
	runErr, cancel := runInBackground(s)
	defer cancel()
	for _, q := range []string{
		`INSERT INTO t VALUES (1, 'old1', 'a'), (2, 'old2', 'b')`,
		`ALTER TABLE t DROP COLUMN c`,
		`ALTER TABLE t ADD COLUMN c text`,
		`UPDATE t SET n = 'bb' WHERE id = 2`,
	} {
		_, err := d.DB.Exec(q)
		require.NoError(t, err, q)
		waitCaughtUp(t, d, slot, runErr)
	}
	require.Equal(t, map[string]map[string]dbsync.StringMap{"public.t": {
		`["1"]`: {"id": int32(1), "n": "a"},
		`["2"]`: {"id": int32(2), "n": "bb", "c": nil},
	}}, c.Snapshot())
	require.Equal(t, int64(1), c.Stats().DroppedColumns)
	cancel()
	require.NoError(t, <-runErr)
}
