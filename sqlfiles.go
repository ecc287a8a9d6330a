package dbsync

import (
	"embed"
)

// dbsync's own SQL (these files and the statements built in Go) names every built-in
// function, type and operator it uses in pg_catalog (pg_catalog.set_config,
// $1::pg_catalog.text, OPERATOR(pg_catalog.=)), and writes the constructs that look
// an operator up by name without one: x IN (...) as x OPERATOR(pg_catalog.=) ANY
// (...), IS DISTINCT FROM as IS NULL OR OPERATOR(pg_catalog.<>). A session's
// search_path may list a schema before pg_catalog whose objects of the same names
// and argument types (or better-matching ones, as num_nulls(text) against
// num_nulls(VARIADIC "any")) would otherwise be used instead, raising or, worse,
// answering wrongly: an always-false = on name or oid made a table's key, a
// publication or the slot look missing (CVE-2018-1058; TestSearchPathShadowedBuiltins,
// TestSearchPathWrongOperators). TestSQLFilesQualifyOperators fails when an operator
// outside OPERATOR(pg_catalog.op) appears in these files. A table's key columns are
// compared with their types' default B-tree operator classes' operators, named with
// their schemas (keyOperators; TestSearchPathShadowsKeyOperators). Left to the
// search_path are what users write: their Refresh queries, and the bare table names
// given to Snapshot, Refresh and ForTables.
//
//go:embed sql/*.sql
var sqlFiles embed.FS

// sqlText returns an embedded SQL file's text; a missing file is a build-time bug.
func sqlText(name string) string {
	b, err := sqlFiles.ReadFile("sql/" + name)
	if err != nil {
		panic("dbsync: missing embedded sql/" + name)
	}
	return string(b)
}
