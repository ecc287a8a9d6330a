package handlers

import (
	"context"
	"testing"

	"github.com/dbsync/dbsync"
	"github.com/dbsync/dbsync/internal/pgtest"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/stretchr/testify/require"
	"math/big"
)

// TestCacheKeyColumnRetypedPostgres: ALTER COLUMN id TYPE numeric(10,2) on the key
// column rewrites every key value (1 becomes 1.00) without logging row changes, so the
// record IDs of the cached rows (["1"]) are not the IDs later changes carry (["1.00"]).
// The Cache used to keep the rows under their old IDs for good: an UPDATE of row 1
// added a second row 1, a DELETE of row 2 left row 2 in place, and no Snapshot could
// remove them. Rows whose key column changed type so that its IDs may change now leave
// the Cache (Stats().UnkeyedRows) and a Snapshot brings them back; a retype that keeps
// every ID (int to bigint) keeps the rows. Live and from a backlog.
func TestCacheKeyColumnRetypedPostgres(t *testing.T) {
	num := func(i int64, exp int32) pgtype.Numeric {
		return pgtype.Numeric{Int: big.NewInt(i), Exp: exp, Valid: true}
	}
	for _, live := range []bool{true, false} {
		t.Run(map[bool]string{true: "live", false: "backlog"}[live], func(t *testing.T) {
			d := pgtest.NewDatabase(t)
			_, err := d.DB.Exec(`CREATE TABLE kt (id int PRIMARY KEY, v text); CREATE TABLE kb (id int PRIMARY KEY, v text)`)
			require.NoError(t, err)
			c := NewCache()
			s := newTestSyncer(t, d, c, "kt", "kb")
			slot := pgtest.Ident(t, "slot")
			runErr, cancel := runInBackground(s)
			defer func() { cancel() }()
			waitCaughtUp(t, d, slot, runErr)
			if !live {
				cancel()
				require.NoError(t, <-runErr)
			}
			for _, q := range []string{
				`INSERT INTO kt VALUES (1, 'a'), (2, 'b'), (3, 'c'); INSERT INTO kb VALUES (1, 'a'), (2, 'b')`,
				`ALTER TABLE kt ALTER COLUMN id TYPE numeric(10,2); ALTER TABLE kb ALTER COLUMN id TYPE bigint`,
				`UPDATE kt SET v = 'a2' WHERE id = 1; UPDATE kb SET v = 'a2' WHERE id = 1`,
				`DELETE FROM kt WHERE id = 2; DELETE FROM kb WHERE id = 2`,
			} {
				_, err := d.DB.Exec(q)
				require.NoError(t, err, q)
				if live {
					waitCaughtUp(t, d, slot, runErr)
				}
			}
			if !live {
				runErr, cancel = runInBackground(s)
			}
			waitCaughtUp(t, d, slot, runErr)
			require.Equal(t, map[string]map[string]dbsync.StringMap{
				"public.kt": {`["1.00"]`: {"id": num(100, -2), "v": "a2"}},
				"public.kb": {`["1"]`: {"id": int64(1), "v": "a2"}},
			}, c.Snapshot())
			require.Equal(t, int64(3), c.Stats().UnkeyedRows, "kt's rows 1, 2 and 3 left at the retype; kb's stayed")

			require.NoError(t, s.Snapshot(context.Background(), "kt"))
			waitCaughtUp(t, d, slot, runErr)
			require.Equal(t, map[string]map[string]dbsync.StringMap{
				"public.kt": {`["1.00"]`: {"id": num(100, -2), "v": "a2"}, `["3.00"]`: {"id": num(300, -2), "v": "c"}},
				"public.kb": {`["1"]`: {"id": int64(1), "v": "a2"}},
			}, c.Snapshot(), "after a Snapshot the Cache equals the tables")
			cancel()
			require.NoError(t, <-runErr)
		})
	}
}
