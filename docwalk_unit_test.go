package dbsync

import (
	"testing"

	"github.com/stretchr/testify/require"
)

// TestSelectListAsDocumented: SelectList returns exactly the form its docstring
// shows (pg_catalog-qualified num_nulls and format, identifiers quoted), so a caller
// reading the docstring knows what goes between SELECT and FROM.
func TestSelectListAsDocumented(t *testing.T) {
	info := &PGTableInfo{Namespace: "public", TableName: "t",
		Columns: []*PGColumnInfo{{ColumnName: "c"}, {ColumnName: `We"ird`}}}
	require.Equal(t,
		`CASE WHEN pg_catalog.num_nulls("c") OPERATOR(pg_catalog.=) 1 THEN NULL ELSE pg_catalog.format('%s', "c") END AS "c", `+
			`CASE WHEN pg_catalog.num_nulls("We""ird") OPERATOR(pg_catalog.=) 1 THEN NULL ELSE pg_catalog.format('%s', "We""ird") END AS "We""ird"`,
		info.SelectList())
	require.Equal(t, `CASE WHEN pg_catalog.num_nulls("c") OPERATOR(pg_catalog.=) 1 THEN NULL ELSE pg_catalog.format('%s', "c") END AS "c"`, info.SelectList("c"))
}
