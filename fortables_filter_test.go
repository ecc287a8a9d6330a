package dbsync

import (
	"testing"

	"github.com/dbsync/dbsync/internal/pgtest"
	"github.com/lib/pq"
	"github.com/stretchr/testify/require"
)

// TestForTablesDoesNotFilter pins what ForTables' docstring says: it names the tables
// setup puts in the publication, and delivery follows the publication. A publication
// that already holds another table (b), and one added to it while Run runs (c), bring
// their changes to the handler too, in commit order.
func TestForTablesDoesNotFilter(t *testing.T) {
	d := pgtest.NewDatabase(t)
	pub := pgtest.Ident(t, "pub")
	execAll(t, d.DB, `CREATE TABLE a (id int PRIMARY KEY)`, `CREATE TABLE b (id int PRIMARY KEY)`, `CREATE TABLE c (id int PRIMARY KEY)`,
		`CREATE PUBLICATION `+pq.QuoteIdentifier(pub)+` FOR TABLE b`)
	h := &recorder{}
	s := newTestSyncer(t, d, ForTables("a"), WithMessageHandler(h))
	r := runInBackground(s)
	t.Cleanup(r.cancel)
	execAll(t, d.DB, `INSERT INTO a VALUES (1)`, `INSERT INTO b VALUES (2)`,
		`ALTER PUBLICATION `+pq.QuoteIdentifier(pub)+` ADD TABLE c`, `INSERT INTO c VALUES (3)`)
	catchUp(t, s)
	require.NoError(t, r.stop(t))
	require.Equal(t, []string{
		"BEGIN", "INSERT public.a id=1", "COMMIT",
		"BEGIN", "INSERT public.b id=2", "COMMIT",
		"BEGIN", "INSERT public.c id=3", "COMMIT",
	}, h.snapshot())
}
