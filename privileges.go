package dbsync

import (
	"context"
	"database/sql"
	"fmt"
	"strings"

	"github.com/lib/pq"
)

// checkSelectionPrivileges checks, before a Refresh or a Snapshot writes anything,
// that the role has the privileges its selection windows need: USAGE on the control
// schema; SELECT, INSERT and DELETE on the watermark table (the watermarks are
// inserted, and deleted once their window closed: without DELETE they would pile up);
// for a Snapshot (cols: the columns it reads), SELECT on those columns of info's table
// and SELECT, INSERT and UPDATE on the snapshot progress table. A Refresh's own query
// is checked by the server (queryTable's EXPLAIN: selectionDenied). A missing object
// is not reported here (the publication check or the statement names it).
//
// Errors: ErrInsufficientPrivilege naming the GRANT statements that are missing.
func (s *Syncer) checkSelectionPrivileges(ctx context.Context, info *PGTableInfo, cols []string) error {
	var role string
	var usage, wmSelect, wmInsert, wmDelete, progSelect, progInsert, progUpdate, tableSelect sql.NullBool
	err := s.db.QueryRowContext(ctx, `SELECT current_user,
		(SELECT pg_catalog.has_schema_privilege(n.oid, 'USAGE') FROM pg_catalog.pg_namespace n WHERE n.nspname OPERATOR(pg_catalog.=) $1),
		pg_catalog.has_table_privilege(w.oid, 'SELECT'), pg_catalog.has_table_privilege(w.oid, 'INSERT'), pg_catalog.has_table_privilege(w.oid, 'DELETE'),
		pg_catalog.has_table_privilege(p.oid, 'SELECT'), pg_catalog.has_table_privilege(p.oid, 'INSERT'), pg_catalog.has_table_privilege(p.oid, 'UPDATE'),
		CASE WHEN $4::pg_catalog.oid IS NOT NULL THEN (SELECT COALESCE(pg_catalog.bool_and(pg_catalog.has_column_privilege($4::pg_catalog.oid, a.attnum, 'SELECT')), true)
			FROM pg_catalog.pg_attribute a WHERE a.attrelid OPERATOR(pg_catalog.=) $4::pg_catalog.oid AND a.attname OPERATOR(pg_catalog.=) ANY($5::pg_catalog.text[]) AND NOT a.attisdropped) END
		FROM (SELECT) AS x
		LEFT JOIN (pg_catalog.pg_class w JOIN pg_catalog.pg_namespace wn ON wn.oid OPERATOR(pg_catalog.=) w.relnamespace) ON wn.nspname OPERATOR(pg_catalog.=) $1 AND w.relname OPERATOR(pg_catalog.=) $2
		LEFT JOIN (pg_catalog.pg_class p JOIN pg_catalog.pg_namespace pn ON pn.oid OPERATOR(pg_catalog.=) p.relnamespace) ON pn.nspname OPERATOR(pg_catalog.=) $1 AND p.relname OPERATOR(pg_catalog.=) $3`,
		s.ctrlNamespace, s.wmTableName, snapshotProgressTable, selectionOID(info, cols), pq.StringArray(cols)).Scan(
		&role, &usage, &wmSelect, &wmInsert, &wmDelete, &progSelect, &progInsert, &progUpdate, &tableSelect)
	if err != nil {
		return classify(err, "check the role's privileges for the selection")
	}
	denied := func(b sql.NullBool) bool { return b.Valid && !b.Bool }
	missing := func(privs []string, have ...sql.NullBool) string {
		var out []string
		for i, b := range have {
			if denied(b) {
				out = append(out, privs[i])
			}
		}
		return strings.Join(out, ", ")
	}
	r := pq.QuoteIdentifier(role)
	ns := pq.QuoteIdentifier(s.ctrlNamespace)
	var grants []string
	if cols != nil && denied(tableSelect) {
		grants = append(grants, "GRANT SELECT ON "+info.QuotedName()+" TO "+r)
	}
	if denied(usage) {
		grants = append(grants, "GRANT USAGE ON SCHEMA "+ns+" TO "+r)
	}
	if m := missing([]string{"SELECT", "INSERT", "DELETE"}, wmSelect, wmInsert, wmDelete); m != "" {
		grants = append(grants, "GRANT "+m+" ON "+ns+"."+pq.QuoteIdentifier(s.wmTableName)+" TO "+r)
	}
	if cols != nil {
		if m := missing([]string{"SELECT", "INSERT", "UPDATE"}, progSelect, progInsert, progUpdate); m != "" {
			grants = append(grants, "GRANT "+m+" ON "+ns+"."+pq.QuoteIdentifier(snapshotProgressTable)+" TO "+r)
		}
	}
	if len(grants) == 0 {
		return nil
	}
	what := "Refresh"
	if cols != nil {
		what = "Snapshot of " + info.QualifiedName()
	}
	return fmt.Errorf("%w: %s: role %q lacks privileges the watermark windows need; nothing was written; run\n  %s;",
		ErrInsufficientPrivilege, what, role, strings.Join(grants, ";\n  "))
}

// selectionOID is the OID of the table whose columns a Snapshot reads (cols), as
// checkSelectionPrivileges takes it: nil for a Refresh (cols nil).
func selectionOID(info *PGTableInfo, cols []string) any {
	if cols == nil || info == nil {
		return nil
	}
	return int64(info.RelationID)
}

// selectionDenied is the error of a Refresh query the server refused to plan for lack
// of a privilege (42501: "permission denied for table t", naming the table): the
// role may not read what the query reads.
func (s *Syncer) selectionDenied(ctx context.Context, err error) error {
	var role string
	if qerr := s.db.QueryRowContext(ctx, `SELECT current_user`).Scan(&role); qerr != nil {
		role = "<role>"
	} else {
		role = pq.QuoteIdentifier(role)
	}
	return fmt.Errorf("%w: Refresh query: the role may not read what the query reads; grant it with GRANT SELECT ON <the table the server names> TO %s: %w",
		ErrInsufficientPrivilege, role, driverError(err))
}
