package dbsync

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/dbsync/dbsync/internal/pgtest"
	"github.com/stretchr/testify/require"
)

// TestBinaryTypeChangesInBacklog: with pgoutput's binary values (WithBinary), a
// backlog written before the Syncer starts holds ALTER COLUMN ... TYPE of the key (int
// -> bigint), of another column (int -> bigint) and text -> jsonb USING, with changes
// before and after each. When the Syncer starts, the catalog already has the final
// types; every change must still decode with the type it was written with (binary
// int4 is 4 bytes, int8 8, jsonb a version byte and the text: decoding one as the
// other is an error or a wrong value). Text mode for comparison.
func TestBinaryTypeChangesInBacklog(t *testing.T) {
	for _, binary := range []bool{true, false} {
		t.Run(fmt.Sprintf("binary=%v", binary), func(t *testing.T) {
			d := pgtest.NewDatabase(t)
			execAll(t, d.DB, `CREATE TABLE bt (id int PRIMARY KEY, n int, doc text)`)
			rec := &changeRecorder{}
			s := newTestSyncer(t, d, ForTables("bt"), WithMessageHandler(rec), WithBinary(binary))
			execAll(t, d.DB,
				`INSERT INTO bt VALUES (1, 10, '{"a":  1}'), (2, 20, 'not json yet')`,
				`UPDATE bt SET doc = '{"b": 2}' WHERE id = 2`,
				`ALTER TABLE bt ALTER COLUMN n TYPE bigint`,
				`INSERT INTO bt VALUES (3, 5000000000, '{"c": [1, 2]}')`,
				`UPDATE bt SET n = n + 1 WHERE id = 1`,
				`ALTER TABLE bt ALTER COLUMN doc TYPE jsonb USING doc::jsonb`,
				`INSERT INTO bt VALUES (4, 4, '{"d": {"e": null}}')`,
				`UPDATE bt SET doc = doc || '{"z": 0}' WHERE id = 2`,
				`ALTER TABLE bt ALTER COLUMN id TYPE bigint`,
				`UPDATE bt SET id = 5000000001 WHERE id = 3`,
				`DELETE FROM bt WHERE id = 1`)
			r := runInBackground(s)
			defer func() { require.NoError(t, r.stop(t)) }()
			got := rec.waitChanges(t, 9)
			type row struct {
				Op          Op
				Key, OldKey string
				New, Old    StringMap
			}
			var rows []row
			for _, c := range got {
				require.Equal(t, "public.bt", c.Table.QualifiedName())
				require.Empty(t, c.Unchanged)
				require.Empty(t, c.Filled)
				rows = append(rows, row{c.Op, c.Key, c.OldKey, c.New, c.Old})
			}
			raw := func(s string) json.RawMessage { return json.RawMessage(s) }
			require.Equal(t, []row{
				{OpInsert, `["1"]`, "", StringMap{"id": int32(1), "n": int32(10), "doc": `{"a":  1}`}, nil},
				{OpInsert, `["2"]`, "", StringMap{"id": int32(2), "n": int32(20), "doc": "not json yet"}, nil},
				{OpUpdate, `["2"]`, "", StringMap{"id": int32(2), "n": int32(20), "doc": `{"b": 2}`}, nil},
				{OpInsert, `["3"]`, "", StringMap{"id": int32(3), "n": int64(5000000000), "doc": `{"c": [1, 2]}`}, nil},
				{OpUpdate, `["1"]`, "", StringMap{"id": int32(1), "n": int64(11), "doc": `{"a":  1}`}, nil},
				{OpInsert, `["4"]`, "", StringMap{"id": int32(4), "n": int64(4), "doc": raw(`{"d": {"e": null}}`)}, nil},
				{OpUpdate, `["2"]`, "", StringMap{"id": int32(2), "n": int64(20), "doc": raw(`{"b": 2, "z": 0}`)}, nil},
				{OpUpdate, `["5000000001"]`, `["3"]`, StringMap{"id": int64(5000000001), "n": int64(5000000000), "doc": raw(`{"c": [1, 2]}`)},
					StringMap{"id": int64(3)}},
				{OpDelete, `["1"]`, "", nil, StringMap{"id": int64(1)}},
			}, rows)
			// Each change's description has the column types of its RELATION message.
			types := func(c *Change) string {
				var out []string
				for _, col := range c.Table.Columns {
					out = append(out, col.ColumnName+":"+col.TypeName)
				}
				return strings.Join(out, ",")
			}
			require.Equal(t, "id:integer,n:integer,doc:text", types(got[0]))
			require.Equal(t, "id:integer,n:bigint,doc:text", types(got[3]))
			require.Equal(t, "id:integer,n:bigint,doc:jsonb", types(got[5]))
			require.Equal(t, "id:bigint,n:bigint,doc:jsonb", types(got[7]))
		})
	}
}
