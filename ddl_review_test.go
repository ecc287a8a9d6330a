package dbsync

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/dbsync/dbsync/internal/pgtest"
	"github.com/stretchr/testify/require"
)

// TestBinaryTypeChangesInBacklog: with pgoutput's binary values (WithBinary), a
// backlog written before the Syncer starts holds ALTER COLUMN ... TYPE of the key (int
// -> bigint), of another column (int -> bigint) and text -> jsonb USING, with changes
// before and after each. When the Syncer starts, the catalog already has the final
// types; every change must still decode with the type it was written with (binary
// int4 is 4 bytes, int8 8, jsonb a version byte and the text: decoding one as the
// other is an error or a wrong value). Text mode for comparison.
func TestBinaryTypeChangesInBacklog(t *testing.T) {
	for _, binary := range []bool{true, false} {
		t.Run(fmt.Sprintf("binary=%v", binary), func(t *testing.T) {
			d := pgtest.NewDatabase(t)
			execAll(t, d.DB, `CREATE TABLE bt (id int PRIMARY KEY, n int, doc text)`)
			rec := &changeRecorder{}
			s := newTestSyncer(t, d, ForTables("bt"), WithMessageHandler(rec), WithBinary(binary))
			execAll(t, d.DB,
				`INSERT INTO bt VALUES (1, 10, '{"a":  1}'), (2, 20, 'not json yet')`,
				`UPDATE bt SET doc = '{"b": 2}' WHERE id = 2`,
				`ALTER TABLE bt ALTER COLUMN n TYPE bigint`,
				`INSERT INTO bt VALUES (3, 5000000000, '{"c": [1, 2]}')`,
				`UPDATE bt SET n = n + 1 WHERE id = 1`,
				`ALTER TABLE bt ALTER COLUMN doc TYPE jsonb USING doc::jsonb`,
				`INSERT INTO bt VALUES (4, 4, '{"d": {"e": null}}')`,
				`UPDATE bt SET doc = doc || '{"z": 0}' WHERE id = 2`,
				`ALTER TABLE bt ALTER COLUMN id TYPE bigint`,
				`UPDATE bt SET id = 5000000001 WHERE id = 3`,
				`DELETE FROM bt WHERE id = 1`)
			r := runInBackground(s)
			defer func() { require.NoError(t, r.stop(t)) }()
			got := rec.waitChanges(t, 9)
			type row struct {
				Op          Op
				Key, OldKey string
				New, Old    StringMap
			}
			var rows []row
			for _, c := range got {
				require.Equal(t, "public.bt", c.Table.QualifiedName())
				require.Empty(t, c.Unchanged)
				require.Empty(t, c.Filled)
				rows = append(rows, row{c.Op, c.Key, c.OldKey, c.New, c.Old})
			}
			raw := func(s string) json.RawMessage { return json.RawMessage(s) }
			require.Equal(t, []row{
				{OpInsert, `["1"]`, "", StringMap{"id": int32(1), "n": int32(10), "doc": `{"a":  1}`}, nil},
				{OpInsert, `["2"]`, "", StringMap{"id": int32(2), "n": int32(20), "doc": "not json yet"}, nil},
				{OpUpdate, `["2"]`, "", StringMap{"id": int32(2), "n": int32(20), "doc": `{"b": 2}`}, nil},
				{OpInsert, `["3"]`, "", StringMap{"id": int32(3), "n": int64(5000000000), "doc": `{"c": [1, 2]}`}, nil},
				{OpUpdate, `["1"]`, "", StringMap{"id": int32(1), "n": int64(11), "doc": `{"a":  1}`}, nil},
				{OpInsert, `["4"]`, "", StringMap{"id": int32(4), "n": int64(4), "doc": raw(`{"d": {"e": null}}`)}, nil},
				{OpUpdate, `["2"]`, "", StringMap{"id": int32(2), "n": int64(20), "doc": raw(`{"b": 2, "z": 0}`)}, nil},
				{OpUpdate, `["5000000001"]`, `["3"]`, StringMap{"id": int64(5000000001), "n": int64(5000000000), "doc": raw(`{"c": [1, 2]}`)},
					StringMap{"id": int64(3)}},
				{OpDelete, `["1"]`, "", nil, StringMap{"id": int64(1)}},
			}, rows)
			// Each change's description has the column types of its RELATION message.
			types := func(c *Change) string {
				var out []string
				for _, col := range c.Table.Columns {
					out = append(out, col.ColumnName+":"+col.TypeName)
				}
				return strings.Join(out, ",")
			}
			require.Equal(t, "id:integer,n:integer,doc:text", types(got[0]))
			require.Equal(t, "id:integer,n:bigint,doc:text", types(got[3]))
			require.Equal(t, "id:integer,n:bigint,doc:jsonb", types(got[5]))
			require.Equal(t, "id:bigint,n:bigint,doc:jsonb", types(got[7]))
		})
	}
}

// TestSnapshotResumeAfterTableRecreated: a Snapshot of t stops after its first chunk
// (its context cancelled), leaving t's progress at key 2; then t is dropped and
// created again under the same name with the same key column name, and added to the
// publication again. The next Snapshot of t is of another table: it must read it
// from the start, not resume after the dropped table's key 2, which would leave the
// new table's rows 1 and 2 out of the consumer for good while Snapshot returns nil.
func TestSnapshotResumeAfterTableRecreated(t *testing.T) {
	d := pgtest.NewDatabase(t)
	execAll(t, d.DB, `CREATE TABLE t (id int PRIMARY KEY, v text)`, `INSERT INTO t SELECT g, 'old' || g FROM generate_series(1, 6) g`)
	h := newCacheHandler()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	slot := pgtest.Ident(t, "slot")
	s, _ := startSyncer(t, d.DSN(), slot, h, ForTables("t"), WithSnapshotChunkSize(2), WithSnapshotChunksInFlight(1),
		WithSnapshotProgress(func(p SnapshotProgress) {
			if p.Chunks == 1 {
				cancel()
			}
		}))
	require.ErrorIs(t, s.Snapshot(ctx, "t"), context.Canceled)
	catchUp(t, s)
	require.Equal(t, []string{`refresh public.t ["1"]`, `refresh public.t ["2"]`}, h.eventList())

	execAll(t, d.DB, `DROP TABLE t`, `CREATE TABLE t (id bigint PRIMARY KEY, w int)`,
		`INSERT INTO t SELECT g, g * 10 FROM generate_series(1, 4) g`,
		`ALTER PUBLICATION `+slot+`_pub ADD TABLE t`)
	catchUp(t, s)
	h.mu.Lock()
	h.rows, h.events = map[string]StringMap{}, nil
	h.mu.Unlock()
	s.SnapshotProgress = nil
	require.NoError(t, s.Snapshot(context.Background(), "t"))
	catchUp(t, s)
	want := map[string]StringMap{
		`["1"]`: {"id": int64(1), "w": int32(10)}, `["2"]`: {"id": int64(2), "w": int32(20)},
		`["3"]`: {"id": int64(3), "w": int32(30)}, `["4"]`: {"id": int64(4), "w": int32(40)},
	}
	require.Equal(t, want, dbRows(t, d.DB, "t"))
	require.Equal(t, want, h.tableRows("public.t"), "the new table read from the start")
}

// TestSnapshotProgressColumnAddedBySetup: a control schema made by a dbsync without
// snapshot_progress.relation_oid gets the column from the next setup, and a progress
// row without it (NULL) is not resumed: the table is read from the start.
func TestSnapshotProgressColumnAddedBySetup(t *testing.T) {
	d := pgtest.NewDatabase(t)
	execAll(t, d.DB, `CREATE TABLE t (id int PRIMARY KEY, v text)`, `INSERT INTO t SELECT g, 'v' || g FROM generate_series(1, 4) g`)
	slot := pgtest.Ident(t, "slot")
	newTestSyncer(t, d, ForTables("t"), WithReplicationSlot(slot)).Close()
	execAll(t, d.DB, `ALTER TABLE dbsync_ctrl.snapshot_progress DROP COLUMN relation_oid`,
		`INSERT INTO dbsync_ctrl.snapshot_progress (slot_name, table_name, key_columns, last_key, chunk_size, chunks_done, rows_done)
			VALUES ('`+slot+`', 'public.t', '{id}', '{2}', 2, 1, 2)`)
	h := newCacheHandler()
	s, _ := startSyncer(t, d.DSN(), slot, h, ForTables("t"), WithPublication(pgtest.Ident(t, "pub")), WithSnapshotChunkSize(2))
	require.Equal(t, []string{"relation_oid"}, queryStrings(t, d.DB, `SELECT attname::text FROM pg_attribute
		WHERE attrelid = 'dbsync_ctrl.snapshot_progress'::regclass AND attname = 'relation_oid' AND NOT attisdropped`))
	require.NoError(t, s.Snapshot(context.Background(), "t"))
	catchUp(t, s)
	require.Equal(t, dbRows(t, d.DB, "t"), h.tableRows("public.t"), "read from the start, rows 1 and 2 included")
	require.Equal(t, []string{"true"}, queryStrings(t, d.DB, `SELECT (relation_oid = 't'::regclass)::text FROM dbsync_ctrl.snapshot_progress`))
}

// TestSnapshotTableLeavesPublication: ALTER PUBLICATION ... DROP TABLE t after the
// first chunk's SELECT of a Snapshot of t. The watermark table is still published, so
// every window still closes: the Snapshot ends (no hang) and delivers every row, the
// chunks read after the table left the publication included (a chunk does not look
// at the publication, only at the table's shape). The table's changes stop reaching
// the slot from the ALTER on, as they would after a Snapshot that finished first; the
// next Snapshot of t is refused with ErrConfig saying how to add it back.
func TestSnapshotTableLeavesPublication(t *testing.T) {
	d := pgtest.NewDatabase(t)
	execAll(t, d.DB, `CREATE TABLE t (id int PRIMARY KEY, v text)`, `INSERT INTO t SELECT g, 'v' || g FROM generate_series(1, 6) g`)
	h := newCacheHandler()
	slot := pgtest.Ident(t, "slot")
	s, _ := startSyncer(t, d.DSN(), slot, h, ForTables("t"), WithSnapshotChunkSize(2), WithSnapshotChunksInFlight(1))
	n := 0
	s.win.afterSelect = func() {
		if n++; n == 1 {
			execAll(t, d.DB, `ALTER PUBLICATION `+slot+`_pub DROP TABLE t`)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	require.NoError(t, s.Snapshot(ctx, "t"))
	require.NoError(t, ctx.Err())
	require.Equal(t, 4, n, "three chunks and the empty one after the last")
	execAll(t, d.DB, `UPDATE t SET v = 'later' WHERE id = 1`)
	catchUp(t, s)
	require.Equal(t, []string{`refresh public.t ["1"]`, `refresh public.t ["2"]`, `refresh public.t ["3"]`, `refresh public.t ["4"]`,
		`refresh public.t ["5"]`, `refresh public.t ["6"]`}, h.eventList(), "every row; the UPDATE after the ALTER is not published")
	s.win.afterSelect = nil
	err := s.Snapshot(ctx, "t")
	require.ErrorIs(t, err, ErrConfig)
	require.ErrorContains(t, err, `table public.t is not in publication "`+slot+`_pub", so its changes cannot be matched with refresh rows; add it with ALTER PUBLICATION`)
}
