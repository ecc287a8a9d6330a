package main

import (
	"os"
	"strings"
	"testing"

	"github.com/dbsync/dbsync/internal/pgtest"
	"github.com/stretchr/testify/require"
)

// TestSnapshotCommandSetsUpAndConsumesSlot pins what docs/CLI.md says of `dbsync
// snapshot` beyond reading rows: like `tail -tables` it adds the named table to an
// existing publication, and like `tail` it consumes the slot: a change waiting in the
// slot (of another table of the publication) is printed and the slot forwarded past
// it, so the next consumer of that slot does not get it.
func TestSnapshotCommandSetsUpAndConsumesSlot(t *testing.T) {
	d := pgtest.NewDatabase(t)
	setEnv(t, d)
	slot, pub := os.Getenv("DBSYNC_REPLSLOT"), os.Getenv("DBSYNC_PUBNAME")
	_, err := d.DB.Exec(`CREATE TABLE a (id int PRIMARY KEY); CREATE TABLE b (id int PRIMARY KEY);
		INSERT INTO b VALUES (1), (2); CREATE PUBLICATION ` + pub + ` FOR TABLE a`)
	require.NoError(t, err)

	code, out, errOut := runCLI("snapshot", "a")
	require.Equal(t, 0, code, errOut)
	require.Equal(t, "", out)
	_, err = d.DB.Exec(`INSERT INTO a VALUES (7)`)
	require.NoError(t, err)
	var wal string
	require.NoError(t, d.DB.QueryRow(`SELECT pg_current_wal_flush_lsn()::text`).Scan(&wal))

	code, out, errOut = runCLI("snapshot", "b")
	require.Equal(t, 0, code, errOut)
	var published []string
	rows, err := d.DB.Query(`SELECT tablename FROM pg_publication_tables WHERE pubname = $1 AND schemaname = 'public' ORDER BY 1`, pub)
	require.NoError(t, err)
	for rows.Next() {
		var n string
		require.NoError(t, rows.Scan(&n))
		published = append(published, n)
	}
	require.NoError(t, rows.Err())
	require.Equal(t, []string{"a", "b"}, published, "snapshot added b to the existing publication")
	lines := strings.Split(strings.TrimSuffix(stampRE.ReplaceAllString(out, "STAMP"), "\n"), "\n")
	require.Equal(t, []string{
		`{"type":"change",STAMP,"op":"insert","schema":"public","table":"a","key":{"id":7},"new":{"id":7},"old":null}`,
		`{"type":"refresh","schema":"public","table":"b","key":{"id":1},"new":{"id":1}}`,
		`{"type":"refresh","schema":"public","table":"b","key":{"id":2},"new":{"id":2}}`,
	}, lines)
	var consumed bool
	require.NoError(t, d.DB.QueryRow(`SELECT confirmed_flush_lsn >= $2::pg_lsn FROM pg_replication_slots WHERE slot_name = $1`, slot, wal).Scan(&consumed))
	require.True(t, consumed, "snapshot forwarded the slot past the change it printed")
}
