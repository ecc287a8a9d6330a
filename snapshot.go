package dbsync

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/lib/pq"
)

// DefaultSnapshotChunkSize is the number of rows one snapshot chunk (one watermark
// window) reads. Each chunk is held in memory until its high watermark is delivered;
// larger chunks mean fewer watermark round trips (four small transactions per chunk)
// and fewer polls, smaller ones less memory and a shorter window in which concurrent
// changes cost the chunk its rows. 10,000-row chunks read about twice as fast as
// 1,000-row chunks in docs/BENCHMARKS.md; with DefaultSnapshotChunksInFlight up to
// 40,000 rows are held.
const DefaultSnapshotChunkSize = 10000

// snapshotProgressTable is the progress table's name in the control schema
// (sql/setup_ctrl.sql).
const snapshotProgressTable = "snapshot_progress"

// SnapshotProgress reports a snapshot's progress after each delivered chunk.
type SnapshotProgress struct {
	// Table is "schema.table".
	Table string
	// Chunks and Rows count the chunks delivered and the rows they selected so far
	// (including the chunks of an earlier, interrupted run that this one resumed).
	Chunks int64
	Rows   int64
	// Estimated is the table's row estimate (pg_class.reltuples; -1: unknown).
	Estimated int64
	// Emitted is the number of refresh rows the last chunk delivered, Reread how many
	// of them were read again in follow-up windows (see RefreshStats).
	Emitted, Reread int
	// Done is true after the table's last chunk.
	Done bool
}

// WithSnapshotChunkSize sets the rows per snapshot chunk (default
// DefaultSnapshotChunkSize).
func WithSnapshotChunkSize(n int) SyncerOpt {
	return func(s *Syncer) error {
		if n <= 0 {
			return fmt.Errorf("%w: snapshot chunk size %d must be > 0", ErrConfig, n)
		}
		s.SnapshotChunkSize = n
		return nil
	}
}

// DefaultSnapshotChunksInFlight is how many snapshot chunks may have been read
// (SELECT done, high watermark written) before the oldest of them is handed over. With
// one, every chunk waits for the poller to deliver its high watermark (a peek and an
// advance) before the next SELECT starts; with several, the SELECTs run back to back
// while the poller delivers. Memory: up to this many chunks of rows are held at once.
const DefaultSnapshotChunksInFlight = 4

// WithSnapshotChunksInFlight sets how many snapshot chunks may be read ahead of the
// oldest one not yet handed over (default DefaultSnapshotChunksInFlight; 1: one chunk
// at a time).
func WithSnapshotChunksInFlight(n int) SyncerOpt {
	return func(s *Syncer) error {
		if n <= 0 {
			return fmt.Errorf("%w: snapshot chunks in flight %d must be > 0", ErrConfig, n)
		}
		s.SnapshotChunksInFlight = n
		return nil
	}
}

// WithSnapshotProgress sets a function Snapshot calls after each delivered chunk
// (from Snapshot's goroutine).
func WithSnapshotProgress(f func(SnapshotProgress)) SyncerOpt {
	return func(s *Syncer) error { s.SnapshotProgress = f; return nil }
}

// Snapshot reads every row of each table ("table" or "schema.table") in primary key
// order, SnapshotChunkSize rows at a time, and delivers them as refresh rows
// (MessageHandler.HandleRefresh and the Batcher), each chunk in its own watermark
// window (see RefreshContext), interleaved with the change stream: no lock, no
// long-running snapshot, and the slot keeps advancing between chunks. A chunk is
//
//	SELECT ... FROM t WHERE (k1, k2) > ($1, $2) ORDER BY k1, k2 LIMIT n
//
// (a row-value keyset comparison: an index range scan on the primary key).
//
// Progress — the last key of the last delivered chunk — is stored in the control
// schema's snapshot_progress table per slot and table after each chunk's refresh rows
// were handed over, so a Snapshot call after a crash or stop resumes after the last
// delivered chunk (that chunk may be delivered again: at-least-once). A table whose
// snapshot had finished is read again from the start. After the last chunk, rows that
// key-changing updates with unchanged TOASTed columns moved during the snapshot are
// read again (docs/SNAPSHOTS.md).
//
// Chunks are pipelined: up to SnapshotChunksInFlight chunks are read (their windows
// opened) ahead of the oldest one not yet handed over; they are handed over and
// recorded in key order, and a chunk whose window must run again reads its own key
// range again (docs/SNAPSHOTS.md).
//
// Snapshot blocks until every table was read; the Syncer must be running (Run/Start
// in another goroutine). It returns ErrNoPrimaryKey for a table without a primary key,
// ErrRefreshAbandoned when the Syncer stopped mid-chunk (call Snapshot again to
// resume), ErrConfig for unknown tables, or ctx's error.
func (s *Syncer) Snapshot(ctx context.Context, tables ...string) error {
	if err := s.refreshAllowed(); err != nil {
		return err
	}
	for _, name := range tables {
		if err := s.snapshotTable(ctx, name); err != nil {
			return err
		}
	}
	return nil
}

func (s *Syncer) ctrlSQL(name string) string {
	return strings.ReplaceAll(sqlText(name), "{{ns}}", pq.QuoteIdentifier(s.ctrlNamespace))
}

func (s *Syncer) snapshotTable(ctx context.Context, name string) error {
	qt, err := resolveTable(ctx, s.db, name)
	if err != nil {
		return err
	}
	info, err := s.tableInfoByName(ctx, qt)
	if err != nil {
		return err
	}
	chunk := s.SnapshotChunkSize
	if chunk <= 0 {
		chunk = DefaultSnapshotChunkSize
	}
	table := info.QualifiedName()
	prog := SnapshotProgress{Table: table, Estimated: -1}
	if err := s.db.QueryRowContext(ctx, `SELECT reltuples::bigint FROM pg_catalog.pg_class WHERE oid = $1`, info.RelationID).Scan(&prog.Estimated); err != nil {
		return classify(err, "read row estimate of "+table)
	}

	// Resume or start.
	var keyCols, lastKey pq.StringArray
	var finished bool
	err = s.db.QueryRowContext(ctx, s.ctrlSQL("snapshot_progress_get.sql"), s.replicationSlot, table).
		Scan(&keyCols, &lastKey, &prog.Chunks, &prog.Rows, &finished)
	resume := err == nil && !finished && equalStrings(keyCols, info.PrimaryKey)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return classify(err, "read snapshot progress of "+table)
	}
	if !resume {
		lastKey, prog.Chunks, prog.Rows = nil, 0, 0
		if _, err := s.db.ExecContext(ctx, s.ctrlSQL("snapshot_progress_start.sql"), s.replicationSlot, table,
			pq.StringArray(info.PrimaryKey), chunk); err != nil {
			return classify(err, "start snapshot progress of "+table)
		}
	} else {
		s.log.Info("dbsync: resuming snapshot", "table", table, "after_key", []string(lastKey), "rows_done", prog.Rows)
	}

	cols := make([]string, len(info.Columns))
	for i, c := range info.Columns {
		cols[i] = c.ColumnName
	}
	inFlight := s.SnapshotChunksInFlight
	if inFlight <= 0 {
		inFlight = DefaultSnapshotChunksInFlight
	}
	s.win.watchStart(info.RelationID)
	defer s.win.watchStop(info.RelationID)

	// Chunks are opened (low watermark, SELECT, high watermark) back to back, up to
	// inFlight ahead of the oldest one whose rows were not handed over yet: the next
	// chunk's keyset bound is known as soon as the previous SELECT returns, so the
	// SELECTs do not wait for the poller. Chunks are settled (delivered, follow-ups
	// run, progress recorded) in key order.
	var pending []*pendingSelection
	defer func() {
		for _, p := range pending {
			p.close()
		}
	}()
	after, selecting := []string(lastKey), true
	for selecting || len(pending) > 0 {
		if selecting && len(pending) < inFlight {
			p, err := s.openSelection(ctx, info, cols, chunkQuery(info, cols, after, nil, chunk))
			if err != nil {
				return fmt.Errorf("snapshot of %s, chunk %d: %w", table, prog.Chunks+int64(len(pending))+1, err)
			}
			// Should the window ask for a retry, read this chunk's key range again
			// (not the next n rows: later chunks are already in flight).
			p.query = chunkQuery(info, cols, after, p.lastKey, chunk)
			pending = append(pending, p)
			if p.selected < chunk {
				selecting = false
			} else {
				after = p.lastKey
			}
			continue
		}
		p := pending[0]
		pending = pending[1:]
		stats, last, err := s.settle(ctx, p)
		if err != nil {
			return fmt.Errorf("snapshot of %s, chunk %d: %w", table, prog.Chunks+1, err)
		}
		done := !selecting && len(pending) == 0
		var lastArg any
		if last != nil {
			lastArg = pq.StringArray(last)
		}
		if _, err := s.db.ExecContext(ctx, s.ctrlSQL("snapshot_progress_chunk.sql"), s.replicationSlot, table,
			lastArg, stats.Selected, chunk, done); err != nil {
			return classify(err, "record snapshot progress of "+table)
		}
		prog.Chunks++
		prog.Rows += int64(stats.Selected)
		prog.Emitted, prog.Reread = stats.Emitted, stats.Reread
		prog.Done = done
		if done {
			if err := s.rereadMovedRows(ctx, info, cols, &prog); err != nil {
				return fmt.Errorf("snapshot of %s: %w", table, err)
			}
		}
		if s.SnapshotProgress != nil {
			s.SnapshotProgress(prog)
		}
	}
	return nil
}

// rereadMovedRows reads again, after the last chunk, the rows that key-changing
// updates with unchanged TOASTed columns moved during the snapshot: the consumer
// got them without those columns if it never saw the row under its old key (the old
// key's chunk came later than the new key's). Rounds repeat while such updates
// keep coming, up to maxSettleRounds.
func (s *Syncer) rereadMovedRows(ctx context.Context, info *PGTableInfo, cols []string, prog *SnapshotProgress) error {
	for round := 0; ; round++ {
		keys := s.win.watchTake(info.RelationID)
		if len(keys) == 0 {
			return nil
		}
		if round >= maxSettleRounds {
			s.log.Warn("dbsync: rows kept moving to new keys with unchanged TOAST values at the end of a snapshot; their TOASTed columns reach consumers only when they change or are refreshed",
				"table", info.QualifiedName(), "rows", len(keys))
			return nil
		}
		for len(keys) > 0 {
			n := min(len(keys), 1000)
			q := keysQuery(info, cols, keys[:n])
			keys = keys[n:]
			stats, _, err := s.selectSettled(ctx, info, cols, q)
			if err != nil {
				return err
			}
			prog.Emitted += stats.Emitted
			prog.Reread += stats.Selected + stats.Reread
		}
	}
}

// chunkQuery builds one chunk's SELECT: every column as text (selectList), rows
// after the key after (nil: from the start) in primary key order; at most n rows, or,
// when upTo is not nil, every row up to and including the key upTo (a chunk's key
// range, read again on retry).
func chunkQuery(info *PGTableInfo, cols []string, after, upTo []string, n int) selQuery {
	t := info.QuotedName()
	kc := keyColumnList(info)
	q := " FROM " + t + " AS t"
	var args []any
	var conds []string
	if after != nil {
		conds = append(conds, "("+kc+") > ("+keyParams(info, len(args))+")")
		for _, v := range after {
			args = append(args, v)
		}
	}
	if upTo != nil {
		conds = append(conds, "("+kc+") <= ("+keyParams(info, len(args))+")")
		for _, v := range upTo {
			args = append(args, v)
		}
	}
	if len(conds) > 0 {
		q += " WHERE " + strings.Join(conds, " AND ")
	}
	q += " ORDER BY " + kc
	if upTo == nil {
		args = append(args, n)
		q += " LIMIT $" + strconv.Itoa(len(args))
	}
	return selQuery{build: func(form selectForm) string {
		return "SELECT " + columnList(info, "t", cols, form) + q
	}, args: args, unique: true, rows: n}
}

func equalStrings(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
