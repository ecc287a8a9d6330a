package handlers

import (
	"strings"
	"testing"
	"time"

	"github.com/dbsync/dbsync/internal/pgtest"
	"github.com/stretchr/testify/require"
)

// TestEchoMessageHandlerTypedValuesPostgres: `dbsync tail -format text` printed typed
// values with fmt's %v, i.e. Go's inner structures: numeric 1.50 as
// {150 -2 false finite true}, a uuid and a jsonb document as lists of byte values, a
// range and an interval as structs, a timestamptz in Go's time layout. Values are now
// shown as the JSON lines writer renders them (PGTableInfo.JSONRow): numbers, arrays
// and json documents as JSON, other types in PostgreSQL's text form.
func TestEchoMessageHandlerTypedValuesPostgres(t *testing.T) {
	d := pgtest.NewDatabase(t)
	_, err := d.DB.Exec(`CREATE TABLE odd (id int PRIMARY KEY, f float8, n numeric(6,2), ts timestamptz,
		u uuid, by bytea, j jsonb, arr int[], r int4range, iv interval, ip inet, dt date, b bool, g float4, h float8)`)
	require.NoError(t, err)
	out := &pgtest.Buffer{}
	s := newTestSyncer(t, d, NewEchoMessageHandler(out), "odd")
	runErr, cancel := runInBackground(s)
	defer cancel()
	_, err = d.DB.Exec(`INSERT INTO odd VALUES (1, 'NaN', 1.50, '2020-01-01 10:00+02', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11',
		'\x00ff', '{"x": [1.0, "a b"]}', '{{1,NULL}}', '[1,5)', '1 day 02:00', '10.0.0.1', 'infinity', true, '-Infinity', 0.25)`)
	require.NoError(t, err)
	deadline := time.Now().Add(15 * time.Second)
	for !strings.Contains(out.String(), "COMMIT") && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	require.NoError(t, <-runErr)
	lines := strings.Split(out.String(), "\n")
	require.Equal(t, `INSERT public.odd id=1 f=NaN n=1.50 ts=2020-01-01T08:00:00Z u=a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11 by=\x00ff `+
		`j={"x":[1.0,"a b"]} arr=[[1,null]] r=[1,5) iv="1 day 02:00:00" ip=10.0.0.1/32 dt=infinity b=true g=-Infinity h=0.25`, lines[1])
}
