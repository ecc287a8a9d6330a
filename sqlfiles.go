package dbsync

import (
	"embed"
)

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
