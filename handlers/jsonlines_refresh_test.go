package handlers

import (
	"context"
	"strings"
	"testing"

	"github.com/dbsync/dbsync/internal/pgtest"
	"github.com/stretchr/testify/require"
)

// TestJSONLinesWriterRefreshRowsPostgres: a JSONLinesWriter given to a Syncer that
// runs a Snapshot or a Refresh wrote nothing for the rows read (it had no
// HandleRefresh: DefaultMessageHandler's dropped them), so the output held the
// changes but never the existing rows, with no error. Only the CLI's own wrapper
// wrote them. They are "refresh" lines, written with the high watermark's
// transaction, in the order the rows are handed over.
func TestJSONLinesWriterRefreshRowsPostgres(t *testing.T) {
	d := pgtest.NewDatabase(t)
	_, err := d.DB.Exec(`CREATE TABLE t (id int PRIMARY KEY, v text, n numeric); INSERT INTO t VALUES (1, 'a', 1.50), (2, NULL, 'NaN')`)
	require.NoError(t, err)
	var out pgtest.Buffer
	s := newTestSyncer(t, d, NewJSONLinesWriter(&out), "t")
	slot := pgtest.Ident(t, "slot")
	runErr, cancel := runInBackground(s)
	defer cancel()
	require.NoError(t, s.Snapshot(context.Background(), "t"))
	_, err = d.DB.Exec(`UPDATE t SET v = 'b' WHERE id = 2`)
	require.NoError(t, err)
	_, err = s.RefreshContext(context.Background(), `SELECT id, v FROM t WHERE id = 2`)
	require.NoError(t, err)
	waitCaughtUp(t, d, slot, runErr)
	cancel()
	require.NoError(t, <-runErr)
	lines := strings.Split(strings.TrimSuffix(jsonStampRE.ReplaceAllString(out.String(), "T"), "\n"), "\n")
	require.Equal(t, []string{
		`{"type":"refresh","schema":"public","table":"t","key":{"id":1},"new":{"id":1,"n":1.50,"v":"a"}}`,
		`{"type":"refresh","schema":"public","table":"t","key":{"id":2},"new":{"id":2,"n":"NaN","v":null}}`,
		`{"type":"change",T,"op":"update","schema":"public","table":"t","key":{"id":2},"new":{"id":2,"n":"NaN","v":"b"},"old":null}`,
		`{"type":"refresh","schema":"public","table":"t","key":{"id":2},"new":{"id":2,"v":"b"}}`,
	}, lines)
}
