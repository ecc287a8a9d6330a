package dbsync

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"math"
	"math/big"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/dbsync/dbsync/internal/pgtest"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/stretchr/testify/require"
)

// allTypesDDL creates a table with a column of every type dbsync promises to decode.
const allTypesDDL = `
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE DOMAIN posint AS int4 CHECK (VALUE > 0);
CREATE TYPE address AS (num int, street text);
CREATE TABLE alltypes (
    id int PRIMARY KEY,
    c_int2 int2, c_int4 int4, c_int8 int8, c_oid oid,
    c_numeric numeric, c_num102 numeric(10,2),
    c_float4 float4, c_float8 float8,
    c_text text, c_varchar varchar(10), c_bpchar char(5), c_name name, c_char "char",
    c_bytea bytea, c_bool bool, c_uuid uuid,
    c_json json, c_jsonb jsonb,
    c_date date, c_time time, c_timetz timetz, c_ts timestamp, c_tstz timestamptz, c_interval interval,
    c_inet inet, c_cidr cidr, c_macaddr macaddr,
    c_int4arr int4[], c_text2d text[], c_tstzarr timestamptz[], c_jsonbarr jsonb[], c_numarr numeric[],
    c_int4range int4range, c_numrange numrange, c_tstzrange tstzrange, c_daterange daterange,
    c_int8mr int8multirange,
    c_enum mood, c_enumarr mood[], c_domain posint, c_domarr posint[], c_composite address,
    c_money money, c_varbit varbit
)`

var allTypesCols = []string{"c_int2", "c_int4", "c_int8", "c_oid", "c_numeric", "c_num102", "c_float4", "c_float8",
	"c_text", "c_varchar", "c_bpchar", "c_name", "c_char", "c_bytea", "c_bool", "c_uuid", "c_json", "c_jsonb",
	"c_date", "c_time", "c_timetz", "c_ts", "c_tstz", "c_interval", "c_inet", "c_cidr", "c_macaddr",
	"c_int4arr", "c_text2d", "c_tstzarr", "c_jsonbarr", "c_numarr",
	"c_int4range", "c_numrange", "c_tstzrange", "c_daterange", "c_int8mr",
	"c_enum", "c_enumarr", "c_domain", "c_domarr", "c_composite", "c_money", "c_varbit"}

// allTypesRows are SQL expressions for allTypesCols: NULLs, empty/zero values,
// extremes, and special values (NaN, infinities, odd array bounds).
var allTypesRows = [][]string{
	// 1: every column NULL
	nil,
	// 2: empty and zero values
	{`0`, `0`, `0`, `0`, `0`, `0.00`, `0`, `-0`,
		`''`, `''`, `''`, `''`, `''`, `'\x'`, `false`, `'00000000-0000-0000-0000-000000000000'`, `'{}'`, `'[]'`,
		`'2000-01-01'`, `'00:00'`, `'00:00+00'`, `'2000-01-01 00:00'`, `'2000-01-01 00:00+00'`, `'0 seconds'`,
		`'0.0.0.0'`, `'0.0.0.0/0'`, `'00:00:00:00:00:00'`,
		`'{}'`, `'{}'`, `'{}'`, `'{}'`, `'{0.00,100,NULL}'`,
		`'empty'`, `'[0.00,100]'`, `'empty'`, `'empty'`, `'{}'`,
		`'sad'`, `'{}'`, `1`, `'{}'`, `ROW(NULL, NULL)`, `'0'`, `B''`},
	// 3: extremes
	{`-32768`, `2147483647`, `-9223372036854775808`, `4294967295`,
		`'-123456789012345678901234567890.123456789012345678901234567890'`, `99999999.99`,
		`'3.4028235e38'`, `'1.7976931348623157e308'`,
		`E'h\u00e9llo "w\u00f6rld" \\ ''q'' \u65e5\u672c\nline2\ttab'`, `'ten chars!'`, `'ab'`, `repeat('n', 63)`, `'z'`,
		`(SELECT decode(string_agg(lpad(to_hex(i), 2, '0'), ''), 'hex') FROM generate_series(0, 255) i)`,
		`true`, `'ffffffff-ffff-ffff-ffff-ffffffffffff'`,
		`'{"b": 1.000000000000000000001,  "a": [1, 2], "a": "dup"}'`, `'{"n": 12345678901234567890.5, "s": "x\"y", "u": "\u00e9"}'`,
		`'9999-12-31'`, `'23:59:59.999999'`, `'23:59:59.999999-15:59'`, `'294276-12-31 23:59:59.999999'`,
		`'1900-01-01 00:00:00+05:53:28'`, `'-1 year -2 mons +3 days -04:05:06.000001'`,
		`'2001:db8::1/64'`, `'2001:db8::/32'`, `'ff:ff:ff:ff:ff:ff'`,
		`'{{1,NULL},{3,4}}'`, `'{{"a,b","NULL"},{NULL,"q\"x"}}'`, `'{infinity,"2020-01-01 00:00:00+02",NULL}'`,
		`ARRAY['{"a": 1}', '[1, 2]', NULL]::jsonb[]`, `'{1.50,NaN,NULL,-Infinity}'`,
		`'[1,10)'`, `'(,5.5]'`, `'[2020-01-01 00:00+00,infinity)'`, `'[2020-01-01,)'`, `'{[1,3),[5,7)}'`,
		`'happy'`, `'{happy,NULL,sad}'`, `2147483647`, `'{1,2}'`, `ROW(42, 'a "b", c')`,
		`'-92233720368547758.08'`, `B'10101'`},
	// 4: special values
	{`32767`, `-2147483648`, `9223372036854775807`, `1`, `'-Infinity'`, `'NaN'`,
		`'NaN'`, `'-Infinity'`,
		`' '`, `'x'`, `'abcde'`, `'n'`, `'a'`, `'\x00'`, `true`, `'123e4567-e89b-12d3-a456-426614174000'`,
		`'null'`, `'"str"'`,
		`'infinity'`, `'24:00:00'`, `'24:00:00+15:59'`, `'-infinity'`, `'infinity'`, `'178000000 years'`,
		`'192.168.1.5/24'`, `'10.0.0.0/8'`, `'08:00:2b:01:02:03'`,
		`'[0:1]={7,8}'`, `'{"",NULL}'`, `'{-infinity}'`, `ARRAY['"x"']::jsonb[]`, `'{Infinity}'`,
		`'[-2147483648,2147483647)'`, `'[NaN,NaN]'`, `'(-infinity,infinity)'`, `'(,)'`, `'{(,)}'`,
		`'ok'`, `'{NULL}'`, `7`, `'{{1},{2}}'`, `ROW(-1, '')`, `'92233720368547758.07'`, `B'11111111'`},
}

func allTypesValues(i int) string {
	if allTypesRows[i] == nil {
		return strings.TrimSuffix(strings.Repeat("NULL, ", len(allTypesCols)), ", ")
	}
	return strings.Join(allTypesRows[i], ", ")
}

// defaultOutputSettings are PostgreSQL's default output settings, which ScanRow (and
// the pgx text-format columns) expect.
var defaultOutputSettings = map[string]string{"DateStyle": "ISO, MDY", "IntervalStyle": "postgres",
	"bytea_output": "hex", "extra_float_digits": "1", "TimeZone": "Europe/Paris"}

// TestAllTypesRoundTrip: every type in a table, rows of NULLs, empty, extreme and
// special values, inserted, updated (to another row's values) and deleted while a
// Syncer runs. Each decoded change must equal the row as read back right after the
// statement by
//   - pgx (binary protocol results, decoded by the same pgtype codecs: see selectTyped),
//   - and ScanRow (lib/pq, SelectList text output, decoded by DecodeText),
//
// and the record IDs must agree. The database's default output settings are made as
// unlike the decoders' expectations as possible (DateStyle SQL, DMY; IntervalStyle
// sql_standard; bytea_output escape; extra_float_digits 0; TimeZone Asia/Kathmandu):
// the Syncer's peek must pin its own. Both pgoutput formats are tested.
func TestAllTypesRoundTrip(t *testing.T) {
	for _, binary := range []bool{false, true} {
		t.Run(fmt.Sprintf("binary=%v", binary), func(t *testing.T) { testAllTypes(t, binary) })
	}
}

func testAllTypes(t *testing.T, binary bool) {
	d := pgtest.NewDatabase(t)
	ctx := context.Background()
	execAll(t, d.DB, allTypesDDL,
		`ALTER DATABASE `+quoteIdent(d.Name)+` SET DateStyle = 'SQL, DMY'`,
		`ALTER DATABASE `+quoteIdent(d.Name)+` SET IntervalStyle = 'sql_standard'`,
		`ALTER DATABASE `+quoteIdent(d.Name)+` SET bytea_output = 'escape'`,
		`ALTER DATABASE `+quoteIdent(d.Name)+` SET extra_float_digits = 0`,
		`ALTER DATABASE `+quoteIdent(d.Name)+` SET TimeZone = 'Asia/Kathmandu'`)
	// Connections made from now on get the odd settings, except where we override.
	cfg, err := pgx.ParseConfig(d.DSN())
	require.NoError(t, err)
	for k, v := range defaultOutputSettings {
		cfg.RuntimeParams[k] = v
	}
	conn, err := pgx.ConnectConfig(ctx, cfg)
	require.NoError(t, err)
	defer conn.Close(ctx)
	pq, err := sql.Open("postgres", d.DSN())
	require.NoError(t, err)
	defer pq.Close()

	rec := &changeRecorder{}
	s := newTestSyncer(t, d, ForTables("alltypes"), WithMessageHandler(rec), WithBinary(binary))
	// lib/pq always starts sessions with DateStyle ISO (a driver that does not, such as
	// pgx's stdlib through WithDB, gets the database's); the other settings apply.
	var intervalStyle, byteaOutput string
	require.NoError(t, s.DB().QueryRow(`SELECT current_setting('IntervalStyle'), current_setting('bytea_output')`).Scan(&intervalStyle, &byteaOutput))
	require.Equal(t, []string{"sql_standard", "escape"}, []string{intervalStyle, byteaOutput}, "the syncer's sessions have the odd settings")
	r := runInBackground(s)
	defer r.stop(t)

	n := 0
	var lastInfo *PGTableInfo
	check := func(stmt string, id int, op Op) {
		t.Helper()
		var before []StringMap
		if op == OpDelete && lastInfo.ReplicaIdentity == 'f' {
			before = selectTyped(t, conn, lastInfo, binary, `SELECT * FROM alltypes WHERE id = $1`, id)
		}
		_, err := conn.Exec(ctx, stmt)
		require.NoError(t, err, stmt)
		n++
		c := rec.waitChanges(t, n)[n-1]
		require.Equal(t, op, c.Op, stmt)
		info := c.Table
		lastInfo = info
		require.Equal(t, []string{"id"}, info.PrimaryKey)
		if op == OpDelete {
			require.Equal(t, fmt.Sprintf(`["%d"]`, id), c.Key)
			if before == nil {
				require.Equal(t, StringMap{"id": int32(id)}, c.Old, "a DELETE under REPLICA IDENTITY DEFAULT carries the key only")
			} else {
				// REPLICA IDENTITY FULL: the whole old row ('O'), every type decoded.
				requireSameRow(t, before[0], c.Old, stmt, " (old row under FULL vs SELECT before the delete)")
			}
			return
		}
		require.Empty(t, c.Unchanged, stmt)
		requireScanTupleMatches(t, info, rec.tuple(n-1), c.New, stmt)
		viaPgx := selectTyped(t, conn, info, binary, `SELECT * FROM alltypes WHERE id = $1`, id)
		require.Len(t, viaPgx, 1)
		requireSameRow(t, viaPgx[0], c.New, stmt, " (pgx binary SELECT vs WAL)")

		tx, err := pq.Begin()
		require.NoError(t, err)
		defer tx.Rollback()
		for k, v := range defaultOutputSettings {
			_, err := tx.Exec(`SELECT set_config($1, $2, true)`, k, v)
			require.NoError(t, err)
		}
		rows, err := tx.Query(`SELECT `+info.SelectList()+` FROM `+info.QuotedName()+` WHERE id = $1`, id)
		require.NoError(t, err)
		require.True(t, rows.Next())
		scanned, err := info.ScanRow(rows)
		require.NoError(t, err)
		require.NoError(t, rows.Close())
		if binary {
			// Types without a codec arrive in binary from pgoutput, in text from ScanRow.
			for k, v := range c.New {
				if u, ok := v.(UnknownValue); ok {
					require.NotNil(t, u.Binary, k)
					require.Equal(t, u.Type, scanned[k].(UnknownValue).Type, k)
					scanned[k] = v
				}
			}
		}
		requireSameRow(t, scanned, c.New, stmt, " (ScanRow vs WAL)")
		key, err := info.GetRecordID(scanned)
		require.NoError(t, err)
		require.Equal(t, c.Key, key)
	}
	cols := strings.Join(allTypesCols, ", ")
	for i := range allTypesRows {
		check(fmt.Sprintf(`INSERT INTO alltypes (id, %s) VALUES (%d, %s)`, cols, i+1, allTypesValues(i)), i+1, OpInsert)
	}
	for i := range allTypesRows {
		next := (i + 1) % len(allTypesRows)
		check(fmt.Sprintf(`UPDATE alltypes SET (%s) = ROW(%s) WHERE id = %d`, cols, allTypesValues(next), i+1), i+1, OpUpdate)
	}
	// Spot checks of the Go types docs/VALUES.md promises (row 3 holds row 4's values
	// after the updates, row 4 row 1's (NULLs), row 2 row 3's).
	changes, _ := rec.snapshot()
	extremes := changes[len(allTypesRows)+1].New // row 2 updated to row 3's values
	special := changes[len(allTypesRows)+2].New  // row 3 updated to row 4's values
	require.Equal(t, int16(-32768), extremes["c_int2"])
	require.Equal(t, int64(math.MinInt64), extremes["c_int8"])
	require.Equal(t, uint32(4294967295), extremes["c_oid"])
	num := extremes["c_numeric"].(pgtype.Numeric)
	wantInt, _ := new(big.Int).SetString("-123456789012345678901234567890123456789012345678901234567890", 10)
	require.Equal(t, 0, wantInt.Cmp(num.Int), "numeric is exact")
	require.Equal(t, int32(-30), num.Exp)
	require.Equal(t, float64(math.MaxFloat64), extremes["c_float8"])
	require.Equal(t, "ab   ", extremes["c_bpchar"])
	require.Len(t, extremes["c_bytea"], 256)
	require.Equal(t, json.RawMessage(`{"b": 1.000000000000000000001,  "a": [1, 2], "a": "dup"}`), extremes["c_json"], "json is kept byte for byte")
	require.Equal(t, json.RawMessage(`{"n": 12345678901234567890.5, "s": "x\"y", "u": "é"}`), extremes["c_jsonb"])
	require.Equal(t, time.Date(1899, 12, 31, 18, 6, 32, 0, time.UTC), extremes["c_tstz"])
	require.Equal(t, pgtype.Interval{Months: -14, Days: 3, Microseconds: -(4*3600+5*60+6)*1e6 - 1, Valid: true}, extremes["c_interval"])
	require.Equal(t, netip.MustParsePrefix("2001:db8::1/64"), extremes["c_inet"])
	require.Equal(t, pgtype.Range[any]{Lower: time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC), Upper: pgtype.Infinity,
		LowerType: pgtype.Inclusive, UpperType: pgtype.Exclusive, Valid: true}, extremes["c_tstzrange"], "range bounds are instants in UTC")
	require.Equal(t, pgtype.Range[any]{Lower: int32(1), Upper: int32(10), LowerType: pgtype.Inclusive, UpperType: pgtype.Exclusive, Valid: true}, extremes["c_int4range"])
	require.Equal(t, []any{[]any{int32(1), nil}, []any{int32(3), int32(4)}}, extremes["c_int4arr"])
	require.Equal(t, []any{[]any{"a,b", "NULL"}, []any{nil, `q"x`}}, extremes["c_text2d"])
	require.Equal(t, []any{json.RawMessage(`{"a": 1}`), json.RawMessage(`[1, 2]`), nil}, extremes["c_jsonbarr"])
	require.Equal(t, "happy", extremes["c_enum"])
	require.Equal(t, []any{"happy", nil, "sad"}, extremes["c_enumarr"])
	require.Equal(t, int32(2147483647), extremes["c_domain"])
	require.Equal(t, []any{int32(1), int32(2)}, extremes["c_domarr"])
	if binary {
		require.Equal(t, "address", extremes["c_composite"].(UnknownValue).Type)
		require.NotEmpty(t, extremes["c_composite"].(UnknownValue).Binary)
	} else {
		require.Equal(t, UnknownValue{Type: "address", Text: `(42,"a ""b"", c")`}, extremes["c_composite"])
		require.Equal(t, UnknownValue{Type: "money", Text: `-$92,233,720,368,547,758.08`}, extremes["c_money"])
	}
	require.True(t, math.IsNaN(float64(special["c_float4"].(float32))))
	require.True(t, math.IsInf(special["c_float8"].(float64), -1))
	require.True(t, special["c_num102"].(pgtype.Numeric).NaN)
	require.Equal(t, pgtype.NegativeInfinity, special["c_numeric"].(pgtype.Numeric).InfinityModifier)
	require.Equal(t, pgtype.Infinity, special["c_date"])
	require.Equal(t, pgtype.NegativeInfinity, special["c_ts"])
	require.Equal(t, pgtype.Infinity, special["c_tstz"])
	arr := special["c_int4arr"].(pgtype.Array[any])
	require.Equal(t, []any{int32(7), int32(8)}, arr.Elements)
	require.Equal(t, []pgtype.ArrayDimension{{Length: 2, LowerBound: 0}}, arr.Dims, "a non-1 lower bound is kept")
	require.Equal(t, []any{[]any{int32(1)}, []any{int32(2)}}, special["c_domarr"])
	for _, v := range changes[len(allTypesRows)+3].New { // row 4 updated to NULLs
		if v != nil {
			require.IsType(t, int32(0), v, "only id is not NULL")
		}
	}

	// Every decoded row renders as JSON (JSONRow), losslessly for the odd types.
	for _, c := range changes {
		j, err := c.Table.JSONRow(c.New)
		require.NoError(t, err)
		_, err = json.Marshal(j)
		require.NoError(t, err)
	}
	jx, err := changes[0].Table.JSONRow(extremes)
	require.NoError(t, err)
	js, err := changes[0].Table.JSONRow(special)
	require.NoError(t, err)
	for col, want := range map[string]any{
		"c_numeric":   json.Number("-123456789012345678901234567890.123456789012345678901234567890"),
		"c_num102":    json.Number("99999999.99"),
		"c_uuid":      "ffffffff-ffff-ffff-ffff-ffffffffffff",
		"c_macaddr":   "ff:ff:ff:ff:ff:ff",
		"c_int4range": "[1,10)",
		"c_text2d":    []any{[]any{"a,b", "NULL"}, []any{nil, `q"x`}},
		"c_jsonb":     json.RawMessage(`{"n": 12345678901234567890.5, "s": "x\"y", "u": "é"}`),
		"c_inet":      "2001:db8::1/64",
		"c_tstzrange": `["2020-01-01 00:00:00+00",infinity)`,
		"c_int8mr":    "{[1,3),[5,7)}",
		"c_tstzarr":   []any{"infinity", "2019-12-31T22:00:00Z", nil},
		"c_ts":        "294276-12-31T23:59:59.999999",
		"c_tstz":      "1899-12-31T18:06:32Z",
		"c_date":      "9999-12-31",
		"c_money":     "-$92,233,720,368,547,758.08",
	} {
		if col == "c_money" && binary {
			continue // UnknownValue: send-function bytes in binary mode
		}
		require.Equal(t, want, jx[col], col)
	}
	require.Equal(t, `\x000102`, jx["c_bytea"].(string)[:8], "bytea as PostgreSQL hex text")
	for col, want := range map[string]any{"c_float4": "NaN", "c_float8": "-Infinity", "c_numeric": "-Infinity", "c_date": "infinity",
		"c_int4arr": "[0:1]={7,8}"} {
		require.Equal(t, want, js[col], col)
	}
	j2, err := changes[0].Table.JSONRow(changes[1].New) // row 2: zeros
	require.NoError(t, err)
	require.Equal(t, json.Number("0.00"), j2["c_num102"])
	require.Equal(t, []any{pgtype.Numeric{Int: big.NewInt(0), Exp: -2, Valid: true}, pgtype.Numeric{Int: big.NewInt(100), Valid: true}, nil},
		changes[1].New["c_numarr"], "numeric keeps its scale, also in arrays")
	require.Equal(t, []any{json.Number("0.00"), json.Number("100"), nil}, j2["c_numarr"])
	require.Equal(t, "[0.00,100]", j2["c_numrange"])
	require.Equal(t, `\x`, j2["c_bytea"])

	for i := range allTypesRows {
		if i == 1 {
			// The rest of the deletes carry the whole old row.
			_, err := conn.Exec(ctx, `ALTER TABLE alltypes REPLICA IDENTITY FULL`)
			require.NoError(t, err)
			lastInfo = &PGTableInfo{ReplicaIdentity: 'f', ColInfo: lastInfo.ColInfo}
		}
		check(fmt.Sprintf(`DELETE FROM alltypes WHERE id = %d`, i+1), i+1, OpDelete)
	}
}

func quoteIdent(s string) string { return `"` + strings.ReplaceAll(s, `"`, `""`) + `"` }
