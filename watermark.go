package dbsync

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/lib/pq"
)

// Errors of Refresh and Snapshot (kept here with the feature; errors.is works as for
// the named errors in errors.go).

// RefreshStats says what one selection (a Refresh or a snapshot chunk) did.
type RefreshStats struct {
	// Selected is the number of rows the SELECT returned, each key counted once (a
	// query returning a key twice delivers its last row with it: docs/SNAPSHOTS.md).
	Selected int
	// Emitted is the number of refresh rows handed to HandleRefresh (and the Batcher):
	// Selected minus the rows a change inside the window touched, plus rows read again.
	Emitted int
	// Reread counts rows read again in follow-up windows: they were dropped because an
	// update inside the window left TOASTed columns unchanged (not sent), which a
	// consumer that never saw the row could not fill in.
	Reread int
	// Unsettled counts such rows still unread after the last follow-up window
	// (maxSettleRounds); their TOASTed columns reach consumers only with a later change
	// of them or another refresh.
	Unsettled int
}

// Refresh re-reads the rows selectQuery returns and hands them to
// MessageHandler.HandleRefresh (and the Batcher) at their place in the change stream,
// with Netflix DBLog's watermark algorithm: see RefreshContext.
func (s *Syncer) Refresh(selectQuery string) error {
	_, err := s.RefreshContext(context.Background(), selectQuery)
	return err
}

// RefreshContext re-reads the rows selectQuery returns and delivers them as refresh rows,
// interleaved with the change stream so that the consumer ends up with each row's
// current value (DBLog; docs/SNAPSHOTS.md):
//  1. a low watermark row is inserted into the watermark table and committed;
//  2. selectQuery runs in a READ ONLY, REPEATABLE READ transaction that first captures
//     pg_current_snapshot(); rows are kept in an InMemSelection keyed by primary key;
//  3. a high watermark row is inserted and committed;
//  4. the running Syncer drops every selected key that a transaction touched between
//     the two watermarks, or that a transaction invisible to the snapshot touched
//     (wherever its COMMIT lies before the high watermark), and at the high
//     watermark's COMMIT hands the remaining rows to HandleRefresh before any later
//     change;
//  5. dropped rows whose last change left TOASTed columns unchanged (not sent) are read
//     again in follow-up windows, by selectQuery restricted to their keys (the keys
//     they were moved to, for rows a key-changing update moved), and a
//     window disturbed by a change whose key could not be read runs again (at most
//     maxSettleRounds more windows).
//
// selectQuery must read exactly one table (found with EXPLAIN) that has a primary key,
// and return all its primary key columns under their names; a result column named like
// a table column must be that column of the key's row, or a value the caller computed
// (another column of the table under its name is refused), and columns of other names
// are up to the caller (SELECT * gives whole rows). It must be one statement that only
// reads, and must not take parameters; semicolons at its end are taken off.
// RefreshContext blocks until the rows were handed over, so the Syncer must be running
// (Run/Start in another goroutine). A call made before the Syncer's first Run waits
// for it (ctx bounds the wait, Close ends it); one made after Run returned, until Run
// is called again, fails at once with ErrRefreshAbandoned. It must not be called from
// a handler (MessageHandler, Batcher): the handler holds up the very delivery the call
// waits for, so it would wait until ctx ends; call it from another goroutine. Calls
// may overlap (from several goroutines, and
// with a Snapshot): each selection is judged on its own window.
//
// Errors: ErrConfig (bad query, EventsProcessor in use, the table not published, its
// key of a type without a default B-tree operator class, the
// watermark table not published or not there: a Syncer never set up; the message
// names the statement or call that fixes it), ErrInsufficientPrivilege (a privilege
// the selection needs, or row-level security policies that apply to the role on the
// table or the control tables: its SELECT, run with row_security off, would miss the
// rows they hide; checked before any watermark, the message names the fix),
// ErrPublicationMissing, ErrNoPrimaryKey,
// ErrRefreshAbandoned (the Syncer stopped or ctx ended before delivery, with ctx's
// error in the chain; with ErrClosed when Close ended it or was called before; or the
// server cut the SELECT short: statement_timeout, a lock timeout, a deadlock), server
// errors (a lost connection while the query is planned is one, not ErrConfig).
//
// The query's planning, its selection and the watermarks' INSERTs wait for locks
// other transactions hold on the table or the watermark table (an ALTER TABLE or
// LOCK TABLE left open, a prepared transaction's lock), bounded by ctx. A wait of
// more than 2 s is logged (Warn) naming the table and the holder (PID and state, or
// the prepared transaction's gid), and the error that ends a wait names them too
// (docs/SNAPSHOTS.md, "A selection waiting for a lock says who holds it").
func (s *Syncer) RefreshContext(ctx context.Context, selectQuery string) (_ RefreshStats, err error) {
	if err := s.refreshAllowed(); err != nil {
		return RefreshStats{}, err
	}
	ctx, end, err := s.beginCall(ctx)
	if err != nil {
		return RefreshStats{}, err
	}
	defer func() { err = end(err) }()
	selectQuery = trimQuery(selectQuery)
	info, plan, err := s.queryTable(ctx, selectQuery)
	if err != nil {
		return RefreshStats{}, err
	}
	cols, err := s.queryColumns(ctx, selectQuery)
	if err != nil {
		return RefreshStats{}, err
	}
	for _, k := range info.PrimaryKey {
		if !containsString(cols, k) {
			return RefreshStats{}, fmt.Errorf("%w: Refresh query must return the primary key column %q of %s", ErrConfig, k, info.QualifiedName())
		}
	}
	if err := checkKeyOutputs(info, cols, plan); err != nil {
		return RefreshStats{}, err
	}
	if err := s.checkSelectionPrivileges(ctx, info, nil); err != nil {
		return RefreshStats{}, err
	}
	stats, _, err := s.selectSettled(ctx, info, cols, refreshQuery(info, cols, selectQuery))
	return stats, err
}

// trimQuery prepares a Refresh query for the statements that wrap it
// ("SELECT ... FROM (<query>\n) AS q"): the semicolons and white space it ends with
// are taken off (a query as written in psql), and it ends with a line break, so a
// line comment at its end ends there. A query ends outside any literal, quoted name
// or block comment, so its last semicolons are statement ends (or inside a line
// comment, which stays one).
func trimQuery(q string) string {
	return strings.TrimRight(q, " \t\r\n\f;") + "\n"
}

// refreshQuery is a Refresh's selection: the caller's query, whose result columns are
// cols. They may be expressions of any type, or table columns' names given to
// expressions: columnList without the table's column types selects them as they are
// (formPlain) or as text. Rows read again in a follow-up window are read by the same
// query restricted to their keys (refreshKeysQuery), so they have its columns and
// meaning.
func refreshQuery(info *PGTableInfo, cols []string, query string) selQuery {
	return selQuery{build: func(form selectForm) string {
		return "SELECT " + refreshColumnList(info, cols, form) + " FROM (" + query + ") AS q"
	}, reread: func(keys [][]string) selQuery { return refreshKeysQuery(info, cols, query, keys) }}
}

// refreshColumnList is the select list of a Refresh query's result columns cols (of
// alias q) in the given form (columnList without the table's column types), except
// that the key columns are cast back to the key's types, modifier included
// (CAST(q.code AS character(5))): a query may return a key column under another type
// (code::text AS code), whose text need not be the key's (char(n)::text drops the
// padding pgoutput sends), and the key columns' texts make the rows' record IDs,
// which must be those of the rows' changes (TestRefreshKeyCastKeepsRecordIDs). For
// a column of the key's own type the cast changes nothing.
func refreshColumnList(info *PGTableInfo, cols []string, form selectForm) string {
	parts := make([]string, len(cols))
	for i, c := range cols {
		col := info.ColInfo[c]
		if col == nil || !containsString(info.PrimaryKey, c) {
			parts[i] = columnList(nil, "q", []string{c}, form)
			continue
		}
		expr := "CAST(q." + pq.QuoteIdentifier(c) + " AS " + col.ColumnType + ")"
		if form == formPlain {
			parts[i] = expr + " AS " + pq.QuoteIdentifier(c)
		} else {
			parts[i] = "CASE WHEN pg_catalog.num_nulls(" + expr + ") OPERATOR(pg_catalog.=) 1 THEN NULL ELSE pg_catalog.format('%s', " + expr + ") END AS " + pq.QuoteIdentifier(c)
		}
	}
	return strings.Join(parts, ", ")
}

// refreshKeysQuery is a Refresh query restricted to the rows whose key columns (as
// the query returns them) have the given values (texts in key order, bound as
// parameters cast to the key columns' types), in key order:
//
//	SELECT ... FROM (<query>) AS q
//	WHERE (CAST(q.k1 AS t1), CAST(q.k2 AS t2)) IN ((CAST($1::text AS t1(m)), CAST($2::text AS t2(m))), ...)
//
// PostgreSQL pushes the condition down into a simple query (an index scan on the
// key); a query that cannot take it (LIMIT, DISTINCT ON, window functions) is
// computed and then filtered, which keeps its meaning.
func refreshKeysQuery(info *PGTableInfo, cols []string, query string, keys [][]string) selQuery {
	tuples, args := keyTuples(info, keys)
	kc := castKeyColumnList(info, "q")
	tail := " FROM (" + query + ") AS q WHERE " + keyIn(info, kc, tuples) + " ORDER BY " + strings.Join(kc, ", ")
	return selQuery{build: func(form selectForm) string {
		return "SELECT " + refreshColumnList(info, cols, form) + tail
	}, args: args, rows: len(keys), reread: func(keys [][]string) selQuery { return refreshKeysQuery(info, cols, query, keys) }}
}

// refuseControlTable refuses a selection of dbsync's own tables (the watermark table
// is in the publication, so a list of its tables names it): their rows are never
// delivered, and a selection of the watermark table would read its own watermarks.
func (s *Syncer) refuseControlTable(t qualifiedTable) error {
	if t.schema == s.ctrlNamespace && (t.name == s.wmTableName || t.name == snapshotProgressTable) {
		return fmt.Errorf("%w: %s.%s is dbsync's own table (in the control schema): its rows are never delivered, so it cannot be snapshotted or refreshed", ErrConfig, t.schema, t.name)
	}
	return nil
}

func (s *Syncer) refreshAllowed() error {
	s.mu.Lock()
	closed := s.closed
	s.mu.Unlock()
	if closed {
		return fmt.Errorf("%w: %w", ErrRefreshAbandoned, ErrClosed)
	}
	if s.EventsProcessor != nil {
		return fmt.Errorf("%w: Refresh and Snapshot deliver through MessageHandler/Batcher, not an EventsProcessor", ErrConfig)
	}
	return nil
}

// selOutcome is what one selection window did.
type selOutcome struct {
	selected, emitted int
	lastKey           []string   // key columns (text) of the last selected row; nil: no rows
	reread            [][]string // key columns (text) of rows to read again
	retry             bool       // nothing was emitted: run the selection again
}

// maxSettleRounds bounds the follow-up windows one selection may need: up to this many
// retries after the first window (so a selection ends after maxSettleRounds+1 windows).
const maxSettleRounds = 5

// retrySelectionDelay is the wait before the first re-run of a selection that must
// run again; it doubles for each further re-run (50 ms .. 800 ms, 1.55 s in all).
const retrySelectionDelay = 50 * time.Millisecond

// selectSettled runs a selection and its follow-ups (settle). It returns the stats and
// the first window's lastKey.
func (s *Syncer) selectSettled(ctx context.Context, info *PGTableInfo, cols []string, q selQuery) (RefreshStats, []string, error) {
	p, err := s.openSelection(ctx, info, cols, q)
	if err != nil {
		return RefreshStats{}, nil, err
	}
	return s.settle(ctx, p)
}

// settle waits for an open selection's refresh rows to be handed over and runs its
// follow-ups: rows that need reading again (emission.reread) are read in further
// windows, and a selection disturbed by changes whose key could not be read runs
// again (p.query, after a growing delay), up to maxSettleRounds. It returns the
// stats and the first window's lastKey. p is closed.
func (s *Syncer) settle(ctx context.Context, p *pendingSelection) (RefreshStats, []string, error) {
	var stats RefreshStats
	var lastKey []string
	first := true
	info, cols := p.info, p.cols
	for round := 0; ; round++ {
		out, err := p.wait(ctx)
		if err != nil {
			return stats, nil, err
		}
		if out.retry {
			if round >= maxSettleRounds {
				return stats, nil, fmt.Errorf("%w: %s: in %d windows in a row the table was touched by a change whose key could not be read (REPLICA IDENTITY NOTHING, a TOASTed key column) or by a transaction committed but not yet visible to the SELECT (e.g. waiting for a synchronous standby); try again later",
					ErrRefreshAbandoned, info.QualifiedName(), round+1)
			}
			// Give a committed-but-invisible transaction time to become visible.
			t := time.NewTimer(retrySelectionDelay << round)
			select {
			case <-ctx.Done():
				t.Stop()
				return stats, nil, fmt.Errorf("%w: %w", ErrRefreshAbandoned, ctx.Err())
			case <-t.C:
			}
			if p, err = s.openSelection(ctx, info, cols, p.query); err != nil {
				return stats, nil, err
			}
			continue
		}
		if first {
			stats.Selected, lastKey, first = out.selected, out.lastKey, false
		}
		stats.Emitted += out.emitted
		if len(out.reread) == 0 {
			return stats, lastKey, nil
		}
		if round >= maxSettleRounds {
			stats.Unsettled = len(out.reread)
			s.log.Warn("dbsync: rows kept changing with unchanged TOAST values inside refresh windows; their TOASTed columns reach consumers only when they change or are refreshed again",
				"table", info.QualifiedName(), "rows", len(out.reread))
			return stats, lastKey, nil
		}
		stats.Reread += len(out.reread)
		if p.query.reread == nil {
			return stats, nil, fmt.Errorf("dbsync: selection on %s has no query to read %d dropped rows again (a bug in dbsync)", info.QualifiedName(), len(out.reread))
		}
		if p, err = s.openSelection(ctx, info, cols, p.query.reread(out.reread)); err != nil {
			return stats, nil, err
		}
	}
}

// pendingSelection is a selection whose high watermark was written: its refresh rows
// are handed over when the Syncer delivers that watermark's COMMIT.
type pendingSelection struct {
	s     *Syncer
	id    string
	info  *PGTableInfo
	cols  []string
	query selQuery // run again as is when the window asks for a retry
	rows  *InMemSelection
	// selected and lastKey (key columns, as text, of the last selected row; nil: no
	// rows) describe what the SELECT returned.
	selected int
	lastKey  []string
	done     <-chan selDone
	closed   bool
	// ctx is the context the selection was opened with.
	ctx context.Context
	// nothingWritten: the low watermark's INSERT failed on the server, so the
	// selection left no row in the watermark table (close deletes none).
	nothingWritten bool
}

// maxSelectionReopens is how many times in a row openSelection opens a selection
// again after its session was lost (a server restart or crash, pg_terminate_backend):
// with newRetryBackoff's waits, about 25 s in all.
const maxSelectionReopens = 8

// openSelection opens a selection (openSelectionOnce). When the selection's session
// is lost on the way (isTransient: the server restarted or crashed, the session was
// terminated, the connection broke), nothing of it was delivered and its watermarks
// belong to no selection any more, so it is opened again, under a new ID, after
// newRetryBackoff's wait, up to maxSelectionReopens times; then, or when ctx ends
// meanwhile, it fails with ErrRefreshAbandoned saying to run it again. database/sql
// already retries a statement whose connection was found broken before it was sent;
// this covers a session lost while a statement ran (the chunk's SELECT, a watermark's
// INSERT), which the driver cannot retry (TestSnapshotSelectionSessionLost).
func (s *Syncer) openSelection(ctx context.Context, info *PGTableInfo, cols []string, q selQuery) (*pendingSelection, error) {
	var wait *backoff.ExponentialBackOff
	for lost := 0; ; lost++ {
		p, err := s.openSelectionOnce(ctx, info, cols, q)
		if err != nil && ctx.Err() != nil && !errors.Is(err, ErrRefreshAbandoned) {
			// The caller's context ended: nothing of the selection was delivered. The
			// read it cut short may fail in its own words (a pgx read ended mid-row:
			// "selection rows lost in decoding", "bad connection"): ctx's error is
			// the cause, and named.
			if errors.Is(err, ctx.Err()) {
				return nil, fmt.Errorf("%w: selection on %s: %w", ErrRefreshAbandoned, info.QualifiedName(), err)
			}
			return nil, fmt.Errorf("%w: selection on %s: %w (%w)", ErrRefreshAbandoned, info.QualifiedName(), ctx.Err(), err)
		}
		if err == nil || !isTransient(err) {
			return p, err
		}
		if ctx.Err() != nil {
			return nil, fmt.Errorf("%w: selection on %s: %w (its session was lost too: %w)", ErrRefreshAbandoned, info.QualifiedName(), ctx.Err(), err)
		}
		if lost >= maxSelectionReopens {
			return nil, fmt.Errorf("%w: selection on %s lost its session to the server %d times in a row (server restarting or unreachable?); nothing of it was delivered: call Refresh or Snapshot again once the server is back (Snapshot resumes after the last finished chunk): %w",
				ErrRefreshAbandoned, info.QualifiedName(), lost+1, err)
		}
		if wait == nil {
			wait = newRetryBackoff()
		}
		d := wait.NextBackOff()
		s.selectionReopens.Add(1)
		s.log.Warn("dbsync: selection lost its session; opening it again", "table", info.QualifiedName(), "err", err, "retry_in", d)
		if !sleepCtx(ctx, d) {
			return nil, fmt.Errorf("%w: selection on %s: %w (its session was lost: %w)", ErrRefreshAbandoned, info.QualifiedName(), ctx.Err(), err)
		}
	}
}

// openSelectionOnce runs the first half of one watermark window for a SELECT over info's
// table whose result columns are cols, each as text (selectList): register, low
// watermark, SELECT, high watermark. It does not wait for the high watermark to be
// delivered (pendingSelection.wait), so several selections can be in flight at once.
// On error the selection is closed.
func (s *Syncer) openSelectionOnce(ctx context.Context, info *PGTableInfo, cols []string, q selQuery) (*pendingSelection, error) {
	if err := s.refreshAllowed(); err != nil {
		return nil, err
	}
	id := s.runID + "-" + strconv.FormatUint(s.selSeq.Add(1), 10)
	p := &pendingSelection{s: s, id: id, info: info, cols: cols, query: q, ctx: ctx}
	p.done = s.win.register(id, info.RelationID)
	select {
	case r := <-p.done: // the Syncer is not running
		p.close()
		return nil, r.err
	default:
	}
	fail := func(err error) (*pendingSelection, error) {
		p.close()
		return nil, err
	}
	if err := s.writeWatermark(ctx, id, wmLow); err != nil {
		if _, _, server := serverError(err); server {
			// The server refused the INSERT (its wait for the watermark table's lock
			// cancelled, a timeout): it rolled back, so no row of the selection is
			// there to delete, and deleting would wait for that lock once more, up to
			// deleteWatermarks' 10 s, after ctx ended (TestSelectionLockWaitNamesHolder).
			p.nothingWritten = true
		}
		return fail(err)
	}
	rows, snap, lastKey, err := s.selectRows(ctx, info, cols, q)
	if err != nil {
		return fail(err)
	}
	p.rows, p.selected, p.lastKey = rows, rows.Len(), lastKey
	if !s.win.setRows(id, rows, snap) {
		select {
		case r := <-p.done: // failed meanwhile (the Syncer stopped, a watermark was lost)
			if r.err != nil {
				return fail(r.err)
			}
		default:
		}
		return fail(fmt.Errorf("%w: selection %s was dropped before its rows were read", ErrRefreshAbandoned, id))
	}
	if hook := s.win.afterSelect; hook != nil {
		hook()
	}
	if err := s.writeWatermark(ctx, id, wmHigh); err != nil {
		// The INSERT may have committed though its reply was lost (the session
		// ended after the commit), and the poller may have met it already: then
		// the selection's rows are (being) handed over, and wait gets the outcome.
		if s.win.releaseUnlessSeen(id) {
			return p, nil
		}
		return fail(err)
	}
	s.Wake()
	return p, nil
}

// wait blocks until the selection's refresh rows were handed over (or the Syncer
// stopped, or ctx ended) and closes it.
func (p *pendingSelection) wait(ctx context.Context) (selOutcome, error) {
	defer p.close()
	out := selOutcome{selected: p.selected, lastKey: p.lastKey}
	var r selDone
	select {
	case r = <-p.done:
	case <-ctx.Done():
		// The rows may have been handed over as ctx ended (Close ends ctx right
		// after the last poll): that outcome wins.
		select {
		case r = <-p.done:
		default:
			return out, fmt.Errorf("%w: %w", ErrRefreshAbandoned, ctx.Err())
		}
	}
	if r.err != nil {
		return out, r.err
	}
	out.emitted, out.retry = r.emitted, r.retry
	out.reread = append(p.rows.keyTextsOf(r.reread), r.rereadMoved...)
	return out, nil
}

// close forgets the selection and deletes its watermark rows (if it may have written
// any); it may be called more than once.
func (p *pendingSelection) close() {
	if p.closed {
		return
	}
	p.closed = true
	p.s.win.release(p.id)
	if !p.nothingWritten {
		bound := deleteWatermarksTimeout
		if p.ctx != nil && p.ctx.Err() != nil {
			// The caller's context ended (or Close ended it): the call returns soon
			// after, not up to 10 s later when the watermark table is locked (its
			// rows are then deleted with the next selection's).
			bound = deleteWatermarksEndedTimeout
		}
		p.s.deleteWatermarks(p.id, bound)
	}
}

// keysQuery selects the table's rows with the given keys (each key's columns in key
// order, in the text form PostgreSQL prints them, bound as text and cast to the
// columns' types), its columns cols in the transport's form, in primary key order.
func keysQuery(info *PGTableInfo, cols []string, keys [][]string) selQuery {
	tuples, args := keyTuples(info, keys)
	kc := keyColumns(info, "t")
	tail := fromTable(info) + " WHERE " + keyIn(info, kc, tuples) + " ORDER BY " + strings.Join(kc, ", ")
	return selQuery{build: func(form selectForm) string {
		return "SELECT " + columnList(info, "t", cols, form) + tail
	}, args: args, unique: true, rows: len(keys), reread: tableReread(info, cols)}
}

// tableReread reads rows of a selection of the table's columns cols again by key.
func tableReread(info *PGTableInfo, cols []string) func(keys [][]string) selQuery {
	return func(keys [][]string) selQuery { return keysQuery(info, cols, keys) }
}

// keyTuples returns, for keys (each key's column texts in key order), each key's
// parameters "CAST($1::text AS t1)", ... (keyParamList) and the parameters they bind.
func keyTuples(info *PGTableInfo, keys [][]string) ([][]string, []any) {
	tuples := make([][]string, len(keys))
	var args []any
	for i, k := range keys {
		tuples[i] = keyParamList(info, len(args))
		for _, v := range k {
			args = append(args, v)
		}
	}
	return tuples, args
}

// keyIn is the condition that the key columns kc (expressions, one per key column of
// info) equal one of tuples (keyTuples): (kc) IN ((tuple), ...), with the equality
// written by keyOperators. Qualified, it is kc = ANY (ARRAY[...]) for a key of one
// column that is not an array (an index scan takes the array whole, as it takes IN;
// ARRAY[] of arrays would be one array of more dimensions) and otherwise the
// equalities ORed, which is what IN of row constructors stands for: of the rows
// when one operator serves every column, else of each column's own.
func keyIn(info *PGTableInfo, kc []string, tuples [][]string) string {
	eq, colEq := keyOperators(info, "=")
	row := strings.Join(kc, ", ")
	if eq != "" && eq != "=" && len(info.PrimaryKey) == 1 && !strings.HasSuffix(info.ColInfo[info.PrimaryKey[0]].ColumnType, "]") {
		joined := make([]string, len(tuples))
		for i, t := range tuples {
			joined[i] = strings.Join(t, ", ")
		}
		return row + " " + eq + " ANY (ARRAY[" + strings.Join(joined, ", ") + "])"
	}
	parts := make([]string, len(tuples))
	for i, t := range tuples {
		switch {
		case eq == "=":
			parts[i] = "(" + strings.Join(t, ", ") + ")"
		case eq != "":
			parts[i] = "(" + row + ") " + eq + " (" + strings.Join(t, ", ") + ")"
		default:
			conds := make([]string, len(kc))
			for j := range kc {
				conds[j] = kc[j] + " " + colEq[j] + " " + t[j]
			}
			parts[i] = "(" + strings.Join(conds, " AND ") + ")"
		}
	}
	if eq == "=" {
		return "(" + row + ") IN (" + strings.Join(parts, ", ") + ")"
	}
	return "(" + strings.Join(parts, " OR ") + ")"
}

// keyOperators is the comparison operator op (=, >, <=, >=) as selections compare
// key columns. When every key column is of a built-in type (an OID below 16384,
// FirstNormalObjectId: its B-tree operators are pg_catalog's) it is
// OPERATOR(pg_catalog.op), so that an operator of that name in a schema on the
// role's search_path cannot take the comparison over, whether the schema comes
// before pg_catalog or holds an exact match pg_catalog lacks, such as
// >(varchar, varchar) (the CVE-2018-1058 class; TestSearchPathShadowsKeyOperators).
// A key of other types (an extension's, such as citext; an enum; a domain) compares
// with the operators of its columns' types' default B-tree operator classes (a
// domain's: its base type's), the ones ORDER BY and the key's index use, named with
// their schemas: OPERATOR("schema".name). shared is that one operator when it serves
// every column (the same schema and name for all: a row comparison names one
// operator); otherwise shared is "" and perColumn holds each key column's, for
// conditions written column by column (keyIn, keyCompare). A description not read
// from the catalog (built by hand) keeps the bare op. A type without a default B-tree
// class (checkKeyOrdering refuses selections of it) keeps the bare op too.
func keyOperators(info *PGTableInfo, op string) (shared string, perColumn []string) {
	builtin := true
	for _, k := range info.PrimaryKey {
		c := info.ColInfo[k]
		if c == nil || c.TypeOID == 0 || c.TypeOID >= 16384 {
			builtin = false
			break
		}
	}
	if builtin {
		return "OPERATOR(pg_catalog." + op + ")", nil
	}
	perColumn = columnOperators(info, op)
	if perColumn == nil {
		return op, nil
	}
	for _, o := range perColumn[1:] {
		if o != perColumn[0] {
			return "", perColumn
		}
	}
	return perColumn[0], nil
}

// columnOperators is, for each key column, OPERATOR("schema".name) of its type's
// default B-tree operator class for op (=, >, <=, >=); nil when a key column has no
// class known (keyOperators).
func columnOperators(info *PGTableInfo, op string) []string {
	out := make([]string, len(info.PrimaryKey))
	for i, k := range info.PrimaryKey {
		c := info.ColInfo[k]
		if c == nil || c.ordering == nil {
			return nil
		}
		out[i] = c.ordering.operator(op)
	}
	return out
}

// checkKeyOrdering refuses a selection of a table whose key has a column of a type
// without a default B-tree operator class (possible for the columns of a replica
// identity index of a non-default class): selections read a table in key order and
// compare keys with the class's operators, which it does not have. Errors wrap
// ErrConfig.
func checkKeyOrdering(info *PGTableInfo) error {
	for _, k := range info.PrimaryKey {
		if c := info.ColInfo[k]; c != nil && c.orderingLooked && c.ordering == nil {
			return fmt.Errorf("%w: %s: key column %q is of type %s, which has no default B-tree operator class: snapshots and refreshes read a table in key order and compare keys with that class's operators; key the table by columns of types that have one (or create a default B-tree operator class for %s)",
				ErrConfig, info.QualifiedName(), k, c.TypeName, c.TypeName)
		}
	}
	return nil
}

// fromTable is " FROM ONLY <table> AS t": the rows of the table itself. Rows of its
// inheritance children are not its rows: their changes arrive in the slot under the
// children's relation OIDs, and a selection's window matches changes by its table's
// OID, so a child row changed inside the window would be emitted stale under the
// parent's name (a child is snapshotted by its own name). A partitioned table has
// no rows of its own; a selection reads one (info.partitioned) only when the
// publication publishes its partitions' changes under its OID
// (publish_via_partition_root), so it is read whole: " FROM <table> AS t".
func fromTable(info *PGTableInfo) string {
	if info.partitioned {
		return " FROM " + info.QuotedName() + " AS t"
	}
	return " FROM ONLY " + info.QuotedName() + " AS t"
}

// keyColumnList is "t.k1, t.k2": the primary key columns of alias t.
func keyColumnList(info *PGTableInfo) string { return keyColumnListOf(info, "t") }

// keyColumnListOf is "alias.k1, alias.k2": the primary key columns of alias.
func keyColumnListOf(info *PGTableInfo, alias string) string {
	return strings.Join(keyColumns(info, alias), ", ")
}

// keyColumns is keyColumnListOf's list: "alias.k1", "alias.k2".
func keyColumns(info *PGTableInfo, alias string) []string {
	keys := make([]string, len(info.PrimaryKey))
	for i, k := range info.PrimaryKey {
		keys[i] = pq.QuoteIdentifier(alias) + "." + pq.QuoteIdentifier(k)
	}
	return keys
}

// castKeyColumns is "CAST(alias.k1 AS type1), ...": the key columns of a query's
// result, cast to the types (without modifier: TypeName) of the table's key columns.
// A query may return a key column under another type (id::text AS id) whose values
// cannot be compared with the key's; cast, they can. For a column of the key's own
// type the cast is no expression at all (PostgreSQL's coerce_type returns a node of
// the target type unchanged, and applies no length coercion for a modifier of -1), so
// the condition still reaches the table's key index (TestRefreshRereadKeyTypes).
func castKeyColumns(info *PGTableInfo, alias string) string {
	return strings.Join(castKeyColumnList(info, alias), ", ")
}

// castKeyColumnList is castKeyColumns' list.
func castKeyColumnList(info *PGTableInfo, alias string) []string {
	keys := make([]string, len(info.PrimaryKey))
	for i, k := range info.PrimaryKey {
		keys[i] = "CAST(" + pq.QuoteIdentifier(alias) + "." + pq.QuoteIdentifier(k) + " AS " + info.ColInfo[k].TypeName + ")"
	}
	return keys
}

// keyParams is "CAST($n+1::text AS type1), CAST($n+2::text AS type2)": parameters for
// one key, cast to the key columns' types (format_type() output is a correctly quoted
// type name). The parameters are the key columns' texts (as the types' output
// functions print them), so the casts are the types' input functions. They are
// declared text: a parameter the server would describe as the key's type is encoded
// by the driver for that type, and lib/pq sends a string described as bytea as its
// bytes (the text \xff01 became the six bytes 5c 78 66 66 30 31), so a bytea bound
// compared wrong and a snapshot re-read the same chunk forever
// (TestSnapshotByteaKeyLibPQ).
func keyParams(info *PGTableInfo, n int) string { return strings.Join(keyParamList(info, n), ", ") }

// keyParamList is keyParams' list, one parameter per key column.
func keyParamList(info *PGTableInfo, n int) []string {
	params := make([]string, len(info.PrimaryKey))
	for i, k := range info.PrimaryKey {
		params[i] = "CAST($" + strconv.Itoa(n+i+1) + "::pg_catalog.text AS " + info.ColInfo[k].ColumnType + ")"
	}
	return params
}

// keySignature names the table's key columns and their types: key texts collected
// under one signature are no keys of a table whose signature differs.
func keySignature(info *PGTableInfo) string {
	parts := make([]string, len(info.PrimaryKey))
	for i, k := range info.PrimaryKey {
		parts[i] = pq.QuoteIdentifier(k) + " " + info.ColInfo[k].ColumnType
	}
	return strings.Join(parts, ", ")
}

// writeWatermark inserts and commits one watermark row, and tells the window tracker,
// which checks that it reaches the slot (windowTracker.pending).
//
// A row already there under the watermark table's primary key (selection_id,
// wm_type) is this very row: selection IDs carry this Syncer's random run ID, so only
// an earlier attempt of this statement can have written it. That happens when the
// INSERT committed but its session ended before the reply was read: lib/pq reports the
// EOF as driver.ErrBadConn and database/sql sends the INSERT again on a new
// connection. The first row committed and is in the slot, so the watermark is written
// (TestWatermarkInsertResentAfterLostReply). ON CONFLICT names the key, so a
// violation of any other unique index still fails the statement.
func (s *Syncer) writeWatermark(ctx context.Context, id string, kind wmKind) error {
	stmt := "INSERT INTO " + pq.QuoteIdentifier(s.ctrlNamespace) + "." + pq.QuoteIdentifier(s.wmTableName) +
		" (selection_id, wm_type) VALUES ($1, $2) ON CONFLICT (selection_id, wm_type) DO NOTHING"
	s.win.expect(id, kind)
	watch := s.watchLock(ctx, pq.QuoteIdentifier(s.ctrlNamespace)+"."+pq.QuoteIdentifier(s.wmTableName), "", rowExclusiveConflicts,
		fmt.Sprintf("writing the %s watermark of selection %s", kind, id))
	_, err := s.db.ExecContext(ctx, stmt, id, string(kind))
	if err = watch.end(err); err != nil {
		return classify(err, fmt.Sprintf("write %s watermark of selection %s", kind, id))
	}
	s.win.wrote(id, kind)
	return nil
}

// Bounds of deleteWatermarks: for a selection that ended normally, and for one whose
// caller's context ended.
const (
	deleteWatermarksTimeout      = 10 * time.Second
	deleteWatermarksEndedTimeout = time.Second
)

// deleteWatermarks removes a finished selection's watermark rows (their DELETEs reach
// the log and are ignored), together with those of earlier selections whose
// deletion failed (strayWatermarks). A pooled session may have died with the server
// (a restart while the selection ran) before the pool noticed, so a deletion that
// fails on a lost session is tried once more at once; when it still fails the IDs are
// kept and deleted with the next selection's rows. Rows left by a crash of this
// process are ignored too: their selection IDs belong to no registered selection.
//
// bound limits the deletion (deleteWatermarksTimeout; deleteWatermarksEndedTimeout
// for a selection whose caller's context ended, so that a locked watermark table
// does not hold the call up long after it: TestSelectionLockWaitNamesHolder).
func (s *Syncer) deleteWatermarks(id string, bound time.Duration) {
	s.strayMu.Lock()
	ids := append([]string{id}, s.strayWatermarks...)
	s.strayMu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), bound)
	defer cancel()
	stmt := "DELETE FROM " + pq.QuoteIdentifier(s.ctrlNamespace) + "." + pq.QuoteIdentifier(s.wmTableName) + " WHERE selection_id OPERATOR(pg_catalog.=) ANY ($1)"
	_, err := s.db.ExecContext(ctx, stmt, pq.StringArray(ids))
	if err != nil && isTransient(err) {
		_, err = s.db.ExecContext(ctx, stmt, pq.StringArray(ids))
	}
	s.strayMu.Lock()
	defer s.strayMu.Unlock()
	if err != nil {
		if !containsString(s.strayWatermarks, id) {
			s.strayWatermarks = append(s.strayWatermarks, id)
		}
		s.log.Warn("dbsync: could not delete watermark rows; they are deleted with the next selection's", "selections", len(s.strayWatermarks), "err", err)
		return
	}
	kept := s.strayWatermarks[:0]
	for _, k := range s.strayWatermarks {
		if !containsString(ids, k) {
			kept = append(kept, k)
		}
	}
	s.strayWatermarks = kept
}

// refreshQueryErr names an error of describing or planning a Refresh query: the
// server's refusal of the query is ErrConfig (a syntax error, an unknown table or
// column); the caller's context ending is ErrRefreshAbandoned with the context's
// error, and so is the server cutting the statement short (selectionCutShort: a
// statement_timeout or lock_timeout while it waits for a lock on the table,
// TestRefreshPlanningCutShort); a lost connection or a server shutting down is
// neither (the query may be fine: run it again).
func refreshQueryErr(ctx context.Context, err error, what string) error {
	if ctx.Err() != nil {
		return fmt.Errorf("%w: Refresh query: %w (%w)", ErrRefreshAbandoned, ctx.Err(), classify(err, what))
	}
	if why := selectionCutShort(err); why != "" {
		return fmt.Errorf("%w: Refresh query: %s; nothing was written: run it again: %w", ErrRefreshAbandoned, why, classify(err, what))
	}
	if _, _, server := serverError(err); !server || isTransient(err) {
		return fmt.Errorf("Refresh query: %w", classify(err, what))
	}
	return fmt.Errorf("%w: Refresh query: %w", ErrConfig, classify(err, what))
}

// queryColumns returns the result column names of a query (without running it).
//
// With pgx's driver the wrapped query is only described, as an unnamed statement on
// pgx's own connection (sql.Conn.Raw): through database/sql, pgx's default
// statement cache (and cache_describe's description cache) kept the statement by its
// text, so once the table gained or lost a column the same Refresh query failed, as
// ErrConfig "cached plan must not change result type" (0A000) or a protocol error
// "bind message has 2 result formats but query has 3 columns" (08P01), on every
// pooled connection that had run it (TestRefreshAfterDDLPgxCaches).
func (s *Syncer) queryColumns(ctx context.Context, query string) ([]string, error) {
	wrapped := "SELECT * FROM (" + query + ") AS q LIMIT 0"
	cols, err := s.describeColumns(ctx, wrapped)
	if err != nil {
		if hasSQLState(err, "42601") {
			// EXPLAIN took the query: what it ends with does not fit in a subquery.
			return nil, fmt.Errorf("%w: Refresh query cannot be read as a subquery (SELECT * FROM (<query>) AS q); write it as one SELECT without a semicolon or a comment after it: %w", ErrConfig, err)
		}
		return nil, refreshQueryErr(ctx, err, "describe query")
	}
	seen := map[string]bool{}
	for _, c := range cols {
		if seen[c] {
			return nil, fmt.Errorf("%w: Refresh query returns column %q twice; alias it", ErrConfig, c)
		}
		seen[c] = true
	}
	return cols, nil
}

// describeColumns returns the result column names of query (one statement without
// parameters): described on pgx's own connection when the pool is pgx's driver (no
// statement or description cache of pgx's is used), else run through database/sql.
func (s *Syncer) describeColumns(ctx context.Context, query string) ([]string, error) {
	conn, err := s.db.Conn(ctx)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	var cols []string
	native := false
	err = conn.Raw(func(dc any) error {
		pc, ok := dc.(pgxConner)
		if !ok {
			return nil
		}
		native = true
		sd, err := pc.Conn().PgConn().Prepare(ctx, "", query, nil)
		if err != nil {
			return err
		}
		cols = make([]string, len(sd.Fields))
		for i, f := range sd.Fields {
			cols[i] = f.Name
		}
		return nil
	})
	if native || err != nil {
		return cols, err
	}
	rows, err := conn.QueryContext(ctx, query)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	return rows.Columns()
}

// explainQuery returns EXPLAIN (VERBOSE, FORMAT JSON) of a Refresh query, which plans
// it without running it. The statement is prepared first: PostgreSQL's extended
// protocol refuses a string of several statements (42601), where lib/pq's simple
// protocol (a query without arguments) would run them all, so "SELECT * FROM t; DROP
// TABLE u" would drop the table before the SELECT were found wanting. Every later
// statement that wraps the query (queryColumns, the selection) runs only once its
// EXPLAIN passed, and a string that closes the wrapper's parenthesis to smuggle in a
// statement is no valid statement here.
func (s *Syncer) explainQuery(ctx context.Context, query string) (_ string, err error) {
	// Planning locks the tables the query reads: it waits for a lock another
	// transaction holds on one (watchLock; the table is found by the waiting
	// session's statement, so only once the wait lasted lockWaitWarnAfter).
	explain := "EXPLAIN (VERBOSE, FORMAT JSON) " + query
	watch := s.watchLock(ctx, "", explain, accessShareConflicts, "planning a Refresh query")
	defer func() { err = watch.end(err) }()
	stmt, err := s.db.PrepareContext(ctx, explain)
	if err != nil {
		if hasSQLState(err, "42601") && strings.Contains(err.Error(), "multiple commands") {
			return "", fmt.Errorf("%w: a Refresh query must be one SELECT statement, without a second statement after a semicolon: %w", ErrConfig, err)
		}
		if hasSQLState(err, "42501") {
			return "", s.selectionDenied(ctx, err)
		}
		return "", refreshQueryErr(ctx, err, "explain query")
	}
	defer stmt.Close()
	var plan string
	if err := stmt.QueryRowContext(ctx).Scan(&plan); err != nil {
		if _, _, server := serverError(err); !server && strings.Contains(err.Error(), "arguments") {
			// database/sql's "sql: expected n arguments, got 0": the query has $n
			// placeholders.
			return "", fmt.Errorf("%w: a Refresh query takes no parameters ($1, ...); write the values into it (pq.QuoteLiteral quotes a string): %w", ErrConfig, err)
		}
		if hasSQLState(err, "42501") {
			return "", s.selectionDenied(ctx, err)
		}
		return "", refreshQueryErr(ctx, err, "explain query")
	}
	return plan, nil
}

// explainRLSRefused plans a Refresh query (which EXPLAIN already took) again with
// row_security off, as its selection would run: when row-level security applies to
// the role on a table the query reads, the server refuses (42501), and the error is
// ErrInsufficientPrivilege naming the fix (the server's error names the table). nil
// when the plan is refused for no such reason or the check cannot be made (the
// caller's error stands).
func (s *Syncer) explainRLSRefused(ctx context.Context, query string) error {
	tx, err := s.db.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return nil
	}
	defer tx.Rollback()
	var role, applied string
	if err := tx.QueryRowContext(ctx, `SELECT current_user, pg_catalog.set_config('row_security', 'off', true)`).Scan(&role, &applied); err != nil {
		return nil
	}
	// Prepared (extended protocol: one statement only), as explainQuery does.
	stmt, err := tx.PrepareContext(ctx, "EXPLAIN (VERBOSE, FORMAT JSON) "+query)
	if err == nil {
		var plan string
		err = stmt.QueryRowContext(ctx).Scan(&plan)
		stmt.Close()
	}
	if code, msg, ok := serverError(err); !ok || code != "42501" || !strings.Contains(msg, "row-level security") {
		return nil
	}
	r := pq.QuoteIdentifier(role)
	return fmt.Errorf("%w: Refresh query: row-level security policies apply to role %s on the table it reads (the server names it) and hide rows from it (without a policy for the role: every row), so a selection would miss them; nothing was written; run, as a superuser,\n  ALTER ROLE %s BYPASSRLS;\nor run dbsync as the table's owner (without FORCE ROW LEVEL SECURITY), or turn row-level security off for the table (ALTER TABLE ... DISABLE ROW LEVEL SECURITY): %w",
		ErrInsufficientPrivilege, r, r, driverError(err))
}

// queryTable finds the one table a query reads, from EXPLAIN (VERBOSE, FORMAT JSON),
// and loads its description.
func (s *Syncer) queryTable(ctx context.Context, query string) (*PGTableInfo, planNode, error) {
	plan, err := s.explainQuery(ctx, query)
	if err != nil {
		return nil, planNode{}, err
	}
	var doc []struct {
		Plan planNode `json:"Plan"`
	}
	if err := json.Unmarshal([]byte(plan), &doc); err != nil || len(doc) != 1 {
		return nil, planNode{}, fmt.Errorf("dbsync: unexpected EXPLAIN output: %v", err)
	}
	if op := doc[0].Plan.modifies(); op != "" {
		return nil, planNode{}, fmt.Errorf("%w: a Refresh query must only read, and this one writes (%s in a WITH clause); run the change as a statement of its own and refresh with a plain SELECT",
			ErrConfig, op)
	}
	found := map[qualifiedTable]bool{}
	doc[0].Plan.tables(found)
	read := make([]qualifiedTable, 0, len(found))
	for k := range found {
		read = append(read, k)
	}
	// Partitions whose changes the publication publishes under their partitioned
	// table (publish_via_partition_root) are read as that table's rows.
	tables, err := s.publishedAs(ctx, read)
	if err != nil {
		return nil, planNode{}, err
	}
	if len(tables) == 0 {
		// Row-level security without a policy for the role hides every row: the
		// planner then drops the table from the plan.
		if err := s.explainRLSRefused(ctx, query); err != nil {
			return nil, planNode{}, err
		}
		return nil, planNode{}, fmt.Errorf("%w: a Refresh query must read exactly one table, and its plan reads none: it reads no table (a function, VALUES), or the planner found it returns no rows (WHERE false, a partition key outside every partition); there is nothing to refresh: select rows of one table",
			ErrConfig)
	}
	if len(tables) != 1 {
		names := make([]string, len(tables))
		for i, t := range tables {
			names[i] = t.schema + "." + t.name
		}
		sort.Strings(names)
		reads := strconv.Itoa(len(tables)) + " (" + strings.Join(names, ", ") + ")"
		return nil, planNode{}, fmt.Errorf("%w: a Refresh query must read exactly one table; it reads %s: select from one table, FROM ONLY for a table with inheritance children (refresh a child by its own name), and the partitions of a partitioned table one at a time unless the publication publishes their changes under the partitioned table (publish_via_partition_root = true)",
			ErrConfig, reads)
	}
	if err := s.refuseControlTable(tables[0]); err != nil {
		return nil, planNode{}, err
	}
	info, err := s.tableInfoByName(ctx, tables[0])
	return info, doc[0].Plan, err
}

// publishedAs returns the distinct tables whose names and OIDs the changes of tables
// carry in the slot (sql/published_as.sql): a partition's are its partitioned
// table's when the publication has publish_via_partition_root = true; any other
// table's are its own.
func (s *Syncer) publishedAs(ctx context.Context, tables []qualifiedTable) ([]qualifiedTable, error) {
	if len(tables) == 0 {
		return nil, nil
	}
	schemas, names := make([]string, len(tables)), make([]string, len(tables))
	for i, t := range tables {
		schemas[i], names[i] = t.schema, t.name
	}
	rows, err := s.db.QueryContext(ctx, sqlText("published_as.sql"), s.publication, pq.Array(schemas), pq.Array(names))
	if err != nil {
		return nil, classify(err, "find the tables whose changes carry the selected rows")
	}
	defer rows.Close()
	var out []qualifiedTable
	seen := map[qualifiedTable]bool{}
	for rows.Next() {
		var t qualifiedTable
		if err := rows.Scan(&t.schema, &t.name); err != nil {
			return nil, fmt.Errorf("find the tables whose changes carry the selected rows: %w", err)
		}
		if !seen[t] {
			seen[t] = true
			out = append(out, t)
		}
	}
	return out, classify(rows.Err(), "find the tables whose changes carry the selected rows")
}

type planNode struct {
	NodeType  string     `json:"Node Type"`
	Operation string     `json:"Operation"` // of a ModifyTable node
	Schema    string     `json:"Schema"`
	Relation  string     `json:"Relation Name"`
	Alias     string     `json:"Alias"`
	Output    []string   `json:"Output"` // VERBOSE: the node's result columns, deparsed
	Plans     []planNode `json:"Plans"`
}

// modifies returns the operation (Insert, Update, Delete, Merge) of the plan's first
// ModifyTable node: a data-modifying CTE. "" when the plan only reads.
func (p planNode) modifies() string {
	if p.NodeType == "ModifyTable" {
		if p.Operation != "" {
			return strings.ToUpper(p.Operation)
		}
		return "a data-modifying statement"
	}
	for _, c := range p.Plans {
		if op := c.modifies(); op != "" {
			return op
		}
	}
	return ""
}

// scanAliases adds the aliases under which the plan's nodes read tables.
func (p planNode) scanAliases(out map[string]bool) {
	if p.Relation != "" && p.Alias != "" {
		out[p.Alias] = true
	}
	for _, c := range p.Plans {
		c.scanAliases(out)
	}
}

// checkKeyOutputs refuses a Refresh query that returns another column of its table
// under the name of one of the table's columns (SELECT other AS id, a view renaming
// columns), or columns of different rows of the table (a self-join). The rows' record
// IDs are made of the result columns named like the key, and a result column named
// like a table column is delivered as that column, so such a row would be delivered
// under another row's record ID, or with values its row does not have. plan is the
// query's EXPLAIN (VERBOSE), whose top node's Output lists the result columns in
// order (then any kept only for sorting): a plain (possibly cast) column of a scan
// of the table there is that column of that scan's row. Anything else — an
// expression, a column of a subquery or CTE the planner kept — is not judged
// (docs/SNAPSHOTS.md).
func checkKeyOutputs(info *PGTableInfo, cols []string, plan planNode) error {
	aliases := map[string]bool{}
	plan.scanAliases(aliases)
	// Key columns first, so a key renamed is reported as such, and their scan is
	// the row the other columns must come from.
	order := append([]string(nil), info.PrimaryKey...)
	for _, c := range cols {
		if !containsString(order, c) {
			order = append(order, c)
		}
	}
	rowOf, rowCol := "", ""
	for _, c := range order {
		i := indexOf(cols, c)
		if i < 0 || i >= len(plan.Output) || info.ColInfo[c] == nil {
			continue
		}
		operand, casts := unwrapCasts(plan.Output[i])
		qual, name, ok := parseColumnRef(operand)
		// EXPLAIN leaves a column unqualified when the query has one range table
		// entry: the table read.
		if !ok || (qual != "" && !aliases[qual]) || info.ColInfo[name] == nil {
			continue
		}
		if name != c {
			what := "its column"
			if containsString(info.PrimaryKey, c) {
				what = "its key column"
			}
			return fmt.Errorf("%w: Refresh query returns column %q of %s under the name of %s %q, so its rows would be delivered under record IDs or with values that are not theirs; return the column itself (SELECT %s, ...) and give other columns other names",
				ErrConfig, name, info.QualifiedName(), what, c, pq.QuoteIdentifier(c))
		}
		if containsString(info.PrimaryKey, c) {
			// Each cast of the chain, judged against the key's own type: text and
			// wider integers hold every value of it, so casting back keeps it. A
			// domain prints as its base types do, so a cast kept by one of them is
			// kept by the domain (dci::citext, dint::bigint).
			from := info.ColInfo[c].ColumnType
			kept := func(to string) bool {
				if keyCastKeeps(from, to) {
					return true
				}
				for _, base := range info.ColInfo[c].domainBases {
					if keyCastKeeps(base, to) {
						return true
					}
				}
				return false
			}
			for j := len(casts) - 1; j >= 0; j-- {
				if !kept(casts[j]) {
					return fmt.Errorf("%w: Refresh query returns key column %q of %s cast from %s to %s, which may print a key otherwise than its changes do (numeric 1.5 as numeric(10,3) is 1.500): a row's record ID is made from that text, so its refresh rows would not match its changes, and the consumer would get a second row, never updated; return the key column as it is, or as text (SELECT %s, or %s::text AS %s)",
						ErrConfig, c, info.QualifiedName(), from, casts[j], pq.QuoteIdentifier(c), pq.QuoteIdentifier(c), pq.QuoteIdentifier(c))
				}
			}
		}
		if rowOf == "" {
			rowOf, rowCol = qual, c
		} else if qual != rowOf {
			return fmt.Errorf("%w: Refresh query returns columns of different rows of %s (%q of %s, %q of %s), so its rows would be delivered with values that are not theirs; return every column of the table from the row the key columns come from",
				ErrConfig, info.QualifiedName(), rowCol, rowOf, c, qual)
		}
	}
	return nil
}

// castTail is what follows a cast's operand: "::" and a type name as format_type
// prints it (character varying(10), timestamp with time zone, integer[],
// "My Type", s.t). EXPLAIN parenthesizes every operator expression, so no operator
// follows a top-level cast.
var castTail = regexp.MustCompile(`^::(?:"(?:[^"]|"")+"|[a-z0-9_$.\[\](), ])+$`)

// stripCasts returns the operand of an expression that EXPLAIN prints as a cast,
// "(operand)::type", casts of casts included; anything else as it is.
func stripCasts(s string) string {
	operand, _ := unwrapCasts(s)
	return operand
}

// unwrapCasts returns stripCasts(s) and the types of the casts it took off, the
// outermost first.
func unwrapCasts(s string) (string, []string) {
	var types []string
	for strings.HasPrefix(s, "(") {
		depth, end := 0, -1
		for i := 0; i < len(s) && end < 0; i++ {
			switch s[i] {
			case '(':
				depth++
			case ')':
				if depth--; depth == 0 {
					end = i
				}
			case '"': // a quoted name: skip it ("" is a quote inside)
				for i++; i < len(s) && (s[i] != '"' || i+1 < len(s) && s[i+1] == '"'); i++ {
					if s[i] == '"' {
						i++
					}
				}
			case '\'':
				return s, types // a literal: not judged
			}
		}
		if end < 0 || !castTail.MatchString(s[end+1:]) {
			return s, types
		}
		types = append(types, s[end+3:])
		s = s[1:end]
	}
	return s, types
}

// keyCastKeeps tells whether a cast to type to of a key column of type keyType (or of
// a cast of it that kept it) keeps the key's text, as its record ID (GetRecordID) is
// made of it once the selection has cast it back to the key's type
// (refreshColumnList): to the key's own type, to text (the type's output; for
// character(n), whose padding it drops, the cast back pads it again), or an integer
// key to an integer type at least as wide or numeric without a scale. Another cast may change it (numeric 1.5 as numeric(10,3)
// is 1.500, varchar(2) cuts a code short, float4 rounds a large integer), and the row's
// refresh rows would then not match its changes (TestRefreshQueryKeyCastChangesText).
func keyCastKeeps(keyType, to string) bool {
	switch to {
	case keyType:
		return true
	case "text", "character varying":
		// Also from character(n), whose cast to text drops the trailing blanks that
		// its output (and so its changes) keeps: the selection casts key columns back
		// to the key's type (refreshColumnList), which pads them again
		// (TestRefreshKeyCastKeepsRecordIDs).
		return true
	}
	ints := map[string]int{"smallint": 1, "integer": 2, "bigint": 3, "numeric": 4}
	return ints[keyType] != 0 && ints[to] >= ints[keyType]
}

// parseColumnRef parses a column reference as EXPLAIN prints it: name or
// qualifier.name, each an identifier as quote_ident prints it (bare lower case, or in
// double quotes with "" for a quote). ok is false for anything else (an expression).
func parseColumnRef(s string) (qual, name string, ok bool) {
	first, rest, ok := parseIdent(s)
	if !ok {
		return "", "", false
	}
	if rest == "" {
		return "", first, true
	}
	if rest[0] != '.' {
		return "", "", false
	}
	second, rest, ok := parseIdent(rest[1:])
	if !ok || rest != "" {
		return "", "", false
	}
	return first, second, true
}

// parseIdent reads one identifier from the start of s and returns it and the rest.
func parseIdent(s string) (ident, rest string, ok bool) {
	if strings.HasPrefix(s, `"`) {
		var b strings.Builder
		for i := 1; i < len(s); i++ {
			if s[i] != '"' {
				b.WriteByte(s[i])
				continue
			}
			if i+1 < len(s) && s[i+1] == '"' {
				b.WriteByte('"')
				i++
				continue
			}
			return b.String(), s[i+1:], b.Len() > 0
		}
		return "", "", false
	}
	i := 0
	for i < len(s) && (s[i] == '_' || s[i] >= 'a' && s[i] <= 'z' || i > 0 && (s[i] >= '0' && s[i] <= '9' || s[i] == '$')) {
		i++
	}
	return s[:i], s[i:], i > 0
}

func (p planNode) tables(out map[qualifiedTable]bool) {
	if p.Relation != "" {
		out[qualifiedTable{p.Schema, p.Relation}] = true
	}
	for _, c := range p.Plans {
		c.tables(out)
	}
}

// tableInfoByName loads a table's description and checks it has a primary key and
// that a selection of it can be matched with its changes (checkPublishedForSelection).
func (s *Syncer) tableInfoByName(ctx context.Context, t qualifiedTable) (*PGTableInfo, error) {
	var oid uint32
	var relkind string
	var partition bool
	err := s.db.QueryRowContext(ctx, `SELECT c.oid, c.relkind::pg_catalog.text, c.relispartition FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) c.relnamespace
		WHERE n.nspname OPERATOR(pg_catalog.=) $1 AND c.relname OPERATOR(pg_catalog.=) $2`, t.schema, t.name).Scan(&oid, &relkind, &partition)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("%w: table %s does not exist", ErrConfig, t.quoted())
	}
	if err != nil {
		return nil, classify(err, "look up table "+t.quoted())
	}
	info, err := s.tables.describeOID(ctx, oid)
	if err != nil {
		return nil, err
	}
	if info.generatedKey != "" {
		return nil, fmt.Errorf("%w: key column %q of %s is a generated column, which pgoutput does not send (PostgreSQL 15 leaves generated columns out of changes), so its changes carry no key to match refresh rows with; key the table by columns that are not generated (a primary key, or REPLICA IDENTITY USING INDEX of a unique index on them)",
			ErrNoPrimaryKey, info.generatedKey, info.QualifiedName())
	}
	if len(info.PrimaryKey) == 0 {
		return nil, fmt.Errorf("%w: %s: refresh rows are matched with changes by primary key (or replica identity index); add one with ALTER TABLE %s ADD PRIMARY KEY (...)",
			ErrNoPrimaryKey, info.QualifiedName(), t.quoted())
	}
	if err := checkKeyOrdering(info); err != nil {
		return nil, err
	}
	if s.binary {
		for _, k := range info.PrimaryKey {
			if c := info.ColInfo[k]; c != nil && noBinaryCodec(c.decoder()) {
				return nil, fmt.Errorf("%w: %s: key column %q is of a type without a Go codec (%s): in binary mode (WithBinary) its changes carry its send format, which cannot be matched with the text a selection reads; refresh or snapshot this table with a Syncer in text mode",
					ErrConfig, info.QualifiedName(), k, c.decoder().name)
			}
		}
	}
	if err := s.checkPublishedForSelection(ctx, info, t, relkind == "p", partition); err != nil {
		return nil, err
	}
	info.partitioned = relkind == "p"
	return info, nil
}

// checkPublishedForSelection checks that a selection of info (named t by the caller)
// can work through the publication (sql/publication_check.sql): without the table's
// changes in the slot the window cannot drop keys changed meanwhile, and without the
// watermark rows no window would ever open or close — the selection would wait for
// its watermarks forever. The watermark rows are lost when the watermark table is not
// in the publication (ALTER PUBLICATION ... SET TABLE drops the table setup added),
// when the publication does not publish INSERTs (publish = '...'), or when the
// table's entry has a row filter or a column list without the watermark columns
// (PostgreSQL 15). A selected table with a row filter is refused too: the rows
// outside the filter would be refreshed into the consumer but their changes never
// delivered.
//
// The window matches changes by relation OID, so the selected rows must be the rows
// whose changes arrive under the table's OID. With publish_via_partition_root =
// false (the default) a partition's changes arrive under the partition's OID: a
// partitioned table (partitioned) is refused, naming its partitions to select
// instead. With it true they arrive under the partitioned table's, which is then
// selected whole, and a partition (partition) whose changes are so published is
// refused, naming that table. (A table's inheritance children are never read:
// fromTable.)
//
// Errors: ErrPublicationMissing, ErrConfig with the statement that fixes it.
func (s *Syncer) checkPublishedForSelection(ctx context.Context, info *PGTableInfo, t qualifiedTable, partitioned, partition bool) error {
	var pubInsert, published, wmPublished, viaRoot bool
	var tableFilter, rowFilter sql.NullString
	var wmCols []string
	err := s.db.QueryRowContext(ctx, sqlText("publication_check.sql"), s.publication, info.Namespace, info.TableName,
		s.ctrlNamespace, s.wmTableName).Scan(&pubInsert, &published, &tableFilter, &wmPublished, &rowFilter, pq.Array(&wmCols), &viaRoot)
	if errors.Is(err, sql.ErrNoRows) {
		return fmt.Errorf("%w: %q; create it, or pass ForTables to NewSyncer", ErrPublicationMissing, s.publication)
	}
	if err != nil {
		return classify(err, "check publication "+s.publication)
	}
	pub := pq.QuoteIdentifier(s.publication)
	wm := pq.QuoteIdentifier(s.ctrlNamespace) + "." + pq.QuoteIdentifier(s.wmTableName)
	if partitioned && !viaRoot {
		var leaves []string
		if err := s.db.QueryRowContext(ctx, `SELECT ARRAY(SELECT pg_catalog.format('%I.%I', n.nspname, c.relname)
			FROM pg_catalog.pg_partition_tree($1::pg_catalog.oid::pg_catalog.regclass) p
			JOIN pg_catalog.pg_class c ON c.oid OPERATOR(pg_catalog.=) p.relid JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) c.relnamespace
			WHERE p.isleaf ORDER BY 1)`, info.RelationID).Scan(pq.Array(&leaves)); err != nil {
			return classify(err, "list the partitions of "+info.QualifiedName())
		}
		instead := "it has none yet"
		if len(leaves) > 0 {
			instead = strings.Join(leaves, ", ")
		}
		return fmt.Errorf("%w: %s is a partitioned table, and publication %q publishes its partitions' changes under each partition's own name and OID (publish_via_partition_root = false), so they cannot be matched with rows read through %s; snapshot (or refresh) its partitions instead: %s; or have their changes published under %s with ALTER PUBLICATION %s SET (publish_via_partition_root = true), which every consumer of the publication then sees",
			ErrConfig, info.QualifiedName(), s.publication, info.QualifiedName(), instead, info.QualifiedName(), pub)
	}
	if partition {
		as, err := s.publishedAs(ctx, []qualifiedTable{{info.Namespace, info.TableName}})
		if err != nil {
			return err
		}
		if len(as) == 1 && as[0] != (qualifiedTable{info.Namespace, info.TableName}) {
			root := as[0].schema + "." + as[0].name
			return fmt.Errorf("%w: %s is a partition of %s, and publication %q publishes its changes under %s's name and OID (publish_via_partition_root = true), so they cannot be matched with rows read from the partition alone; snapshot or refresh %s instead",
				ErrConfig, info.QualifiedName(), root, s.publication, root, root)
		}
	}
	switch {
	case !published:
		return fmt.Errorf("%w: table %s is not in publication %q, so its changes cannot be matched with refresh rows; add it with ALTER PUBLICATION %s ADD TABLE %s (or pass it to ForTables)",
			ErrConfig, info.QualifiedName(), s.publication, pub, t.quoted())
	case tableFilter.Valid:
		return fmt.Errorf("%w: table %s has a row filter (WHERE %s) in publication %q: changes of rows outside it never reach the slot, so refresh rows of those rows would never be updated or deleted; Refresh and Snapshot do not support row-filtered tables (publish the table without a filter, or keep such rows out of the consumer some other way)",
			ErrConfig, info.QualifiedName(), tableFilter.String, s.publication)
	case !wmPublished:
		var exists bool
		if err := s.db.QueryRowContext(ctx, `SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_class c
			JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) c.relnamespace WHERE n.nspname OPERATOR(pg_catalog.=) $1 AND c.relname OPERATOR(pg_catalog.=) $2)`,
			s.ctrlNamespace, s.wmTableName).Scan(&exists); err != nil {
			return classify(err, "look up the watermark table "+wm)
		}
		if !exists {
			return fmt.Errorf("%w: the watermark table %s does not exist, so no refresh or snapshot window can open: set up the Syncer (Syncer.Setup, or NewSyncer without WithSetup(false)), which creates it in the control schema and adds it to publication %q",
				ErrConfig, wm, s.publication)
		}
		return fmt.Errorf("%w: the watermark table %s is not in publication %q (ALTER PUBLICATION ... SET TABLE removes it), so no refresh or snapshot window can open; add it back with ALTER PUBLICATION %s ADD TABLE %s (NewSyncer's setup does too)",
			ErrConfig, wm, s.publication, pub, wm)
	case !pubInsert:
		return fmt.Errorf("%w: publication %q does not publish INSERTs, and watermarks are inserted rows, so no refresh or snapshot window can open; publish them with ALTER PUBLICATION %s SET (publish = 'insert, update, delete, truncate')",
			ErrConfig, s.publication, pub)
	case rowFilter.Valid:
		return fmt.Errorf("%w: the watermark table %s has a row filter (WHERE %s) in publication %q, which may hold back watermarks; publish it whole with ALTER PUBLICATION %s DROP TABLE %s, then ALTER PUBLICATION %s ADD TABLE %s",
			ErrConfig, wm, rowFilter.String, s.publication, pub, wm, pub, wm)
	case len(wmCols) > 0 && !(containsString(wmCols, "selection_id") && containsString(wmCols, "wm_type")):
		return fmt.Errorf("%w: publication %q publishes only columns %v of the watermark table %s, not selection_id and wm_type; publish it whole with ALTER PUBLICATION %s DROP TABLE %s, then ALTER PUBLICATION %s ADD TABLE %s",
			ErrConfig, s.publication, wmCols, wm, pub, wm, pub, wm)
	}
	return nil
}

// newRunID returns a random prefix for this Syncer's selection IDs, so watermarks of
// other runs (a crashed process, another syncer on the same watermark table) never
// match a registered selection.
func newRunID() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func containsString(list []string, s string) bool { return indexOf(list, s) >= 0 }

func indexOf(list []string, s string) int {
	for i, v := range list {
		if v == s {
			return i
		}
	}
	return -1
}
