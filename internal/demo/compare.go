package demo

import (
	"context"
	"database/sql"
	"fmt"
	"reflect"
	"sort"
	"strings"
	"time"

	"github.com/dbsync/dbsync"
	"github.com/dbsync/dbsync/handlers"
)

// maxDetails bounds Result.Details.
const maxDetails = 20

// Compare reads every row of tables ("schema.table") and compares it with cache, row
// by row and column by column. Rows are read as text (the form pgoutput sends without
// its binary option) and decoded with the table's PGColumnInfo.DecodeText, the same
// path a change's values take, keyed with PGTableInfo.GetRecordID. It returns the
// number of rows in the tables, the number of mismatches (rows missing from the cache,
// extra in it, or with a different column set or value) and up to 20 descriptions.
func Compare(ctx context.Context, db *sql.DB, s *dbsync.Syncer, cache *handlers.Cache, tables []string) (rows, mismatches int, details []string, err error) {
	snap := cache.Snapshot()
	report := func(format string, args ...any) {
		mismatches++
		if len(details) < maxDetails {
			details = append(details, fmt.Sprintf(format, args...))
		}
	}
	for _, name := range tables {
		info, err := s.TableInfo(ctx, name)
		if err != nil {
			return 0, 0, nil, fmt.Errorf("demo: compare: %w", err)
		}
		dbRows, err := readTable(ctx, db, info)
		if err != nil {
			return 0, 0, nil, err
		}
		rows += len(dbRows)
		cached := snap[info.QualifiedName()]
		keys := make([]string, 0, len(dbRows))
		for k := range dbRows {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			c, ok := cached[k]
			if !ok {
				report("%s %s: missing from the copy", name, k)
				continue
			}
			if diff := rowDiff(info, dbRows[k], c); diff != "" {
				report("%s %s: %s", name, k, diff)
			}
		}
		extra := make([]string, 0)
		for k := range cached {
			if _, ok := dbRows[k]; !ok {
				extra = append(extra, k)
			}
		}
		sort.Strings(extra)
		for _, k := range extra {
			report("%s %s: in the copy but not in the table", name, k)
		}
	}
	return rows, mismatches, details, nil
}

// readTable reads all rows of a table in their types' text output (SelectList) and
// decodes them like changes (ScanRow), keyed like changes (GetRecordID).
func readTable(ctx context.Context, db *sql.DB, info *dbsync.PGTableInfo) (map[string]dbsync.StringMap, error) {
	rs, err := db.QueryContext(ctx, "SELECT "+info.SelectList()+" FROM "+info.QuotedName())
	if err != nil {
		return nil, fmt.Errorf("demo: read %s: %w", info.QualifiedName(), err)
	}
	defer rs.Close()
	out := map[string]dbsync.StringMap{}
	for rs.Next() {
		row, err := info.ScanRow(rs)
		if err != nil {
			return nil, fmt.Errorf("demo: decode %s: %w", info.QualifiedName(), err)
		}
		id, err := info.GetRecordID(row)
		if err != nil {
			return nil, fmt.Errorf("demo: %s: %w", info.QualifiedName(), err)
		}
		out[id] = row
	}
	return out, rs.Err()
}

// rowDiff describes how the cached row differs from the table's ("" when equal).
func rowDiff(info *dbsync.PGTableInfo, want, got dbsync.StringMap) string {
	var diffs []string
	for _, c := range info.Columns {
		w := want[c.ColumnName]
		g, ok := got[c.ColumnName]
		switch {
		case !ok:
			diffs = append(diffs, c.ColumnName+" missing")
		case !valuesEqual(w, g):
			diffs = append(diffs, fmt.Sprintf("%s = %s, want %s", c.ColumnName, short(g), short(w)))
		}
	}
	if len(got) > len(info.Columns) {
		diffs = append(diffs, fmt.Sprintf("%d columns, want %d", len(got), len(info.Columns)))
	}
	return strings.Join(diffs, "; ")
}

// valuesEqual compares two decoded column values. It is the one place to adjust when
// decoding changes (e.g. pgtype values that need their own equality).
func valuesEqual(a, b any) bool {
	if ta, ok := a.(time.Time); ok {
		tb, ok := b.(time.Time)
		return ok && ta.Equal(tb)
	}
	return reflect.DeepEqual(a, b)
}

func short(v any) string {
	s := fmt.Sprintf("%#v", v)
	if len(s) > 60 {
		s = s[:57] + "..."
	}
	return s
}
