package demo

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/dbsync/dbsync"
	"github.com/dbsync/dbsync/handlers"
	"github.com/dbsync/dbsync/internal/pgtest"
	"github.com/stretchr/testify/require"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

func TestDemoRunNoMismatches(t *testing.T) {
	d := pgtest.NewDatabase(t)
	var progress bytes.Buffer
	ctx := context.Background()
	res, err := Run(ctx, Config{ConnStr: d.DSN(), Writers: 3, Duration: 3 * time.Second, KeysPerWriter: 40, Seed: 42, Progress: &progress})
	require.NoError(t, err, "progress:\n%s", progress.String())
	require.Equal(t, 0, res.Mismatches, "details: %v", res.Details)
	require.Equal(t, 3, res.Tables)
	require.Greater(t, res.Rows, 0)
	require.Greater(t, res.Committed, int64(50), "the writers should commit many transactions in 3s")
	// The run exercised what it claims to: unchanged TOAST values kept, key changes.
	require.Greater(t, res.Cache.KeptUnchanged, int64(0))
	require.Greater(t, res.Cache.KeyChanges, int64(0))
	require.Equal(t, int64(0), res.Cache.UnknownUnchanged)
	require.Regexp(t, `^demo: [1-9][0-9]* rows in 3 tables, 0 mismatches$`, res.Line())
	require.Contains(t, progress.String(), "demo: writing")
	require.Contains(t, progress.String(), "caught up")

	// Everything the demo created is gone: no slot retains WAL.
	var n int
	require.NoError(t, d.DB.QueryRow(`SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1`, DefaultSlot).Scan(&n))
	require.Equal(t, 0, n)
	require.NoError(t, d.DB.QueryRow(`SELECT count(*) FROM pg_namespace WHERE nspname IN ($1, $2)`, DefaultSchema, DefaultCtrlNamespace).Scan(&n))
	require.Equal(t, 0, n)
	require.NoError(t, d.DB.QueryRow(`SELECT count(*) FROM pg_publication WHERE pubname = $1`, DefaultPublication).Scan(&n))
	require.Equal(t, 0, n)
}

// TestDemoSeedRowsDefaultRebuild: seeded rows predate the slot, so only the default
// snapshot rebuild can bring them into the copy; without it (a no-op Rebuild) the
// comparison must report them missing.
func TestDemoSeedRowsDefaultRebuild(t *testing.T) {
	d := pgtest.NewDatabase(t)
	ctx := context.Background()
	res, err := Run(ctx, Config{ConnStr: d.DSN(), Writers: 2, Duration: 2 * time.Second, KeysPerWriter: 40, Seed: 3, SeedRows: 100})
	require.NoError(t, err)
	require.Equal(t, 0, res.Mismatches, "details: %v", res.Details)
	require.Greater(t, res.Cache.Refreshes, int64(0))

	d2 := pgtest.NewDatabase(t)
	res, err = Run(ctx, Config{ConnStr: d2.DSN(), Writers: 1, MaxTxPerWriter: 1, Duration: time.Second, KeysPerWriter: 1000, Seed: 3, SeedRows: 100,
		Rebuild: func(context.Context, *dbsync.Syncer, *handlers.Cache, []string) error { return nil }})
	require.NoError(t, err)
	require.Greater(t, res.Mismatches, 250, "300 seeded rows, at most a few touched by one transaction, are missing from the copy")
}

func TestCompareDetectsMismatches(t *testing.T) {
	d := pgtest.NewDatabase(t)
	ctx := context.Background()
	require.NoError(t, createTables(ctx, d.DB))
	_, err := d.DB.Exec(`INSERT INTO dbsync_demo.accounts VALUES (1, 'a', 1.50, '{1,2}', NULL), (2, 'b', 2, NULL, NULL), (3, 'c', 3, NULL, NULL);
		INSERT INTO dbsync_demo.order_lines VALUES (7, 1, 'x', 1, NULL)`)
	require.NoError(t, err)
	s, err := dbsync.NewSyncer(dbsync.WithPGConnStr(d.DSN()), dbsync.WithSetup(false))
	require.NoError(t, err)
	defer s.Close()
	acc, err := s.TableInfo(ctx, "dbsync_demo.accounts")
	require.NoError(t, err)
	lines, err := s.TableInfo(ctx, "dbsync_demo.order_lines")
	require.NoError(t, err)
	require.Equal(t, []string{"order_id", "line_no"}, lines.PrimaryKey)

	tables := []string{"dbsync_demo.accounts", "dbsync_demo.order_lines", "dbsync_demo.documents"}
	// A copy loaded from the tables themselves matches.
	cache := handlers.NewCache()
	byID := map[string]string{} // accounts id (as printed) -> record ID
	for _, info := range []*dbsync.PGTableInfo{acc, lines} {
		rows, err := readTable(ctx, d.DB, info)
		require.NoError(t, err)
		for k, r := range rows {
			require.NoError(t, cache.HandleRefresh(k, dbsync.DBItem{Table: info, Key: k, Values: r}))
			if info == acc {
				byID[fmt.Sprint(r["id"])] = k
			}
		}
	}
	n, m, details, err := Compare(ctx, d.DB, s, cache, tables)
	require.NoError(t, err)
	require.Equal(t, 4, n)
	require.Equal(t, 0, m, "%v", details)

	// Damage a copy of it: a wrong value, missing columns, a row only in the copy, a
	// row only in the table. The copy is loaded afresh, as a refresh row merges into
	// a cached row (the columns it lacks would keep their cached values).
	k1, k2, k3 := byID["1"], byID["2"], byID["3"]
	damaged := handlers.NewCache()
	for _, info := range []*dbsync.PGTableInfo{acc, lines} {
		for k, r := range cache.Snapshot()[info.QualifiedName()] {
			switch {
			case info == acc && k == k1:
				r["owner"] = "zz"
			case info == acc && k == k2:
				delete(r, "flags")
				delete(r, "updated_at")
			}
			require.NoError(t, damaged.HandleRefresh(k, dbsync.DBItem{Table: info, Key: k, Values: r}))
		}
	}
	cache = damaged
	_, err = d.DB.Exec(`DELETE FROM dbsync_demo.accounts WHERE id = 3; INSERT INTO dbsync_demo.order_lines VALUES (7, 2, 'y', 1, 'n')`)
	require.NoError(t, err)
	orderID, err := lines.ColInfo["order_id"].DecodeText([]byte("7"))
	require.NoError(t, err)
	lineNo, err := lines.ColInfo["line_no"].DecodeText([]byte("2"))
	require.NoError(t, err)
	k72, err := lines.GetRecordID(dbsync.StringMap{"order_id": orderID, "line_no": lineNo})
	require.NoError(t, err)

	n, m, details, err = Compare(ctx, d.DB, s, cache, tables)
	require.NoError(t, err)
	require.Equal(t, 4, n)
	require.Equal(t, 4, m)
	require.Equal(t, []string{
		`dbsync_demo.accounts ` + k1 + `: owner = "zz", want "a"`,
		`dbsync_demo.accounts ` + k2 + `: flags missing; updated_at missing`,
		`dbsync_demo.accounts ` + k3 + `: in the copy but not in the table`,
		`dbsync_demo.order_lines ` + k72 + `: missing from the copy`,
	}, details)
	require.Equal(t, "demo: 4 rows in 3 tables, 4 mismatches", Result{Rows: n, Tables: 3, Mismatches: m}.Line())
}

// TestDemoCleanupBesideAnotherSlot: in a database where another pgoutput slot exists
// (an application's Syncer), Teardown keeps the control schema it may share; the
// demo's is its own, so its cleanup still removes it, and leaves the other slot.
func TestDemoCleanupBesideAnotherSlot(t *testing.T) {
	d := pgtest.NewDatabase(t)
	other := pgtest.Ident(t, "app")
	_, err := d.DB.Exec(`SELECT pg_create_logical_replication_slot($1, 'pgoutput')`, other)
	require.NoError(t, err)
	var progress bytes.Buffer
	res, err := Run(context.Background(), Config{ConnStr: d.DSN(), Writers: 1, Duration: time.Second, KeysPerWriter: 10, Seed: 7, Progress: &progress})
	require.NoError(t, err, "progress:\n%s", progress.String())
	require.Equal(t, 0, res.Mismatches, "details: %v", res.Details)
	var slots, schemas int
	require.NoError(t, d.DB.QueryRow(`SELECT (SELECT count(*) FROM pg_replication_slots WHERE database = current_database()),
		(SELECT count(*) FROM pg_namespace WHERE nspname IN ($1, $2))`, DefaultSchema, DefaultCtrlNamespace).Scan(&slots, &schemas))
	require.Equal(t, []int{1, 0}, []int{slots, schemas})
	_, err = d.DB.Exec(`SELECT pg_drop_replication_slot($1)`, other)
	require.NoError(t, err)
}
