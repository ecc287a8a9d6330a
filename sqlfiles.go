package dbsync

import (
	"embed"
)

// dbsync's own SQL (these files and the statements built in Go) names the built-in
// functions and types it uses, and the operators it applies to text values, in
// pg_catalog (pg_catalog.set_config, $1::pg_catalog.text, OPERATOR(pg_catalog.=)): a
// session's search_path may list a schema before pg_catalog whose objects of the same
// names (or with better-matching argument types, as num_nulls(text) against
// num_nulls(VARIADIC "any")) would otherwise be used instead (CVE-2018-1058;
// TestSearchPathShadowedBuiltins). A table's key columns are compared with their
// types' default B-tree operator classes' operators, named with their schemas
// (keyOperators; TestSearchPathShadowsKeyOperators). Operators on other types
// (catalog names and OIDs, integers) are resolved on the search_path, as are user
// Refresh queries and the table names given to Snapshot.
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
