package dbsync

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/dbsync/dbsync/internal/pgtest"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/stretchr/testify/require"
)

// rowCache is a cacheHandler that takes refresh rows as a RefreshRowHandler: it scans
// every column into *any, checks that Values gives the same (a NaN the same as a NaN),
// and caches the row as HandleRefresh would.
type rowCache struct {
	*cacheHandler
	mu       sync.Mutex
	rows     int
	problems []string
}

func (r *rowCache) HandleRefreshRow(row *RefreshRow) error {
	names := row.Columns()
	vals := make([]any, len(names))
	dest := make([]any, len(names))
	for i := range vals {
		dest[i] = &vals[i]
	}
	if err := row.Scan(dest...); err != nil {
		return err
	}
	scanned := make(StringMap, len(names))
	for i, n := range names {
		scanned[n] = vals[i]
	}
	values, err := row.Values()
	if err != nil {
		return err
	}
	r.mu.Lock()
	r.rows++
	if !reflect.DeepEqual(nanSafe(scanned), nanSafe(values)) { // NaN is the same value as NaN here
		r.problems = append(r.problems, fmt.Sprintf("%s: Scan into *any %v, Values %v", row.Key, scanned, values))
	}
	r.mu.Unlock()
	return r.cacheHandler.HandleRefresh(row.Key, DBItem{Table: row.Table, Key: row.Key, Values: values})
}

// TestRefreshRowsMatchRefreshItems refreshes a table of many types once through
// HandleRefresh and once through a RefreshRowHandler, through both drivers: the rows,
// their record IDs and values (Scan into *any, Values) must be the same, typed Scan
// destinations must get the same values, and a query's own column scans as text.
func TestRefreshRowsMatchRefreshItems(t *testing.T) {
	for _, driver := range []string{"postgres", "pgx"} {
		t.Run(driver, func(t *testing.T) { testRefreshRowsMatchRefreshItems(t, driver) })
	}
}

type typedRow struct {
	id   int32
	ts   time.Time
	b    bool
	n    pgtype.Numeric
	txt  string
	j    json.RawMessage
	nul  *string
	twic any
}

// typedRowHandler is a RefreshRowHandler scanning the typed table's rows into typedRow.
type typedRowHandler struct {
	DefaultMessageHandler
	mu   sync.Mutex
	rows map[string]typedRow
	errs []error
}

func (r *typedRowHandler) HandleRefreshRow(row *RefreshRow) error {
	var x typedRow
	// id, ts, b, u, n, t, c, ip, f, j, arr, by, d, iv, nul, twice
	err := row.Scan(&x.id, &x.ts, &x.b, nil, &x.n, &x.txt, nil, nil, nil, &x.j, nil, nil, nil, nil, &x.nul, &x.twic)
	r.mu.Lock()
	defer r.mu.Unlock()
	if err != nil {
		r.errs = append(r.errs, err)
		return nil
	}
	r.rows[row.Key] = x
	// A wrong number of destinations is ErrConfig; an extra column into an int is too.
	r.errs = append(r.errs, row.Scan(&x.id), row.Scan(&x.id, &x.ts, &x.b, nil, &x.n, &x.txt, nil, nil, nil, &x.j, nil, nil, nil, nil, &x.nul, &x.id))
	return nil
}

func testRefreshRowsMatchRefreshItems(t *testing.T, driver string) {
	d := pgtest.NewDatabase(t)
	_, err := d.DB.Exec(typedTableDDL)
	require.NoError(t, err)
	_, err = d.DB.Exec(`INSERT INTO typed VALUES
		(1, '2024-03-01 12:34:56.789+02', true, 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', 12.500, 'x y', 'ab', '10.0.0.1', 0.1,
		 '{"b": 1, "a": [true, null]}', '{1,NULL,3}', '\x00ff', '2024-02-29', '1 day 02:03:04', NULL),
		(2, '1999-12-31 23:59:59+00', false, '00000000-0000-0000-0000-000000000000', -1e-7, '', 'abcd', '::1/128', 2.5,
		 '[]', '{}', '', 'infinity', '-3 mons', 'set')`)
	require.NoError(t, err)
	db, err := sql.Open(driver, d.DSN())
	require.NoError(t, err)
	t.Cleanup(func() { db.Close() })
	const query = `SELECT *, id * 2 AS twice FROM typed`

	items := newCacheHandler()
	s1, _ := startSyncer(t, d.DSN(), pgtest.Ident(t, "slot1"), items, ForTables("typed"), WithDB(db))
	_, err = s1.RefreshContext(context.Background(), query)
	require.NoError(t, err)

	rows := &rowCache{cacheHandler: newCacheHandler()}
	s2, _ := startSyncer(t, d.DSN(), pgtest.Ident(t, "slot2"), rows, ForTables("typed"), WithDB(db))
	stats, err := s2.RefreshContext(context.Background(), query)
	require.NoError(t, err)
	require.Equal(t, RefreshStats{Selected: 2, Emitted: 2}, stats)
	require.Empty(t, rows.problems)
	require.Equal(t, 2, rows.rows)
	want, got := items.tableRows("public.typed"), rows.tableRows("public.typed")
	require.Len(t, got, 2)
	require.Equal(t, sortedKeys(toStringMap(want)), sortedKeys(toStringMap(got)))
	for k := range want {
		requireSameRow(t, want[k], got[k], k)
		require.Equal(t, fmt.Sprint(2*got[k]["id"].(int32)), got[k]["twice"], "a query's own column, as text")
	}

	typed := &typedRowHandler{rows: map[string]typedRow{}}
	s3, _ := startSyncer(t, d.DSN(), pgtest.Ident(t, "slot3"), typed, ForTables("typed"), WithDB(db))
	_, err = s3.RefreshContext(context.Background(), query)
	require.NoError(t, err)
	require.Len(t, typed.errs, 4)
	for _, err := range typed.errs {
		require.ErrorIs(t, err, ErrConfig)
	}
	require.Len(t, typed.rows, 2)
	for k, x := range typed.rows {
		w := want[k]
		require.Equal(t, w["id"], x.id, k)
		require.Equal(t, w["ts"], x.ts, k)
		require.Equal(t, w["b"], x.b, k)
		require.Equal(t, w["n"], x.n, k)
		require.Equal(t, w["t"], x.txt, k)
		require.Equal(t, w["j"], x.j, k)
		require.Equal(t, fmt.Sprint(x.id*2), x.twic, k)
		if x.id == 1 {
			require.Nil(t, x.nul)
		} else {
			require.Equal(t, "set", *x.nul)
		}
	}
}

// toStringMap turns a map of rows into a StringMap of the same keys (for sortedKeys).
func toStringMap(rows map[string]StringMap) StringMap {
	out := StringMap{}
	for k, v := range rows {
		out[k] = v
	}
	return out
}
