package dbsync

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"

	"github.com/dbsync/dbsync/internal/pgtest"
	"github.com/lib/pq"
	"github.com/stretchr/testify/require"
)

// TestSetupWarnsPublicationSkipsOperations: an existing publication that does not
// publish every kind of change (publish = 'insert') loses the UPDATEs, DELETEs and
// TRUNCATEs of its tables for the Syncer: setup warns once, naming what is missing and
// the statement that publishes it. A publication publishing all four gets no warning.
func TestSetupWarnsPublicationSkipsOperations(t *testing.T) {
	d := pgtest.NewDatabase(t)
	slot := pgtest.Ident(t, "slot")
	pub := pq.QuoteIdentifier(slot + "_pub")
	execAll(t, d.DB, `CREATE TABLE t (id int PRIMARY KEY, v text)`, `CREATE PUBLICATION `+pub+` FOR TABLE t WITH (publish = 'insert')`)
	var logs bytes.Buffer
	h := newCacheHandler()
	s, stop := startSyncer(t, d.DSN(), slot, h, WithLogger(slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelWarn}))))
	execAll(t, d.DB, `INSERT INTO t VALUES (1, 'a')`, `UPDATE t SET v = 'b'`, `DELETE FROM t`)
	catchUp(t, s)
	require.NoError(t, stop())
	require.Equal(t, []string{`insert public.t ["1"]`}, h.eventList(), "the publication's choice: only INSERTs reach the slot")
	out := logs.String()
	require.Equal(t, 1, strings.Count(out, "level=WARN"), out)
	require.Contains(t, out, `publication `+slot+`_pub does not publish UPDATE, DELETE, TRUNCATE`)
	require.Contains(t, out, `ALTER PUBLICATION `+strings.ReplaceAll(pub, `"`, `\"`)+` SET (publish = 'insert, update, delete, truncate')`)

	// Publishing everything: setup warns no more.
	execAll(t, d.DB, `ALTER PUBLICATION `+pub+` SET (publish = 'insert, update, delete, truncate')`)
	logs.Reset()
	_, stop = startSyncer(t, d.DSN(), slot, h, WithLogger(slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelWarn}))))
	require.NoError(t, stop())
	require.Empty(t, logs.String())
}
