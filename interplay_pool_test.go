package dbsync

import (
	"context"
	"database/sql"
	"fmt"
	"testing"
	"time"

	"github.com/dbsync/dbsync/internal/pgtest"
	"github.com/stretchr/testify/require"
)

// TestCtrlMarkLookupOnSmallPool: the control table marker lookup (ctrlMarks.lookup)
// runs a query while a poll's rows stream, like the table descriptions do: on a pool
// given with WithDB of two, three or four connections, Run delivers a user table shaped
// like a watermark table (looked up at its first RELATION, in a transaction large
// enough to be streamed, and with the split peek on four connections) and a
// Refresh (its own watermark table's RELATION looked up too) without stalling.
func TestCtrlMarkLookupOnSmallPool(t *testing.T) {
	for _, open := range []int{2, 3, 4} {
		for _, driver := range []string{"postgres", "pgx"} {
			t.Run(fmt.Sprintf("%d/%s", open, driver), func(t *testing.T) {
				d := pgtest.NewDatabase(t)
				execAll(t, d.DB, `CREATE SCHEMA app`,
					`CREATE TABLE app.one (id int PRIMARY KEY)`,
					`CREATE TABLE app.audit_marks (selection_id text, wm_type text, created_at timestamptz, PRIMARY KEY (selection_id, wm_type))`)
				db, err := sql.Open(driver, d.DSN())
				require.NoError(t, err)
				t.Cleanup(func() { db.Close() })
				db.SetMaxOpenConns(open)
				rec := &recorder{}
				s := newTestSyncer(t, d, WithDB(db), ForTables("app.one", "app.audit_marks"), WithMessageHandler(rec))
				s.splitMinWAL = 1
				execAll(t, d.DB, `BEGIN; INSERT INTO app.one SELECT generate_series(1, 3000); INSERT INTO app.audit_marks VALUES ('a', 'low', NULL); COMMIT`)
				r := runInBackground(s)
				defer r.stop(t)
				ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
				defer cancel()
				_, err = s.RefreshContext(ctx, `SELECT * FROM app.audit_marks`)
				require.NoError(t, err)
				execAll(t, d.DB, `INSERT INTO app.audit_marks VALUES ('b', 'high', NULL)`)
				catchUp(t, s)
				got := nonEmptyTx(rec.snapshot())
				want := []string{"BEGIN"}
				for i := 1; i <= 3000; i++ {
					want = append(want, fmt.Sprintf("INSERT app.one id=%d", i))
				}
				want = append(want, "INSERT app.audit_marks selection_id=a,wm_type=low,created_at=NULL", "COMMIT",
					"BEGIN", "INSERT app.audit_marks selection_id=b,wm_type=high,created_at=NULL", "COMMIT")
				require.Equal(t, want, got)
				require.Equal(t, open >= 4, s.splitPeeks.Load() > 0, "split polls on a pool of %d", open)
			})
		}
	}
}
