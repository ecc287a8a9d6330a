package dbsync

import (
	"context"
	"database/sql"
	"fmt"
	"strconv"
	"strings"

	"github.com/lib/pq"
)

// tableChangedError is a selection that found its table no longer the one its
// description was read from: dropped, dropped and created again, or altered (other
// columns or types). It wraps ErrRefreshAbandoned; Snapshot resets the table's
// progress on it, so the next Snapshot reads the table from the start with its new
// description.
type tableChangedError struct{ msg string }

func (e *tableChangedError) Error() string { return ErrRefreshAbandoned.Error() + ": " + e.msg }
func (e *tableChangedError) Unwrap() error { return ErrRefreshAbandoned }

// selectionLock is the statement that starts a selection's transaction, before its
// snapshot is taken: LOCK TABLE ONLY <table> IN ACCESS SHARE MODE, the lock the SELECT
// takes anyway, taken first so that no DROP or ALTER TABLE of the table can commit
// between the snapshot and the SELECT (PostgreSQL takes a REPEATABLE READ
// transaction's snapshot at its first query, and LOCK is none). The catalog the
// transaction then reads (sql/selection_shape.sql) is the table the SELECT reads.
func selectionLock(info *PGTableInfo) string {
	return "LOCK TABLE ONLY " + info.QuotedName() + " IN ACCESS SHARE MODE"
}

// shapeCol is one row of sql/selection_shape.sql.
type shapeCol struct {
	oid     uint32
	name    string
	typ     uint32
	typmod  int32
	typText string
}

// checkShape compares the table a selection reads (cols, sql/selection_shape.sql in
// its transaction) with info, the description the selection's rows are decoded and
// keyed with: a Snapshot describes its table once and reads every chunk with it, so a
// DDL between two chunks (or between a Refresh's description and its SELECT) would
// deliver rows without a column added since, rows of another table under this one's
// relation OID, or values decoded with a column's old type
// (TestSnapshotTableChangedBetweenChunks).
func checkShape(info *PGTableInfo, cols []shapeCol) error {
	if len(cols) == 0 {
		return tableDropped(info)
	}
	if cols[0].oid != info.RelationID {
		return &tableChangedError{fmt.Sprintf("%s was dropped and created again since the snapshot or refresh described it (relation OID %d, now %d): its rows are another table's; run the Refresh or Snapshot again (a Snapshot then reads the table from the start)",
			info.QualifiedName(), info.RelationID, cols[0].oid)}
	}
	same := len(cols) == len(info.Columns)
	for i := 0; same && i < len(cols); i++ {
		c := info.Columns[i]
		same = c.ColumnName == cols[i].name && c.TypeOID == cols[i].typ && c.TypeModifier == cols[i].typmod
	}
	if same {
		return nil
	}
	was := make([]string, len(info.Columns))
	for i, c := range info.Columns {
		was[i] = pq.QuoteIdentifier(c.ColumnName) + " " + c.ColumnType
	}
	now := make([]string, len(cols))
	for i, c := range cols {
		now[i] = pq.QuoteIdentifier(c.name) + " " + c.typText
	}
	return &tableChangedError{fmt.Sprintf("%s was altered since the snapshot or refresh described it (columns %s; now %s); run the Refresh or Snapshot again (a Snapshot then reads the table from the start)",
		info.QualifiedName(), strings.Join(was, ", "), strings.Join(now, ", "))}
}

// tableDropped is checkShape's error for a table whose name holds no relation any
// more (LOCK TABLE fails with 42P01, or the catalog has no row).
func tableDropped(info *PGTableInfo) error {
	return &tableChangedError{fmt.Sprintf("%s was dropped (or renamed) since the snapshot or refresh described it; nothing more of it can be read", info.QualifiedName())}
}

// lockErr turns a failed LOCK TABLE of a selection into tableDropped when the table
// no longer exists (42P01), into ctx's error when the caller's context ended the wait
// (lib/pq then has the server cancel the statement: 57014, which is no
// statement_timeout; TestSnapshotLaterChunkLockWaitNamesHolder), and into
// ErrRefreshAbandoned when the server cut the wait short (selectionCutShort:
// statement_timeout or lock_timeout while a DDL holds the table,
// TestSnapshotChunkLockCutShort).
func lockErr(ctx context.Context, info *PGTableInfo, err error) error {
	if code, _, ok := serverError(err); ok && code == "42P01" {
		return tableDropped(info)
	}
	if ctx.Err() != nil {
		return fmt.Errorf("lock %s for the selection: %w (%w)", info.QualifiedName(), ctx.Err(), classify(err, "lock "+info.QualifiedName()))
	}
	if why := selectionCutShort(err); why != "" {
		return fmt.Errorf("%w: selection on %s: %s; nothing of it was delivered: run the Refresh or Snapshot again (a Snapshot resumes at this chunk): %w",
			ErrRefreshAbandoned, info.QualifiedName(), why, classify(err, "lock "+info.QualifiedName()+" for the selection"))
	}
	return classify(err, "lock "+info.QualifiedName()+" for the selection")
}

// readShapeSQL runs sql/selection_shape.sql for info's table in tx, with its names
// inlined as the pgx path has them (shapeQueryLiteral): without parameters lib/pq
// sends it in one round trip instead of two (parse and describe, then bind and run).
func readShapeSQL(ctx context.Context, tx *sql.Tx, info *PGTableInfo) ([]shapeCol, error) {
	rows, err := tx.QueryContext(ctx, shapeQueryLiteral(info))
	if err != nil {
		return nil, classify(err, "read the shape of "+info.QualifiedName())
	}
	defer rows.Close()
	var out []shapeCol
	for rows.Next() {
		var c shapeCol
		if err := rows.Scan(&c.oid, &c.name, &c.typ, &c.typmod, &c.typText); err != nil {
			return nil, fmt.Errorf("read the shape of %s: %w", info.QualifiedName(), err)
		}
		out = append(out, c)
	}
	return out, classify(rows.Err(), "read the shape of "+info.QualifiedName())
}

// shapeQueryLiteral is sql/selection_shape.sql for info's table with its two
// parameters inlined as quoted literals (pq.QuoteLiteral), for a multi-statement
// simple-protocol query. The file's comment lines are left out first: a name with a
// line break, inlined into a comment, would end the comment.
func shapeQueryLiteral(info *PGTableInfo) string {
	var body []string
	for _, l := range strings.Split(sqlText("selection_shape.sql"), "\n") {
		if !strings.HasPrefix(strings.TrimSpace(l), "--") {
			body = append(body, l)
		}
	}
	return strings.NewReplacer("$1", pq.QuoteLiteral(info.Namespace), "$2", pq.QuoteLiteral(info.TableName)).Replace(strings.Join(body, "\n"))
}

// parseShapeRows parses sql/selection_shape.sql's rows in text format.
func parseShapeRows(rows [][][]byte) ([]shapeCol, error) {
	out := make([]shapeCol, len(rows))
	for i, r := range rows {
		if len(r) != 5 {
			return nil, fmt.Errorf("%w: shape row of %d columns, want 5", ErrMalformedMessage, len(r))
		}
		oid, err1 := strconv.ParseUint(string(r[0]), 10, 32)
		typ, err2 := strconv.ParseUint(string(r[2]), 10, 32)
		mod, err3 := strconv.ParseInt(string(r[3]), 10, 32)
		if err1 != nil || err2 != nil || err3 != nil {
			return nil, fmt.Errorf("%w: shape row %q", ErrMalformedMessage, r)
		}
		out[i] = shapeCol{oid: uint32(oid), name: string(r[1]), typ: uint32(typ), typmod: int32(mod), typText: string(r[4])}
	}
	return out, nil
}
