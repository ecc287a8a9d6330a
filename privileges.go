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
// and SELECT, INSERT and UPDATE on the snapshot progress table. It also checks that
// row-level security does not apply to the role on info's table (its selections would
// miss the rows the policies hide: rlsHidesRows) nor on those control tables. A Refresh's own query
// is checked by the server (queryTable's EXPLAIN: selectionDenied). A missing object
// is not reported here (the publication check or the statement names it).
//
// Errors: ErrInsufficientPrivilege naming the GRANT statements that are missing, or
// the statements that keep row-level security from hiding rows from the role.
func (s *Syncer) checkSelectionPrivileges(ctx context.Context, info *PGTableInfo, cols []string) error {
	var role string
	var usage, wmSelect, wmInsert, wmDelete, progSelect, progInsert, progUpdate, tableSelect sql.NullBool
	var wmRLS, progRLS, tableRLS, forcedOwner sql.NullBool
	err := s.db.QueryRowContext(ctx, `SELECT current_user,
		(SELECT pg_catalog.has_schema_privilege(n.oid, 'USAGE') FROM pg_catalog.pg_namespace n WHERE n.nspname OPERATOR(pg_catalog.=) $1),
		pg_catalog.has_table_privilege(w.oid, 'SELECT'), pg_catalog.has_table_privilege(w.oid, 'INSERT'), pg_catalog.has_table_privilege(w.oid, 'DELETE'),
		pg_catalog.has_table_privilege(p.oid, 'SELECT'), pg_catalog.has_table_privilege(p.oid, 'INSERT'), pg_catalog.has_table_privilege(p.oid, 'UPDATE'),
		CASE WHEN $4::pg_catalog.oid IS NOT NULL THEN (SELECT COALESCE(pg_catalog.bool_and(pg_catalog.has_column_privilege($4::pg_catalog.oid, a.attnum, 'SELECT')), true)
			FROM pg_catalog.pg_attribute a WHERE a.attrelid OPERATOR(pg_catalog.=) $4::pg_catalog.oid AND a.attname OPERATOR(pg_catalog.=) ANY($5::pg_catalog.text[]) AND NOT a.attisdropped) END,
		pg_catalog.row_security_active(w.oid::pg_catalog.regclass), pg_catalog.row_security_active(p.oid::pg_catalog.regclass),
		(SELECT pg_catalog.row_security_active(c.oid::pg_catalog.regclass) FROM pg_catalog.pg_class c WHERE c.oid OPERATOR(pg_catalog.=) $6::pg_catalog.oid),
		(SELECT c.relforcerowsecurity AND pg_catalog.pg_has_role(c.relowner, 'USAGE') FROM pg_catalog.pg_class c WHERE c.oid OPERATOR(pg_catalog.=) $6::pg_catalog.oid)
		FROM (SELECT) AS x
		LEFT JOIN (pg_catalog.pg_class w JOIN pg_catalog.pg_namespace wn ON wn.oid OPERATOR(pg_catalog.=) w.relnamespace) ON wn.nspname OPERATOR(pg_catalog.=) $1 AND w.relname OPERATOR(pg_catalog.=) $2
		LEFT JOIN (pg_catalog.pg_class p JOIN pg_catalog.pg_namespace pn ON pn.oid OPERATOR(pg_catalog.=) p.relnamespace) ON pn.nspname OPERATOR(pg_catalog.=) $1 AND p.relname OPERATOR(pg_catalog.=) $3`,
		s.ctrlNamespace, s.wmTableName, snapshotProgressTable, selectionOID(info, cols), pq.StringArray(cols), tableOID(info)).Scan(
		&role, &usage, &wmSelect, &wmInsert, &wmDelete, &progSelect, &progInsert, &progUpdate, &tableSelect,
		&wmRLS, &progRLS, &tableRLS, &forcedOwner)
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
	what := "Refresh"
	if cols != nil {
		what = "Snapshot of " + info.QualifiedName()
	}
	if len(grants) > 0 {
		return fmt.Errorf("%w: %s: role %q lacks privileges the watermark windows need; nothing was written; run\n  %s;",
			ErrInsufficientPrivilege, what, role, strings.Join(grants, ";\n  "))
	}
	// Row-level security on dbsync's own tables: policies could hide watermarks or
	// progress rows from the role, or keep it from deleting them, without an error.
	var ctrl []string
	if wmRLS.Bool {
		ctrl = append(ctrl, "ALTER TABLE "+ns+"."+pq.QuoteIdentifier(s.wmTableName)+" DISABLE ROW LEVEL SECURITY")
	}
	if cols != nil && progRLS.Bool {
		ctrl = append(ctrl, "ALTER TABLE "+ns+"."+pq.QuoteIdentifier(snapshotProgressTable)+" DISABLE ROW LEVEL SECURITY")
	}
	if len(ctrl) > 0 {
		return fmt.Errorf("%w: %s: row-level security applies to role %q on dbsync's control tables, whose policies could hide its watermarks or progress from it or keep it from deleting them; nothing was written; run\n  %s;",
			ErrInsufficientPrivilege, what, role, strings.Join(ctrl, ";\n  "))
	}
	if tableRLS.Bool {
		return rlsHidesRows(what+": nothing was written", info, role, forcedOwner.Bool, nil)
	}
	return nil
}

// tableOID is info's OID as checkSelectionPrivileges takes it (nil: no table).
func tableOID(info *PGTableInfo) any {
	if info == nil {
		return nil
	}
	return int64(info.RelationID)
}

// rlsHidesRows is the error of a selection of info's table that row-level security
// would filter for role (forcedOwner: the role owns the table, and FORCE ROW LEVEL
// SECURITY subjects its owner to the policies). Logical decoding sends the changes of
// every row whatever the policies, but a selection sees only the rows they show: a
// Snapshot would complete without the hidden rows, a Refresh would not read them. So
// selections run with row_security off (sql/selection_begin.sql), which makes the
// server refuse such a SELECT (42501) instead of filtering it, and this error names
// what lets the role read every row. cause is the server's error, if any.
func rlsHidesRows(what string, info *PGTableInfo, role string, forcedOwner bool, cause error) error {
	r, t := pq.QuoteIdentifier(role), info.QuotedName()
	var fix string
	if forcedOwner {
		fix = "run\n  ALTER TABLE " + t + " NO FORCE ROW LEVEL SECURITY;\n(the role owns the table, and FORCE ROW LEVEL SECURITY applies its policies to its owner), or, as a superuser,\n  ALTER ROLE " + r + " BYPASSRLS;"
	} else {
		fix = "run, as a superuser,\n  ALTER ROLE " + r + " BYPASSRLS;\nor run dbsync as the table's owner, or turn row-level security off for the table (ALTER TABLE " + t + " DISABLE ROW LEVEL SECURITY)"
	}
	msg := fmt.Sprintf("%s: row-level security policies of %s apply to role %q and could hide rows from its selections (logical decoding sends every row's changes, but a Snapshot or Refresh would silently miss the hidden rows); a policy that shows the role every row does not help, since dbsync cannot tell which rows a policy hides; %s",
		what, t, role, fix)
	if cause != nil {
		return fmt.Errorf("%w: %s: %w", ErrInsufficientPrivilege, msg, cause)
	}
	return fmt.Errorf("%w: %s", ErrInsufficientPrivilege, msg)
}

// rlsRefused is the error of a selection of info's table the server refused with
// 42501 because row-level security applies to the role (row_security is off in
// selections): rlsHidesRows, or nil when err is another error (or row-level
// security does not apply, or it cannot be told). It asks the server on a
// connection of its own, so the selection's connection must be released first.
func (s *Syncer) rlsRefused(ctx context.Context, what string, info *PGTableInfo, err error) error {
	if info == nil || !hasSQLState(err, "42501") {
		return nil
	}
	var role string
	var active, forcedOwner sql.NullBool
	qerr := s.db.QueryRowContext(ctx, `SELECT current_user, pg_catalog.row_security_active(c.oid::pg_catalog.regclass),
		c.relforcerowsecurity AND pg_catalog.pg_has_role(c.relowner, 'USAGE')
		FROM pg_catalog.pg_class c WHERE c.oid OPERATOR(pg_catalog.=) $1::pg_catalog.oid`, int64(info.RelationID)).Scan(&role, &active, &forcedOwner)
	if qerr != nil || !active.Bool {
		return nil
	}
	return rlsHidesRows(what, info, role, forcedOwner.Bool, driverError(err))
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
