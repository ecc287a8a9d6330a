package dbsync

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/jackc/pglogrepl"
)

// windowTracker connects the pure window (window.go) to the Syncer: delivery feeds it
// the log from the poller's goroutine, Refresh registers selections from the caller's
// goroutine and waits for their completion.
type windowTracker struct {
	mu      sync.Mutex
	w       window
	waiters map[string]chan selDone // selection ID -> completion (buffered, one value)
	// afterSelect, when set, runs between a selection's SELECT and its high
	// watermark. Tests only: it makes changes land inside the window.
	afterSelect func()
	// duringSelect, when set, runs on the goroutine reading a selection's rows once
	// its first batch of rows was read, while the SELECT may still be sending the
	// rest. Tests only: it ends the SELECT's session or restarts the server mid-read.
	duringSelect func()
	// forceRetry, when set, turns the emission of each selection it returns true for
	// into a retry (as if a change with an unreadable key had touched the window).
	// Tests only.
	forceRetry func(selectionID string) bool
	lastPrune  time.Time
	// moved holds, per table, the rows to read again after a snapshot's last chunk:
	// the new keys of key-changing updates that left TOASTed columns unchanged,
	// collected from a Snapshot's start until one finishes the table (movedRows:
	// unfinished), so also between a cancelled or failed Snapshot and the one that
	// resumes it (the consumer may never have seen
	// the row under its old key, so it must be read again: snapshot.go). A row leaves
	// when it moves on to another key in the same way (collected there instead), or
	// once a Snapshot read it again after it was collected (watchDone), not when
	// a Snapshot starts reading it: Snapshots of one table running at once share the
	// set, and the one reading a row may fail after another looked for the last time.
	// The set outlives the Snapshots that collected it, so what none of them read is
	// read by the next Snapshot of the table by this Syncer.
	moved map[uint32]*movedRows
	// tracked lists tables whose changes are decoded for their keys: every table a
	// selection or snapshot was registered for (sticky, so a table refreshed
	// regularly keeps exact history; see touchChange), until the table had no
	// RELATION message for relationIdleTTL and none of its selections or snapshots
	// is under way (untrack).
	tracked map[uint32]struct{}
	// stopped is why Run last returned; nil before the first Run and while running.
	// A selection registered while stopped fails at once instead of waiting forever.
	stopped error
	// pending are the watermarks being written or written and not yet seen in the log.
	// A complete poll up to a position past a written watermark's commit that did not
	// deliver it means the publication held it back (changed during the selection):
	// polledThrough then fails the selection instead of letting it wait forever.
	pending map[wmKey]pendingWM
}

// pendingWM is a watermark not yet seen in the log. written: its INSERT committed.
// at: a WAL insert LSN read after that commit, so at or past the end of its commit
// record (0 until known). The poller reads it at the start of a poll, in the query that
// reads its flush LSN, so the check costs no round trip of its own (stamp).
type pendingWM struct {
	written bool
	at      pglogrepl.LSN
}

// wmKey names one watermark of one selection.
type wmKey struct {
	id   string
	kind wmKind
}

// History of touched keys is pruned (one pg_current_snapshot() query at the start of
// a poll) once it holds pruneMinHistory transactions or pruneInterval has passed.
const (
	pruneMinHistory = 1024
	pruneInterval   = time.Second
)

// selDone is how a selection ended: err, or its rows were handed over (with the
// follow-up work the emission asked for).
type selDone struct {
	err     error
	emitted int
	reread  []string
	// rereadMoved: key column texts of rows to read again at new keys
	// (emission.rereadMoved).
	rereadMoved [][]string
	retry       bool
}

func newWindowTracker() *windowTracker {
	return &windowTracker{waiters: map[string]chan selDone{}, moved: map[uint32]*movedRows{},
		tracked: map[uint32]struct{}{}, pending: map[wmKey]pendingWM{}}
}

// movedRows are the rows of one table to read again (windowTracker.moved).
type movedRows struct {
	// sig is the key (keySignature) whose columns the key texts are of.
	sig string
	// keys maps each row's record ID to its key columns in text form
	// (tupleKeyTexts; nil: they could not be printed), which the query reading the
	// row again binds, and when it was collected.
	keys map[string]movedKey
	// watchers counts the Snapshot calls of the table running now: rows are
	// collected while there is one, or while unfinished.
	watchers int
	// unfinished: a Snapshot of the table by this Syncer started and none finished
	// it since (watchFinished). Rows are collected meanwhile even when no Snapshot
	// runs: a row moved from a key no chunk read yet to one a chunk read reaches the
	// consumer through its update alone, and the Snapshot that resumes after the last
	// recorded chunk reads neither key again (TestSnapshotResumeRereadsRowsMovedWhileStopped).
	unfinished bool
	// seq numbers collections (movedKey.seq).
	seq uint64
}

// movedKey is one row to read again: its key columns' texts and the number of the
// collection that put it there (a row moved to the same key again is collected
// again, with a new number).
type movedKey struct {
	texts []string
	seq   uint64
}

// watchStart starts collecting rows of rel to read again (see moved) for one Snapshot
// of rel; rows left by earlier Snapshots are kept unless the table's key (sig:
// keySignature) changed since they were collected. Snapshots of rel running at once
// share the rows.
func (t *windowTracker) watchStart(rel uint32, sig string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	m := t.moved[rel]
	if m == nil {
		m = &movedRows{sig: sig, keys: map[string]movedKey{}}
		t.moved[rel] = m
	} else if m.watchers == 0 && m.sig != sig {
		m.sig, m.keys = sig, map[string]movedKey{}
	}
	m.watchers++
	m.unfinished = true
	t.tracked[rel] = struct{}{}
}

// watchRows returns (a copy of) the rows of rel to read again, record ID -> key texts
// and collection number. They stay in the set until watchDone: a Snapshot whose read
// fails leaves them to the others and to the next one.
func (t *windowTracker) watchRows(rel uint32) map[string]movedKey {
	t.mu.Lock()
	defer t.mu.Unlock()
	m := t.moved[rel]
	if m == nil || len(m.keys) == 0 {
		return nil
	}
	out := make(map[string]movedKey, len(m.keys))
	for id, k := range m.keys {
		out[id] = k
	}
	return out
}

// watchDone removes rows returned by watchRows that were read again (or are given
// up), unless a row was collected again since (a newer collection number): it may
// have moved after the read.
func (t *windowTracker) watchDone(rel uint32, rows map[string]movedKey) {
	t.mu.Lock()
	defer t.mu.Unlock()
	m := t.moved[rel]
	if m == nil {
		return
	}
	for id, k := range rows {
		if cur, ok := m.keys[id]; ok && cur.seq == k.seq {
			delete(m.keys, id)
		}
	}
	if m.idle() {
		delete(t.moved, rel)
	}
}

// collecting tells whether moved rows of this table are collected (see unfinished).
func (m *movedRows) collecting() bool { return m.watchers > 0 || m.unfinished }

// idle tells whether nothing is collected or kept for the table.
func (m *movedRows) idle() bool { return !m.collecting() && len(m.keys) == 0 }

// watchFinished notes that a Snapshot finished rel (its progress marked finished):
// once no Snapshot of it runs, its moved rows are no longer collected.
func (t *windowTracker) watchFinished(rel uint32) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if m := t.moved[rel]; m != nil {
		m.unfinished = false
		if m.idle() {
			delete(t.moved, rel)
		}
	}
}

// watchStop ends one watchStart. Collecting for rel stops when no Snapshot of it
// runs and the last one to end finished it (watchFinished); a Snapshot that failed or
// was cancelled leaves the table collected for the one that resumes it. Rows not read
// again stay, whichever Snapshot collected them and however the last one ended, for
// the next Snapshot of rel.
func (t *windowTracker) watchStop(rel uint32) {
	t.mu.Lock()
	defer t.mu.Unlock()
	m := t.moved[rel]
	if m == nil {
		return
	}
	if m.watchers > 0 {
		m.watchers--
	}
	if m.idle() {
		delete(t.moved, rel)
	}
}

// register starts tracking a selection of relation rel; the returned channel gets nil
// once its refresh rows were handed over, or an error wrapping ErrRefreshAbandoned.
// Several selections may be registered at once (window.sels).
func (t *windowTracker) register(id string, rel uint32) <-chan selDone {
	t.mu.Lock()
	defer t.mu.Unlock()
	ch := make(chan selDone, 1)
	if t.stopped != nil {
		if errors.Is(t.stopped, ErrClosed) {
			ch <- selDone{err: fmt.Errorf("%w: %w", ErrRefreshAbandoned, ErrClosed)}
		} else {
			ch <- selDone{err: fmt.Errorf("%w: the Syncer is not running (Run returned: %w); Refresh and Snapshot need Run or Start in another goroutine", ErrRefreshAbandoned, t.stopped)}
		}
		return ch
	}
	t.waiters[id] = ch
	t.tracked[rel] = struct{}{}
	t.w.register(id, rel)
	return ch
}

// started notes that Run is delivering again.
func (t *windowTracker) started() {
	t.mu.Lock()
	t.stopped = nil
	t.mu.Unlock()
}

func (t *windowTracker) setRows(id string, rows *InMemSelection, snap xidSnapshot) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.w.setRows(id, rows, snap)
}

// release forgets a selection, whatever its state.
func (t *windowTracker) release(id string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.forgetLocked(id)
}

// releaseUnlessSeen releases selection id, as release does, unless the poller has
// met its high watermark already: then the selection's outcome is in (or on its way
// to) its waiter's channel, and true is returned. A selection whose high watermark
// INSERT failed without a reply (its session ended after the commit) is judged by
// this: released, a high watermark arriving later is ignored and the selection can be
// opened again; met, its rows are (being) handed over, and opening it again would
// hand them over twice.
func (t *windowTracker) releaseUnlessSeen(id string) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if _, waiting := t.waiters[id]; !waiting || t.w.highSeen(id) {
		return true
	}
	t.forgetLocked(id)
	return false
}

// forgetLocked drops a selection from the window, the waiters and the pending
// watermarks. t.mu must be held.
func (t *windowTracker) forgetLocked(id string) {
	t.w.done(id)
	delete(t.waiters, id)
	delete(t.pending, wmKey{id, wmLow})
	delete(t.pending, wmKey{id, wmHigh})
}

// expect notes that a watermark of selection id is about to be written.
func (t *windowTracker) expect(id string, kind wmKind) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if _, ok := t.waiters[id]; ok {
		t.pending[wmKey{id, kind}] = pendingWM{}
	}
}

// wrote notes that the watermark's INSERT committed (unless it was seen already).
func (t *windowTracker) wrote(id string, kind wmKind) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if p, ok := t.pending[wmKey{id, kind}]; ok {
		p.written = true
		t.pending[wmKey{id, kind}] = p
	}
}

// writtenUnstamped lists the pending watermarks whose INSERT committed and that have
// no position yet; nil when there are none. The poller calls it before reading the WAL
// insert LSN, and passes both to stamp.
func (t *windowTracker) writtenUnstamped() []wmKey {
	t.mu.Lock()
	defer t.mu.Unlock()
	var out []wmKey
	for k, p := range t.pending {
		if p.written && p.at == 0 {
			out = append(out, k)
		}
	}
	return out
}

// stamp gives the watermarks keys (from writtenUnstamped) the WAL insert LSN at,
// read after writtenUnstamped returned, so after their commits.
func (t *windowTracker) stamp(keys []wmKey, at pglogrepl.LSN) {
	if len(keys) == 0 {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, k := range keys {
		if p, ok := t.pending[k]; ok && p.at == 0 {
			p.at = at
			t.pending[k] = p
		}
	}
}

// polledThrough is told by the poller that a complete poll up to upto was delivered:
// pg_logical_slot_peek_binary_changes decodes every record that ends at or before
// upto (the loop stops after the first record whose end reaches it), so every
// transaction whose commit record ends there was delivered. A pending watermark with
// at <= upto (at is at or past its commit record's end) that was not seen never will
// be: its selection fails with ErrRefreshAbandoned.
func (t *windowTracker) polledThrough(upto pglogrepl.LSN) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for k, p := range t.pending {
		at := p.at
		if at == 0 || at > upto {
			continue
		}
		if ch, ok := t.waiters[k.id]; ok {
			ch <- selDone{err: fmt.Errorf("%w: the %s watermark of selection %s (committed before WAL position %s) did not reach the slot, though a poll delivered every transaction committed up to %s: the publication holds watermark rows back (was it changed during the selection?); Refresh and Snapshot check it when they start",
				ErrRefreshAbandoned, k.kind, k.id, at, upto)}
		}
		t.forgetLocked(k.id)
	}
}

// delivered marks selections whose refresh rows were handed over: they are forgotten
// (a re-delivered high watermark is then ignored) and their callers released.
func (t *windowTracker) delivered(ems []*emission) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, em := range ems {
		if ch, ok := t.waiters[em.id]; ok {
			ch <- selDone{emitted: len(em.items), reread: em.reread, rereadMoved: em.rereadMoved, retry: em.retry}
		}
		t.forgetLocked(em.id)
	}
}

// abandon fails every registered selection (the Syncer stopped before their high
// watermark was delivered) and every one registered until Run starts again.
func (t *windowTracker) abandon(cause error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.stopped = cause
	// cause stays in the chain: a caller tells a Syncer stopped on purpose from one
	// that cannot run again as it is (errors.Is(err, ErrSlotMissing), say).
	err := fmt.Errorf("%w: the Syncer stopped before its high watermark was delivered (Run returned: %w); call it again once Run runs again (Run's error says whether it can)", ErrRefreshAbandoned, cause)
	if errors.Is(cause, ErrClosed) {
		err = fmt.Errorf("%w: the Syncer was closed before its high watermark was delivered: %w", ErrRefreshAbandoned, ErrClosed)
	}
	for id, ch := range t.waiters {
		ch <- selDone{err: err}
		t.forgetLocked(id)
	}
}

func (t *windowTracker) begin(xid uint32) {
	t.mu.Lock()
	t.w.begin(xid)
	t.mu.Unlock()
}

func (t *windowTracker) change(rel uint32, key, oldKey string, partial bool) {
	t.mu.Lock()
	t.w.change(rel, key, oldKey, partial)
	t.mu.Unlock()
}

func (t *windowTracker) unknownKey(rel uint32) {
	t.mu.Lock()
	t.w.unknownKey(rel)
	t.mu.Unlock()
}

func (t *windowTracker) truncate(rel uint32) {
	t.mu.Lock()
	t.w.truncate(rel)
	t.mu.Unlock()
}

// relation records a RELATION message of the open transaction: the name it gives its
// relation is the relation's name from then on (window.emit).
func (t *windowTracker) relation(reln *pglogrepl.RelationMessage) {
	t.mu.Lock()
	t.w.relation(reln.RelationID, reln.Namespace, reln.RelationName)
	t.mu.Unlock()
}

func (t *windowTracker) watermark(id string, kind wmKind) {
	t.mu.Lock()
	t.w.watermark(id, kind)
	delete(t.pending, wmKey{id, kind})
	t.mu.Unlock()
}

// newPoll tells the window a poll starts (window.newPoll).
func (t *windowTracker) newPoll() {
	t.mu.Lock()
	t.w.newPoll()
	t.mu.Unlock()
}

func (t *windowTracker) commit() []*emission {
	t.mu.Lock()
	defer t.mu.Unlock()
	ems := t.w.commit()
	if t.forceRetry != nil {
		for i, em := range ems {
			if t.forceRetry(em.id) {
				ems[i] = &emission{id: em.id, retry: true}
			}
		}
	}
	return ems
}

// setIgnoreSnapshot turns the visibility fix off (plain DBLog). Tests only.
func (t *windowTracker) setIgnoreSnapshot(v bool) {
	t.mu.Lock()
	t.w.ignoreSnapshot = v
	t.mu.Unlock()
}

// maybePrune forgets history that a fresh snapshot shows complete and the registered
// selection cannot need (window.prune). It runs at the start of a poll, after the
// previous poll's transactions were delivered.
func (t *windowTracker) maybePrune(ctx context.Context, db *sql.DB, log *slog.Logger) {
	t.mu.Lock()
	need := len(t.w.hist) >= pruneMinHistory || (len(t.w.hist) > 0 && time.Since(t.lastPrune) >= pruneInterval)
	t.mu.Unlock()
	if !need {
		return
	}
	defer func() {
		t.mu.Lock()
		t.lastPrune = time.Now()
		t.mu.Unlock()
	}()
	var text string
	if err := db.QueryRowContext(ctx, `SELECT pg_catalog.pg_current_snapshot()::pg_catalog.text`).Scan(&text); err != nil {
		log.Debug("dbsync: could not read pg_current_snapshot() to prune window history", "err", err)
		return
	}
	snap, err := parseSnapshot(text)
	if err != nil {
		log.Debug("dbsync: window history not pruned", "err", err)
		return
	}
	t.mu.Lock()
	t.w.prune(snap)
	t.mu.Unlock()
}

// touchChange records what a row change touched. Keys are decoded only for tracked
// tables (tables a selection or snapshot was registered for, see tracked); for every other table the transaction is only noted as having touched it, which costs
// no decoding and no memory per row. Should such a transaction turn out to matter to
// a later selection (its xid in progress in the selection's snapshot, PostgreSQL's
// commit-before-visibility race), the selection runs again, as for a key that cannot
// be read (window.emit's retry). A change whose key cannot be computed (e.g. a DELETE
// under REPLICA IDENTITY NOTHING) is treated the same way.
func (t *windowTracker) touchChange(reln *pglogrepl.RelationMessage, info *PGTableInfo, msg pglogrepl.Message, decode func() (*Change, error)) {
	t.mu.Lock()
	watched := t.watchedLocked(reln.RelationID)
	t.mu.Unlock()
	if !watched || info == nil {
		t.unknownKey(reln.RelationID)
		return
	}
	c, err := decode()
	if err != nil || c.Key == "" {
		t.unknownKey(reln.RelationID)
		return
	}
	t.change(reln.RelationID, c.Key, c.OldKey, len(c.Unchanged) > 0)
	if c.OldKey != "" && len(c.Unchanged) > 0 {
		// The key as text, not decoded: bound as text parameters and cast to the key
		// columns' types, it reads the row again whatever the types and the driver.
		var texts []string
		if u, ok := msg.(*pglogrepl.UpdateMessage); ok {
			texts, _ = info.tupleKeyTexts(reln, u.NewTuple, u.OldTuple, c.New) // nil: logged when read again
		}
		t.mu.Lock()
		// A selection whose row this was reads it again at its new key (window.emit).
		t.w.move(reln.RelationID, c.OldKey, c.Key, texts)
		if m := t.moved[reln.RelationID]; m != nil && m.collecting() {
			// The row is read again where it is now: its old key, collected when it
			// moved there, holds nothing to read (nor another row, until one is
			// moved there and collected again). Without this a row moving on and on
			// while its table's snapshot is unfinished left an entry per key it had.
			delete(m.keys, c.OldKey)
			m.seq++
			m.keys[c.Key] = movedKey{texts: texts, seq: m.seq}
		}
		t.mu.Unlock()
	}
}

// untrack stops decoding the keys of relations the table cache evicted (no RELATION
// message for relationIdleTTL: dropped, or idle), unless a selection of one is
// registered or a Snapshot collects or keeps rows of it (moved). Registering a
// selection tracks its table again; until then, a change of it counts as touching an
// unknown key (touchChange), which at worst runs a selection again.
func (t *windowTracker) untrack(relIDs []uint32) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, id := range relIDs {
		if _, ok := t.moved[id]; ok || t.w.registered(id) {
			continue
		}
		delete(t.tracked, id)
	}
}

// watchedLocked tells whether changes of rel need their keys (rel is tracked).
// t.mu must be held.
func (t *windowTracker) watchedLocked(rel uint32) bool {
	_, ok := t.tracked[rel]
	return ok
}

// watermarkRow records an INSERT into the watermark table. A row that cannot be
// decoded is an error: ignoring it could leave its selection waiting forever. A row
// without a selection ID or kind cannot be a selection's and is ignored.
func (t *windowTracker) watermarkRow(reln *pglogrepl.RelationMessage, info *PGTableInfo, tuple *pglogrepl.TupleData) error {
	if info == nil {
		return fmt.Errorf("%w: watermark table %s.%s without table info", ErrUnknownRelation, reln.Namespace, reln.RelationName)
	}
	vals, _, err := info.MessageToMap(reln, tuple)
	if err != nil {
		return err
	}
	id, _ := vals["selection_id"].(string)
	kind, _ := vals["wm_type"].(string)
	if id == "" || (kind != string(wmLow) && kind != string(wmHigh)) {
		return nil // not written by a selection (dbsync's always carry both): ignore
	}
	t.watermark(id, wmKind(kind))
	return nil
}
