package dbsync

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dbsync/dbsync/internal/pgtest"
	"github.com/jackc/pglogrepl"
	"github.com/stretchr/testify/require"
)

// wireRecorder records what pgoutput sent for each change: the RELATION message's
// columns, the old tuple's kind and width, and the decoded record IDs and old row.
type wireRecorder struct {
	DefaultMessageHandler
	mu  sync.Mutex
	got []string
}

func (w *wireRecorder) add(msg pglogrepl.Message, reln *pglogrepl.RelationMessage, info *PGTableInfo, oldKind uint8, old *pglogrepl.TupleData) error {
	ch, err := DecodeChange(msg, reln, info)
	if err != nil {
		return err
	}
	var cols []string
	for _, c := range reln.Columns {
		cols = append(cols, c.Name)
	}
	oldTuple := "none"
	if old != nil {
		oldTuple = fmt.Sprintf("%c/%d", oldKind, len(old.Columns))
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.got = append(w.got, fmt.Sprintf("%s %s cols=%v old=%s key=%q oldrow=%v", ch.Op, reln.RelationName, cols, oldTuple, ch.Key, ch.Old))
	return nil
}

func (w *wireRecorder) HandleInsertMessage(_ int, m *pglogrepl.InsertMessage, r *pglogrepl.RelationMessage, i *PGTableInfo) error {
	return w.add(m, r, i, 0, nil)
}
func (w *wireRecorder) HandleUpdateMessage(_ int, m *pglogrepl.UpdateMessage, r *pglogrepl.RelationMessage, i *PGTableInfo) error {
	return w.add(m, r, i, m.OldTupleType, m.OldTuple)
}
func (w *wireRecorder) HandleDeleteMessage(_ int, m *pglogrepl.DeleteMessage, r *pglogrepl.RelationMessage, i *PGTableInfo) error {
	return w.add(m, r, i, m.OldTupleType, m.OldTuple)
}

func (w *wireRecorder) list() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]string(nil), w.got...)
}

// TestReplicaIdentityFullSendsNoGeneratedKey is what ReplicaIdentityProblem's
// GeneratedKey text rests on: PostgreSQL 15's pgoutput leaves a stored generated
// column out of RELATION messages and of every tuple, the old row of REPLICA IDENTITY
// FULL ('O') included, and out of a replica identity index's old key ('K') even when
// the index is over it. So REPLICA IDENTITY FULL does not give such a table's changes
// their key, and no change of these tables has a record ID.
func TestReplicaIdentityFullSendsNoGeneratedKey(t *testing.T) {
	d := pgtest.NewDatabase(t)
	execAll(t, d.DB, `CREATE TABLE gfull (a int, g int GENERATED ALWAYS AS (a * 2) STORED, PRIMARY KEY (g))`,
		`ALTER TABLE gfull REPLICA IDENTITY FULL`,
		`CREATE TABLE gidx (id int PRIMARY KEY, a int NOT NULL, g int GENERATED ALWAYS AS (a + 1) STORED NOT NULL)`,
		`CREATE UNIQUE INDEX gidx_g ON gidx (g)`,
		`ALTER TABLE gidx REPLICA IDENTITY USING INDEX gidx_g`)
	w := &wireRecorder{}
	s, _ := startSyncer(t, d.DSN(), pgtest.Ident(t, "slot"), w, ForTables("gfull", "gidx"))
	execAll(t, d.DB, `INSERT INTO gfull (a) VALUES (1)`, `UPDATE gfull SET a = 2`, `DELETE FROM gfull`,
		`INSERT INTO gidx (id, a) VALUES (1, 1)`, `UPDATE gidx SET a = 2`, `DELETE FROM gidx`)
	catchUp(t, s)
	waitFor(t, 10*time.Second, func() bool { return len(w.list()) == 6 }, "six changes")
	require.Equal(t, []string{
		`insert gfull cols=[a] old=none key="" oldrow=map[]`,
		`update gfull cols=[a] old=O/1 key="" oldrow=map[a:1]`,
		`delete gfull cols=[a] old=O/1 key="" oldrow=map[a:2]`,
		`insert gidx cols=[id a] old=none key="" oldrow=map[]`,
		// The UPDATE changes g (a + 1): PostgreSQL logs the old key, which pgoutput
		// sends without g, as NULL placeholders for the other columns.
		`update gidx cols=[id a] old=K/2 key="" oldrow=map[]`,
		`delete gidx cols=[id a] old=K/2 key="" oldrow=map[]`,
	}, w.list())
}

// genKeyTables: tables whose key holds a generated column (gpk, gpk2: primary key under
// DEFAULT; gfull: primary key under FULL; gidx: a replica identity index over one,
// which PostgreSQL 15 accepts when the column is NOT NULL; gnothing: NOTHING, reported
// for that), and tables with generated columns whose key holds none (gcol: outside the
// key; gunique: in a unique index that is not the replica identity; gpkbyindex: in the
// primary key, but the replica identity index keys the rows; gincpk, gincidx: only
// INCLUDEd in the primary key or the replica identity index, not a key column).
const genKeyTables = `
CREATE TABLE gpk (a int, g int GENERATED ALWAYS AS (a * 2) STORED, PRIMARY KEY (g));
CREATE TABLE gpk2 (tenant text, email text, "Lower Email" text GENERATED ALWAYS AS (lower(email)) STORED,
	h int GENERATED ALWAYS AS (length(email)) STORED, PRIMARY KEY (tenant, h, "Lower Email"));
CREATE TABLE gfull (a int, g int GENERATED ALWAYS AS (a * 2) STORED, PRIMARY KEY (g));
ALTER TABLE gfull REPLICA IDENTITY FULL;
CREATE TABLE gidx (id int PRIMARY KEY, a int NOT NULL, g int GENERATED ALWAYS AS (a + 1) STORED NOT NULL);
CREATE UNIQUE INDEX gidx_g ON gidx (g);
ALTER TABLE gidx REPLICA IDENTITY USING INDEX gidx_g;
CREATE TABLE gnothing (a int, g int GENERATED ALWAYS AS (a * 2) STORED, PRIMARY KEY (g));
ALTER TABLE gnothing REPLICA IDENTITY NOTHING;
CREATE TABLE gcol (id int PRIMARY KEY, n int, g int GENERATED ALWAYS AS (n * 2) STORED);
CREATE TABLE gunique (id int PRIMARY KEY, n int, g int GENERATED ALWAYS AS (n * 2) STORED UNIQUE);
CREATE TABLE gpkbyindex (a int NOT NULL, g int GENERATED ALWAYS AS (a * 2) STORED, PRIMARY KEY (g));
CREATE UNIQUE INDEX gpkbyindex_a ON gpkbyindex (a);
ALTER TABLE gpkbyindex REPLICA IDENTITY USING INDEX gpkbyindex_a;
CREATE TABLE gincpk (id int, a int, g int GENERATED ALWAYS AS (a * 2) STORED, PRIMARY KEY (id) INCLUDE (g));
CREATE TABLE gincidx (id int PRIMARY KEY, code text NOT NULL, a int, g int GENERATED ALWAYS AS (a * 2) STORED);
CREATE UNIQUE INDEX gincidx_code ON gincidx (code) INCLUDE (g, a);
ALTER TABLE gincidx REPLICA IDENTITY USING INDEX gincidx_code`

var genKeyAffected = []string{"gpk", "gpk2", "gfull", "gidx", "gnothing"}

var genKeyUnaffected = map[string][]string{"gcol": {"id"}, "gunique": {"id"}, "gpkbyindex": {"a"},
	"gincpk": {"id"}, "gincidx": {"code"}}

// TestReplicaIdentityGeneratedKey: CheckReplicaIdentity lists exactly the tables whose
// key (the one record IDs are made of) holds a generated column, naming the column
// that Refresh and Snapshot name in their ErrNoPrimaryKey; Setup warns about each;
// Fix offers no statement for them. A table with NOTHING is reported for that.
func TestReplicaIdentityGeneratedKey(t *testing.T) {
	d := pgtest.NewDatabase(t)
	execAll(t, d.DB, genKeyTables)
	var logs bytes.Buffer
	tables := append([]string{}, genKeyAffected...)
	for tbl := range genKeyUnaffected {
		tables = append(tables, tbl)
	}
	s := newTestSyncer(t, d, ForTables(tables...),
		WithLogger(slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelWarn}))))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	problems, err := s.CheckReplicaIdentity(ctx)
	require.NoError(t, err)
	require.Equal(t, []ReplicaIdentityProblem{
		{Schema: "public", Table: "gfull", ReplicaIdentity: 'f', GeneratedKey: "g", hasPK: true},
		{Schema: "public", Table: "gidx", ReplicaIdentity: 'i', GeneratedKey: "g", hasPK: true},
		{Schema: "public", Table: "gnothing", ReplicaIdentity: 'n', hasPK: true},
		{Schema: "public", Table: "gpk", ReplicaIdentity: 'd', GeneratedKey: "g", hasPK: true},
		{Schema: "public", Table: "gpk2", ReplicaIdentity: 'd', GeneratedKey: "Lower Email", hasPK: true},
	}, problems)

	require.Equal(t, `ALTER TABLE "public"."gnothing" REPLICA IDENTITY FULL`, problems[2].Fix())
	for _, i := range []int{0, 1, 3, 4} {
		require.Empty(t, problems[i].Fix(), problems[i].Table)
	}
	require.Equal(t, `table public.gpk2: its primary key holds generated column "Lower Email", which pgoutput never sends (PostgreSQL 15; REPLICA IDENTITY FULL does not change that), so its changes carry no whole key: they get no record ID (Change.Key "") and Refresh and Snapshot refuse the table (ErrNoPrimaryKey); key it by columns that are not generated: make columns that are not generated its primary key, or run ALTER TABLE "public"."gpk2" REPLICA IDENTITY USING INDEX <name> naming a unique index on NOT NULL columns that are not generated`,
		problems[4].String())
	require.Equal(t, `table public.gidx: its replica identity index holds generated column "g", which pgoutput never sends (PostgreSQL 15; REPLICA IDENTITY FULL does not change that), so its changes carry no whole key: they get no record ID (Change.Key "") and Refresh and Snapshot refuse the table (ErrNoPrimaryKey); key it by columns that are not generated: run ALTER TABLE "public"."gidx" REPLICA IDENTITY USING INDEX <name> naming a unique index on NOT NULL columns that are not generated, or REPLICA IDENTITY DEFAULT if its primary key holds no generated column`,
		problems[1].String())
	require.Contains(t, problems[2].String(), "has REPLICA IDENTITY NOTHING")

	out := logs.String()
	require.Equal(t, 5, strings.Count(out, "level=WARN"), out)
	require.Equal(t, 4, strings.Count(out, "generated_key="), out)
	for _, want := range []string{`table=gpk2 replica_identity=d generated_key="Lower Email"`, `table=gfull replica_identity=f generated_key=g`,
		`table=gnothing replica_identity=n` + "\n"} {
		require.Contains(t, out, want)
	}

	// The check agrees with how the tables are keyed when their changes are decoded
	// and when they are snapshotted.
	for _, p := range problems {
		if p.GeneratedKey == "" {
			continue
		}
		info, err := s.TableInfo(ctx, p.Table)
		require.NoError(t, err)
		require.Empty(t, info.PrimaryKey, p.Table)
		err = s.Snapshot(ctx, p.Table)
		require.ErrorIs(t, err, ErrNoPrimaryKey, p.Table)
		require.ErrorContains(t, err, fmt.Sprintf("key column %q of public.%s is a generated column", p.GeneratedKey, p.Table))
	}
	for tbl, key := range genKeyUnaffected {
		info, err := s.TableInfo(ctx, tbl)
		require.NoError(t, err)
		require.Equal(t, key, info.PrimaryKey, tbl)
	}
}

// TestReplicaIdentityGeneratedKeyStrict: under WithStrictReplicaIdentity a generated
// key fails setup with ErrReplicaIdentity, and WithReplicaIdentityFull does not
// clear it (FULL sends no generated column either); the unaffected tables pass.
func TestReplicaIdentityGeneratedKeyStrict(t *testing.T) {
	d := pgtest.NewDatabase(t)
	execAll(t, d.DB, genKeyTables)
	opts := []SyncerOpt{WithPGConnStr(d.DSN()), WithReplicationSlot(pgtest.Ident(t, "slot")),
		WithPublication(pgtest.Ident(t, "pub")), WithStrictReplicaIdentity(true)}
	_, err := NewSyncer(append(opts, ForTables("gcol", "gpk"), WithReplicaIdentityFull("gpk"))...)
	require.ErrorIs(t, err, ErrReplicaIdentity)
	require.Contains(t, err.Error(), `table public.gpk: its primary key holds generated column "g"`)
	require.NotContains(t, err.Error(), "gcol")
	require.Equal(t, []string{"f"}, pgtest.Strings(t, d.DB, `SELECT relreplident::text FROM pg_class WHERE relname = 'gpk'`),
		"FULL was set, and did not help")

	opts[2] = WithPublication(pgtest.Ident(t, "pub2"))
	s, err := NewSyncer(append(opts, ForTables("gcol", "gunique", "gpkbyindex", "gincpk", "gincidx"))...)
	require.NoError(t, err)
	defer s.Close()
	problems, err := s.CheckReplicaIdentity(t.Context())
	require.NoError(t, err)
	require.Empty(t, problems)
}
