package dbsync

import (
	"context"
	"database/sql"
	"fmt"
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
