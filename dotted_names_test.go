package dbsync

import (
	"fmt"
	"maps"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/dbsync/dbsync/internal/pgtest"
	"github.com/stretchr/testify/require"
)

// dottedBatcher records every Batcher call as "op doctype id=values".
type dottedBatcher struct {
	mu    sync.Mutex
	calls []string
}

func (b *dottedBatcher) BatchUpsert(doctype string, docs map[string]StringMap) (any, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, id := range slices.Sorted(maps.Keys(docs)) {
		b.calls = append(b.calls, "upsert "+doctype+" "+id+"="+fmt.Sprint(docs[id]["v"]))
	}
	return nil, nil
}

func (b *dottedBatcher) BatchDelete(doctype string, ids []string) (any, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, id := range ids {
		b.calls = append(b.calls, "delete "+doctype+" "+id)
	}
	return nil, nil
}

func (b *dottedBatcher) BatchTruncate(doctype string) (any, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.calls = append(b.calls, "truncate "+doctype)
	return nil, nil
}

func (b *dottedBatcher) got() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.Sorted(slices.Values(b.calls))
}

// TestDottedNamesKeptApart: tables "a.b"."c" and "a"."b.c" (a dot in a schema or
// table name) were both named "a.b.c" (PGTableInfo.QualifiedName), so the Batcher
// merged their rows under one doctype, one row of a key overwriting the other's and
// a TRUNCATE of one emptying both, and Snapshot recorded their progress in one row
// of snapshot_progress (a call on one could resume after the other's last key).
// QualifiedName quotes both parts of such a name.
func TestDottedNamesKeptApart(t *testing.T) {
	d := pgtest.NewDatabase(t)
	execAll(t, d.DB, `CREATE SCHEMA "a.b"`, `CREATE SCHEMA a`,
		`CREATE TABLE "a.b".c (id int PRIMARY KEY, v text)`, `CREATE TABLE a."b.c" (id int PRIMARY KEY, v text)`,
		`CREATE TABLE a.plain (id int PRIMARY KEY, v text)`)
	b := &dottedBatcher{}
	s := newTestSyncer(t, d, ForTables(`"a.b".c`, `a."b.c"`, "a.plain"))
	s.Batcher = b
	r := runInBackground(s)
	defer r.stop(t)
	execAll(t, d.DB, `BEGIN; INSERT INTO "a.b".c VALUES (1, 'first'); INSERT INTO a."b.c" VALUES (1, 'second');
		INSERT INTO a.plain VALUES (1, 'third'); COMMIT`)
	want := []string{`upsert "a"."b.c" ["1"]=second`, `upsert "a.b"."c" ["1"]=first`, `upsert a.plain ["1"]=third`}
	// One transaction, one poll: its net effect reaches the Batcher at once.
	r.waitFor(t, 30*time.Second, func() bool { return slices.Contains(b.got(), want[2]) }, "batched rows")
	require.Equal(t, want, b.got())
	execAll(t, d.DB, `TRUNCATE a."b.c"`, `DELETE FROM "a.b".c`)
	want = append(want, `delete "a.b"."c" ["1"]`, `truncate "a"."b.c"`)
	slices.Sort(want)
	r.waitFor(t, 30*time.Second, func() bool { return slices.ContainsFunc(b.got(), func(c string) bool { return c[:6] == "delete" }) },
		"batched truncate and delete")
	require.Equal(t, want, b.got())

	for _, name := range []string{`"a.b".c`, `a."b.c"`, "a.plain"} {
		info, err := s.TableInfo(t.Context(), name)
		require.NoError(t, err)
		require.NoError(t, s.Snapshot(t.Context(), name), info.QualifiedName())
	}
	// One row per table, each of its own table (relation_oid), finished.
	require.Equal(t, []string{`"a"."b.c" a."b.c" true`, `"a.b"."c" "a.b".c true`, `a.plain a.plain true`}, queryStrings(t, d.DB,
		`SELECT table_name || ' ' || relation_oid::regclass::text || ' ' || (finished_at IS NOT NULL)::text FROM dbsync_ctrl.snapshot_progress WHERE slot_name = $1 ORDER BY table_name COLLATE "C"`,
		pgtest.Ident(t, "slot")))
}
