package dbsync

import (
	"context"
	"database/sql"
	"testing"
	"time"

	"github.com/dbsync/dbsync/internal/pgtest"
	"github.com/stretchr/testify/require"
)

// TestSelectionTransportsAgree reads the same chunks through lib/pq (database/sql,
// formPQ: columns of the types lib/pq converts cast to text, integers printed back
// from lib/pq's int64) and pgx's stdlib driver (pgx's own connection, every column as
// it is, text results): rows, record IDs, values and key texts must be identical, in
// key order, for every chunk boundary.
func TestSelectionTransportsAgree(t *testing.T) {
	d := pgtest.NewDatabase(t)
	pgxDB, err := sql.Open("pgx", d.DSN())
	require.NoError(t, err)
	t.Cleanup(func() { pgxDB.Close() })
	s := peekSyncer(t, d, d.DB, `id bigint, k text, ts timestamptz, n numeric, b bool, c char(3), arr int[], j jsonb, e text,
		i2 int2, i4 int, u uuid, iv interval, ip inet, cd cidr, nm name, o oid, vc varchar(5), f float8,
		PRIMARY KEY (id, k)`)
	sp, err := NewSyncer(WithDB(pgxDB), ForTables("items"), WithReplicationSlot(pgtest.Ident(t, "slot2")), WithPublication(pgtest.Ident(t, "pub")))
	require.NoError(t, err)
	t.Cleanup(func() { sp.Close() })
	execAll(t, d.DB, `INSERT INTO items SELECT g / 3, 'k' || (g % 3), '2024-01-01 00:00:00+00'::timestamptz + g * interval '1 minute',
		g / 7.0, g % 2 = 0, 'x', ARRAY[g, NULL], jsonb_build_object('g', g), CASE WHEN g % 5 = 0 THEN NULL WHEN g % 5 = 1 THEN '' ELSE 'v' END,
		(500 - g)::int2, -g * 100000, md5(g::text)::uuid, g * interval '1 day 1 second', ('10.0.' || (g % 256) || '.1')::inet,
		('10.' || (g % 256) || '.0.0/16')::cidr, 'n' || g, g::oid, left('abcdef', g % 6), g / 3.0
		FROM generate_series(1, 1000) g`)
	info, err := s.tableInfoByName(context.Background(), qualifiedTable{"public", "items"})
	require.NoError(t, err)
	cols := make([]string, len(info.Columns))
	for i, c := range info.Columns {
		cols[i] = c.ColumnName
	}
	read := func(s *Syncer, q selQuery) ([]DBItem, [][]string, []string) {
		rows, _, last, err := s.selectRows(context.Background(), info, cols, q)
		require.NoError(t, err)
		keys := make([][]string, 0, rows.Len())
		for _, r := range rows.rows {
			keys = append(keys, r.keyText)
		}
		return rows.Items(), keys, last
	}
	for _, n := range []int{1, 7, 256, 257, 1000, 2000} {
		var after []string
		total := 0
		for {
			q := chunkQuery(info, cols, after, nil, n)
			items, keys, last := read(s, q)
			itemsPgx, keysPgx, lastPgx := read(sp, q)
			require.Equal(t, len(items), len(itemsPgx), "chunk size %d after %v", n, after)
			for i := range items {
				require.Equal(t, items[i].Key, itemsPgx[i].Key)
				requireSameRow(t, items[i].Values, itemsPgx[i].Values, items[i].Key)
			}
			require.Equal(t, keys, keysPgx)
			require.Equal(t, last, lastPgx)
			total += len(items)
			if len(items) < n {
				break
			}
			after = last
		}
		require.Equal(t, 1000, total, "chunk size %d", n)
	}
	// A follow-up read of given keys (keysQuery) agrees too, and returns the rows in key
	// order whatever the order of the keys asked for.
	keys := [][]string{{"300", "k0"}, {"5", "k2"}, {"333", "k1"}, {"1000", "k0"}}
	items, texts, _ := read(s, keysQuery(info, cols, keys))
	itemsPgx, textsPgx, _ := read(sp, keysQuery(info, cols, keys))
	require.Equal(t, [][]string{{"5", "k2"}, {"300", "k0"}, {"333", "k1"}}, texts, "id 1000 does not exist")
	require.Equal(t, texts, textsPgx)
	for i := range items {
		require.Equal(t, items[i].Key, itemsPgx[i].Key)
		requireSameRow(t, items[i].Values, itemsPgx[i].Values, items[i].Key)
	}
	require.Zero(t, s.pgconnSelects.Load())
	require.NotZero(t, sp.pgconnSelects.Load())
}

// TestSelectionCancelledLeavesConnectionUsable cancels a selection while the server
// is still producing its rows, and runs one that fails on the server midway, on a
// pool of one connection: each call returns soon with an error, and the next
// selection on the pool works and sees current data (the transaction was rolled
// back, or the connection dropped).
func TestSelectionCancelledLeavesConnectionUsable(t *testing.T) {
	for _, driver := range []string{"postgres", "pgx"} {
		t.Run(driver, func(t *testing.T) {
			d := pgtest.NewDatabase(t)
			db, err := sql.Open(driver, d.DSN())
			require.NoError(t, err)
			t.Cleanup(func() { db.Close() })
			db.SetMaxOpenConns(1)
			s := peekSyncer(t, d, db, `id bigint PRIMARY KEY, v text`)
			execAll(t, d.DB, `INSERT INTO items SELECT g, 'v' || g FROM generate_series(1, 2000) g`)
			info, err := s.tableInfoByName(context.Background(), qualifiedTable{"public", "items"})
			require.NoError(t, err)
			cols := []string{"id", "v"}
			// Row 1,500 takes 30 s to produce: the read is cancelled while it waits.
			slow := itemsQuery(info, cols, " FROM items AS t CROSS JOIN LATERAL (SELECT pg_sleep(CASE WHEN t.id = 1500 THEN 30 ELSE 0 END)) AS z")
			ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
			defer cancel()
			start := time.Now()
			_, _, _, err = s.selectRows(ctx, info, cols, slow)
			require.ErrorIs(t, err, context.DeadlineExceeded)
			require.Less(t, time.Since(start), 10*time.Second, "the cancelled selection must not wait for the server")

			// A query that fails on the server after some rows were sent (division by
			// zero at row 1,900) leaves the transaction aborted: it must be rolled back.
			failing := itemsQuery(info, cols, " FROM items AS t WHERE 1 / (t.id - 1900) <> 7 ORDER BY t.id")
			var pid, pidAfter int
			require.NoError(t, db.QueryRow(`SELECT pg_backend_pid()`).Scan(&pid))
			_, _, _, err = s.selectRows(context.Background(), info, cols, failing)
			code, _, ok := serverError(err)
			require.True(t, ok, "%v", err)
			require.Equal(t, "22012", code)
			// Rolled back, the connection stays in the pool.
			require.NoError(t, db.QueryRow(`SELECT pg_backend_pid()`).Scan(&pidAfter))
			require.Equal(t, pid, pidAfter, "the connection was dropped instead of rolled back")

			// A row committed now must be seen: a transaction left open by the cancelled
			// selection would hide it (its snapshot is older), an aborted one would fail.
			execAll(t, d.DB, `INSERT INTO items VALUES (2001, 'v2001')`)
			rows, _, last, err := s.selectRows(context.Background(), info, cols, chunkQuery(info, cols, nil, nil, 5000))
			require.NoError(t, err)
			require.Equal(t, 2001, rows.Len())
			require.Equal(t, []string{"2001"}, last)
			got, ok := rows.Get(`["1999"]`)
			require.True(t, ok)
			require.Equal(t, "v1999", got.Values["v"])
			if driver == "pgx" {
				require.Equal(t, uint64(3), s.pgconnSelects.Load())
			}
		})
	}
}

// itemsQuery is a selection of cols of the items table (alias t) with the given FROM
// clause and what follows it.
func itemsQuery(info *PGTableInfo, cols []string, tail string) selQuery {
	return selQuery{build: func(form selectForm) string {
		return "SELECT " + columnList(info, "t", cols, form) + tail
	}, unique: true}
}
