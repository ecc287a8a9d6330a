package dbsync

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/lib/pq"
)

// DefaultSnapshotChunkSize is the number of rows one snapshot chunk (one watermark
// window) reads. Each chunk is held in memory until its high watermark is delivered;
// larger chunks mean fewer watermark round trips (four small transactions per chunk)
// and fewer polls, smaller ones less memory and a shorter window in which concurrent
// changes cost the chunk its rows. Before chunks were pipelined, 10,000-row chunks
// read a 1,000,000-row table 2.8x as fast as 1,000-row chunks in one benchmark run
// (docs/BENCHMARKS-history.md, "Snapshot (d)"); with DefaultSnapshotChunksInFlight up to
// 40,000 rows are held (up to twice as many with planned ranges, WithSnapshotParallel
// above 1, when writers fill them).
const DefaultSnapshotChunkSize = 10000

// snapshotProgressTable is the progress table's name in the control schema
// (sql/setup_ctrl.sql).
const snapshotProgressTable = "snapshot_progress"

// SnapshotProgress reports a snapshot's progress after each delivered chunk.
type SnapshotProgress struct {
	// Table is "schema.table" (PGTableInfo.QualifiedName: both parts quoted when one
	// holds a dot).
	Table string
	// Chunks and Rows count the chunks delivered and the rows they selected so far
	// (including the chunks of an earlier, interrupted run that this one resumed).
	Chunks int64
	Rows   int64
	// Estimated is the table's row estimate (pg_class.reltuples; for a partitioned
	// table, the sum of its leaf partitions'; -1: unknown).
	Estimated int64
	// Emitted is the number of refresh rows the last chunk delivered, Reread how many
	// of them were read again in follow-up windows (see RefreshStats).
	Emitted, Reread int
	// Done is true after the table's last chunk.
	Done bool
}

// WithSnapshotChunkSize sets the rows per snapshot chunk (default
// DefaultSnapshotChunkSize); n < 1 is ErrConfig.
func WithSnapshotChunkSize(n int) SyncerOpt {
	return atLeast("WithSnapshotChunkSize", n, 1, "rows", func(s *Syncer) { s.SnapshotChunkSize = n })
}

// DefaultSnapshotChunksInFlight is how many snapshot chunks may be planned and read
// (SELECT done, high watermark written) before the oldest of them is handed over.
// With one, every chunk waits for the poller to deliver its high watermark (a peek and
// an advance) before the next SELECT starts; with several, the SELECTs run back to
// back while the poller delivers. Memory: up to this many chunks of rows (each at most
// twice the chunk size) are held at once.
const DefaultSnapshotChunksInFlight = 4

// WithSnapshotChunksInFlight sets how many snapshot chunks may be read ahead of the
// oldest one not yet handed over (default DefaultSnapshotChunksInFlight; 1: one chunk
// at a time); n < 1 is ErrConfig.
func WithSnapshotChunksInFlight(n int) SyncerOpt {
	return atLeast("WithSnapshotChunksInFlight", n, 1, "chunks", func(s *Syncer) { s.SnapshotChunksInFlight = n })
}

// DefaultSnapshotParallel is how many snapshot chunks are read at once by default:
// one, as keyset chunks (each starts after the previous chunk's last key), without
// planning queries. More (WithSnapshotParallel) plan key ranges first, one index scan
// of the primary key per chunk, and read that many chunks at once, each on its own
// connection: worth it when the server and this process have cores to spare. On the
// 2-core machine of docs/BENCHMARKS.md, shared with other load, two at once read the
// 1,000,000-row table no faster than one (seven alternations: 4% slower on average,
// within the noise), because one chunk at a time already kept both cores nearly busy.
const DefaultSnapshotParallel = 1

// WithSnapshotParallel sets how many snapshot chunks are read at once (default
// DefaultSnapshotParallel; a larger n than SnapshotChunksInFlight reads only that
// many at once). 1 reads keyset chunks one after another, without planning queries;
// n < 1 is ErrConfig.
func WithSnapshotParallel(n int) SyncerOpt {
	return atLeast("WithSnapshotParallel", n, 1, "chunks at once", func(s *Syncer) { s.SnapshotParallel = n })
}

// WithSnapshotProgress sets a function Snapshot calls after each delivered chunk
// (from Snapshot's goroutine).
func WithSnapshotProgress(f func(SnapshotProgress)) SyncerOpt {
	return func(s *Syncer) error { s.SnapshotProgress = f; return nil }
}

// Snapshot reads every row of each table ("table" or "schema.table") in primary key
// ranges of about SnapshotChunkSize rows, and delivers them as refresh rows
// (MessageHandler.HandleRefresh and the Batcher), each chunk in its own watermark
// window (see RefreshContext), interleaved with the change stream: no lock, no
// long-running snapshot, and the slot keeps advancing between chunks. When chunks are
// read in parallel (SnapshotParallel > 1), ranges are planned ahead, each bound the
// key SnapshotChunkSize rows further (an index scan of the primary key), and a chunk
// is
//
//	SELECT ... FROM t WHERE (k1, k2) > ($1, $2) AND (k1, k2) <= ($3, $4) ORDER BY k1, k2 LIMIT 2n
//
// (row-value comparisons: an index range scan on the primary key). The last range is
// open-ended (LIMIT n). A range that gained more than 2n rows between planning and
// its SELECT is finished by further chunks. With SnapshotParallel 1 every chunk is
// the n rows after the previous chunk's last key (keyset: WHERE (k1, k2) > ($1, $2)
// ... LIMIT n), with no planning queries.
//
// Up to SnapshotParallel chunks are read at once, each on its own connection, and up
// to SnapshotChunksInFlight are read ahead of the oldest one not yet handed over.
// Chunks read at once may be handed over in either order (each when its high
// watermark is delivered); they are settled and recorded in key order, and a chunk
// whose window must run again reads its own key range again (docs/SNAPSHOTS.md).
//
// Progress — the upper bound of the last settled chunk — is stored in the control
// schema's snapshot_progress table per slot and table after each chunk's refresh rows
// were handed over, so a Snapshot call after a crash or stop resumes after the last
// settled chunk (chunks handed over after it are delivered again: at-least-once). A
// table whose snapshot had finished is read again from the start. After the last
// chunk, rows that key-changing updates with unchanged TOASTed columns moved during
// the snapshot (from its start until a Snapshot of the table finishes it, also
// between a call that did not and the one resuming it) are read again, and only then is the table marked finished: should
// that fail, the next Snapshot of the table by this Syncer resumes after the last
// chunk and reads them. Snapshot calls of one table running at once share these
// rows: each reads every one not read yet, also those another call is reading, and a
// row leaves them only once read, so none is lost when one call fails
// (docs/SNAPSHOTS.md).
//
// Before a table's first chunk Snapshot waits for the transactions writing the table
// at that moment to end, prepared ones (PREPARE TRANSACTION) until COMMIT or ROLLBACK
// PREPARED (docs/SNAPSHOTS.md, "Tables added to the publication"); ctx ending that
// wait is ErrRefreshAbandoned wrapping ctx's error
// (TestSnapshotWithPreparedTransactionsOpen).
//
// A chunk waits for a lock another transaction holds on the table (ACCESS EXCLUSIVE:
// ALTER TABLE, LOCK TABLE, VACUUM FULL, left open or prepared) or on the watermark
// table, bounded by ctx. A wait of more than 2 s is logged (Warn) naming the table
// and the holder (PID and state, or the prepared transaction's gid), and the error
// that ends a wait names them too: ErrRefreshAbandoned wrapping ctx's error, with the
// chunk's number (docs/SNAPSHOTS.md, "A selection waiting for a lock says who holds
// it").
//
// Snapshot blocks until every table was read; the Syncer must be running (Run/Start
// in another goroutine), as for RefreshContext (which says what a call made while it
// is not does). Each chunk read at once takes a connection of the Syncer's
// *sql.DB while it runs; a pool with fewer makes them wait, nothing more. It returns
// ErrNoPrimaryKey for a table with neither a primary key nor a replica identity
// index (or whose key holds a generated column), ErrRefreshAbandoned when the Syncer stopped mid-chunk or the server cut a
// chunk's SELECT short (statement_timeout, a lock timeout; call Snapshot again
// to resume; with ErrClosed when Close ended it or was called before), ErrConfig for
// unknown tables (and names of views, indexes, sequences), a table keyed by a column
// of a type without a default B-tree operator class (its rows have no key order to
// read them in), a control schema without
// the snapshot progress table (set up again), and the other cases RefreshContext
// names (a watermark table not published or not there), ErrInsufficientPrivilege
// (a privilege the selection needs, or row-level security policies that apply to
// the role on the table or the control tables, which would hide rows from its
// SELECTs: checked before any watermark, and at each chunk, which runs with
// row_security off; the message names the fix; docs/SNAPSHOTS.md, "Limitations"),
// ErrPublicationMissing, or ctx's error.
func (s *Syncer) Snapshot(ctx context.Context, tables ...string) (err error) {
	if err := s.refreshAllowed(); err != nil {
		return err
	}
	if err := s.checkSnapshotFields(); err != nil {
		return err
	}
	ctx, end, err := s.beginCall(ctx)
	if err != nil {
		return err
	}
	defer func() { err = end(err) }()
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

func (s *Syncer) snapshotTable(ctx context.Context, name string) (err error) {
	qt, err := resolveTable(ctx, s.db, name)
	if err != nil {
		return err
	}
	if err := s.refuseControlTable(qt); err != nil {
		return err
	}
	info, err := s.tableInfoByName(ctx, qt)
	if err != nil {
		return err
	}
	// The table's columns as its changes carry them: info comes from the catalog as a
	// RELATION message would describe the table, without generated columns
	// (catalogRelation), so refresh rows have exactly the columns changes have.
	cols := make([]string, len(info.Columns))
	for i, c := range info.Columns {
		cols[i] = c.ColumnName
	}
	if err := s.checkSelectionPrivileges(ctx, info, cols); err != nil {
		return err
	}
	chunk := s.SnapshotChunkSize
	if chunk <= 0 {
		chunk = DefaultSnapshotChunkSize
	}
	table := info.QualifiedName()
	defer func() {
		// A chunk found the table dropped, replaced or altered since info was read
		// (checkShape): its progress belongs to the old description, so the next
		// Snapshot starts the table over with the new one. It runs also when ctx
		// ended, but for at most cleanupTimeout: a server that does not answer, or
		// another session holding the table's progress row locked, would keep the
		// Snapshot from returning for good (TestSnapshotProgressResetBounded).
		var changed *tableChangedError
		if errors.As(err, &changed) {
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
			defer cancel()
			if _, rerr := s.db.ExecContext(rctx, s.ctrlSQL("snapshot_progress_start.sql"), s.replicationSlot,
				table, pq.StringArray(info.PrimaryKey), chunk, info.RelationID); rerr != nil {
				why := ""
				if rctx.Err() != nil {
					why = fmt.Sprintf("no answer within %s (the server does not answer, or another session holds the table's row of %s.%s locked): ",
						cleanupTimeout, pq.QuoteIdentifier(s.ctrlNamespace), snapshotProgressTable)
				}
				err = errors.Join(err, fmt.Errorf("%w: reset snapshot progress of %s: %sthe next Snapshot of it may resume after the chunks recorded instead of reading it from the start; to make it start over, delete its row (DELETE FROM %s.%s WHERE slot_name = %s AND table_name = %s): %w",
					ErrSnapshotProgress, table, why, pq.QuoteIdentifier(s.ctrlNamespace), snapshotProgressTable, pq.QuoteLiteral(s.replicationSlot), pq.QuoteLiteral(table), classify(rerr, "reset snapshot progress")))
			}
		}
	}()
	prog := SnapshotProgress{Table: table, Estimated: -1}
	// A partitioned table's reltuples stays -1 unless ANALYZE is run on it by hand
	// (autovacuum never analyzes one): its estimate is its leaf partitions' sum.
	if err := s.db.QueryRowContext(ctx, `SELECT CASE WHEN c.relkind OPERATOR(pg_catalog.=) 'p' THEN COALESCE((
			SELECT pg_catalog.sum(l.reltuples) FILTER (WHERE l.reltuples OPERATOR(pg_catalog.>=) 0)
			FROM pg_catalog.pg_partition_tree(c.oid) p JOIN pg_catalog.pg_class l ON l.oid OPERATOR(pg_catalog.=) p.relid
			WHERE p.isleaf), -1) ELSE c.reltuples END::bigint
		FROM pg_catalog.pg_class c WHERE c.oid OPERATOR(pg_catalog.=) $1`, info.RelationID).Scan(&prog.Estimated); err != nil {
		return classify(err, "read row estimate of "+table)
	}

	// Resume or start.
	var keyCols, lastKey pq.StringArray
	var finished bool
	var relID sql.NullInt64
	err = s.db.QueryRowContext(ctx, s.ctrlSQL("snapshot_progress_get.sql"), s.replicationSlot, table).
		Scan(&keyCols, &lastKey, &prog.Chunks, &prog.Rows, &finished, &relID)
	// Resume only the snapshot of this very table: one of the same name dropped and
	// created again since (another relation OID) is another table, whose rows up to
	// the old last key were never read (TestSnapshotResumeAfterTableRecreated).
	resume := err == nil && !finished && equalStrings(keyCols, info.PrimaryKey) &&
		relID.Valid && relID.Int64 == int64(info.RelationID)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		if hasSQLState(err, "42P01", "42703") {
			// The query reads only that table: a control schema never set up, or
			// set up by an older dbsync (setup adds what is missing).
			return fmt.Errorf("%w: read snapshot progress of %s: the snapshot progress table %s.%s does not exist or lacks columns this version of dbsync uses: set up the Syncer (Syncer.Setup, or NewSyncer without WithSetup(false)), which creates or completes it: %w",
				ErrConfig, table, pq.QuoteIdentifier(s.ctrlNamespace), pq.QuoteIdentifier(snapshotProgressTable), err)
		}
		return classify(err, "read snapshot progress of "+table)
	}
	if !resume {
		lastKey, prog.Chunks, prog.Rows = nil, 0, 0
		if _, err := s.db.ExecContext(ctx, s.ctrlSQL("snapshot_progress_start.sql"), s.replicationSlot, table,
			pq.StringArray(info.PrimaryKey), chunk, info.RelationID); err != nil {
			return classify(err, "start snapshot progress of "+table)
		}
		if _, err := s.db.ExecContext(ctx, s.ctrlSQL("snapshot_progress_prune.sql"), s.replicationSlot); err != nil {
			return classify(err, "remove snapshot progress of dropped tables")
		}
	} else {
		s.log.Info("dbsync: resuming snapshot", "table", table, "after_key", []string(lastKey), "rows_done", prog.Rows)
	}

	inFlight := s.SnapshotChunksInFlight
	if inFlight <= 0 {
		inFlight = DefaultSnapshotChunksInFlight
	}
	// Transactions that wrote the table before it was added to the publication and are
	// still open would have those changes left out of the slot (pgoutput publishes by
	// the publication as of each change) and their rows left out of the chunks (not
	// committed yet): wait for the table's writers of now to end first.
	if err := s.waitForTableWriters(ctx, info); err != nil {
		return err
	}
	// Rows moved with unchanged TOAST values are collected from here on, together
	// with those earlier Snapshots of the table by this Syncer and Snapshots running
	// now did not read again; a row leaves the set only once read again, so the rows
	// this call does not read stay for the next one.
	s.win.watchStart(info.RelationID, keySignature(info))
	defer s.win.watchStop(info.RelationID)

	parallel := s.SnapshotParallel
	if parallel <= 0 {
		parallel = DefaultSnapshotParallel
	}
	parallel = min(parallel, inFlight)

	// With parallel > 1, chunks are key ranges planned ahead: (after, bound], where
	// bound is the key of the chunk-th row after after (chunkBound, an index scan of
	// the key alone), so the next range is known before the previous SELECT ran, and
	// up to parallel chunks are opened (low watermark, SELECT, high watermark) at
	// once, on their own connections, up to inFlight ahead of the oldest one whose
	// rows were not handed over yet. The last range is open-ended (at most chunk
	// rows); should it come back full (rows were added at the end meanwhile),
	// planning goes on after its last key. Rows inserted into a planned range before
	// its SELECT are read with it, up to maxChunkRows; a range that holds more is
	// finished by a chunk of the rest, settled next. With parallel == 1 every chunk
	// is open-ended and starts after the previous one's last row (keyset), which is
	// known when the previous SELECT returns: the SELECTs still run back to back,
	// without the planning queries. Chunks are settled (delivered, follow-ups run,
	// progress recorded) in key order.
	capRows := maxChunkRows(chunk)
	sem := make(chan struct{}, parallel)
	var queue []*snapshotChunk
	octx, cancel := context.WithCancel(ctx) // ends the chunks still opening on return
	defer func() {
		cancel()
		for _, c := range queue {
			<-c.done
			if c.p != nil {
				c.p.close()
			}
		}
	}()
	open := func(c *snapshotChunk) {
		c.done = make(chan struct{})
		limit := capRows
		if c.upTo == nil {
			limit = chunk
		}
		go func() {
			defer close(c.done)
			select {
			case sem <- struct{}{}:
			case <-octx.Done():
				c.err = fmt.Errorf("%w: %w", ErrRefreshAbandoned, octx.Err())
				return
			}
			defer func() { <-sem }()
			c.p, c.err = s.openSelection(octx, info, cols, chunkQuery(info, cols, c.after, c.upTo, limit))
		}()
	}
	// chunkEnded is the error of a Snapshot whose ctx ended while chunk c (number n)
	// was opening: c's own error once it has ended (octx ends with ctx), which says
	// what the chunk was doing (waiting for a lock, and who holds it:
	// TestSnapshotLaterChunkLockWaitNamesHolder); ctx's when c had opened.
	chunkEnded := func(c *snapshotChunk, n int64) error {
		<-c.done
		if c.err != nil {
			return fmt.Errorf("snapshot of %s, chunk %d: %w", table, n, c.err)
		}
		return fmt.Errorf("%w: %w", ErrRefreshAbandoned, ctx.Err())
	}
	after, planning := []string(lastKey), true
	for planning || len(queue) > 0 {
		if planning && len(queue) < inFlight {
			var bound []string
			if parallel > 1 {
				var err error
				if bound, err = s.chunkBound(ctx, info, after, chunk); err != nil {
					return fmt.Errorf("snapshot of %s, chunk %d: %w", table, prog.Chunks+int64(len(queue))+1, err)
				}
			}
			c := &snapshotChunk{after: after, upTo: bound}
			open(c)
			queue = append(queue, c)
			switch {
			case bound != nil:
				after = bound
			case parallel == 1:
				// One SELECT at a time gains nothing from planned ranges: the next
				// chunk starts after this one's last row (keyset), known once its
				// SELECT returned.
				select {
				case <-c.done:
				case <-ctx.Done():
					return chunkEnded(c, prog.Chunks+int64(len(queue)))
				}
				if c.err == nil && c.p.selected >= chunk {
					after, c.continued = c.p.lastKey, true
				} else {
					planning = false
				}
			default:
				planning = false
			}
			continue
		}
		c := queue[0]
		select {
		case <-c.done:
		case <-ctx.Done():
			return chunkEnded(c, prog.Chunks+1)
		}
		queue = queue[1:]
		if c.err != nil {
			return fmt.Errorf("snapshot of %s, chunk %d: %w", table, prog.Chunks+1, c.err)
		}
		p := c.p
		if c.upTo == nil && p.lastKey != nil {
			// The open-ended last range read up to p.lastKey: that is its range now
			// (a retry reads it again, not the next n rows), and planning goes on
			// after it if it came back full.
			c.upTo = p.lastKey
			p.query = chunkQuery(info, cols, c.after, c.upTo, capRows)
			if p.selected >= chunk && !c.continued {
				planning, after = true, p.lastKey
			}
		}
		stats, lastSel, err := s.settle(ctx, p)
		if err != nil {
			return fmt.Errorf("snapshot of %s, chunk %d: %w", table, prog.Chunks+1, err)
		}
		last := c.upTo // the range is done (nil: an empty open-ended range)
		if c.upTo != nil && stats.Selected >= capRows && lastSel != nil {
			// The range held more rows than a chunk may: done up to lastSel; the
			// rest is the next chunk.
			last = lastSel
			rest := &snapshotChunk{after: lastSel, upTo: c.upTo}
			open(rest)
			queue = append([]*snapshotChunk{rest}, queue...)
		}
		done := !planning && len(queue) == 0
		var lastArg any
		if last != nil {
			lastArg = pq.StringArray(last)
		}
		if _, err := s.db.ExecContext(ctx, s.ctrlSQL("snapshot_progress_chunk.sql"), s.replicationSlot, table,
			lastArg, stats.Selected, chunk); err != nil {
			return s.progressError(table, prog.Chunks+1, err)
		}
		prog.Chunks++
		prog.Rows += int64(stats.Selected)
		prog.Emitted, prog.Reread = stats.Emitted, stats.Reread
		if done {
			// The table is finished once the moved rows were read again, not before:
			// should that fail, the next Snapshot resumes after the last chunk (an
			// empty chunk, or rows added since) and reads them then (this Syncer keeps
			// their keys: windowTracker.moved).
			if err := s.rereadMovedRows(ctx, info, cols, &prog); err != nil {
				return fmt.Errorf("snapshot of %s: %w", table, err)
			}
			if _, err := s.db.ExecContext(ctx, s.ctrlSQL("snapshot_progress_finish.sql"), s.replicationSlot, table); err != nil {
				return s.progressError(table, prog.Chunks, err)
			}
			s.win.watchFinished(info.RelationID)
		}
		prog.Done = done
		if s.SnapshotProgress != nil {
			s.SnapshotProgress(prog)
		}
	}
	return nil
}

// progressError is the error of a failed write of a delivered chunk's progress
// (chunk n of table): ErrSnapshotProgress, with the server's error in the chain
// (TestSnapshotProgressWriteFails).
func (s *Syncer) progressError(table string, n int64, err error) error {
	return fmt.Errorf("%w: snapshot of %s, chunk %d: its rows were delivered but its progress could not be recorded in %s.%s; call Snapshot again once the table can be written: it resumes after the last recorded chunk and delivers this one again: %w",
		ErrSnapshotProgress, table, n, pq.QuoteIdentifier(s.ctrlNamespace), snapshotProgressTable, classify(err, "record snapshot progress"))
}

// maxWritersPoll is the longest pause between two looks of waitForTableWriters.
const maxWritersPoll = time.Second

// waitForTableWriters waits until the transactions that hold a write lock on info's
// table now (sql/table_writers.sql) have ended, before a Snapshot's first chunk.
// PostgreSQL 15's pgoutput publishes a change when its table is in the publication as
// of that change (decoding reads the catalog as it was then): a transaction that
// wrote the table before ALTER PUBLICATION ... ADD TABLE committed and commits after
// it never has those changes in the slot, and a chunk that selects while it is open
// cannot see its rows either, so they would reach the consumer neither way
// (TestSnapshotWaitsForWritersOfAddedTable). Once such a transaction ended its rows
// are committed and visible to the chunks. Any transaction writing the table is
// waited for, as which of them began before the table was added cannot be told; new
// ones are not (they write a published table). A partitioned table's writers include
// those of its partitions, which a write naming a partition locks alone
// (TestSnapshotWaitsForWritersOfAddedPartition). Like CREATE INDEX CONCURRENTLY, it
// waits for a transaction left open (idle in transaction, or prepared and not yet
// committed or rolled back: TestSnapshotWaitsForPreparedWriterOfAddedTable), until ctx ends
// (ErrRefreshAbandoned); the wait is logged. The looks start 10 ms apart and slow
// down to maxWritersPoll.
func (s *Syncer) waitForTableWriters(ctx context.Context, info *PGTableInfo) (err error) {
	var vxids pq.StringArray
	if err := s.db.QueryRowContext(ctx, sqlText("table_writers.sql"), info.RelationID).Scan(&vxids); err != nil {
		return classify(err, "find the transactions writing "+info.QualifiedName())
	}
	if len(vxids) == 0 {
		return nil
	}
	s.log.Info("dbsync: snapshot waits for the transactions writing the table to end (one that wrote it before it was added to the publication would have those changes left out of the slot)",
		"table", info.QualifiedName(), "transactions", len(vxids))
	// Who they are is logged once they were waited for lockWaitWarnAfter, and named
	// in the error when ctx ends the wait (TestSnapshotLockWaitNamesHolder).
	watch := s.watchLock(ctx, info.QuotedName(), "", writerLockModes, "a snapshot of "+info.QualifiedName()+" (waiting for the transactions writing it)")
	defer func() { err = watch.end(err) }()
	if f := s.writersWaiting; f != nil {
		f(info.QualifiedName(), len(vxids))
	}
	start := time.Now()
	for delay := 10 * time.Millisecond; ; delay = min(2*delay, maxWritersPoll) {
		var open int
		// A transaction is open while pg_locks shows a lock it holds: a session's holds
		// its own virtualxid lock until it ends; a prepared one (virtualtransaction
		// -1/xid, no virtualxid lock) holds its table locks until COMMIT or ROLLBACK
		// PREPARED.
		if err := s.db.QueryRowContext(ctx, `SELECT pg_catalog.count(DISTINCT virtualtransaction) FROM pg_catalog.pg_locks WHERE virtualtransaction OPERATOR(pg_catalog.=) ANY ($1)`,
			vxids).Scan(&open); err != nil {
			return classify(err, "wait for the transactions writing "+info.QualifiedName())
		}
		if f := s.writersLooked; f != nil {
			f(info.QualifiedName(), open)
		}
		if open == 0 {
			return nil
		}
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			watch.serverAnswered = true
			return fmt.Errorf("%w: snapshot of %s: waited %s for %d transaction(s) writing the table to end (a transaction that wrote it before ALTER PUBLICATION ... ADD TABLE would have those changes left out of the slot); end them (pg_locks shows them; pg_terminate_backend ends a session's, COMMIT PREPARED or ROLLBACK PREPARED a prepared one: pg_prepared_xacts) or call Snapshot again: %w",
				ErrRefreshAbandoned, info.QualifiedName(), time.Since(start).Round(time.Millisecond), open, ctx.Err())
		case <-t.C:
		}
	}
}

// rereadMovedRows reads again, after the last chunk, the rows that key-changing
// updates with unchanged TOASTed columns moved during the snapshot: the consumer
// got them without those columns if it never saw the row under its old key (the old
// key's chunk came later than the new key's). Rounds repeat while such updates
// keep coming, up to maxSettleRounds. The rows are selected by their keys' texts
// (windowTracker.moved), bound as text and cast to the key columns' types. Each
// round reads every row in the set, also those another Snapshot of the table is
// reading now (that read may fail); a row leaves the set once read (watchDone), so
// when a read fails the rows not read yet stay for the next Snapshot of the table.
// It returns nil once a round found the set empty (or gave up after maxSettleRounds).
func (s *Syncer) rereadMovedRows(ctx context.Context, info *PGTableInfo, cols []string, prog *SnapshotProgress) error {
	rel := info.RelationID
	for round := 0; ; round++ {
		rows := s.win.watchRows(rel)
		if len(rows) == 0 {
			return nil
		}
		if round >= maxSettleRounds {
			s.log.Warn("dbsync: rows kept moving to new keys with unchanged TOAST values at the end of a snapshot; their TOASTed columns reach consumers only when they change or are refreshed",
				"table", info.QualifiedName(), "rows", len(rows))
			s.win.watchDone(rel, rows)
			return nil
		}
		ids := make([]string, 0, len(rows))
		unprintable := map[string]movedKey{}
		for id, k := range rows {
			if k.texts == nil {
				// A binary key value pgtype cannot print (WithBinary, a key type without
				// a codec): it cannot be bound as text.
				s.log.Warn("dbsync: a row moved to a new key with unchanged TOAST values during a snapshot cannot be read again: its key cannot be printed as text; its TOASTed columns reach consumers only when they change or are refreshed",
					"table", info.QualifiedName(), "key", id)
				unprintable[id] = k
				continue
			}
			ids = append(ids, id)
		}
		s.win.watchDone(rel, unprintable)
		sort.Strings(ids)
		for len(ids) > 0 {
			n := min(len(ids), 1000)
			texts := make([][]string, n)
			read := make(map[string]movedKey, n)
			for i, id := range ids[:n] {
				texts[i] = rows[id].texts
				read[id] = rows[id]
			}
			stats, _, err := s.selectSettled(ctx, info, cols, keysQuery(info, cols, texts))
			if err != nil {
				return err
			}
			s.win.watchDone(rel, read)
			ids = ids[n:]
			prog.Emitted += stats.Emitted
			prog.Reread += stats.Selected + stats.Reread
		}
	}
}

// chunkQuery builds one chunk's SELECT (its columns in the transport's form,
// columnList): rows after the key after (nil: from the start) and, when upTo is not
// nil, up to and including the key upTo (a planned key range), in primary key order,
// at most n.
func chunkQuery(info *PGTableInfo, cols []string, after, upTo []string, n int) selQuery {
	kc := keyColumnList(info)
	q := fromTable(info)
	var args []any
	var conds []string
	for _, b := range []struct {
		op  string
		key []string
	}{{">", after}, {"<=", upTo}} {
		if b.key != nil {
			var c string
			c, args = keyCompare(info, b.op, b.key, args)
			conds = append(conds, c)
		}
	}
	if len(conds) > 0 {
		q += " WHERE " + strings.Join(conds, " AND ")
	}
	args = append(args, n)
	q += " ORDER BY " + kc + " LIMIT $" + strconv.Itoa(len(args))
	return selQuery{build: func(form selectForm) string {
		return "SELECT " + columnList(info, "t", cols, form) + q
	}, args: args, unique: true, rows: n, reread: tableReread(info, cols)}
}

// keyCompare returns the row-value comparison of the primary key columns with key
// (op: ">" or "<="; each value cast to its column's type, as keyParams), its
// parameters numbered after the args already there, and args with key's values
// appended. When no one operator serves every key column (keyOperators: their
// types' operator classes are in different schemas, such as citext's and int's), a
// row comparison cannot name them, and it is written column by column, as
// PostgreSQL evaluates it: (a, b) > (x, y) is a >= x AND (a > x OR (a = x AND b > y)),
// and (a, b) <= (x, y) is a <= x AND (x > a OR (a = x AND b <= y)) (the leading
// bound lets the key index's scan start or stop there).
func keyCompare(info *PGTableInfo, op string, key []string, args []any) (string, []any) {
	var cond string
	if shared, _ := keyOperators(info, op); shared != "" {
		cond = "(" + keyColumnList(info) + ") " + shared + " (" + keyParams(info, len(args)) + ")"
	} else {
		cond = keyCompareByColumn(info, op, keyColumns(info, "t"), keyParamList(info, len(args)))
	}
	for _, v := range key {
		args = append(args, v)
	}
	return cond, args
}

// keyCompareByColumn is keyCompare's condition (op ">" or "<=") of the key columns
// kc and the parameters params written column by column, each column compared with
// its own type's operators (keyOperators).
func keyCompareByColumn(info *PGTableInfo, op string, kc, params []string) string {
	eq, gt, last := columnOperators(info, "="), columnOperators(info, ">"), columnOperators(info, op)
	lead := ">="
	if op == "<=" {
		lead = "<="
	}
	bound := columnOperators(info, lead)
	terms := make([]string, len(kc))
	for i := range kc {
		var conds []string
		for j := 0; j < i; j++ {
			conds = append(conds, kc[j]+" "+eq[j]+" "+params[j])
		}
		switch {
		case op == ">":
			conds = append(conds, kc[i]+" "+gt[i]+" "+params[i])
		case i == len(kc)-1:
			conds = append(conds, kc[i]+" "+last[i]+" "+params[i])
		default: // kc[i] < params[i]
			conds = append(conds, params[i]+" "+gt[i]+" "+kc[i])
		}
		terms[i] = "(" + strings.Join(conds, " AND ") + ")"
	}
	return "(" + kc[0] + " " + bound[0] + " " + params[0] + " AND (" + strings.Join(terms, " OR ") + "))"
}

// maxChunkRows is the most rows one planned key range is read with: twice the chunk
// size, so rows inserted into the range between planning and its SELECT are read
// with it, while memory stays bounded when very many were (the rest of the range is
// read by a further chunk).
func maxChunkRows(chunk int) int {
	if chunk > math.MaxInt/2 {
		return chunk
	}
	return 2 * chunk
}

// snapshotChunk is one planned chunk of a snapshot: the key range (after, upTo]
// (upTo nil: open-ended, at most the chunk size) and, once done is closed, its
// opened selection or the error opening it.
type snapshotChunk struct {
	after, upTo []string
	done        chan struct{}
	p           *pendingSelection
	err         error
	// continued: planning went on after this open-ended chunk's last row (one
	// SELECT at a time).
	continued bool
}

// chunkBound returns the key columns (as text) of the n-th row after the key after
// (nil: from the start) in primary key order: the upper bound of the chunk that
// starts after after. It returns nil when fewer than n rows follow. The query reads
// the primary key index (an index-only scan where the visibility map allows).
//
// It reads the table, so it waits for a lock another transaction holds on it, like a
// chunk's SELECT (watchLock; TestSnapshotParallelBoundLockWaitNamesHolder).
func (s *Syncer) chunkBound(ctx context.Context, info *PGTableInfo, after []string, n int) (_ []string, err error) {
	watch := s.watchLock(ctx, info.QuotedName(), "", accessShareConflicts, "finding a snapshot chunk's key range in "+info.QualifiedName())
	defer func() { err = watch.end(err) }()
	kc := keyColumnList(info)
	texts := make([]string, len(info.PrimaryKey))
	for i, k := range info.PrimaryKey {
		texts[i] = "t." + pq.QuoteIdentifier(k) + "::pg_catalog.text"
	}
	q := "SELECT " + strings.Join(texts, ", ") + fromTable(info)
	var args []any
	if after != nil {
		var c string
		c, args = keyCompare(info, ">", after, args)
		q += " WHERE " + c
	}
	args = append(args, n-1)
	q += " ORDER BY " + kc + " OFFSET $" + strconv.Itoa(len(args)) + " LIMIT 1"
	bound := make([]string, len(texts))
	dest := make([]any, len(bound))
	for i := range bound {
		dest[i] = &bound[i]
	}
	// The bound's text is bound back into the chunk queries (typed casts), which run
	// with the output settings pinned (sql/selection_begin.sql): print it under them too.
	// That also turns row_security off: a bound found among the rows a policy shows
	// would skip the hidden ones.
	tx, err := s.db.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return nil, classify(err, "find the next snapshot chunk's key range in "+info.QualifiedName())
	}
	defer tx.Rollback()
	var snap, applied string
	if err := tx.QueryRowContext(ctx, sqlText("selection_begin.sql")).Scan(&snap, &applied); err != nil {
		return nil, classify(err, "find the next snapshot chunk's key range in "+info.QualifiedName())
	}
	err = tx.QueryRowContext(ctx, q, args...).Scan(dest...)
	s.chunkBounds.Add(1)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		tx.Rollback()
		if rerr := s.rlsRefused(ctx, "find the next snapshot chunk's key range in "+info.QualifiedName(), info, err); rerr != nil {
			return nil, rerr
		}
		return nil, classify(err, "find the next snapshot chunk's key range in "+info.QualifiedName())
	}
	return bound, nil
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
