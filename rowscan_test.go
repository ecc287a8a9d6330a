package dbsync

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"testing"

	"github.com/dbsync/dbsync/internal/pgtest"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/stretchr/testify/require"
)

// TestOutputTextVsCast records why SelectList uses format('%s', col) and not col::text:
// format calls the type's output function (what pgoutput sends), while some casts to
// text differ (bool -> "true", inet -> always with the netmask). bytea and timestamptz
// agree either way.
func TestOutputTextVsCast(t *testing.T) {
	d := pgtest.NewDatabase(t)
	var fb, cb, fi, ci, fby, cby, ft, ct string
	require.NoError(t, d.DB.QueryRow(`SELECT format('%s', true), true::text,
		format('%s', '10.0.0.1'::inet), '10.0.0.1'::inet::text,
		format('%s', '\x00ff'::bytea), '\x00ff'::bytea::text,
		format('%s', '2020-01-01 00:00+00'::timestamptz), '2020-01-01 00:00+00'::timestamptz::text`).
		Scan(&fb, &cb, &fi, &ci, &fby, &cby, &ft, &ct))
	require.Equal(t, []string{"t", "true"}, []string{fb, cb})
	require.Equal(t, []string{"10.0.0.1", "10.0.0.1/32"}, []string{fi, ci})
	require.Equal(t, fby, cby)
	require.Equal(t, ft, ct)
}

// TestTextScanDestTellsEmptyFromNull: scanning a text column straight into
// *sql.RawBytes gives nil — indistinguishable from NULL — for an empty value while
// database/sql's reused buffer is still empty (lib/pq returns text as a Go string,
// which database/sql appends to that buffer); textScanDest gives a non-nil empty
// slice, and ScanRow decodes the row right.
func TestTextScanDestTellsEmptyFromNull(t *testing.T) {
	d := pgtest.NewDatabase(t)
	execAll(t, d.DB, `CREATE TABLE e (a text PRIMARY KEY, b text, c text)`, `INSERT INTO e VALUES ('', NULL, '')`)
	info := &PGTableInfo{Namespace: "public", TableName: "e", ColInfo: map[string]*PGColumnInfo{}}
	for _, c := range []string{"a", "b", "c"} {
		col := &PGColumnInfo{ColumnName: c, TypeOID: pgtype.TextOID, dec: resolveDecode(pgtype.TextOID, nil)}
		info.Columns = append(info.Columns, col)
		info.ColInfo[c] = col
	}
	query := `SELECT ` + info.SelectList() + ` FROM ` + info.QuotedName()

	raw := make([]sql.RawBytes, 3)
	rows, err := d.DB.Query(query)
	require.NoError(t, err)
	require.True(t, rows.Next())
	require.NoError(t, rows.Scan(&raw[0], &raw[1], &raw[2]))
	require.Nil(t, raw[0], "database/sql: the empty first value scans as a nil RawBytes")
	require.NoError(t, rows.Close())

	rows, err = d.DB.Query(query)
	require.NoError(t, err)
	require.True(t, rows.Next())
	require.NoError(t, rows.Scan(textScanDest(raw)...))
	require.Equal(t, []sql.RawBytes{{}, nil, {}}, raw)
	require.NotNil(t, raw[0])
	row, err := info.decodeTextRowRaw([]string{"a", "b", "c"}, raw, false)
	require.NoError(t, err)
	require.Equal(t, StringMap{"a": "", "b": nil, "c": ""}, row)
	require.NoError(t, rows.Close())

	rows, err = d.DB.Query(query)
	require.NoError(t, err)
	require.True(t, rows.Next())
	row, err = info.ScanRow(rows)
	require.NoError(t, err)
	require.Equal(t, StringMap{"a": "", "b": nil, "c": ""}, row)
	require.NoError(t, rows.Close())
}

// TestDecodeTextRowRawMatchesDecodeTextRow: on rows of every type (values_test.go's
// alltypes: NULLs, empty, extreme and special values) read with SelectList, the
// []sql.RawBytes decoder gives exactly what the sql.NullString one gives, also for an
// extra selected expression (unknownAsText), and keeps nothing of the raw bytes: they
// are overwritten after decoding.
func TestDecodeTextRowRawMatchesDecodeTextRow(t *testing.T) {
	d := pgtest.NewDatabase(t)
	execAll(t, d.DB, allTypesDDL)
	cols := strings.Join(allTypesCols, ", ")
	for i := range allTypesRows {
		execAll(t, d.DB, fmt.Sprintf(`INSERT INTO alltypes (id, %s) VALUES (%d, %s)`, cols, i+1, allTypesValues(i)))
	}
	s := newTestSyncer(t, d, ForTables("alltypes"))
	info, err := s.TableInfo(context.Background(), "public.alltypes")
	require.NoError(t, err)
	query := `SELECT ` + info.SelectList() + `, format('%s', id * 2) AS extra FROM ` + info.QuotedName() + ` ORDER BY id`

	read := func(scan func(rows *sql.Rows, names []string) StringMap) []StringMap {
		rows, err := d.DB.Query(query)
		require.NoError(t, err)
		defer rows.Close()
		names, err := rows.Columns()
		require.NoError(t, err)
		var out []StringMap
		for rows.Next() {
			out = append(out, scan(rows, names))
		}
		require.NoError(t, rows.Err())
		return out
	}
	viaNullString := read(func(rows *sql.Rows, names []string) StringMap {
		raw := make([]sql.NullString, len(names))
		dest := make([]any, len(names))
		for i := range raw {
			dest[i] = &raw[i]
		}
		require.NoError(t, rows.Scan(dest...))
		row, err := info.decodeTextRow(names, raw, true)
		require.NoError(t, err)
		return row
	})
	viaRaw := read(func(rows *sql.Rows, names []string) StringMap {
		raw := make([]sql.RawBytes, len(names))
		require.NoError(t, rows.Scan(textScanDest(raw)...))
		// Decode private copies, then scribble over them: nothing may alias them.
		own := make([]sql.RawBytes, len(raw))
		for i, r := range raw {
			if r != nil {
				own[i] = append(sql.RawBytes{}, r...)
			}
		}
		row, err := info.decodeTextRowRaw(names, own, true)
		require.NoError(t, err)
		for _, r := range own {
			for j := range r {
				r[j] = '#'
			}
		}
		return row
	})
	require.Len(t, viaNullString, len(allTypesRows))
	require.Len(t, viaRaw, len(allTypesRows))
	for i := range viaRaw {
		requireSameRow(t, viaNullString[i], viaRaw[i], "row ", i+1)
		require.Equal(t, fmt.Sprint(2*(i+1)), viaRaw[i]["extra"])
		id1, err := info.GetRecordID(viaNullString[i])
		require.NoError(t, err)
		id2, err := info.GetRecordID(viaRaw[i])
		require.NoError(t, err)
		require.Equal(t, id1, id2)
	}
	require.Nil(t, viaRaw[0]["c_text"], "row 1 is all NULLs")
	require.Equal(t, "", viaRaw[1]["c_text"], "row 2 has empty values")

	_, err = info.decodeTextRowRaw([]string{"nope"}, []sql.RawBytes{sql.RawBytes("x")}, false)
	require.ErrorIs(t, err, ErrConfig)
	_, err = info.decodeTextRowRaw([]string{"c_int4"}, []sql.RawBytes{sql.RawBytes("x")}, false)
	require.ErrorIs(t, err, ErrDecodeValue)
}
