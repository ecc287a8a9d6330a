package dbsync

import (
	"context"
	"database/sql"
	"strings"
	"testing"
	"time"

	"github.com/dbsync/dbsync/internal/pgtest"
	"github.com/lib/pq"
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
	snapshotWaitsForOpenWriter(t, d, s, pub, "w")
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

// TestSnapshotTableChangedBetweenChunks: a DDL of the table between two chunks of a
// Snapshot (here, inside the first chunk's window: after its SELECT, before its high
// watermark). Snapshot described the table once, at its start, and read every chunk
// with that description:
//   - ADD COLUMN: the later chunks' rows lacked the new column (the consumer got rows
//     of the old shape after changes of the new one, and kept them);
//   - DROP TABLE and CREATE TABLE under the same name and columns: the later chunks
//     read the new table's rows and delivered them as rows of the dropped one (its
//     relation OID), mixed with its rows, and the Snapshot succeeded;
//   - DROP and CREATE with other columns: ErrConfig, "column t.v does not exist".
//
// (DROP TABLE takes the table out of the publication; the new one is added back, or a
// Snapshot of it fails with ErrConfig saying so.)
//
// Each chunk now locks the table before its snapshot is taken and checks that the
// name still holds the relation, with the columns and types, the Snapshot described:
// otherwise ErrRefreshAbandoned saying what changed, the rows of the first chunk
// (read before the DDL) delivered, and the table's progress reset, so the next
// Snapshot reads the table from the start with its new description.
func TestSnapshotTableChangedBetweenChunks(t *testing.T) {
	for _, c := range []struct {
		name, ddl, err string
		after          map[string]StringMap // what the second Snapshot delivers
	}{
		{"add column", `ALTER TABLE t ADD COLUMN extra int DEFAULT 7`,
			`public.t was altered since the snapshot or refresh described it (columns "id" integer, "v" text; now "id" integer, "v" text, "extra" integer); run the Refresh or Snapshot again (a Snapshot then reads the table from the start)`,
			map[string]StringMap{
				`["1"]`: {"id": int32(1), "v": "v1", "extra": int32(7)}, `["2"]`: {"id": int32(2), "v": "v2", "extra": int32(7)},
				`["3"]`: {"id": int32(3), "v": "v3", "extra": int32(7)}}},
		{"recreated", `DROP TABLE t; CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t VALUES (10, 'new10'), (11, 'new11'); ALTER PUBLICATION %PUB% ADD TABLE t`,
			`public.t was dropped and created again since the snapshot or refresh described it (relation OID `,
			map[string]StringMap{`["10"]`: {"id": int32(10), "v": "new10"}, `["11"]`: {"id": int32(11), "v": "new11"}}},
		{"recreated other columns", `DROP TABLE t; CREATE TABLE t (id int PRIMARY KEY, w bigint); INSERT INTO t VALUES (10, 10); ALTER PUBLICATION %PUB% ADD TABLE t`,
			`public.t was dropped and created again since the snapshot or refresh described it (relation OID `,
			map[string]StringMap{`["10"]`: {"id": int32(10), "w": int64(10)}}},
		{"dropped", `DROP TABLE t`, `public.t was dropped (or renamed) since the snapshot or refresh described it; nothing more of it can be read`, nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			d := pgtest.NewDatabase(t)
			execAll(t, d.DB, `CREATE TABLE t (id int PRIMARY KEY, v text)`, `INSERT INTO t SELECT g, 'v' || g FROM generate_series(1, 3) g`)
			h := newCacheHandler()
			s, _ := startSyncer(t, d.DSN(), pgtest.Ident(t, "slot"), h, ForTables("t"), WithSnapshotChunkSize(2), WithSnapshotChunksInFlight(1))
			ctx := context.Background()
			n := 0
			s.win.afterSelect = func() {
				if n++; n == 1 {
					execAll(t, d.DB, strings.ReplaceAll(c.ddl, "%PUB%", pgtest.Ident(t, "slot")+"_pub"))
				}
			}
			err := s.Snapshot(ctx, "t")
			require.ErrorIs(t, err, ErrRefreshAbandoned)
			require.ErrorContains(t, err, "snapshot of public.t, chunk 2: ")
			require.ErrorContains(t, err, c.err)
			catchUp(t, s)
			require.Equal(t, []string{`refresh public.t ["1"]`, `refresh public.t ["2"]`}, h.eventList(), "the first chunk, read before the DDL")
			if c.name == "dropped" {
				return
			}
			s.win.afterSelect = nil
			h.mu.Lock()
			h.rows, h.events = map[string]StringMap{}, nil
			h.mu.Unlock()
			require.NoError(t, s.Snapshot(ctx, "t"))
			catchUp(t, s)
			require.Equal(t, c.after, h.tableRows("public.t"), "the second Snapshot reads the table from the start")
			require.Equal(t, dbRows(t, d.DB, "t"), c.after)
			require.Len(t, h.eventList(), len(c.after))
		})
	}
}

// TestSelectionAwkwardNames: a selection's first statements (BEGIN, LOCK TABLE, the
// table's shape, the snapshot) go in one simple-protocol query through pgx, with the
// shape query's schema and table names inlined as quoted literals; names with quotes,
// a backslash, a line break, "--" and "$2" must select the right table
// (a name inlined into the SQL file's comment would have ended it), through lib/pq too.
func TestSelectionAwkwardNames(t *testing.T) {
	for _, driver := range []string{"postgres", "pgx"} {
		t.Run(driver, func(t *testing.T) {
			d := pgtest.NewDatabase(t)
			schema, table := "we'ird \\ $1\nnot -- a comment", `t$2 "q"`
			qualified := pq.QuoteIdentifier(schema) + "." + pq.QuoteIdentifier(table)
			execAll(t, d.DB, `CREATE SCHEMA `+pq.QuoteIdentifier(schema),
				`CREATE TABLE `+qualified+` (id int PRIMARY KEY, v text)`,
				`INSERT INTO `+qualified+` VALUES (1, 'a'), (2, 'b')`)
			db, err := sql.Open(driver, d.DSN())
			require.NoError(t, err)
			t.Cleanup(func() { db.Close() })
			h := newCacheHandler()
			s, _ := startSyncer(t, d.DSN(), pgtest.Ident(t, "slot"), h, ForTables(qualified), WithDB(db))
			stats, err := s.RefreshContext(context.Background(), `SELECT * FROM `+qualified+` ORDER BY id`)
			require.NoError(t, err)
			require.Equal(t, RefreshStats{Selected: 2, Emitted: 2}, stats)
			require.Equal(t, map[string]StringMap{`["1"]`: {"id": int32(1), "v": "a"}, `["2"]`: {"id": int32(2), "v": "b"}},
				h.tableRows(schema+"."+table))
		})
	}
}

// snapshotWaitsForOpenWriter opens a transaction that writes row (1, 'p') into table
// written (w, or a partition of it), adds w to the publication pub, and starts a
// Snapshot of w: it must wait for that one open writer (s.writersWaiting) and not
// return before it. The transaction then writes (2, 'q') and commits, the Snapshot
// must return nil, and the slot is caught up.
func snapshotWaitsForOpenWriter(t *testing.T, d *pgtest.Database, s *Syncer, pub, written string) {
	t.Helper()
	x, err := d.DB.Begin()
	require.NoError(t, err)
	defer x.Rollback()
	_, err = x.Exec(`INSERT INTO ` + pq.QuoteIdentifier(written) + ` VALUES (1, 'p')`)
	require.NoError(t, err)
	execAll(t, d.DB, `ALTER PUBLICATION `+pq.QuoteIdentifier(pub)+` ADD TABLE w`)

	waiting := make(chan int, 1)
	s.writersWaiting = func(table string, n int) {
		if table == "public.w" {
			waiting <- n
		}
	}
	snapDone := make(chan error, 1)
	go func() { snapDone <- s.Snapshot(context.Background(), "w") }()
	select {
	case n := <-waiting:
		require.Equal(t, 1, n, "transactions writing w")
	case err := <-snapDone:
		require.NoError(t, err)
		t.Errorf("Snapshot returned while a transaction that wrote %s before w's ADD TABLE was open", written)
		snapDone <- nil
	case <-time.After(30 * time.Second):
		t.Fatal("Snapshot neither waited nor returned")
	}
	_, err = x.Exec(`INSERT INTO ` + pq.QuoteIdentifier(written) + ` VALUES (2, 'q')`)
	require.NoError(t, err)
	require.NoError(t, x.Commit())
	require.NoError(t, <-snapDone)
	catchUp(t, s)
}
