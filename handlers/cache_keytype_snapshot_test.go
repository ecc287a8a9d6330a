package handlers

import (
	"context"
	"math/big"
	"testing"

	"github.com/dbsync/dbsync"
	"github.com/dbsync/dbsync/internal/pgtest"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/stretchr/testify/require"
)

// TestCacheSnapshotRightAfterKeyRetype: the documented remedy for rows that left the
// Cache at an ALTER COLUMN ... TYPE of a key column is a Snapshot of the table. Taken
// right after the ALTER, before any change of the table brought the stream's new
// RELATION message, the Snapshot's rows (described by the new type) must stay, and
// so must they when that RELATION message comes.
func TestCacheSnapshotRightAfterKeyRetype(t *testing.T) {
	num := func(i int64) pgtype.Numeric { return pgtype.Numeric{Int: big.NewInt(i * 100), Exp: -2, Valid: true} }
	d := pgtest.NewDatabase(t)
	_, err := d.DB.Exec(`CREATE TABLE kt (id int PRIMARY KEY, v text)`)
	require.NoError(t, err)
	c := NewCache()
	s := newTestSyncer(t, d, c, "kt")
	slot := pgtest.Ident(t, "slot")
	runErr, cancel := runInBackground(s)
	defer func() { cancel() }()
	waitCaughtUp(t, d, slot, runErr)
	for _, q := range []string{
		`INSERT INTO kt VALUES (1, 'a'), (2, 'b'), (3, 'c')`,
		`ALTER TABLE kt ALTER COLUMN id TYPE numeric(10,2)`,
	} {
		_, err := d.DB.Exec(q)
		require.NoError(t, err, q)
		waitCaughtUp(t, d, slot, runErr)
	}
	require.NoError(t, s.Snapshot(context.Background(), "kt"))
	waitCaughtUp(t, d, slot, runErr)
	want := map[string]map[string]dbsync.StringMap{"public.kt": {
		`["1.00"]`: {"id": num(1), "v": "a"}, `["2.00"]`: {"id": num(2), "v": "b"}, `["3.00"]`: {"id": num(3), "v": "c"}}}
	require.Equal(t, want, c.Snapshot(), "after the Snapshot the Cache equals the table")
	_, err = d.DB.Exec(`UPDATE kt SET v = 'c2' WHERE id = 3`)
	require.NoError(t, err)
	waitCaughtUp(t, d, slot, runErr)
	want["public.kt"][`["3.00"]`] = dbsync.StringMap{"id": num(3), "v": "c2"}
	require.Equal(t, want, c.Snapshot(), "the change's RELATION message leaves the snapshot's rows")
	cancel()
	require.NoError(t, <-runErr)
}
