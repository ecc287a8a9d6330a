package dbsync

import (
	"context"
	"fmt"
	"testing"

	"github.com/dbsync/dbsync/internal/pgtest"
	"github.com/lib/pq"
	"github.com/stretchr/testify/require"
)

// limitedRole creates a LOGIN role named after the test (attrs: e.g. "REPLICATION"),
// dropped with what it owns at cleanup, and returns its quoted name and a DSN of d as it.
func limitedRole(t *testing.T, d *pgtest.Database, attrs string) (quoted, dsn string) {
	t.Helper()
	role := pgtest.Ident(t, "role")
	quoted = pq.QuoteIdentifier(role)
	execAll(t, d.DB, fmt.Sprintf(`CREATE ROLE %s LOGIN NOSUPERUSER %s`, quoted, attrs))
	t.Cleanup(func() {
		d.DB.Exec(`DROP OWNED BY ` + quoted)
		d.DB.Exec(`DROP ROLE ` + quoted)
	})
	return quoted, fmt.Sprintf("host=%s port=%d user=%s dbname=%s sslmode=disable", d.Server.Host, d.Server.Port, role, d.Name)
}

// slotCount is the number of replication slots of d's database.
func slotCount(t *testing.T, d *pgtest.Database) int {
	t.Helper()
	var n int
	require.NoError(t, d.DB.QueryRow(`SELECT count(*) FROM pg_replication_slots WHERE database = current_database()`).Scan(&n))
	return n
}

// requireStatement checks that err names stmt (on a line of its own, or inline) and
// runs it as the administrator: the statement the error tells to run must fix it.
func requireStatement(t *testing.T, d *pgtest.Database, err error, stmt string) {
	t.Helper()
	require.ErrorContains(t, err, stmt)
	execAll(t, d.DB, stmt)
}


// TestSelectionWithoutSelectPrivilege: a published table the role may not read (named
// replication_log, which once made a 42501 look like a missing REPLICATION
// privilege). Its changes still reach the Syncer (pgoutput does not check SELECT);
// Refresh and Snapshot of it fail with ErrInsufficientPrivilege, not ErrConfig, and
// Snapshot's names the GRANT, which makes it work.
func TestSelectionWithoutSelectPrivilege(t *testing.T) {
	d := pgtest.NewDatabase(t)
	ctx := context.Background()
	role, dsn := limitedRole(t, d, "REPLICATION")
	slot := pgtest.Ident(t, "slot")
	execAll(t, d.DB, `CREATE TABLE replication_log (id int PRIMARY KEY, v text)`, `INSERT INTO replication_log VALUES (1, 'a')`,
		`GRANT CREATE ON DATABASE `+pq.QuoteIdentifier(d.Name)+` TO `+role,
		`CREATE PUBLICATION `+slot+`_pub FOR TABLE replication_log`, `ALTER PUBLICATION `+slot+`_pub OWNER TO `+role)
	h := newCacheHandler()
	s, _ := startSyncer(t, dsn, slot, h)
	execAll(t, d.DB, `INSERT INTO replication_log VALUES (2, 'b')`)
	catchUp(t, s)
	require.Contains(t, h.eventList(), `insert public.replication_log ["2"]`)

	_, err := s.RefreshContext(ctx, `SELECT * FROM replication_log`)
	require.ErrorIs(t, err, ErrInsufficientPrivilege)
	require.NotErrorIs(t, err, ErrConfig)
	require.NotErrorIs(t, err, ErrReplicationPrivilege)
	require.ErrorContains(t, err, "permission denied for table replication_log")
	require.ErrorContains(t, err, "GRANT SELECT ON")

	err = s.Snapshot(ctx, "replication_log")
	require.ErrorIs(t, err, ErrInsufficientPrivilege)
	require.NotErrorIs(t, err, ErrReplicationPrivilege)
	requireStatement(t, d, err, `GRANT SELECT ON "public"."replication_log" TO `+role)
	require.NoError(t, s.Snapshot(ctx, "replication_log"))
	_, err = s.RefreshContext(ctx, `SELECT * FROM replication_log`)
	require.NoError(t, err)
	catchUp(t, s)
	require.Empty(t, mismatches(h.tableRows("public.replication_log"), dbRows(t, d.DB, "replication_log")))
}

// teardownSyncer is a Syncer without setup on startSyncer's slot and publication.
func teardownSyncer(t *testing.T, dsn, slot string) *Syncer {
	t.Helper()
	s, err := NewSyncer(WithPGConnStr(dsn), WithReplicationSlot(slot), WithPublication(slot+"_pub"), WithSetup(false))
	require.NoError(t, err)
	t.Cleanup(func() { s.Close() })
	return s
}
