package handlers

import (
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/dbsync/dbsync/internal/pgtest"
	"github.com/stretchr/testify/require"
)

// TestJSONLinesTypedValues: values encoding/json cannot take as decoded (float NaN,
// infinite timestamps, years past 9999) and values it would render lossily (numeric
// scale, uuid, bytea) come out as docs/VALUES.md says, and the writer never fails.
func TestJSONLinesTypedValues(t *testing.T) {
	d := pgtest.NewDatabase(t)
	_, err := d.DB.Exec(`CREATE TABLE odd (id int PRIMARY KEY, f float8, n numeric(6,2), ts timestamptz,
		far timestamp, u uuid, by bytea, j jsonb, arr int[], r int4range)`)
	require.NoError(t, err)
	out := &pgtest.Buffer{}
	s := newTestSyncer(t, d, NewJSONLinesWriter(out), "odd")
	runErr, cancel := runInBackground(s)
	_, err = d.DB.Exec(`INSERT INTO odd VALUES (1, 'NaN', 1.50, 'infinity', '12345-01-01 00:00', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11',
		'\x00ff', '{"x": 1.0}', '{{1,NULL}}', '[1,5)')`)
	require.NoError(t, err)
	deadline := time.Now().Add(15 * time.Second)
	for !strings.Contains(out.String(), "\n") && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	require.NoError(t, <-runErr)
	line := regexp.MustCompile(`"commit_lsn":"[^"]*","xid":\d+,"commit_time":"[^"]*",`).ReplaceAllString(out.String(), "")
	require.Equal(t, `{"type":"change","op":"insert","schema":"public","table":"odd","key":{"id":1},`+
		`"new":{"arr":[[1,null]],"by":"\\x00ff","f":"NaN","far":"12345-01-01T00:00:00","id":1,"j":{"x":1.0},"n":1.50,`+
		`"r":"[1,5)","ts":"infinity","u":"a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"},"old":null}`+"\n", line)
}
