package dbsync

import (
	"database/sql"
	"fmt"
	"strings"

	"github.com/lib/pq"
)

// SelectList returns a SELECT list that reads the given columns (all of t.Columns when
// none are given) in PostgreSQL's text output format, for ScanRow:
//
//	CASE WHEN num_nulls("c") = 1 THEN NULL ELSE format('%s', "c") END AS "c", ...
//
// format('%s', …) calls the type's output function — the same text pgoutput sends —
// whereas a cast to text does not always (bool::text gives "true", inet::text always
// adds the netmask). num_nulls, not IS NULL, tells NULL apart: a composite value whose
// fields are all NULL IS NULL but is not a NULL datum. Identifiers are quoted; the result goes between SELECT and FROM
// of a query on the table, e.g.
//
//	"SELECT " + t.SelectList() + " FROM " + t.QuotedName() + " WHERE ..."
func (t *PGTableInfo) SelectList(columns ...string) string {
	if len(columns) == 0 {
		for _, c := range t.Columns {
			columns = append(columns, c.ColumnName)
		}
	}
	return selectList("", columns)
}

// selectList gives each column (of alias, when not "") in its type's text output form:
// format('%s', x) calls the type's output function, as pgoutput does (a ::text cast
// does not for every type: true::text is 'true', pgoutput sends 't'). NULL stays NULL;
// num_nulls, not IS NULL, detects it, as a composite whose fields are all NULL IS NULL
// but is a value.
func selectList(alias string, cols []string) string {
	parts := make([]string, len(cols))
	for i, c := range cols {
		ref := pq.QuoteIdentifier(c)
		if alias != "" {
			ref = pq.QuoteIdentifier(alias) + "." + ref
		}
		parts[i] = "CASE WHEN num_nulls(" + ref + ") = 1 THEN NULL ELSE format('%s', " + ref + ") END AS " + pq.QuoteIdentifier(c)
	}
	return strings.Join(parts, ", ")
}

// QuotedName returns the table's quoted "schema"."table" for building queries.
func (t *PGTableInfo) QuotedName() string {
	return pq.QuoteIdentifier(t.Namespace) + "." + pq.QuoteIdentifier(t.TableName)
}

// ScanRow scans the current row of rows — a query whose columns are selected with
// SelectList (text output of the column's type, NULL as NULL) and named like t's
// columns — into the same typed values MessageToMap gives for that row in a change,
// so GetRecordID of the result matches the record ID of the row's changes. Call it
// after rows.Next() returned true. Works with any database/sql driver (lib/pq, pgx
// stdlib).
//
// The session must use PostgreSQL's default output settings (DateStyle ISO,
// IntervalStyle postgres, bytea_output hex; any TimeZone). Errors: a column of rows
// that t does not describe (ErrConfig), ErrDecodeValue, or the driver's scan error.
func (t *PGTableInfo) ScanRow(rows *sql.Rows) (StringMap, error) {
	names, err := rows.Columns()
	if err != nil {
		return nil, err
	}
	raw := make([]sql.NullString, len(names))
	dest := make([]any, len(names))
	for i := range raw {
		dest[i] = &raw[i]
	}
	if err := rows.Scan(dest...); err != nil {
		return nil, err
	}
	return t.decodeTextRow(names, raw, false)
}

// decodeTextRow decodes a row of columns selected in text form (selectList) with the
// columns' decoders, exactly as MessageToMap decodes a change's text values. A column
// that is not the table's is an ErrConfig error, or kept as its text when
// unknownAsText (a refresh query may select expressions).
func (t *PGTableInfo) decodeTextRow(names []string, raw []sql.NullString, unknownAsText bool) (StringMap, error) {
	values := make(StringMap, len(names))
	for i, n := range names {
		if !raw[i].Valid {
			values[n] = nil
			continue
		}
		col := t.ColInfo[n]
		if col == nil {
			if !unknownAsText {
				return nil, fmt.Errorf("%w: ScanRow: column %q is not a column of %s", ErrConfig, n, t.QualifiedName())
			}
			values[n] = raw[i].String
			continue
		}
		v, err := col.DecodeText([]byte(raw[i].String))
		if err != nil {
			return nil, fmt.Errorf("%s.%s: %w", t.QualifiedName(), n, err)
		}
		values[n] = v
	}
	return values, nil
}
