package dbsync

import (
	"context"
	"database/sql"
	"fmt"
	"testing"

	"github.com/dbsync/dbsync/internal/pgtest"
	"github.com/stretchr/testify/require"
)

// shadowOperatorsDDL creates, in schema app, the comparison operators =, >, <=, <, >=
// and <> on (typ, typ), each raising "shadowed <tag> <op>".
func shadowOperatorsDDL(tag, typ string) []string {
	var ddl []string
	for i, op := range []string{"=", ">", "<=", "<", ">=", "<>"} {
		ddl = append(ddl,
			fmt.Sprintf(`CREATE FUNCTION app.shadow_%sop%d(%s, %s) RETURNS boolean LANGUAGE plpgsql AS $$BEGIN RAISE EXCEPTION 'shadowed %s %s'; END$$`, tag, i, typ, typ, tag, op),
			fmt.Sprintf(`CREATE OPERATOR app.%s (LEFTARG = %s, RIGHTARG = %s, FUNCTION = app.shadow_%sop%d)`, op, typ, typ, tag, i))
	}
	return ddl
}

// TestSearchPathShadowsKeyOperators: selections compare key columns (a Snapshot's
// chunk bounds, Refresh's and re-reads' key lists) with =, > and <=. A schema on the
// role's search_path holding exact-match operators for the key's type, which
// pg_catalog lacks for varchar (it has text's), took them over even with pg_catalog
// searched first (search_path = app): Snapshot failed with "shadowed varchar >", and
// a planted function ran with dbsync's role. Keys of built-in types now compare with
// OPERATOR(pg_catalog.op). Keys of other types (a domain in a user schema over
// varchar, an enum, citext, whose operators are the extension's, and a key mixing
// citext and int) kept the bare operators, which a schema placed before their
// operators' schema took over ("shadowed citext >" and the like); they now compare
// with the operators of their types' default B-tree operator classes, named with
// their schemas. Without any shadow, a citext key in a schema off the search_path
// compared as text, case-sensitively, against chunks ordered by citext: a Snapshot
// delivered a row twice and skipped another, and a re-read by key missed rows. Through the shadowing role, a Snapshot in chunks of 2 (keyset and
// planned ranges) gives every row once, a Refresh whose window sees a row updated
// reads it again by key (it failed with "shadowed citext =" and the like), and the
// re-read queries by key select exactly the rows asked for.
func TestSearchPathShadowsKeyOperators(t *testing.T) {
	for _, tc := range []struct {
		name, path string
		ddl        []string // after CREATE SCHEMA app: types, the table items (v int), shadows
		insert     string   // 5 rows, v 1..5
		order      []string // record IDs in key order
		keys       [][]string
		keyVs      []string // v of the rows of keys
		key2       string   // record ID of the row with v = 2
	}{
		{name: "varchar", path: "app",
			ddl:    append([]string{`CREATE TABLE items (k varchar(10) PRIMARY KEY, v int)`}, shadowOperatorsDDL("varchar", "varchar")...),
			insert: `INSERT INTO items SELECT 'k' || g, g FROM generate_series(1, 5) g`,
			order:  []string{`["k1"]`, `["k2"]`, `["k3"]`, `["k4"]`, `["k5"]`},
			keys:   [][]string{{"k2"}, {"k4"}}, keyVs: []string{"2", "4"}, key2: `["k2"]`},
		{name: "varchar2", path: "app",
			ddl:    append([]string{`CREATE TABLE items (k varchar(10), n varchar(10), v int, PRIMARY KEY (k, n))`}, shadowOperatorsDDL("varchar", "varchar")...),
			insert: `INSERT INTO items SELECT 'k' || g, 'n' || g, g FROM generate_series(1, 5) g`,
			order:  []string{`["k1","n1"]`, `["k2","n2"]`, `["k3","n3"]`, `["k4","n4"]`, `["k5","n5"]`},
			keys:   [][]string{{"k2", "n2"}, {"k4", "n4"}}, keyVs: []string{"2", "4"}, key2: `["k2","n2"]`},
		{name: "domain", path: "app, pg_catalog, public",
			ddl: append([]string{`CREATE DOMAIN app.code AS varchar(10)`, `CREATE TABLE items (k app.code PRIMARY KEY, v int)`},
				append(shadowOperatorsDDL("varchar", "varchar"), shadowOperatorsDDL("code", "app.code")...)...),
			insert: `INSERT INTO items SELECT 'k' || g, g FROM generate_series(1, 5) g`,
			order:  []string{`["k1"]`, `["k2"]`, `["k3"]`, `["k4"]`, `["k5"]`},
			keys:   [][]string{{"k2"}, {"k4"}}, keyVs: []string{"2", "4"}, key2: `["k2"]`},
		{name: "enum", path: "app, pg_catalog, public",
			// Labels in an order that is not the texts': e5 < e4 < ... < e1.
			ddl:    append([]string{`CREATE TYPE app.mood AS ENUM ('e5', 'e4', 'e3', 'e2', 'e1')`, `CREATE TABLE items (k app.mood PRIMARY KEY, v int)`}, shadowOperatorsDDL("mood", "app.mood")...),
			insert: `INSERT INTO items SELECT ('e' || g)::app.mood, g FROM generate_series(1, 5) g`,
			order:  []string{`["e5"]`, `["e4"]`, `["e3"]`, `["e2"]`, `["e1"]`},
			keys:   [][]string{{"e2"}, {"e4"}}, keyVs: []string{"2", "4"}, key2: `["e2"]`},
		{name: "citext", path: "app, pg_catalog, public",
			ddl:    append([]string{`CREATE EXTENSION citext`, `CREATE TABLE items (k citext PRIMARY KEY, v int)`}, shadowOperatorsDDL("citext", "citext")...),
			insert: `INSERT INTO items VALUES ('a', 1), ('B', 2), ('c', 3), ('D', 4), ('e', 5)`,
			order:  []string{`["a"]`, `["B"]`, `["c"]`, `["D"]`, `["e"]`},
			keys:   [][]string{{"b"}, {"D"}}, keyVs: []string{"2", "4"}, key2: `["B"]`},
		// No shadow at all: citext's schema is not on the search_path, so the bare
		// operators found text's (citext casts to text implicitly), which order and
		// compare case-sensitively, unlike ORDER BY k (C collation: B < D < a < c < e).
		{name: "citext_off_path", path: "public",
			ddl:    []string{`CREATE SCHEMA ext`, `CREATE EXTENSION citext SCHEMA ext`, `CREATE TABLE items (k ext.citext PRIMARY KEY, v int)`},
			insert: `INSERT INTO items VALUES ('a', 1), ('B', 2), ('c', 3), ('D', 4), ('e', 5)`,
			order:  []string{`["a"]`, `["B"]`, `["c"]`, `["D"]`, `["e"]`},
			keys:   [][]string{{"b"}, {"D"}}, keyVs: []string{"2", "4"}, key2: `["B"]`},
		{name: "domain_domain_citext", path: "app, pg_catalog, public",
			ddl: append([]string{`CREATE EXTENSION citext`, `CREATE DOMAIN app.ci AS citext`, `CREATE DOMAIN app.code AS app.ci`,
				`CREATE TABLE items (k app.code PRIMARY KEY, v int)`}, shadowOperatorsDDL("citext", "citext")...),
			insert: `INSERT INTO items VALUES ('a', 1), ('B', 2), ('c', 3), ('D', 4), ('e', 5)`,
			order:  []string{`["a"]`, `["B"]`, `["c"]`, `["D"]`, `["e"]`},
			keys:   [][]string{{"b"}, {"D"}}, keyVs: []string{"2", "4"}, key2: `["B"]`},
		{name: "domain_array", path: "app, pg_catalog, public",
			ddl:    append([]string{`CREATE DOMAIN app.ints AS int[]`, `CREATE TABLE items (k app.ints PRIMARY KEY, v int)`}, shadowOperatorsDDL("ints", "int[]")...),
			insert: `INSERT INTO items SELECT ARRAY[g, 0], g FROM generate_series(1, 5) g`,
			order:  []string{`["[\"1\",\"0\"]"]`, `["[\"2\",\"0\"]"]`, `["[\"3\",\"0\"]"]`, `["[\"4\",\"0\"]"]`, `["[\"5\",\"0\"]"]`},
			keys:   [][]string{{"{2,0}"}, {"{4,0}"}}, keyVs: []string{"2", "4"}, key2: `["[\"2\",\"0\"]"]`},
		{name: "citext_int", path: "app, pg_catalog, public",
			ddl:    append([]string{`CREATE EXTENSION citext`, `CREATE TABLE items (k citext, n int, v int, PRIMARY KEY (k, n))`}, shadowOperatorsDDL("citext", "citext")...),
			insert: `INSERT INTO items VALUES ('a', 2, 1), ('A', 3, 2), ('b', 1, 3), ('B', 2, 4), ('c', 0, 5)`,
			order:  []string{`["a","2"]`, `["A","3"]`, `["b","1"]`, `["B","2"]`, `["c","0"]`},
			keys:   [][]string{{"a", "3"}, {"b", "2"}}, keyVs: []string{"2", "4"}, key2: `["A","3"]`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := pgtest.NewDatabase(t)
			execAll(t, d.DB, `CREATE SCHEMA app`)
			execAll(t, d.DB, tc.ddl...)
			execAll(t, d.DB, tc.insert,
				// body is stored out of line, so an UPDATE that leaves it sends it as
				// unchanged TOAST, and a Refresh reads such a row again by key.
				`ALTER TABLE items ADD COLUMN body text`, `ALTER TABLE items ALTER COLUMN body SET STORAGE EXTERNAL`,
				`UPDATE items SET body = repeat('x', 3000) || v`)
			dsn := settingsRole(t, d, "role", [][2]string{{"search_path", tc.path}})
			ctx := context.Background()
			var s *Syncer
			// Parallel 1 reads open-ended chunks (key > the last one read), in key
			// order; parallel 2 plans bounded ranges first (chunkBound: >; chunkQuery:
			// > and <=), and hands chunks over in the order their windows close.
			for _, parallel := range []int{1, 2} {
				h := newCacheHandler()
				var err error
				s, err = NewSyncer(WithPGConnStr(dsn), WithReplicationSlot(pgtest.Ident(t, fmt.Sprintf("slot%d", parallel))), WithPublication(pgtest.Ident(t, "pub")),
					ForTables("public.items"), WithMessageHandler(h), WithSnapshotChunkSize(2), WithSnapshotParallel(parallel))
				require.NoError(t, err)
				t.Cleanup(func() { s.Close() })
				r := runInBackground(s)
				t.Cleanup(r.cancel)
				require.NoError(t, s.Snapshot(ctx, "public.items"), "parallel %d", parallel)
				require.NoError(t, r.stop(t))
				if parallel == 1 {
					require.Equal(t, tc.order, h.refreshKeys)
				} else { // chunks read at once are handed over as their windows close
					require.ElementsMatch(t, tc.order, h.refreshKeys)
				}
				require.Empty(t, mismatches(h.tableRows("public.items"), dbRows(t, d.DB, "public.items")))
			}

			// A Refresh whose window sees the row v = 2 updated (body unchanged) reads it
			// again by key, through the shadowing role.
			h := newCacheHandler()
			s, _ = startSyncer(t, dsn, pgtest.Ident(t, "slot3"), h, ForTables("public.items"))
			hooked := 0
			s.win.afterSelect = func() {
				if hooked++; hooked == 1 {
					execAll(t, d.DB, `UPDATE items SET v = 20 WHERE v = 2`)
				}
			}
			stats, err := s.RefreshContext(ctx, `SELECT * FROM public.items ORDER BY k`)
			require.NoError(t, err)
			require.Equal(t, RefreshStats{Selected: 5, Emitted: 5, Reread: 1}, stats)
			want := []string{`update public.items ` + tc.key2}
			for _, k := range tc.order {
				if k != tc.key2 {
					want = append(want, `refresh public.items `+k)
				}
			}
			require.Equal(t, append(want, `refresh public.items `+tc.key2), h.eventList())
			require.Equal(t, int32(20), h.tableRows("public.items")[tc.key2]["v"])
			execAll(t, d.DB, `UPDATE items SET v = 2 WHERE v = 20`)

			// The re-reads' key lists (a Snapshot's moved rows, a Refresh's rows touched
			// in its window), run as the selection would, through the shadowing role.
			info, err := s.TableInfo(ctx, "public.items")
			require.NoError(t, err)
			db, err := sql.Open("postgres", dsn)
			require.NoError(t, err)
			t.Cleanup(func() { db.Close() })
			for _, q := range []selQuery{keysQuery(info, []string{"v"}, tc.keys),
				refreshKeysQuery(info, []string{"k", "v"}, `SELECT * FROM public.items`, tc.keys)} {
				require.Equal(t, tc.keyVs, queryStrings(t, db, `SELECT v::text FROM (`+q.build(formPlain)+`) AS x ORDER BY 1`, q.args...))
			}
		})
	}
}

// TestKeyWithoutDefaultBtreeClass: a table keyed by a replica identity index of a
// non-default B-tree operator class on a type that has no default one (point, here)
// cannot be read in key order: ORDER BY and the key comparisons use the type's
// default class. Snapshot failed at its first chunk with PostgreSQL's "could not
// identify an ordering operator for type point", and a Refresh ran, though its
// re-reads by key could not; both now refuse the table up front with ErrConfig
// naming the column and what is missing, and deliver nothing.
func TestKeyWithoutDefaultBtreeClass(t *testing.T) {
	d := pgtest.NewDatabase(t)
	execAll(t, d.DB, `CREATE SCHEMA app`,
		`CREATE FUNCTION app.pt_cmp(point, point) RETURNS int LANGUAGE sql IMMUTABLE STRICT AS
			$$SELECT CASE WHEN $1[0] < $2[0] THEN -1 WHEN $1[0] > $2[0] THEN 1 WHEN $1[1] < $2[1] THEN -1 WHEN $1[1] > $2[1] THEN 1 ELSE 0 END$$`)
	for _, op := range []struct{ name, fn, cond string }{{"<", "lt", "< 0"}, {"<=", "le", "<= 0"}, {"=", "eq", "= 0"}, {">=", "ge", ">= 0"}, {">", "gt", "> 0"}} {
		execAll(t, d.DB,
			fmt.Sprintf(`CREATE FUNCTION app.pt_%s(point, point) RETURNS boolean LANGUAGE sql IMMUTABLE STRICT AS $$SELECT app.pt_cmp($1, $2) %s$$`, op.fn, op.cond),
			fmt.Sprintf(`CREATE OPERATOR app.%s (LEFTARG = point, RIGHTARG = point, FUNCTION = app.pt_%s)`, op.name, op.fn))
	}
	execAll(t, d.DB,
		`CREATE OPERATOR CLASS app.pt_ops FOR TYPE point USING btree AS
			OPERATOR 1 app.<, OPERATOR 2 app.<=, OPERATOR 3 app.=, OPERATOR 4 app.>=, OPERATOR 5 app.>, FUNCTION 1 app.pt_cmp(point, point)`,
		`CREATE TABLE items (k point NOT NULL, v int)`,
		`CREATE UNIQUE INDEX items_k ON items (k app.pt_ops)`,
		`ALTER TABLE items REPLICA IDENTITY USING INDEX items_k`,
		`INSERT INTO items VALUES ('(1,1)', 1), ('(2,2)', 2)`)
	h := newCacheHandler()
	s, stop := startSyncer(t, d.DSN(), pgtest.Ident(t, "slot"), h, ForTables("public.items"))
	ctx := context.Background()
	err := s.Snapshot(ctx, "public.items")
	require.ErrorIs(t, err, ErrConfig)
	require.ErrorContains(t, err, `key column "k" is of type point, which has no default B-tree operator class`)
	_, err = s.RefreshContext(ctx, `SELECT * FROM public.items`)
	require.ErrorIs(t, err, ErrConfig)
	require.ErrorContains(t, err, `key column "k" is of type point, which has no default B-tree operator class`)
	require.NoError(t, stop())
	require.Empty(t, h.eventList())
}
