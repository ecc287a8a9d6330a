package dbsync

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"sync"

	"github.com/jackc/pglogrepl"
)

// delivery hands one poll's rows, decoded, to the MessageHandler (and the Batcher) in
// order, and tracks the last transaction that was processed entirely: the poller
// forwards the slot to its COMMIT row and never further.
type delivery struct {
	s   *Syncer
	ctx context.Context
	idx int
	// inTx is true between a BEGIN and its COMMIT.
	inTx bool
	// lastCommitEnd is the LSN the slot may be forwarded to: the COMMIT row of the last
	// fully processed transaction, or a later non-transactional message row that was
	// processed (forwardPoint).
	lastCommitEnd pglogrepl.LSN
	batch         *batchState
	// emitted lists selections whose refresh rows were handed to the handler in
	// this poll; they complete once the poll's Batcher flush succeeded (finish).
	emitted []*emission
}

func (s *Syncer) newDelivery(ctx context.Context) *delivery {
	d := &delivery{s: s, ctx: ctx}
	if s.Batcher != nil {
		d.batch = newBatchState()
	}
	s.win.maybePrune(ctx, s.db, s.log)
	s.win.newPoll()
	return d
}

// evictIdleRelations forgets what the Syncer keeps of relations without a RELATION
// message for relationIdleTTL (tableCache.evictIdle): their descriptions, last
// RELATION messages and tracking by the refresh window. The poller calls it at the
// start of a poll after one that caught up with the WAL: the poll's changes were
// written since, so a dropped table's changes still in a backlog (after Run was
// stopped, say) are described as the Syncer knew the table, not from their RELATION
// message alone (under REPLICA IDENTITY FULL that keys them by every column:
// TestDroppedFullIdentityTableKeyAfterIdleGap).
func (s *Syncer) evictIdleRelations() {
	if gone := s.tables.evictIdle(relationIdleTTL); len(gone) > 0 {
		s.dec.forget(gone)
		s.win.untrack(gone)
		s.ctrlMarks.forget(gone)
	}
}

// handlerErr wraps a handler's error in ErrHandler, keeping ErrStopProcessingMessages
// recognisable.
func handlerErr(err error, what string, lsn pglogrepl.LSN) error {
	if err == nil || errors.Is(err, ErrStopProcessingMessages) {
		return err
	}
	return fmt.Errorf("%w: %s at LSN %s: %w", ErrHandler, what, lsn, err)
}

// isControlTable tells whether a relation is one of dbsync's own tables in the control
// schema (the watermark table, whose rows drive refresh windows, and
// snapshot_progress, published under FOR ALL TABLES), or one of another control
// schema (isOtherControlTable, confirmed by setup's marker: markedControlTable): not
// delivered as changes. Other tables of that schema are the user's (the control
// schema may be "public") and are delivered like any other
// (TestDocsCtrlSchemaSharedWithTables), and so are the user's tables of the same
// columns elsewhere (TestUserTablesShapedLikeControlTablesDelivered). Called per
// change: for a relation not shaped like a control table it compares names and a
// column count, nothing more.
func (s *Syncer) isControlTable(reln *pglogrepl.RelationMessage) bool {
	if reln.Namespace == s.ctrlNamespace &&
		(reln.RelationName == s.wmTableName || reln.RelationName == snapshotProgressTable) {
		return true
	}
	return isOtherControlTable(reln) && s.ctrlMarks.marked(reln.RelationID)
}

// isOtherControlTable tells whether a relation has the columns of a dbsync watermark
// table (selection_id text, wm_type text, created_at timestamptz, in that order, and
// nothing else) or is a snapshot_progress table with the columns dbsync creates it
// with (sql/setup_ctrl.sql): possibly another Syncer's, with its own control schema
// (WithCtrlNamespace) or watermark table name (WithWMTable), setup added to a
// publication this Syncer reads too (TestCtrlNamespacesShareOnePublication). The
// shape alone does not make it one: a user's table may have these columns too; see
// ctrlMarks.
func isOtherControlTable(reln *pglogrepl.RelationMessage) bool {
	const textOID, timestamptzOID = 25, 1184
	c := reln.Columns
	if len(c) == 3 && c[0].Name == "selection_id" && c[0].DataType == textOID &&
		c[1].Name == "wm_type" && c[1].DataType == textOID && c[2].Name == "created_at" && c[2].DataType == timestamptzOID {
		return true
	}
	if reln.RelationName != snapshotProgressTable || len(c) < 2 || c[0].Name != "slot_name" || c[1].Name != "table_name" {
		return false
	}
	want := map[string]bool{"key_columns": true, "last_key": true, "chunk_size": true, "chunks_done": true, "rows_done": true}
	for _, col := range c[2:] {
		delete(want, col.Name)
	}
	return len(want) == 0
}

// ctrlMarks remembers, per relation OID, whether a relation shaped like a control
// table (isOtherControlTable) is one: whether setup (or an administrator) marked it
// (its comment begins with ctrlTableMarker, ensureCtrlMarkers). It is looked up in the
// catalog at a RELATION message (lookup), never per change: once for a relation found
// marked, and again at each RELATION message (one per poll that has its changes) for
// one found unmarked, so that the COMMENT setup's warning asks an owner to run takes
// effect without a restart (TestCtrlMarkedWhileOtherSyncerRuns); it is forgotten with
// the relation (Syncer.evictIdleRelations). A relation no longer in the catalog
// when its RELATION message is read (dropped since its changes were written: another
// Syncer's control schema removed by its Teardown, say) cannot be looked up: it is
// taken for a control table by its shape alone then, as it was before setup marked
// them, so that another Syncer's watermarks in a backlog do not reach the handler; a
// dropped user table of exactly those columns is then not delivered either.
type ctrlMarks struct {
	mu sync.Mutex
	m  map[uint32]bool
}

// marked tells whether relID was found a control table (true when never looked up,
// which lookup makes sure of before its changes are dispatched).
func (c *ctrlMarks) marked(relID uint32) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	m, ok := c.m[relID]
	return m || !ok
}

// lookup reads whether a relation shaped like a control table carries setup's marker
// (or is gone from the catalog), unless it was found marked before.
func (c *ctrlMarks) lookup(ctx context.Context, db *sql.DB, reln *pglogrepl.RelationMessage) error {
	if !isOtherControlTable(reln) {
		return nil
	}
	c.mu.Lock()
	marked, ok := c.m[reln.RelationID]
	c.mu.Unlock()
	if ok && marked {
		return nil
	}
	var comment sql.NullString
	err := db.QueryRowContext(ctx, `SELECT pg_catalog.obj_description(c.oid, 'pg_class') FROM pg_catalog.pg_class c WHERE c.oid OPERATOR(pg_catalog.=) $1`,
		int64(reln.RelationID)).Scan(&comment)
	marked = errors.Is(err, sql.ErrNoRows) || strings.HasPrefix(comment.String, ctrlTableMarker)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return classify(err, "look up whether "+qualifiedName(reln.Namespace, reln.RelationName)+" is a dbsync control table")
	}
	c.mu.Lock()
	if c.m == nil {
		c.m = map[uint32]bool{}
	}
	c.m[reln.RelationID] = marked
	c.mu.Unlock()
	return nil
}

// forget drops what was looked up of relIDs.
func (c *ctrlMarks) forget(relIDs []uint32) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, id := range relIDs {
		delete(c.m, id)
	}
}

// isWatermarkTable tells whether a relation is the watermark table.
func (s *Syncer) isWatermarkTable(reln *pglogrepl.RelationMessage) bool {
	return reln.Namespace == s.ctrlNamespace && reln.RelationName == s.wmTableName
}

// deliverParsed dispatches one row already parsed into msg.
func (d *delivery) deliverParsed(m PGMSG, msg pglogrepl.Message) error {
	h := d.s.MessageHandler
	if h == nil {
		h = DefaultMessageHandler{}
	}
	idx := d.idx
	d.idx++
	switch v := msg.(type) {
	case *pglogrepl.BeginMessage:
		d.inTx = true
		d.s.win.begin(v.Xid)
		return handlerErr(h.HandleBeginMessage(idx, v), "BEGIN", m.LSN)
	case *pglogrepl.CommitMessage:
		ems := d.s.win.commit()
		for _, em := range ems {
			// A high watermark: the selection's rows go out before anything after it.
			if err := d.deliverRefresh(h, em); err != nil {
				return handlerErr(err, "refresh rows at high watermark", m.LSN)
			}
		}
		err := h.HandleCommitMessage(idx, v)
		if err == nil || errors.Is(err, ErrStopProcessingMessages) {
			// The rows belong to the watermark's transaction: delivered once its COMMIT
			// was taken. Otherwise the transaction, and they, come again.
			d.emitted = append(d.emitted, ems...)
			d.inTx = false
			d.lastCommitEnd = m.LSN
			if d.batch != nil {
				d.batch.commit()
			}
		}
		return handlerErr(err, "COMMIT", m.LSN)
	case *pglogrepl.RelationMessage:
		info, err := d.s.dec.setRelation(d.ctx, v)
		if err != nil {
			return err
		}
		if err := d.s.ctrlMarks.lookup(d.ctx, d.s.db, v); err != nil {
			return err
		}
		if d.s.isControlTable(v) {
			return nil
		}
		d.s.win.relation(v)
		return handlerErr(h.HandleRelationMessage(idx, v, info), "RELATION", m.LSN)
	case *pglogrepl.InsertMessage:
		return d.rowChange(h, idx, m.LSN, v, v.RelationID)
	case *pglogrepl.UpdateMessage:
		return d.rowChange(h, idx, m.LSN, v, v.RelationID)
	case *pglogrepl.DeleteMessage:
		return d.rowChange(h, idx, m.LSN, v, v.RelationID)
	case *pglogrepl.TruncateMessage:
		relns := make([]*pglogrepl.RelationMessage, 0, len(v.RelationIDs))
		infos := make([]*PGTableInfo, 0, len(v.RelationIDs))
		for _, id := range v.RelationIDs {
			reln, info, err := d.s.dec.relation(id)
			if err != nil {
				return err
			}
			d.s.win.truncate(id)
			if d.s.isControlTable(reln) {
				// dbsync's own tables are not the user's: like their RELATION messages
				// and rows, a TRUNCATE of them is delivered neither to the handler nor
				// to the Batcher (TestTruncateOfControlTableNotDelivered).
				continue
			}
			relns = append(relns, reln)
			infos = append(infos, info)
			if d.batch != nil {
				doctype := qualifiedName(reln.Namespace, reln.RelationName) // as PGTableInfo.QualifiedName
				if info != nil {
					doctype = info.QualifiedName()
				}
				if _, ok := d.s.Batcher.(BatchTruncater); !ok {
					return fmt.Errorf("%w: TRUNCATE of %s at LSN %s: the Batcher does not implement BatchTruncater, so it cannot empty the table; implement BatchTruncate, or leave TRUNCATE out of the publication (WITH (publish = 'insert, update, delete'))",
						ErrConfig, doctype, m.LSN)
				}
				d.batch.truncate(doctype)
			}
		}
		if len(relns) == 0 {
			return nil // only control tables
		}
		if len(relns) != len(v.RelationIDs) {
			// The message names the relations the handler gets, no others.
			c := *v
			c.RelationIDs = make([]uint32, len(relns))
			for i, r := range relns {
				c.RelationIDs[i] = r.RelationID
			}
			c.RelationNum = uint32(len(relns))
			v = &c
		}
		return handlerErr(h.HandleTruncateMessage(idx, v, relns, infos), "TRUNCATE", m.LSN)
	case *pglogrepl.LogicalDecodingMessage:
		err := h.HandleLogicalMessage(idx, v)
		if !v.Transactional && !d.inTx && (err == nil || errors.Is(err, ErrStopProcessingMessages)) {
			d.lastCommitEnd = m.LSN // forwardPoint
		}
		return handlerErr(err, "MESSAGE", m.LSN)
	default:
		// TYPE and ORIGIN messages carry nothing a handler needs.
		return nil
	}
}

// rowChange dispatches an INSERT, UPDATE or DELETE: rows of the control schema drive
// the window (watermarks) and are not delivered; other changes are noted by the
// window, folded into the Batcher's net effect and handed to the MessageHandler. The
// change is decoded (DecodeChange) at most once, and only when the window or the
// Batcher needs it.
func (d *delivery) rowChange(h MessageHandler, idx int, lsn pglogrepl.LSN, msg pglogrepl.Message, relID uint32) error {
	reln, info, err := d.s.dec.relation(relID)
	if err != nil {
		return err
	}
	if d.s.isControlTable(reln) {
		if ins, ok := msg.(*pglogrepl.InsertMessage); ok && d.s.isWatermarkTable(reln) {
			if err := d.s.win.watermarkRow(reln, info, ins.Tuple); err != nil {
				return fmt.Errorf("watermark row at LSN %s: %w", lsn, err)
			}
		}
		return nil
	}
	var change *Change
	var changeErr error
	decode := func() (*Change, error) {
		if change == nil && changeErr == nil {
			change, changeErr = DecodeChange(msg, reln, info)
		}
		return change, changeErr
	}
	d.s.win.touchChange(reln, info, msg, decode)
	if d.batch != nil {
		c, err := decode()
		if err != nil {
			return fmt.Errorf("%s at LSN %s: %w", info.QualifiedName(), lsn, err)
		}
		if c.Key == "" {
			return fmt.Errorf("%w: %s at LSN %s: %s, so the Batcher cannot fold its changes by key; %s, or leave the table out of the publication",
				ErrNoKey, info.QualifiedName(), lsn, info.noKeyReason(), info.noKeyFix())
		}
		d.batch.add(c)
	}
	switch v := msg.(type) {
	case *pglogrepl.InsertMessage:
		return handlerErr(h.HandleInsertMessage(idx, v, reln, info), "INSERT", lsn)
	case *pglogrepl.UpdateMessage:
		return handlerErr(h.HandleUpdateMessage(idx, v, reln, info), "UPDATE", lsn)
	case *pglogrepl.DeleteMessage:
		return handlerErr(h.HandleDeleteMessage(idx, v, reln, info), "DELETE", lsn)
	}
	return fmt.Errorf("%w: %T is not a row change", ErrMalformedMessage, msg)
}

// finish hands the poll's completed transactions to the Batcher. On failure nothing
// of this poll may be forwarded.
func (d *delivery) finish() error {
	if d.batch == nil {
		d.s.win.delivered(d.emitted)
		return nil
	}
	if err := d.batch.flush(d.s.Batcher); err != nil {
		d.lastCommitEnd = 0
		return fmt.Errorf("%w: Batcher: %w", ErrHandler, err)
	}
	d.s.win.delivered(d.emitted)
	return nil
}

// deliverRefresh hands a selection's remaining rows to HandleRefresh (HandleRefreshRow
// for a RefreshRowHandler), in selection order, and to the Batcher as upserts folded
// in at the high watermark's place.
func (d *delivery) deliverRefresh(h MessageHandler, em *emission) error {
	rh, rowMode := h.(RefreshRowHandler)
	for _, it := range em.items {
		var err error
		if rowMode && it.row != nil {
			err = rh.HandleRefreshRow(it.row)
		} else {
			err = h.HandleRefresh(it.Key, it)
		}
		if err != nil {
			return err
		}
	}
	if d.batch != nil {
		d.batch.refresh(em.items)
	}
	return nil
}
