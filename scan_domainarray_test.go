package dbsync

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dbsync/dbsync/internal/pgtest"
	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/stretchr/testify/require"
)

// domainArrayScans scans each insert (ScanTuple) and refresh row (RefreshRow.Scan) of
// table da (id, an array of a domain over timestamptz, a domain over timestamptz[])
// into pgtype destinations, recording what they hold.
type domainArrayScans struct {
	DefaultMessageHandler
	mu  sync.Mutex
	got []string
}

func (h *domainArrayScans) record(path string, scan func(dest ...any) error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	var darr, adom []sql.NullTime
	var flat pgtype.FlatArray[pgtype.Timestamptz]
	if err := scan(nil, &darr, &adom); err != nil {
		h.got = append(h.got, path+": "+err.Error())
	} else {
		var parts []string
		for _, ts := range append(darr, adom...) {
			parts = append(parts, ts.Time.Format(time.RFC3339)+" "+ts.Time.Location().String())
		}
		h.got = append(h.got, path+": "+strings.Join(parts, ", "))
	}
	if err := scan(nil, &flat, nil); err != nil {
		h.got = append(h.got, path+" flat: "+err.Error())
	} else {
		h.got = append(h.got, fmt.Sprintf("%s flat: %s %s", path, flat[0].Time.Format(time.RFC3339), flat[0].Time.Location()))
	}
}

func (h *domainArrayScans) HandleInsertMessage(_ int, m *pglogrepl.InsertMessage, reln *pglogrepl.RelationMessage, t *PGTableInfo) error {
	h.record("change", func(dest ...any) error { return t.ScanTuple(reln, m.Tuple, dest...) })
	return nil
}

func (h *domainArrayScans) HandleRefreshRow(row *RefreshRow) error {
	h.record("refresh", row.Scan)
	return nil
}

func (h *domainArrayScans) list() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]string(nil), h.got...)
}

// TestDomainArraysScanAsBaseArrays: docs/VALUES.md has domains, and arrays of domains,
// decode as their base type, and ScanTuple / RefreshRow.Scan hand destinations
// MessageToMap has no value type for to pgtype "with the column's type OID". For an
// array of a domain, or a domain over an array, that OID is one pgtype does not know,
// so pgtype guessed the type from the destination with pgx's own default types:
// []sql.NullTime failed ("cannot scan unknown type (OID ...)"), a
// pgtype.FlatArray[pgtype.Timestamptz] came in time.Local (pgx's default timestamptz
// type, not dbsync's, which scans in UTC). They now scan as their base array type, like a domain
// over a scalar scans as its base type, on changes and refresh rows, text and binary,
// lib/pq and pgx.
func TestDomainArraysScanAsBaseArrays(t *testing.T) {
	kathmandu, err := time.LoadLocation("Asia/Kathmandu")
	require.NoError(t, err)
	local := time.Local
	time.Local = kathmandu
	t.Cleanup(func() { time.Local = local })
	const want = ": 2020-01-01T00:00:00Z UTC, 2020-01-02T00:00:00Z UTC"
	const flat = " flat: 2020-01-01T00:00:00Z UTC"
	for _, binary := range []bool{false, true} {
		for _, driver := range []string{"postgres", "pgx"} {
			t.Run(fmt.Sprintf("binary=%v/%s", binary, driver), func(t *testing.T) {
				d := pgtest.NewDatabase(t)
				execAll(t, d.DB, `CREATE DOMAIN tsdom AS timestamptz`, `CREATE DOMAIN tsarrdom AS timestamptz[]`,
					`CREATE TABLE da (id int PRIMARY KEY, darr tsdom[], adom tsarrdom)`)
				db, err := sql.Open(driver, d.DSN())
				require.NoError(t, err)
				t.Cleanup(func() { db.Close() })
				h := &domainArrayScans{}
				s, stop := startSyncer(t, d.DSN(), pgtest.Ident(t, "slot"), h, WithDB(db), ForTables("da"), WithBinary(binary))
				execAll(t, d.DB, `INSERT INTO da VALUES (1, '{"2020-01-01 05:45+05:45"}', '{"2020-01-02 05:45+05:45"}')`)
				waitFor(t, 20*time.Second, func() bool { return len(h.list()) == 2 }, "change")
				_, err = s.RefreshContext(context.Background(), `SELECT * FROM da`)
				require.NoError(t, err)
				require.NoError(t, stop())
				require.Equal(t, []string{"change" + want, "change" + flat, "refresh" + want, "refresh" + flat}, h.list())
			})
		}
	}
}
