package handlers

import (
	"context"
	"testing"

	"github.com/dbsync/dbsync"
	"github.com/dbsync/dbsync/internal/pgtest"
	"github.com/stretchr/testify/require"
)

// TestCacheKeyChangesPostgres: the key of a cached table changes while the Syncer runs.
//   - pk: the primary key moves from id to code (DROP CONSTRAINT, ADD PRIMARY KEY in one
//     statement). The rows cached under ["1"], ["2"], ["3"] used to stay there while
//     later changes came under ["a"], ...: row a was cached twice, and row b, deleted
//     afterwards (its DELETE keyed ["b"]), stayed in the Cache for good, as no change
//     would ever name ["2"] again. They are re-keyed from their values.
//   - ren: the key column is renamed: the rows keep their record IDs (the same values).
//   - added: the key moves to a column added since (bigserial: the table is rewritten,
//     which is not decoded), so rows cached before lack it and cannot be keyed: they
//     leave the Cache (Stats().UnkeyedRows) instead of staying under IDs no change
//     names; a Snapshot brings them back, and the Cache equals the tables.
//   - quiet: the primary key moves from id to code and the table does not change
//     afterwards, so no RELATION message tells the Cache; the Snapshot's rows, keyed
//     by code, key the cached rows again instead of adding a second copy of each.
func TestCacheKeyChangesPostgres(t *testing.T) {
	d := pgtest.NewDatabase(t)
	_, err := d.DB.Exec(`CREATE TABLE pk (id int PRIMARY KEY, code text NOT NULL, v text);
		CREATE TABLE ren (id int PRIMARY KEY, v text);
		CREATE TABLE added (id int PRIMARY KEY, v text);
		CREATE TABLE quiet (id int PRIMARY KEY, code text NOT NULL)`)
	require.NoError(t, err)
	c := NewCache()
	s := newTestSyncer(t, d, c, "pk", "ren", "added", "quiet")
	runErr, cancel := runInBackground(s)
	defer cancel()
	caughtUp := func() { t.Helper(); waitCaughtUp(t, d, pgtest.Ident(t, "slot"), runErr) }
	for _, q := range []string{
		`INSERT INTO pk VALUES (1, 'a', 'x'), (2, 'b', 'y'), (3, 'c', 'w')`,
		`INSERT INTO ren VALUES (1, 'x'), (2, 'y')`,
		`INSERT INTO added VALUES (1, 'x')`,
		`INSERT INTO quiet VALUES (1, 'a'), (2, 'b')`,
	} {
		_, err := d.DB.Exec(q)
		require.NoError(t, err, q)
	}
	caughtUp()
	for _, q := range []string{
		`ALTER TABLE pk DROP CONSTRAINT pk_pkey, ADD PRIMARY KEY (code)`,
		`UPDATE pk SET v = 'z' WHERE code = 'a'`,
		`DELETE FROM pk WHERE code = 'b'`,
		`ALTER TABLE ren RENAME COLUMN id TO ident`,
		`UPDATE ren SET v = 'z' WHERE ident = 1`,
		`ALTER TABLE added ADD COLUMN n bigserial`,
		`ALTER TABLE added DROP CONSTRAINT added_pkey, ADD PRIMARY KEY (n)`,
		`INSERT INTO added (id, v) VALUES (2, 'y')`,
		`ALTER TABLE quiet DROP CONSTRAINT quiet_pkey, ADD PRIMARY KEY (code)`,
	} {
		_, err := d.DB.Exec(q)
		require.NoError(t, err, q)
	}
	caughtUp()
	require.Equal(t, map[string]map[string]dbsync.StringMap{
		"public.pk": {
			`["a"]`: {"id": int32(1), "code": "a", "v": "z"},
			`["c"]`: {"id": int32(3), "code": "c", "v": "w"},
		},
		"public.ren": {
			`["1"]`: {"ident": int32(1), "v": "z"},
			`["2"]`: {"v": "y"}, // RENAME COLUMN looks like a drop and an add (documented)
		},
		"public.added": {
			`["2"]`: {"id": int32(2), "v": "y", "n": int64(2)},
		},
		"public.quiet": {
			`["1"]`: {"id": int32(1), "code": "a"},
			`["2"]`: {"id": int32(2), "code": "b"},
		},
	}, c.Snapshot())
	require.Equal(t, int64(1), c.Stats().UnkeyedRows)

	require.NoError(t, s.Snapshot(context.Background(), "pk", "ren", "added", "quiet"))
	require.Equal(t, map[string]map[string]dbsync.StringMap{
		"public.pk": {
			`["a"]`: {"id": int32(1), "code": "a", "v": "z"},
			`["c"]`: {"id": int32(3), "code": "c", "v": "w"},
		},
		"public.ren": {
			`["1"]`: {"ident": int32(1), "v": "z"},
			`["2"]`: {"ident": int32(2), "v": "y"},
		},
		"public.added": {
			`["1"]`: {"id": int32(1), "v": "x", "n": int64(1)},
			`["2"]`: {"id": int32(2), "v": "y", "n": int64(2)},
		},
		"public.quiet": {
			`["a"]`: {"id": int32(1), "code": "a"},
			`["b"]`: {"id": int32(2), "code": "b"},
		},
	}, c.Snapshot(), "after a Snapshot the Cache equals SELECT * of each table")
	cancel()
	require.NoError(t, <-runErr)
}
