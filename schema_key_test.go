package dbsync

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dbsync/dbsync/internal/pgtest"
	"github.com/stretchr/testify/require"
)

// keyedChanges returns "op key oldkey" of each change, for comparing record IDs.
func keyedChanges(changes []*Change) []string {
	out := make([]string, len(changes))
	for i, c := range changes {
		out[i] = string(c.Op) + " " + c.Table.TableName + " " + c.Key + " " + c.OldKey
	}
	return out
}

// TestFullIdentityRenamedKeyInBacklog: under REPLICA IDENTITY FULL pgoutput flags
// every column, so the RELATION message does not say which are the key; the key comes
// from the catalog, which is read when the backlog is decoded, after the rename. A
// change written before its key column was renamed (ft: id -> ident) used to get no
// key at all (Change.Key "", so the Batcher, and handlers.Cache, stopped the Syncer
// with ErrNoKey at every start: the change never left the slot). And a change written
// before two columns swapped names (fs: a <-> b, a the key) was keyed by the column
// that now has the key's name, the wrong one: ["10"] instead of ["1"]. Key columns are
// found by attribute number: columns are never renumbered, and pgoutput sends them in
// attnum order, so where no dropped column precedes a key column its place in every
// RELATION message of the table is the number of live columns before it.
func TestFullIdentityRenamedKeyInBacklog(t *testing.T) {
	d := pgtest.NewDatabase(t)
	execAll(t, d.DB, `CREATE TABLE ft (id int PRIMARY KEY, v text)`,
		`CREATE TABLE fs (a int PRIMARY KEY, b int)`)
	rec := &changeRecorder{}
	s := newTestSyncer(t, d, ForTables("ft", "fs"), WithReplicaIdentityFull("ft", "fs"), WithMessageHandler(rec))
	b := &mergeBatcher{}
	s.Batcher = b
	execAll(t, d.DB,
		`INSERT INTO ft VALUES (1, 'x'), (2, 'y')`,
		`UPDATE ft SET v = 'x2' WHERE id = 1`,
		`INSERT INTO fs VALUES (1, 10), (2, 20)`,
		`ALTER TABLE ft RENAME COLUMN id TO ident`,
		`ALTER TABLE fs RENAME COLUMN a TO tmp`, `ALTER TABLE fs RENAME COLUMN b TO a`, `ALTER TABLE fs RENAME COLUMN tmp TO b`,
		`INSERT INTO ft VALUES (3, 'z')`,
		`DELETE FROM ft WHERE ident = 2`,
		`UPDATE fs SET a = 21 WHERE b = 2`)
	r := runInBackground(s)
	defer r.stop(t)
	waitForChanges(t, rec, r, 8)
	got, _ := rec.snapshot()
	require.Equal(t, []string{
		`insert ft ["1"] `, `insert ft ["2"] `, `update ft ["1"] `,
		`insert fs ["1"] `, `insert fs ["2"] `,
		`insert ft ["3"] `, `delete ft ["2"] `,
		`update fs ["2"] `,
	}, keyedChanges(got))
	require.Equal(t, []string{"id"}, got[0].Table.PrimaryKey)
	require.Equal(t, []string{"ident"}, got[5].Table.PrimaryKey)
	require.Equal(t, []string{"a"}, got[3].Table.PrimaryKey, "fs's key column was called a before the swap")
	require.Equal(t, []string{"b"}, got[7].Table.PrimaryKey)
	waitCaughtUp(t, d.DB, pgtest.Ident(t, "slot"))
	b.mu.Lock()
	defer b.mu.Unlock()
	require.Equal(t, map[string]StringMap{
		`public.ft ["1"]`: {"id": int32(1), "v": "x2"},
		`public.ft ["3"]`: {"ident": int32(3), "v": "z"},
		`public.fs ["1"]`: {"a": int32(1), "b": int32(10)},
		`public.fs ["2"]`: {"a": int32(21), "b": int32(2)},
	}, b.store)
}

// TestFullIdentityKeyAfterDroppedColumn pins what attribute numbers cannot tell: under
// REPLICA IDENTITY FULL, a change written before its key column was renamed, in a table
// with a column dropped before the key column (since the change or before it: the
// catalog does not say which), has no record ID. It is not guessed.
func TestFullIdentityKeyAfterDroppedColumn(t *testing.T) {
	d := pgtest.NewDatabase(t)
	execAll(t, d.DB, `CREATE TABLE fd (junk int, id int PRIMARY KEY, v text)`)
	rec := &changeRecorder{}
	s := newTestSyncer(t, d, ForTables("fd"), WithReplicaIdentityFull("fd"), WithMessageHandler(rec))
	execAll(t, d.DB, `INSERT INTO fd VALUES (0, 1, 'x')`, `ALTER TABLE fd DROP COLUMN junk`,
		`ALTER TABLE fd RENAME COLUMN id TO ident`, `INSERT INTO fd VALUES (2, 'y')`)
	r := runInBackground(s)
	defer r.stop(t)
	waitForChanges(t, rec, r, 2)
	got, _ := rec.snapshot()
	require.Equal(t, []string{`insert fd  `, `insert fd ["2"] `}, keyedChanges(got))
	require.Empty(t, got[0].Table.PrimaryKey)
}

// TestKeyChangedWithSameRelation: under REPLICA IDENTITY FULL the RELATION message is
// the same before and after the primary key moves to other columns (every column
// flagged either way), so a description cached before the change kept keying the
// table's changes by the old key for good, while Refresh, Snapshot, TableInfo and any
// new Syncer key them by the new one: the same row got two record IDs. The catalog's
// key of such a table is now read again at its first RELATION message once
// keyRecheckInterval has passed (on the tableCache's clock, moved by the test): changes
// decoded before that keep the old key, later ones get the new one.
func TestKeyChangedWithSameRelation(t *testing.T) {
	d := pgtest.NewDatabase(t)
	execAll(t, d.DB, `CREATE TABLE fk (id int PRIMARY KEY, code text NOT NULL, v text)`)
	rec := &changeRecorder{}
	s := newTestSyncer(t, d, ForTables("fk"), WithReplicaIdentityFull("fk"), WithMessageHandler(rec))
	var clock atomic.Int64 // nanoseconds past a fixed time
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	s.tables.now = func() time.Time { return base.Add(time.Duration(clock.Load())) }
	r := runInBackground(s)
	defer r.stop(t)
	execAll(t, d.DB, `INSERT INTO fk VALUES (1, 'a', 'x'), (2, 'b', 'y'), (3, 'c', 'w')`)
	waitForChanges(t, rec, r, 3)
	execAll(t, d.DB, `ALTER TABLE fk DROP CONSTRAINT fk_pkey, ADD PRIMARY KEY (code)`, `UPDATE fk SET v = 'z' WHERE code = 'a'`)
	waitForChanges(t, rec, r, 4)
	clock.Add(int64(keyRecheckInterval))
	execAll(t, d.DB, `DELETE FROM fk WHERE code = 'b'`, `UPDATE fk SET v = 'q' WHERE code = 'c'`)
	waitForChanges(t, rec, r, 6)
	got, _ := rec.snapshot()
	require.Equal(t, []string{`insert fk ["1"] `, `insert fk ["2"] `, `insert fk ["3"] `,
		`update fk ["1"] `, // decoded within keyRecheckInterval of the last key check
		`delete fk ["b"] `, `update fk ["c"] `}, keyedChanges(got))
	info, err := s.TableInfo(context.Background(), "fk")
	require.NoError(t, err)
	require.Equal(t, []string{"code"}, info.PrimaryKey)
	require.Equal(t, info.PrimaryKey, got[5].Table.PrimaryKey, "changes and selections key the table alike")
}

// TestKeyAddedAfterErrNoKey: a change of a table without a key stops a Syncer with a
// Batcher (ErrNoKey: "add a primary key"). Once the key is added, running the same
// Syncer again delivers the change, keyed by it, as a new Syncer would: the change's
// RELATION message (written before the key existed, so it flags no column) used to
// stay described as keyless, and the Syncer failed on it at every run.
func TestKeyAddedAfterErrNoKey(t *testing.T) {
	d := pgtest.NewDatabase(t)
	execAll(t, d.DB, `CREATE TABLE nk (a int NOT NULL, b text)`)
	rec := &changeRecorder{}
	s := newTestSyncer(t, d, ForTables("nk"), WithMessageHandler(rec))
	b := &mergeBatcher{}
	s.Batcher = b
	execAll(t, d.DB, `INSERT INTO nk VALUES (1, 'x')`)
	err := runInBackground(s).wait(t, 30*time.Second)
	require.ErrorIs(t, err, ErrNoKey)
	require.ErrorContains(t, err, "public.nk at LSN")
	require.ErrorContains(t, err, "neither a primary key nor a replica identity index")
	require.ErrorContains(t, err, "; add a primary key, or leave the table out of the publication")
	execAll(t, d.DB, `ALTER TABLE nk ADD PRIMARY KEY (a)`, `UPDATE nk SET b = 'y'`)
	r := runInBackground(s)
	defer r.stop(t)
	waitForChanges(t, rec, r, 2)
	got, _ := rec.snapshot()
	require.Equal(t, []string{`insert nk ["1"] `, `update nk ["1"] `}, keyedChanges(got))
	waitCaughtUp(t, d.DB, pgtest.Ident(t, "slot"))
	b.mu.Lock()
	defer b.mu.Unlock()
	require.Equal(t, map[string]StringMap{`public.nk ["1"]`: {"a": int32(1), "b": "y"}}, b.store)
}

// TestBatcherGeneratedKeyError: a Batcher refuses a change of a table whose key holds
// a generated column (pgoutput never sends it) with ErrNoKey naming that column and
// what to do, not the advice to add a primary key the table already has.
func TestBatcherGeneratedKeyError(t *testing.T) {
	d := pgtest.NewDatabase(t)
	execAll(t, d.DB, `CREATE TABLE gk (a int NOT NULL, g int GENERATED ALWAYS AS (a * 2) STORED PRIMARY KEY)`)
	s := newTestSyncer(t, d, ForTables("gk"), WithMessageHandler(&changeRecorder{}))
	s.Batcher = &mergeBatcher{}
	execAll(t, d.DB, `INSERT INTO gk (a) VALUES (1)`)
	err := runInBackground(s).wait(t, 30*time.Second)
	require.ErrorIs(t, err, ErrNoKey)
	require.ErrorContains(t, err, `its key holds generated column "g", which pgoutput never sends, so the Batcher cannot fold its changes by key; key it by columns that are not generated`)
}
