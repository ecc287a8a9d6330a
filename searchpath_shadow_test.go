package dbsync

import (
	"context"
	"database/sql"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/dbsync/dbsync/internal/pgtest"
	"github.com/stretchr/testify/require"
)

// searchPathShadows are functions and operators of a schema "app" named and typed like
// built-ins dbsync's own SQL calls (or matching its arguments better than the
// built-in, as num_nulls(text) and format(text, text, text) do against VARIADIC
// "any"); every one raises "shadowed ...". Each entry is "name(args) returns".
var searchPathShadows = []string{
	"set_config(text, text, boolean) text",
	"current_setting(text) text",
	"pg_logical_slot_peek_binary_changes(name, pg_lsn, integer, VARIADIC text[]) TABLE(lsn pg_lsn, xid xid, data bytea)",
	"pg_replication_slot_advance(name, pg_lsn) TABLE(slot_name name, end_lsn pg_lsn)",
	"pg_create_logical_replication_slot(name, name, boolean, boolean) TABLE(slot_name name, lsn pg_lsn)",
	"pg_copy_logical_replication_slot(name, name, boolean) TABLE(slot_name name, lsn pg_lsn)",
	"pg_drop_replication_slot(name) void",
	"pg_current_wal_flush_lsn() pg_lsn",
	"pg_current_wal_lsn() pg_lsn",
	"pg_current_wal_insert_lsn() pg_lsn",
	"pg_current_snapshot() pg_snapshot",
	"pg_try_advisory_lock(bigint) boolean",
	"pg_advisory_lock(bigint) void",
	"pg_advisory_unlock(bigint) boolean",
	"pg_advisory_xact_lock(bigint) void",
	"hashtextextended(text, bigint) bigint",
	"format_type(oid, integer) text",
	"format(text, text) text",
	"format(text, text, text) text",
	"num_nulls(text) integer",
	"to_regclass(text) regclass",
	"quote_ident(text) text",
	"to_jsonb(anyelement) jsonb",
	"current_database() name",
	"pg_backend_pid() integer",
	"pg_is_in_recovery() boolean",
	"has_column_privilege(oid, smallint, text) boolean",
	"has_table_privilege(oid, text) boolean",
	"has_schema_privilege(oid, text) boolean",
	"pg_partition_tree(regclass) TABLE(relid regclass, parentrelid regclass, isleaf boolean, level integer)",
	"pg_partition_ancestors(regclass) SETOF regclass",
	"jsonb_array_elements_text(jsonb) SETOF text",
	"now() timestamptz",
	"unnest(anyarray) SETOF anyelement",
}

// searchPathShadowDDL creates schema app with searchPathShadows, a count(*) aggregate,
// the text operators =, <> and ||, jsonb's ->> (all raising), and domains named like built-in
// types that refuse every value.
func searchPathShadowDDL() []string {
	ddl := []string{`CREATE SCHEMA app`,
		`CREATE FUNCTION app.shadow_int8(int8) RETURNS int8 LANGUAGE plpgsql AS $$BEGIN RAISE EXCEPTION 'shadowed count(*)'; END$$`,
		`CREATE AGGREGATE app.count(*) (SFUNC = app.shadow_int8, STYPE = int8, INITCOND = '0')`,
	}
	for _, f := range searchPathShadows {
		sig := f[:strings.Index(f, ")")+1]
		ret := strings.TrimSpace(f[len(sig):])
		ddl = append(ddl, fmt.Sprintf(`CREATE FUNCTION app.%s RETURNS %s LANGUAGE plpgsql AS $$BEGIN RAISE EXCEPTION 'shadowed %s'; END$$`, sig, ret, sig))
	}
	for i, op := range []struct{ name, ret string }{{"=", "boolean"}, {"<>", "boolean"}, {"||", "text"}} {
		ddl = append(ddl,
			fmt.Sprintf(`CREATE FUNCTION app.shadow_op%d(text, text) RETURNS %s LANGUAGE plpgsql AS $$BEGIN RAISE EXCEPTION 'shadowed operator %s'; END$$`, i, op.ret, op.name),
			fmt.Sprintf(`CREATE OPERATOR app.%s (LEFTARG = text, RIGHTARG = text, FUNCTION = app.shadow_op%d)`, op.name, i))
	}
	// jsonb's ->> (slot and publication checks read row fields through to_jsonb).
	ddl = append(ddl,
		`CREATE FUNCTION app.shadow_jop(pg_catalog.jsonb, pg_catalog.text) RETURNS pg_catalog.text LANGUAGE plpgsql AS $$BEGIN RAISE EXCEPTION 'shadowed operator ->>'; END$$`,
		`CREATE OPERATOR app.->> (LEFTARG = pg_catalog.jsonb, RIGHTARG = pg_catalog.text, FUNCTION = app.shadow_jop)`)
	// Types: a cast (::text) or a column type (text) names its type through the
	// search_path too; these domains accept no value but NULL.
	for _, typ := range []string{"text", "oid", "name", "pg_lsn", "int2", "int4", "int8", "bool", `"char"`, "regclass", "regproc", "jsonb", "timestamptz", "xid", "bytea", "pg_snapshot"} {
		ddl = append(ddl, fmt.Sprintf(`CREATE DOMAIN app.%s AS pg_catalog.%s CHECK (VALUE IS NULL)`, typ, typ))
	}
	return ddl
}

// TestSearchPathShadowedBuiltins: a role whose search_path puts a schema before
// pg_catalog (the CVE-2018-1058 class), that schema holding functions, an aggregate
// and operators named and typed like the built-ins dbsync's own SQL uses (each
// raising) and types named like its built-in types (refusing every value), changes
// nothing: setup, Run and its slot lock, a Refresh, a chunked
// Snapshot, Status, CheckReplicaIdentity, TableInfo, GetMessages and Forward,
// SkipBacklog and Teardown deliver and do exactly what they do without it. With
// pg_catalog searched first (as it is when the search_path does not list it: the
// usual case, where any role that may create objects in a schema on the path, such
// as public, can plant them), the functions whose arguments match better than the
// built-in's (format(text, text, text) against format(text, VARIADIC "any")) are
// still taken over, and change nothing either.
func TestSearchPathShadowedBuiltins(t *testing.T) {
	for _, tc := range []struct{ name, path, textType string }{
		{"before_pg_catalog", "app, pg_catalog, public", "pg_catalog.text"},
		{"pg_catalog_first", "app, public", "text"},
	} {
		for _, driver := range []string{"postgres", "pgx"} {
			t.Run(tc.name+"/"+driver, func(t *testing.T) {
				d := pgtest.NewDatabase(t)
				ctx := context.Background()
				execAll(t, d.DB, `CREATE TABLE items (id int PRIMARY KEY, s text)`)
				execAll(t, d.DB, searchPathShadowDDL()...)
				dsn := settingsRole(t, d, "role", [][2]string{{"search_path", tc.path}})
				db, err := sql.Open(driver, dsn)
				require.NoError(t, err)
				t.Cleanup(func() { db.Close() })
				var probe string
				require.ErrorContains(t, db.QueryRow(`SELECT format('%I.%I', 'a'::pg_catalog.text, 'b'::pg_catalog.text)`).Scan(&probe), "shadowed format(text, text, text)")

				slot := pgtest.Ident(t, "slot")
				h := newCacheHandler()
				s, stop := startSyncer(t, dsn, slot, h, WithDB(db), ForTables("public.items"), WithSnapshotChunkSize(2))
				execAll(t, d.DB, `INSERT INTO items VALUES (1, 'a'), (2, 'b'), (3, 'c')`)
				waitFor(t, 20*time.Second, func() bool { return len(h.eventList()) == 3 }, "3 inserts, have %v", h.eventList())

				// The slot lock: a second Syncer on the slot is refused.
				other, err := NewSyncer(WithPGConnStr(dsn), WithReplicationSlot(slot), WithPublication(slot+"_pub"), WithMessageHandler(newCacheHandler()), ForTables("public.items"))
				require.NoError(t, err)
				require.ErrorIs(t, other.Run(ctx), ErrSlotInUse)
				require.ErrorIs(t, other.Teardown(ctx), ErrSlotInUse)
				require.NoError(t, other.Close())

				stats, err := s.RefreshContext(ctx, `SELECT * FROM public.items`)
				require.NoError(t, err)
				require.Equal(t, RefreshStats{Selected: 3, Emitted: 3}, stats)
				require.NoError(t, s.Snapshot(ctx, "public.items"))
				st, err := s.Status(ctx)
				require.NoError(t, err)
				require.Equal(t, slot, st.Slot)
				problems, err := s.CheckReplicaIdentity(ctx)
				require.NoError(t, err)
				require.Empty(t, problems)
				info, err := s.TableInfo(ctx, "public.items")
				require.NoError(t, err)
				// format_type qualifies a type its name does not find first on the
				// search_path: before pg_catalog, "text" is app.text.
				require.Equal(t, tc.textType, info.ColInfo["s"].ColumnType)
				waitCaughtUp(t, d.DB, slot)
				require.NoError(t, stop())
				require.Equal(t, []string{
					`insert public.items ["1"]`, `insert public.items ["2"]`, `insert public.items ["3"]`,
					`refresh public.items ["1"]`, `refresh public.items ["2"]`, `refresh public.items ["3"]`,
					`refresh public.items ["1"]`, `refresh public.items ["2"]`, `refresh public.items ["3"]`,
				}, h.eventList())
				require.Empty(t, mismatches(h.tableRows("public.items"), dbRows(t, d.DB, "public.items")))

				// The low-level API, then SkipBacklog and Teardown.
				low := newTestSyncer(t, d, WithPGConnStr(dsn), WithReplicationSlot(slot), WithPublication(slot+"_pub"), ForTables("public.items"))
				execAll(t, d.DB, `INSERT INTO items VALUES (4, 'd')`)
				msgs, err := low.GetMessagesContext(ctx, 0, false, nil)
				require.NoError(t, err)
				var kinds []byte
				for _, m := range msgs {
					kinds = append(kinds, m.Data[0])
				}
				require.Equal(t, "BRIC", string(kinds))
				require.NoError(t, low.ForwardContext(ctx, len(msgs)))
				msgs, err = low.GetMessagesContext(ctx, 0, false, nil)
				require.NoError(t, err)
				require.Empty(t, msgs)
				execAll(t, d.DB, `INSERT INTO items VALUES (5, 'e')`)
				_, err = low.SkipBacklog(ctx)
				require.NoError(t, err)
				msgs, err = low.GetMessagesContext(ctx, 0, false, nil)
				require.NoError(t, err)
				require.Empty(t, msgs)
				require.NoError(t, low.Teardown(ctx))
				require.Empty(t, queryStrings(t, d.DB, `SELECT slot_name FROM pg_replication_slots WHERE slot_name = $1`, slot))
			})
		}
	}
}

// wrongOperatorsDDL creates schema app holding operators named and typed like the
// built-ins on catalog and plain types that dbsync's own SQL applies, each returning
// a wrong value instead of raising: comparisons =, <, >, <= and >= always false and
// <> always true on name, oid, regclass, regproc, regtype, int2, int4, int8 (and
// their cross-type pairs), text, "char", bool, pg_lsn and jsonb; + and - on the
// integers, and << and | on int8, giving 0; text || giving the empty string; jsonb
// ->, ->> giving NULL; LIKE (~~) always false; and array containment (@>, <@, &&)
// always false. With such a schema before pg_catalog on the search_path, a bare
// operator silently answers wrongly.
func wrongOperatorsDDL() []string {
	ddl := []string{`CREATE SCHEMA app`}
	n := 0
	op := func(name, left, right, ret, body string) {
		n++
		ddl = append(ddl,
			fmt.Sprintf(`CREATE FUNCTION app.wrong%d(%s, %s) RETURNS %s LANGUAGE plpgsql IMMUTABLE AS $$BEGIN RETURN %s; END$$`, n, left, right, ret, body),
			fmt.Sprintf(`CREATE OPERATOR app.%s (LEFTARG = %s, RIGHTARG = %s, FUNCTION = app.wrong%d)`, name, left, right, n))
	}
	cmp := func(l, r string) {
		for _, o := range []string{"=", "<", ">", "<=", ">="} {
			op(o, l, r, "pg_catalog.bool", "false")
		}
		op("<>", l, r, "pg_catalog.bool", "true")
	}
	for _, typ := range []string{"name", "oid", "regclass", "regproc", "regtype", "text", `"char"`, "bool", "pg_lsn", "jsonb"} {
		cmp("pg_catalog."+typ, "pg_catalog."+typ)
	}
	ints := []string{"pg_catalog.int2", "pg_catalog.int4", "pg_catalog.int8"}
	for _, l := range ints {
		for _, r := range ints {
			cmp(l, r)
			ret := "pg_catalog.int8"
			if l != "pg_catalog.int8" && r != "pg_catalog.int8" {
				ret = "pg_catalog.int4"
				if l == r {
					ret = l
				}
			}
			op("+", l, r, ret, "0")
			op("-", l, r, ret, "0")
		}
	}
	op("<<", "pg_catalog.int8", "pg_catalog.int4", "pg_catalog.int8", "0")
	op("|", "pg_catalog.int8", "pg_catalog.int8", "pg_catalog.int8", "0")
	cmp("pg_catalog.name", "pg_catalog.text")
	cmp("pg_catalog.text", "pg_catalog.name")
	op("||", "pg_catalog.text", "pg_catalog.text", "pg_catalog.text", "''")
	op("->", "pg_catalog.jsonb", "pg_catalog.text", "pg_catalog.jsonb", "NULL")
	op("->>", "pg_catalog.jsonb", "pg_catalog.text", "pg_catalog.text", "NULL")
	op("~~", "pg_catalog.text", "pg_catalog.text", "pg_catalog.bool", "false")
	op("~~", "pg_catalog.name", "pg_catalog.text", "pg_catalog.bool", "false")
	for _, typ := range []string{"pg_catalog.text[]", "pg_catalog.oid[]", "pg_catalog.int2[]", "pg_catalog.name[]"} {
		for _, o := range []string{"@>", "<@", "&&"} {
			op(o, typ, typ, "pg_catalog.bool", "false")
		}
	}
	return ddl
}

// TestSearchPathWrongOperators: a role whose search_path lists a schema before
// pg_catalog (ALTER ROLE ... SET search_path = app, pg_catalog, public) where
// operators on catalog and plain types were planted that return wrong values rather
// than raise (an always-false =, an always-true <>: wrongOperatorsDDL) changes
// nothing dbsync does: setup, Run's deliveries of a composite-key table's inserts,
// updates (of a key too) and deletes, the slot lock, Refresh, a chunked Snapshot,
// Status, CheckReplicaIdentity, TableInfo, GetMessages and Forward (and its error
// for a missing slot), SkipBacklog, and Teardown with another slot present and without.
// dbsync's own SQL applied bare operators, which such a schema answered silently
// wrongly.
func TestSearchPathWrongOperators(t *testing.T) {
	for _, driver := range []string{"postgres", "pgx"} {
		t.Run(driver, func(t *testing.T) {
			d := pgtest.NewDatabase(t)
			ctx := context.Background()
			execAll(t, d.DB, `CREATE TABLE orders (region text, id int, v text, PRIMARY KEY (region, id))`)
			execAll(t, d.DB, wrongOperatorsDDL()...)
			dsn := settingsRole(t, d, "role", [][2]string{{"search_path", "app, pg_catalog, public"}})
			db, err := sql.Open(driver, dsn)
			require.NoError(t, err)
			t.Cleanup(func() { db.Close() })
			var probe bool
			require.NoError(t, db.QueryRow(`SELECT 'a'::pg_catalog.name = 'a'::pg_catalog.name`).Scan(&probe))
			require.False(t, probe, "the planted = is not taken")

			slot := pgtest.Ident(t, "slot")
			h := newCacheHandler()
			s, stop := startSyncer(t, dsn, slot, h, WithDB(db), ForTables("public.orders"), WithSnapshotChunkSize(2))
			execAll(t, d.DB, `INSERT INTO orders VALUES ('eu', 1, 'a'), ('eu', 2, 'b'), ('us', 1, 'c')`,
				`UPDATE orders SET v = 'bb' WHERE region = 'eu' AND id = 2`,
				`UPDATE orders SET id = 3 WHERE region = 'us' AND id = 1`,
				`DELETE FROM orders WHERE region = 'eu' AND id = 1`)
			waitFor(t, 20*time.Second, func() bool { return len(h.eventList()) == 6 }, "6 changes, have %v", h.eventList())

			// The slot lock: a second Syncer on the slot is refused.
			other, err := NewSyncer(WithPGConnStr(dsn), WithReplicationSlot(slot), WithPublication(slot+"_pub"), WithMessageHandler(newCacheHandler()), ForTables("public.orders"))
			require.NoError(t, err)
			require.ErrorIs(t, other.Run(ctx), ErrSlotInUse)
			require.ErrorIs(t, other.Teardown(ctx), ErrSlotInUse)
			require.NoError(t, other.Close())

			stats, err := s.RefreshContext(ctx, `SELECT * FROM public.orders`)
			require.NoError(t, err)
			require.Equal(t, RefreshStats{Selected: 2, Emitted: 2}, stats)
			execAll(t, d.DB, `INSERT INTO orders VALUES ('eu', 4, 'd'), ('us', 2, 'e')`)
			require.NoError(t, s.Snapshot(ctx, "public.orders"))
			progress := queryStrings(t, d.DB, `SELECT chunks_done || ' ' || rows_done || ' ' || (finished_at IS NOT NULL) FROM `+s.CtrlNamespace()+`.snapshot_progress WHERE slot_name = $1`, slot)
			require.Equal(t, []string{"3 4 true"}, progress)
			st, err := s.Status(ctx)
			require.NoError(t, err)
			require.Equal(t, slot, st.Slot)
			require.Equal(t, "pgoutput", st.Plugin)
			require.Equal(t, "logical", st.SlotType)
			require.Equal(t, d.Name, st.Database)
			require.Equal(t, "reserved", st.WALStatus)
			problems, err := s.CheckReplicaIdentity(ctx)
			require.NoError(t, err)
			require.Empty(t, problems)
			info, err := s.TableInfo(ctx, "public.orders")
			require.NoError(t, err)
			require.Equal(t, []string{"region", "id"}, info.PrimaryKey)
			require.Equal(t, "text", info.ColInfo["v"].ColumnType)
			waitCaughtUp(t, d.DB, slot)
			require.NoError(t, stop())
			require.Equal(t, []string{
				`insert public.orders ["eu","1"]`, `insert public.orders ["eu","2"]`, `insert public.orders ["us","1"]`,
				`update public.orders ["eu","2"]`, `update public.orders ["us","3"]`, `delete public.orders ["eu","1"]`,
				`refresh public.orders ["eu","2"]`, `refresh public.orders ["us","3"]`,
				`insert public.orders ["eu","4"]`, `insert public.orders ["us","2"]`,
				`refresh public.orders ["eu","2"]`, `refresh public.orders ["eu","4"]`,
				`refresh public.orders ["us","2"]`, `refresh public.orders ["us","3"]`,
			}, h.eventList())
			require.Empty(t, mismatches(h.tableRows("public.orders"), dbRows(t, d.DB, "public.orders")))

			// The low-level API, then Teardown.
			low := newTestSyncer(t, d, WithPGConnStr(dsn), WithReplicationSlot(slot), WithPublication(slot+"_pub"), ForTables("public.orders"))
			execAll(t, d.DB, `INSERT INTO orders VALUES ('eu', 5, 'f')`)
			msgs, err := low.GetMessagesContext(ctx, 0, false, nil)
			require.NoError(t, err)
			var kinds []byte
			for _, m := range msgs {
				kinds = append(kinds, m.Data[0])
			}
			require.Equal(t, "BRIC", string(kinds))
			require.NoError(t, low.ForwardContext(ctx, len(msgs)))
			msgs, err = low.GetMessagesContext(ctx, 0, false, nil)
			require.NoError(t, err)
			require.Empty(t, msgs)
			execAll(t, d.DB, `INSERT INTO orders VALUES ('eu', 6, 'g')`)
			_, err = low.SkipBacklog(ctx)
			require.NoError(t, err)
			msgs, err = low.GetMessagesContext(ctx, 0, false, nil)
			require.NoError(t, err)
			require.Empty(t, msgs)

			// Teardown while another Syncer's slot may share the control schema keeps it,
			// and the last one's removes it.
			otherSlot := pgtest.Ident(t, "other")
			execAll(t, d.DB, `SELECT pg_create_logical_replication_slot('`+otherSlot+`', 'pgoutput')`)
			res, err := low.TeardownWithResult(ctx)
			require.NoError(t, err)
			require.Equal(t, TeardownResult{SlotDropped: true, OtherSlots: []string{otherSlot}, ProgressRowsDeleted: 1}, res)
			_, err = low.GetMessagesContext(ctx, 0, false, nil)
			require.ErrorIs(t, err, ErrSlotMissing)
			execAll(t, d.DB, `SELECT pg_drop_replication_slot('`+otherSlot+`')`)
			res, err = low.TeardownWithResult(ctx)
			require.NoError(t, err)
			require.Equal(t, TeardownResult{WMTableUnpublished: true, CtrlSchemaDropped: true}, res)
			require.Empty(t, queryStrings(t, d.DB, `SELECT slot_name FROM pg_replication_slots WHERE slot_name = $1`, slot))
			require.Equal(t, []string{"public.orders"}, queryStrings(t, d.DB, `SELECT schemaname || '.' || tablename FROM pg_publication_tables WHERE pubname = $1`, slot+"_pub"))
			require.Empty(t, queryStrings(t, d.DB, `SELECT nspname FROM pg_namespace WHERE nspname = $1`, low.CtrlNamespace()))
		})
	}
}

// bareSQLOperators returns the operators (and the constructs that look operators up
// by name: IN (...), CASE x WHEN, IS DISTINCT FROM, BETWEEN, LIKE, NULLIF) in sql
// outside OPERATOR(pg_catalog.op), string literals, quoted identifiers and comments,
// each with its line. An UPDATE's or ON CONFLICT's SET col = value is an assignment,
// not an operator; *, in SELECT *, count(*) and t.*, is no operator either.
func bareSQLOperators(sql string) []string {
	// Blank out comments, literals and quoted identifiers, keeping line breaks.
	b := []byte(sql)
	for i := 0; i < len(b); i++ {
		switch {
		case b[i] == '-' && i+1 < len(b) && b[i+1] == '-':
			for ; i < len(b) && b[i] != '\n'; i++ {
				b[i] = ' '
			}
		case b[i] == '\'' || b[i] == '"':
			q := b[i]
			for b[i] = ' '; i+1 < len(b); {
				i++
				if b[i] == q && i+1 < len(b) && b[i+1] == q {
					b[i], b[i+1] = ' ', ' '
					i++
					continue
				}
				if b[i] == q {
					b[i] = ' '
					break
				}
				if b[i] != '\n' {
					b[i] = ' '
				}
			}
		}
	}
	s := string(b)
	blank := func(m string) string { return strings.Repeat(" ", len(m)) }
	s = regexp.MustCompile(`OPERATOR\(pg_catalog\.[^)\s]+\)`).ReplaceAllStringFunc(s, blank)
	s = regexp.MustCompile(`\{\{[a-z]+\}\}`).ReplaceAllStringFunc(s, blank)
	// Assignments: from SET to WHERE (or the end), each "col =" after SET or a comma.
	s = regexp.MustCompile(`(?is)\bSET\b.*?(\bWHERE\b|$)`).ReplaceAllStringFunc(s, func(m string) string {
		return regexp.MustCompile(`(?i)(\bSET|,)(\s*[a-z_][a-z0-9_]*\s*)=`).ReplaceAllString(m, "$1$2 ")
	})
	s = regexp.MustCompile(`(?i)(\bSELECT|\(|\.)\s*\*`).ReplaceAllStringFunc(s, func(m string) string { return m[:len(m)-1] + " " })
	var found []string
	for n, line := range strings.Split(s, "\n") {
		for _, m := range regexp.MustCompile(`[-+*/<>=~!@#%^&|`+"`"+`?]+|(?i)\b(IN\s*\(|CASE\s+[^\sW]|DISTINCT\s+FROM|BETWEEN|I?LIKE|SIMILAR|NULLIF)`).FindAllString(line, -1) {
			found = append(found, fmt.Sprintf("line %d: %s", n+1, m))
		}
	}
	return found
}

// TestSQLFilesQualifyOperators: every operator in sql/*.sql is named in pg_catalog
// (OPERATOR(pg_catalog.=) and the like): a bare one is looked up on the session's
// search_path, where a schema before pg_catalog may hold one of the same name and
// argument types that answers wrongly (TestSearchPathWrongOperators). So is every
// construct that looks = up by name (IN (...) as = ANY (ARRAY[...]), CASE x WHEN as
// CASE WHEN x OPERATOR(pg_catalog.=) ..., IS DISTINCT FROM, NULLIF) or <= and >=
// (BETWEEN), or LIKE.
func TestSQLFilesQualifyOperators(t *testing.T) {
	// The scan itself finds what it must and leaves alone what it must.
	require.Equal(t, []string{"line 1: =", "line 2: <>", "line 3: IN (", "line 4: CASE x", "line 5: ||", "line 6: ->", "line 6: DISTINCT FROM", "line 7: +"},
		bareSQLOperators("SELECT a = b\nWHERE x <> 'y' -- a = b\nAND c IN (1)\nAND CASE x WHEN 1 THEN true END\nAND 'a=b' || \"c=d\"\nAND j -> 'k' IS DISTINCT FROM 1\nAND 1 + 2"))
	require.Empty(t, bareSQLOperators("SELECT *, count(*), t.* FROM t WHERE a OPERATOR(pg_catalog.=) $1 AND b OPERATOR(pg_catalog.<>) ANY ('{x,y}')\n"+
		"-- a = b\nAND x::pg_catalog.int4[] IS NOT NULL AND CASE WHEN c THEN 1 END\nUPDATE {{ns}}.t SET a = 1, b = COALESCE($1, b) WHERE c OPERATOR(pg_catalog.=) 1"))
	entries, err := sqlFiles.ReadDir("sql")
	require.NoError(t, err)
	require.NotEmpty(t, entries)
	for _, e := range entries {
		require.Empty(t, bareSQLOperators(sqlText(e.Name())), "sql/%s has operators not named in pg_catalog", e.Name())
	}
}

// TestSearchPathExactMatchOperators: with pg_catalog searched first (search_path =
// app, public: the usual case, where any role that may create objects in a schema on
// the path can plant them), an operator of another schema still took over a bare one
// whose argument types pg_catalog has no exact match for, as oid = regclass
// (pg_partition_tree's and pg_partition_ancestors' relid against pg_class.oid), oid
// = regtype (a key type's operator class), regproc = regproc (pg_type.typinput) and
// float4 >= int4 (reltuples). Planted returning wrong values, an always-false oid =
// regtype made Snapshot refuse an enum-keyed table with ErrConfig ("has no default
// B-tree operator class"). Now they change nothing: setup of a publication
// publishing a partitioned table via its root, CheckReplicaIdentity, Run's
// deliveries, a chunked Snapshot of an enum-keyed table and of the partitioned
// table, and a Refresh.
func TestSearchPathExactMatchOperators(t *testing.T) {
	d := pgtest.NewDatabase(t)
	ctx := context.Background()
	execAll(t, d.DB, `CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy')`,
		`CREATE TABLE moods (k mood PRIMARY KEY, tags mood[])`,
		`CREATE TABLE parts (id int PRIMARY KEY, v text) PARTITION BY RANGE (id)`,
		`CREATE TABLE parts_1 PARTITION OF parts FOR VALUES FROM (0) TO (10)`,
		`CREATE TABLE parts_2 PARTITION OF parts FOR VALUES FROM (10) TO (20)`,
		`CREATE SCHEMA app`)
	n := 0
	for _, o := range []struct{ name, left, right, ret string }{
		{"=", "oid", "regclass", "false"}, {"<>", "oid", "regclass", "true"},
		{"=", "regclass", "oid", "false"}, {"<>", "regclass", "oid", "true"},
		{"=", "oid", "regtype", "false"}, {"<>", "oid", "regtype", "true"},
		{"=", "regproc", "regproc", "false"}, {"<>", "regproc", "regproc", "true"},
		{">=", "float4", "int4", "false"},
	} {
		n++
		execAll(t, d.DB,
			fmt.Sprintf(`CREATE FUNCTION app.wrong%d(pg_catalog.%s, pg_catalog.%s) RETURNS pg_catalog.bool LANGUAGE plpgsql IMMUTABLE AS $$BEGIN RETURN %s; END$$`, n, o.left, o.right, o.ret),
			fmt.Sprintf(`CREATE OPERATOR app.%s (LEFTARG = pg_catalog.%s, RIGHTARG = pg_catalog.%s, FUNCTION = app.wrong%d)`, o.name, o.left, o.right, n))
	}
	dsn := settingsRole(t, d, "role", [][2]string{{"search_path", "app, public"}})
	db, err := sql.Open("postgres", dsn)
	require.NoError(t, err)
	t.Cleanup(func() { db.Close() })
	var probe bool
	require.NoError(t, db.QueryRow(`SELECT 'pg_class'::pg_catalog.regclass::pg_catalog.oid = 'pg_class'::pg_catalog.regclass`).Scan(&probe))
	require.False(t, probe, "the planted = is not taken")

	slot := pgtest.Ident(t, "slot")
	execAll(t, d.DB, `CREATE PUBLICATION `+slot+`_pub FOR TABLE moods, parts WITH (publish_via_partition_root = true)`)
	h := newCacheHandler()
	s, stop := startSyncer(t, dsn, slot, h, WithDB(db), WithSnapshotChunkSize(2))
	problems, err := s.CheckReplicaIdentity(ctx)
	require.NoError(t, err)
	require.Empty(t, problems)
	execAll(t, d.DB, `INSERT INTO moods VALUES ('happy', '{sad,ok}'), ('sad', '{happy}'), ('ok', NULL)`,
		`INSERT INTO parts VALUES (1, 'a'), (11, 'b'), (2, 'c')`)
	waitFor(t, 20*time.Second, func() bool { return len(h.eventList()) == 6 }, "6 inserts, have %v", h.eventList())
	require.NoError(t, s.Snapshot(ctx, "public.moods"))
	require.NoError(t, s.Snapshot(ctx, "public.parts"))
	stats, err := s.RefreshContext(ctx, `SELECT * FROM public.parts WHERE id > 5`)
	require.NoError(t, err)
	require.Equal(t, RefreshStats{Selected: 1, Emitted: 1}, stats)
	waitCaughtUp(t, d.DB, slot)
	require.NoError(t, stop())
	require.Equal(t, []string{
		`insert public.moods ["happy"]`, `insert public.moods ["sad"]`, `insert public.moods ["ok"]`,
		`insert public.parts ["1"]`, `insert public.parts ["11"]`, `insert public.parts ["2"]`,
		`refresh public.moods ["sad"]`, `refresh public.moods ["ok"]`, `refresh public.moods ["happy"]`,
		`refresh public.parts ["1"]`, `refresh public.parts ["2"]`, `refresh public.parts ["11"]`,
		`refresh public.parts ["11"]`,
	}, h.eventList())
	require.Empty(t, mismatches(h.tableRows("public.moods"), dbRows(t, d.DB, "public.moods")))
	require.Empty(t, mismatches(h.tableRows("public.parts"), dbRows(t, d.DB, "public.parts")))
}
