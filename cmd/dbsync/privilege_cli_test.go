package main

import (
	"testing"

	"github.com/dbsync/dbsync/internal/pgtest"
	"github.com/lib/pq"
	"github.com/stretchr/testify/require"
)

// TestCLIAsRoleWithoutSuperuser: tail, snapshot, status and teardown as a role with
// REPLICATION only, a publication an administrator owns. Each exits 1 with the
// statement that fixes what the role lacks; after them, status and snapshot work
// and teardown drops the slot and names the owner's statement for the rest.
func TestCLIAsRoleWithoutSuperuser(t *testing.T) {
	d := pgtest.NewDatabase(t)
	setEnv(t, d)
	role := pgtest.Ident(t, "role")
	qr := pq.QuoteIdentifier(role)
	pub := pgtest.Ident(t, "pub")
	_, err := d.DB.Exec(`CREATE ROLE ` + qr + ` LOGIN REPLICATION`)
	require.NoError(t, err)
	t.Cleanup(func() {
		d.DB.Exec(`DROP OWNED BY ` + qr)
		d.DB.Exec(`DROP ROLE ` + qr)
	})
	t.Setenv("POSTGRES_USER", role)
	for _, q := range []string{`CREATE TABLE t (id int PRIMARY KEY)`, `INSERT INTO t VALUES (1)`, `CREATE PUBLICATION ` + pub + ` FOR TABLE t`} {
		_, err := d.DB.Exec(q)
		require.NoError(t, err, q)
	}
	grant := `GRANT CREATE ON DATABASE ` + pq.QuoteIdentifier(d.Name) + ` TO ` + qr
	code, _, stderr := runCLI("tail")
	require.Equal(t, 1, code, stderr)
	require.Contains(t, stderr, grant)
	require.NotContains(t, stderr, "s3cret-pw")
	_, err = d.DB.Exec(grant)
	require.NoError(t, err)

	add := `ALTER PUBLICATION "` + pub + `" ADD TABLE "cli_ctrl"."cli_wm"`
	code, _, stderr = runCLI("snapshot", "t")
	require.Equal(t, 1, code, stderr)
	require.Contains(t, stderr, add)
	_, err = d.DB.Exec(add)
	require.NoError(t, err)

	code, _, stderr = runCLI("status")
	require.Equal(t, 1, code, "no slot yet: %s", stderr)

	code, _, stderr = runCLI("snapshot", "t")
	require.Equal(t, 1, code, stderr)
	require.Contains(t, stderr, `GRANT SELECT ON "public"."t" TO `+qr)
	_, err = d.DB.Exec(`GRANT SELECT ON t TO ` + qr)
	require.NoError(t, err)
	code, _, stderr = runCLI("snapshot", "t")
	require.Equal(t, 0, code, stderr)
	code, _, stderr = runCLI("status")
	require.Equal(t, 0, code, stderr)

	code, _, stderr = runCLI("teardown")
	require.Equal(t, 1, code, stderr)
	require.Contains(t, stderr, `ALTER PUBLICATION "`+pub+`" DROP TABLE "cli_ctrl"."cli_wm"`)
	var n int
	require.NoError(t, d.DB.QueryRow(`SELECT count(*) FROM pg_replication_slots WHERE database = current_database()`).Scan(&n))
	require.Zero(t, n, "the slot is dropped")
}
