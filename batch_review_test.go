package dbsync

import (
	"testing"
	"time"

	"github.com/dbsync/dbsync/internal/pgtest"
	"github.com/stretchr/testify/require"
)

// TestBatcherNoKeyStopsAtItsTransaction: a change of a table without a record ID
// ends the poll with ErrNoKey; the transactions before its transaction in the poll
// are handed to the Batcher and forwarded past, nothing of its transaction is (the
// Batcher gets none of it, the slot stays at the COMMIT before it), and the handler
// does not get the change.
func TestBatcherNoKeyStopsAtItsTransaction(t *testing.T) {
	d := pgtest.NewDatabase(t)
	execAll(t, d.DB, `CREATE TABLE k (id int PRIMARY KEY)`, `CREATE TABLE nk (a int)`)
	h := &eventLog{}
	s := newTestSyncer(t, d, ForTables("k", "nk"), WithMessageHandler(h))
	b := &truncatingBatcher{}
	s.Batcher = b
	execAll(t, d.DB, `INSERT INTO k VALUES (1)`, `BEGIN; INSERT INTO k VALUES (2); INSERT INTO nk VALUES (1); COMMIT`)
	msgs, err := s.GetMessages(0, false, nil)
	require.NoError(t, err)
	require.Equal(t, "BRICBIRIC", msgTypes(msgs))

	err = runInBackground(s).wait(t, 30*time.Second)
	require.ErrorIs(t, err, ErrNoKey)
	require.ErrorContains(t, err, "public.nk at LSN")
	require.Equal(t, []string{`upsert public.k ["1"] map[id:1]`}, b.opList())
	require.Equal(t, []string{`INSERT k ["1"]`, `INSERT k ["2"]`}, h.got())
	c, err := s.ConfirmedFlushLSN(t.Context())
	require.NoError(t, err)
	require.Equal(t, msgs[3].LSN, c, "forwarded to the first transaction's COMMIT, not into the second")
}
