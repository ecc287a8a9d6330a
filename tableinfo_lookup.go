package dbsync

import (
	"context"
	"fmt"
)

// TableInfo describes a table by name ("table", resolved on the search_path, or
// "schema.table", unquoted; a name with double quotes is parsed as SQL) from the
// catalog, as changes of that table are described to handlers. Use it to decode rows
// read with SQL the same way as changes: select with SelectList, decode with ScanRow,
// key with GetRecordID (docs/VALUES.md).
// Returns an error wrapping ErrConfig when the table does not exist or the name is
// another kind of relation (a view, an index, a sequence, ...), ErrClosed after Close,
// ErrStatementCancelled when the server cancelled a statement of it (a
// statement_timeout of dbsync's role: raise it). When ctx ended, the error wraps ctx's
// error and names the call.
func (s *Syncer) TableInfo(ctx context.Context, name string) (_ *PGTableInfo, err error) {
	if err := s.checkOpen("TableInfo"); err != nil {
		return nil, err
	}
	defer func() { err = withCtxErr(ctx, "TableInfo", errCancelledCall(ctx, "TableInfo", err)) }()
	t, err := resolveTable(ctx, s.db, name)
	if err != nil {
		return nil, err
	}
	var oid uint32
	if err := s.db.QueryRowContext(ctx, `SELECT c.oid FROM pg_catalog.pg_class c
		JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) c.relnamespace WHERE n.nspname OPERATOR(pg_catalog.=) $1 AND c.relname OPERATOR(pg_catalog.=) $2`,
		t.schema, t.name).Scan(&oid); err != nil {
		return nil, classify(err, fmt.Sprintf("look up table %s.%s", t.schema, t.name))
	}
	return s.tables.describeOID(ctx, oid)
}
