package dbsync

import (
	"testing"

	"github.com/stretchr/testify/require"
)

// TestEmptyConnStrIsConfigError: WithPGConnStr("") (say, from an unset variable of
// the caller's) is ErrConfig naming the option, not a silent switch to POSTGRES_* or
// the postgres@localhost default, which would set up a slot in another database.
func TestEmptyConnStrIsConfigError(t *testing.T) {
	s, err := NewSyncer(WithPGConnStr(""), WithSetup(false), env(map[string]string{"POSTGRES_HOST": "envhost"}))
	if s != nil {
		t.Cleanup(func() { s.Close() })
		t.Fatalf("NewSyncer accepted an empty connection string and uses %q", RedactConnString(s.connStr))
	}
	require.ErrorIs(t, err, ErrConfig)
	require.Equal(t, `dbsync: invalid configuration: WithPGConnStr(""): give a connection string, or leave the option out to use $POSTGRES_* (host, port, user, database, password, sslmode)`, err.Error())
}
