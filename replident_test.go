package dbsync

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"

	"github.com/dbsync/dbsync/internal/pgtest"
	"github.com/stretchr/testify/require"
)

const replIdentTables = `
CREATE TABLE withpk (id int PRIMARY KEY);
CREATE TABLE nopk (x int);
CREATE TABLE "Odd ""Name" (x int);
CREATE TABLE nothing (id int PRIMARY KEY);
ALTER TABLE nothing REPLICA IDENTITY NOTHING;
CREATE TABLE byindex (x int NOT NULL);
CREATE UNIQUE INDEX byindex_x ON byindex (x);
ALTER TABLE byindex REPLICA IDENTITY USING INDEX byindex_x;
CREATE TABLE alreadyfull (x int);
ALTER TABLE alreadyfull REPLICA IDENTITY FULL`

func replIdents(t *testing.T, d *pgtest.Database) map[string]string {
	t.Helper()
	rows, err := d.DB.Query(`SELECT relname, relreplident::text FROM pg_class
		WHERE relname IN ('withpk', 'nopk', 'Odd "Name', 'nothing', 'byindex', 'alreadyfull')`)
	require.NoError(t, err)
	defer rows.Close()
	out := map[string]string{}
	for rows.Next() {
		var n, r string
		require.NoError(t, rows.Scan(&n, &r))
		out[n] = r
	}
	require.NoError(t, rows.Err())
	return out
}

var allReplIdentTables = []string{"withpk", "nopk", `"Odd ""Name"`, "nothing", "byindex", "alreadyfull"}

// TestReplicaIdentityWarning: Setup reports (logs) exactly the published tables whose
// updates/deletes cannot be captured, and changes nothing.
func TestReplicaIdentityWarning(t *testing.T) {
	d := pgtest.NewDatabase(t)
	execAll(t, d.DB, replIdentTables)
	before := replIdents(t, d)
	var logs bytes.Buffer
	s := newTestSyncer(t, d, ForTables(allReplIdentTables...),
		WithLogger(slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelWarn}))))
	require.Equal(t, before, replIdents(t, d), "never changed silently")
	problems, err := s.CheckReplicaIdentity(t.Context())
	require.NoError(t, err)
	require.Equal(t, []ReplicaIdentityProblem{
		{Schema: "public", Table: `Odd "Name`, ReplicaIdentity: 'd'},
		{Schema: "public", Table: "nopk", ReplicaIdentity: 'd'},
		{Schema: "public", Table: "nothing", ReplicaIdentity: 'n', hasPK: true},
	}, problems)
	require.Equal(t, `table public.nothing has REPLICA IDENTITY NOTHING: its UPDATEs and DELETEs cannot be captured (and fail on the primary); it has a primary key, so run ALTER TABLE "public"."nothing" REPLICA IDENTITY DEFAULT (or ALTER TABLE "public"."nothing" REPLICA IDENTITY FULL)`,
		problems[2].String(), "a table with a primary key is told to go back to DEFAULT")
	require.Equal(t, `ALTER TABLE "public"."Odd ""Name" REPLICA IDENTITY FULL`, problems[0].Fix())
	out := logs.String()
	require.Equal(t, 3, strings.Count(out, "level=WARN"), out)
	for _, want := range []string{`ALTER TABLE \"public\".\"nopk\" REPLICA IDENTITY FULL`, "has REPLICA IDENTITY NOTHING"} {
		require.Contains(t, out, want)
	}
}

// TestReplicaIdentityStrictAndFull: WithStrictReplicaIdentity turns the report into
// ErrReplicaIdentity; WithReplicaIdentityFull sets FULL on exactly the named tables
// (quoted identifiers), after which the strict setup passes for them.
func TestReplicaIdentityStrictAndFull(t *testing.T) {
	d := pgtest.NewDatabase(t)
	execAll(t, d.DB, replIdentTables)
	opts := []SyncerOpt{WithPGConnStr(d.DSN()), WithReplicationSlot(pgtest.Ident(t, "slot")),
		WithPublication(pgtest.Ident(t, "pub")), ForTables(allReplIdentTables...), WithStrictReplicaIdentity(true)}
	_, err := NewSyncer(opts...)
	require.ErrorIs(t, err, ErrReplicaIdentity)
	require.Contains(t, err.Error(), `ALTER TABLE "public"."nopk" REPLICA IDENTITY FULL`)

	_, err = NewSyncer(append(opts, WithReplicaIdentityFull("nopk", `"Odd ""Name"`))...)
	require.ErrorIs(t, err, ErrReplicaIdentity, "nothing is still NOTHING")
	require.NotContains(t, err.Error(), "nopk")
	require.Equal(t, map[string]string{"withpk": "d", "nopk": "f", `Odd "Name`: "f", "nothing": "n", "byindex": "i", "alreadyfull": "f"}, replIdents(t, d))

	s, err := NewSyncer(append(opts, WithReplicaIdentityFull("public.nothing"))...)
	require.NoError(t, err)
	defer s.Close()
	problems, err := s.CheckReplicaIdentity(t.Context())
	require.NoError(t, err)
	require.Empty(t, problems)
}

// TestReplicaIdentityInsertOnlyPublication: a publication that publishes no updates or
// deletes has no replica identity requirement.
func TestReplicaIdentityInsertOnlyPublication(t *testing.T) {
	d := pgtest.NewDatabase(t)
	pub := pgtest.Ident(t, "pub")
	execAll(t, d.DB, replIdentTables, `CREATE PUBLICATION `+quoteIdent(pub)+` FOR TABLE nopk WITH (publish = 'insert')`)
	s := newTestSyncer(t, d, WithPublication(pub), WithStrictReplicaIdentity(true))
	problems, err := s.CheckReplicaIdentity(t.Context())
	require.NoError(t, err)
	require.Empty(t, problems)
}
