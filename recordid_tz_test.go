package dbsync

import (
	"testing"
	"time"

	"github.com/dbsync/dbsync/internal/pgtest"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/stretchr/testify/require"
)

// TestRecordIDOfInstantInAnyLocation: GetRecordID's canonical text of an instant is
// documented as RFC 3339 in UTC, but a time.Time in another location (time.Now(), or
// a value a pgx or lib/pq query gave) was printed in its own zone: the ID built from a
// row's key in the application, ["2020-01-01T05:45:00+05:45"], differed from its
// changes' ["2020-01-01T00:00:00Z"] for the same instant, and a cache lookup by it
// missed. The same held for timestamptz[] elements and tstzrange bounds. Instants are
// now put in UTC first.
func TestRecordIDOfInstantInAnyLocation(t *testing.T) {
	kathmandu, err := time.LoadLocation("Asia/Kathmandu")
	require.NoError(t, err)
	d := pgtest.NewDatabase(t)
	execAll(t, d.DB, `CREATE TABLE rk (at timestamptz PRIMARY KEY)`, `CREATE TABLE ra (ats timestamptz[] PRIMARY KEY)`,
		`CREATE TABLE rr (r tstzrange PRIMARY KEY)`)
	rec := &changeRecorder{}
	s := newTestSyncer(t, d, ForTables("rk", "ra", "rr"), WithMessageHandler(rec))
	r := runInBackground(s)
	defer r.stop(t)
	at := time.Date(2020, 1, 1, 5, 45, 0, 0, kathmandu)
	next := at.Add(24 * time.Hour)
	_, err = d.DB.Exec(`INSERT INTO rk VALUES ($1)`, at)
	require.NoError(t, err)
	execAll(t, d.DB, `INSERT INTO ra VALUES ('{"2020-01-01 00:00+00"}')`, `INSERT INTO rr VALUES ('[2020-01-01 00:00+00,2020-01-02 00:00+00)')`)
	cs := rec.waitChanges(t, 3)
	require.Equal(t, `["2020-01-01T00:00:00Z"]`, cs[0].Key)
	require.Equal(t, `["[\"2020-01-01T00:00:00Z\"]"]`, cs[1].Key)
	require.Equal(t, `["{\"Lower\":\"2020-01-01T00:00:00Z\",\"Upper\":\"2020-01-02T00:00:00Z\",\"LowerType\":105,\"UpperType\":101,\"Valid\":true}"]`, cs[2].Key)
	for i, values := range []StringMap{
		{"at": at},
		{"ats": []any{at}},
		{"r": pgtype.Range[any]{Lower: at, Upper: next, LowerType: pgtype.Inclusive, UpperType: pgtype.Exclusive, Valid: true}},
	} {
		key, err := cs[i].Table.GetRecordID(values)
		require.NoError(t, err)
		require.Equal(t, cs[i].Key, key, cs[i].Table.TableName)
	}
}
