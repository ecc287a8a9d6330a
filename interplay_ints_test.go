package dbsync

import (
	"context"
	"database/sql"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/dbsync/dbsync/internal/pgtest"
	"github.com/jackc/pglogrepl"
	"github.com/stretchr/testify/require"
)

// intScans records what ScanTuple (changes) and RefreshRow.Scan (refresh rows) give
// for int2, int4, int8 and a domain over int4 scanned into *int64.
type intScans struct {
	DefaultMessageHandler
	mu  sync.Mutex
	got []string
}

func (h *intScans) add(path string, err error, v [5]int64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if err != nil {
		h.got = append(h.got, path+": "+err.Error())
		return
	}
	h.got = append(h.got, fmt.Sprint(path, ": ", v))
}

func (h *intScans) HandleInsertMessage(_ int, m *pglogrepl.InsertMessage, reln *pglogrepl.RelationMessage, t *PGTableInfo) error {
	var v [5]int64
	err := t.ScanTuple(reln, m.Tuple, &v[0], &v[1], &v[2], &v[3], &v[4])
	h.add("change", err, v)
	return nil
}

func (h *intScans) HandleRefreshRow(row *RefreshRow) error {
	var v [5]int64
	err := row.Scan(&v[0], &v[1], &v[2], &v[3], &v[4])
	h.add("refresh", err, v)
	return nil
}

func (h *intScans) list() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]string(nil), h.got...)
}

// TestIntegerScansIntoInt64: the integer fast path (columnInt) takes a value only of
// its column's width; int2, int4, int8 and a domain over int4 scanned into *int64
// give their exact values on every path (changes, refresh rows; text, binary; lib/pq,
// pgx), the types' extremes included.
func TestIntegerScansIntoInt64(t *testing.T) {
	const want = "[2147483647 -32768 2147483647 -9223372036854775808 -2147483648]"
	for _, binary := range []bool{false, true} {
		for _, driver := range []string{"postgres", "pgx"} {
			t.Run(fmt.Sprintf("binary=%v/%s", binary, driver), func(t *testing.T) {
				d := pgtest.NewDatabase(t)
				execAll(t, d.DB, `CREATE DOMAIN posint AS int4`,
					`CREATE TABLE ints (id int PRIMARY KEY, a int2, b int4, c int8, e posint)`)
				db, err := sql.Open(driver, d.DSN())
				require.NoError(t, err)
				t.Cleanup(func() { db.Close() })
				h := &intScans{}
				s, stop := startSyncer(t, d.DSN(), pgtest.Ident(t, "slot"), h, WithDB(db), ForTables("ints"), WithBinary(binary))
				execAll(t, d.DB, `INSERT INTO ints VALUES (2147483647, -32768, 2147483647, -9223372036854775808, -2147483648)`)
				waitFor(t, 20*time.Second, func() bool { return len(h.list()) == 1 }, "change")
				_, err = s.RefreshContext(context.Background(), `SELECT * FROM ints`)
				require.NoError(t, err)
				require.NoError(t, stop())
				require.Equal(t, []string{"change: " + want, "refresh: " + want}, h.list())
			})
		}
	}
}
