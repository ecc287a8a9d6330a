package pgtest

import (
	"os"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestMain(m *testing.M) { os.Exit(Main(m)) }

func TestNewDatabaseIsLogical(t *testing.T) {
	d := NewDatabase(t)
	var level, syncCommit string
	require.NoError(t, d.DB.QueryRow("SHOW wal_level").Scan(&level))
	require.NoError(t, d.DB.QueryRow("SHOW synchronous_commit").Scan(&syncCommit))
	require.Equal(t, "logical", level)
	require.Equal(t, "on", syncCommit)
	var name string
	require.NoError(t, d.DB.QueryRow("SELECT current_database()").Scan(&name))
	require.Equal(t, d.Name, name)
	// A slot left behind must not stop cleanup from dropping the database.
	_, err := d.DB.Exec("SELECT pg_create_logical_replication_slot($1, 'pgoutput')", Ident(t, "slot"))
	require.NoError(t, err)
}

func TestRedact(t *testing.T) {
	require.Equal(t, "host=x password=*** user=u", redact("host=x password=secret user=u"))
	require.Equal(t, "postgres://u:***@h/db", redact("postgres://u:secret@h/db"))
}

func TestIdent(t *testing.T) {
	require.Equal(t, "testident_slot", Ident(t, "slot"))
}
