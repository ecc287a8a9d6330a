package dbsync

import (
	"context"
	"testing"
	"time"

	"github.com/dbsync/dbsync/internal/pgtest"
	"github.com/stretchr/testify/require"
)

// TestSnapshotWaitsForWritersOfAddedTable: PostgreSQL 15's pgoutput decides whether a
// change is published by the publication as of that change (the historic catalog
// snapshot it is decoded with), so a transaction that wrote w before ALTER
// PUBLICATION ... ADD TABLE w committed and commits after it has its earlier changes
// left out of the slot for good, whenever they are decoded (its later ones are
// delivered). A Snapshot of w that selected while such a transaction was still open
// could not see its rows either (not yet committed), so row 1 reached the consumer
// neither way and the cache stayed without it. Snapshot now waits for the
// transactions that hold a write lock on the table when it starts to end before its
// first chunk: their rows are then committed and selected.
func TestSnapshotWaitsForWritersOfAddedTable(t *testing.T) {
	d := pgtest.NewDatabase(t)
	execAll(t, d.DB, `CREATE TABLE a (id int PRIMARY KEY)`, `CREATE TABLE w (id int PRIMARY KEY, v text)`,
		`INSERT INTO w VALUES (0, 'o')`)
	h := newCacheHandler()
	slot := pgtest.Ident(t, "slot")
	s, _ := startSyncer(t, d.DSN(), slot, h, ForTables("a"))
	pub := slot + "_pub"
	ctx := context.Background()
	x, err := d.DB.Begin()
	require.NoError(t, err)
	defer x.Rollback()
	_, err = x.Exec(`INSERT INTO w VALUES (1, 'p')`)
	require.NoError(t, err)
	execAll(t, d.DB, `ALTER PUBLICATION `+pub+` ADD TABLE w`)

	waiting := make(chan int, 1)
	s.writersWaiting = func(table string, n int) {
		if table == "public.w" {
			waiting <- n
		}
	}
	snapDone := make(chan error, 1)
	go func() { snapDone <- s.Snapshot(ctx, "w") }()
	select {
	case n := <-waiting:
		require.Equal(t, 1, n, "transactions writing w")
	case err := <-snapDone:
		require.NoError(t, err)
		t.Log("Snapshot returned while a transaction that wrote w before its ADD TABLE was open")
		snapDone <- nil
	case <-time.After(30 * time.Second):
		t.Fatal("Snapshot neither waited nor returned")
	}
	_, err = x.Exec(`INSERT INTO w VALUES (2, 'q')`)
	require.NoError(t, err)
	require.NoError(t, x.Commit())
	require.NoError(t, <-snapDone)
	catchUp(t, s)
	require.Empty(t, mismatches(h.tableRows("public.w"), dbRows(t, d.DB, "w")))
	require.Equal(t, []string{
		`insert public.w ["2"]`, // x's insert of 1 came before the ADD TABLE: never in the slot
		`refresh public.w ["0"]`, `refresh public.w ["1"]`, `refresh public.w ["2"]`,
	}, h.eventList())
	require.Equal(t, map[string]StringMap{
		`["0"]`: {"id": int32(0), "v": "o"},
		`["1"]`: {"id": int32(1), "v": "p"},
		`["2"]`: {"id": int32(2), "v": "q"},
	}, h.tableRows("public.w"))
}
