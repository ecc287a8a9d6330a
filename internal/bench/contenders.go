package bench

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/jackc/pgx/v5/pgtype"
	"os/exec"
	"runtime"
	"runtime/metrics"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dbsync/dbsync"
	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/lib/pq"
)

// peekOptions are the pgoutput options every SQL contender uses (the same as dbsync's
// peek.sql), so all decode the same output.
const peekOptions = `'proto_version', '1', 'publication_names', $2, 'messages', 'true'`

// slots is a workload's database, publication and master slot; contenders read copies.
type slots struct {
	dbName string
	dsn    string
	pub    string
	master string
	n      int
}

// copySlot creates a copy of the master slot (same restart_lsn and confirmed_flush_lsn,
// so the copy decodes exactly the WAL the master would) and returns its name.
func (s *slots) copySlot(ctx context.Context, db *sql.DB, who string) (string, error) {
	s.n++
	name := fmt.Sprintf("%s_%s_%d", s.master, who, s.n)
	if _, err := db.ExecContext(ctx, `SELECT pg_copy_logical_replication_slot($1, $2)`, s.master, name); err != nil {
		return "", fmt.Errorf("copy slot %s: %w", s.master, err)
	}
	return name, nil
}

func dropSlot(db *sql.DB, name string) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for i := 0; i < 50; i++ {
		if _, err := db.ExecContext(ctx, `SELECT pg_drop_replication_slot($1)`, name); err == nil {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// stream is what a full read of the slot returned: how many rows, how many of them row
// changes, and the last COMMIT row's LSN (the end of the workload's last transaction).
type stream struct {
	rows, changes int64
	lastCommit    pglogrepl.LSN
}

// runLimit reads the slot with one unbounded peek, every row read by the client into
// raw bytes and nothing decoded.
func runLimit(ctx context.Context, db *sql.DB, slot, pub string) (stream, time.Duration, error) {
	var st stream
	start := time.Now()
	rows, err := db.QueryContext(ctx, `SELECT lsn::text, data FROM pg_logical_slot_peek_binary_changes($1, NULL, NULL, `+peekOptions+`)`, slot, pq.QuoteIdentifier(pub))
	if err != nil {
		return st, 0, err
	}
	defer rows.Close()
	var lsn, data sql.RawBytes
	var lastCommit []byte
	for rows.Next() {
		if err := rows.Scan(&lsn, &data); err != nil {
			return st, 0, err
		}
		st.rows++
		if len(data) > 0 {
			switch data[0] {
			case 'C':
				lastCommit = append(lastCommit[:0], lsn...)
			case 'I', 'U', 'D':
				st.changes++
			}
		}
	}
	if err := rows.Err(); err != nil {
		return st, 0, err
	}
	el := time.Since(start)
	if lastCommit != nil {
		if err := st.lastCommit.Scan(string(lastCommit)); err != nil {
			return st, 0, err
		}
	}
	return st, el, nil
}

// runNaive is the original dbsync strategy: peek 8,192 rows, then consume them with
// pg_logical_slot_get_binary_changes(…, 8192), until the slot returns nothing or
// timeout passes (partial is then true and rows is what was read so far).
func runNaive(ctx context.Context, db *sql.DB, slot, pub string, timeout time.Duration) (rows int64, el time.Duration, partial bool, err error) {
	start := time.Now()
	read := func(q string) (int64, error) {
		rs, err := db.QueryContext(ctx, q, slot, pq.QuoteIdentifier(pub))
		if err != nil {
			return 0, err
		}
		defer rs.Close()
		var n int64
		var lsn, xid, data sql.RawBytes
		for rs.Next() {
			if err := rs.Scan(&lsn, &xid, &data); err != nil {
				return n, err
			}
			n++
		}
		return n, rs.Err()
	}
	for {
		if time.Since(start) > timeout {
			return rows, time.Since(start), true, nil
		}
		n, err := read(`SELECT lsn, xid, data FROM pg_logical_slot_peek_binary_changes($1, NULL, 8192, ` + peekOptions + `)`)
		if err != nil {
			return rows, 0, false, err
		}
		if n == 0 {
			return rows, time.Since(start), false, nil
		}
		rows += n
		if _, err := read(`SELECT lsn, xid, data FROM pg_logical_slot_get_binary_changes($1, NULL, 8192, ` + peekOptions + `)`); err != nil {
			return rows, 0, false, err
		}
	}
}

// streamClient is a replication-protocol consumer (START_REPLICATION through
// pglogrepl) that parses every pgoutput message and reports its position every second.
type streamClient struct {
	rows, changes atomic.Int64
	// onInsert, if set, gets every INSERT with its RELATION message.
	onInsert func(*pglogrepl.InsertMessage, *pglogrepl.RelationMessage)
}

// run streams slot until stop returns true for a COMMIT or ctx ends.
func (c *streamClient) run(ctx context.Context, dsn, slot, pub string, stop func(*pglogrepl.CommitMessage) bool) error {
	conn, err := pgconn.Connect(ctx, dsn+" replication=database")
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	err = pglogrepl.StartReplication(ctx, conn, slot, 0, pglogrepl.StartReplicationOptions{PluginArgs: []string{
		"proto_version '1'", "publication_names " + quoteLiteral(pq.QuoteIdentifier(pub)), "messages 'true'",
	}})
	if err != nil {
		return fmt.Errorf("START_REPLICATION: %w", err)
	}
	relations := map[uint32]*pglogrepl.RelationMessage{}
	var confirmed pglogrepl.LSN
	nextStatus := time.Now().Add(time.Second)
	sendStatus := func() error {
		nextStatus = time.Now().Add(time.Second)
		return pglogrepl.SendStandbyStatusUpdate(context.Background(), conn, pglogrepl.StandbyStatusUpdate{WALWritePosition: confirmed})
	}
	// ReceiveMessage with a cancellable context starts a context watcher per call,
	// which would dominate the cost per message; unblock the read with a socket
	// deadline instead when ctx ends.
	stopWatch := context.AfterFunc(ctx, func() { conn.Conn().SetReadDeadline(time.Now()) })
	defer stopWatch()
	n := 0
	for {
		if n++; n%1024 == 0 && time.Now().After(nextStatus) {
			if err := sendStatus(); err != nil {
				return err
			}
		}
		raw, err := conn.ReceiveMessage(context.Background())
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		switch m := raw.(type) {
		case *pgproto3.ErrorResponse:
			return pgconn.ErrorResponseToPgError(m)
		case *pgproto3.CopyData:
			switch m.Data[0] {
			case pglogrepl.PrimaryKeepaliveMessageByteID:
				ka, err := pglogrepl.ParsePrimaryKeepaliveMessage(m.Data[1:])
				if err != nil {
					return err
				}
				if ka.ReplyRequested {
					if err := sendStatus(); err != nil {
						return err
					}
				}
			case pglogrepl.XLogDataByteID:
				xld, err := pglogrepl.ParseXLogData(m.Data[1:])
				if err != nil {
					return err
				}
				msg, err := dbsync.Parse(xld.WALData)
				if err != nil {
					return err
				}
				c.rows.Add(1)
				switch v := msg.(type) {
				case *pglogrepl.RelationMessage:
					relations[v.RelationID] = v
				case *pglogrepl.InsertMessage:
					c.changes.Add(1)
					if c.onInsert != nil {
						c.onInsert(v, relations[v.RelationID])
					}
				case *pglogrepl.UpdateMessage, *pglogrepl.DeleteMessage:
					c.changes.Add(1)
				case *pglogrepl.CommitMessage:
					confirmed = v.TransactionEndLSN
					if stop != nil && stop(v) {
						return sendStatus()
					}
				}
			}
		}
	}
}

func quoteLiteral(s string) string { return pq.QuoteLiteral(s) }

// handler is the dbsync contender's MessageHandler: it decodes every row change with
// dbsync.DecodeChange, as a real consumer would.
type handler struct {
	dbsync.DefaultMessageHandler
	changes   atomic.Int64
	msgs      atomic.Int64
	refreshed atomic.Int64
	target    pglogrepl.LSN
	reached   chan struct{}
	once      sync.Once
	onChange  func(*dbsync.Change)
	decodeMu  sync.Mutex
	err       error
	// scan makes the handler decode with PGTableInfo.ScanTuple into typed variables
	// of the orders row instead of DecodeChange (no map, no record ID).
	scan bool
	row  orderRow
}

// orderRow is the orders table's row as typed Go variables (ScanTuple handler).
type orderRow struct {
	id        int64
	customer  string
	qty       int32
	amount    pgtype.Numeric
	createdAt time.Time
	attrs     json.RawMessage
	dest      []any
}

func newHandler(target pglogrepl.LSN) *handler {
	return &handler{target: target, reached: make(chan struct{})}
}

func (h *handler) change(msg pglogrepl.Message, reln *pglogrepl.RelationMessage, info *dbsync.PGTableInfo) error {
	h.msgs.Add(1)
	if h.scan {
		ins, ok := msg.(*pglogrepl.InsertMessage)
		if !ok || reln.RelationName != "orders" {
			return fmt.Errorf("the ScanTuple handler takes inserts into orders, got %T on %s", msg, reln.RelationName)
		}
		o := &h.row
		if o.dest == nil {
			o.dest = []any{&o.id, &o.customer, &o.qty, &o.amount, &o.createdAt, &o.attrs}
		}
		if err := info.ScanTuple(reln, ins.Tuple, o.dest...); err != nil {
			return err
		}
		h.changes.Add(1)
		return nil
	}
	c, err := dbsync.DecodeChange(msg, reln, info)
	if err != nil {
		return err
	}
	h.changes.Add(1)
	if h.onChange != nil {
		h.onChange(c)
	}
	return nil
}

func (h *handler) HandleBeginMessage(int, *pglogrepl.BeginMessage) error { h.msgs.Add(1); return nil }

// HandleRefresh counts rows of a snapshot chunk (their values are already decoded).
func (h *handler) HandleRefresh(_ string, item dbsync.DBItem) error {
	if len(item.Values) == 0 {
		return fmt.Errorf("refresh row %q without values", item.Key)
	}
	h.refreshed.Add(1)
	return nil
}
func (h *handler) HandleRelationMessage(int, *pglogrepl.RelationMessage, *dbsync.PGTableInfo) error {
	h.msgs.Add(1)
	return nil
}
func (h *handler) HandleInsertMessage(_ int, m *pglogrepl.InsertMessage, reln *pglogrepl.RelationMessage, info *dbsync.PGTableInfo) error {
	return h.change(m, reln, info)
}
func (h *handler) HandleUpdateMessage(_ int, m *pglogrepl.UpdateMessage, reln *pglogrepl.RelationMessage, info *dbsync.PGTableInfo) error {
	return h.change(m, reln, info)
}
func (h *handler) HandleDeleteMessage(_ int, m *pglogrepl.DeleteMessage, reln *pglogrepl.RelationMessage, info *dbsync.PGTableInfo) error {
	return h.change(m, reln, info)
}
func (h *handler) HandleCommitMessage(_ int, m *pglogrepl.CommitMessage) error {
	h.msgs.Add(1)
	if h.target != 0 && m.TransactionEndLSN >= h.target {
		h.once.Do(func() { close(h.reached) })
	}
	return nil
}

// rowHandler is handler taking refresh rows as a dbsync.RefreshRowHandler: every value
// scanned into the orders row's typed variables (RefreshRow.Scan; no map).
type rowHandler struct {
	*handler
	row orderRow
}

func (h *rowHandler) HandleRefreshRow(r *dbsync.RefreshRow) error {
	o := &h.row
	if o.dest == nil {
		o.dest = []any{&o.id, &o.customer, &o.qty, &o.amount, &o.createdAt, &o.attrs}
	}
	if err := r.Scan(o.dest...); err != nil {
		return err
	}
	h.refreshed.Add(1)
	return nil
}

// syncerRun is one run of a dbsync Syncer on a slot.
type syncerRun struct {
	s      *dbsync.Syncer
	h      *handler
	cancel context.CancelFunc
	done   chan error
}

// startSyncer starts a Syncer with default settings on slot (already set up: setup is
// skipped so every contender starts from the same catalog state).
func startSyncer(ctx context.Context, db *sql.DB, slot, pub string, h *handler, opts ...dbsync.SyncerOpt) (*syncerRun, error) {
	s, err := dbsync.NewSyncerContext(ctx, append([]dbsync.SyncerOpt{dbsync.WithDB(db), dbsync.WithReplicationSlot(slot), dbsync.WithPublication(pub),
		dbsync.WithMessageHandler(h), dbsync.WithSetup(false)}, opts...)...)
	if err != nil {
		return nil, err
	}
	rctx, cancel := context.WithCancel(ctx)
	r := &syncerRun{s: s, h: h, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- s.Run(rctx) }()
	return r, nil
}

func (r *syncerRun) stop() error {
	r.cancel()
	err := <-r.done
	r.s.Close()
	return err
}

// runDbsync runs a Syncer on slot until its handler has seen the COMMIT at target and
// the slot's confirmed_flush_lsn has reached flush (caught up), and samples the Go
// heap meanwhile. It returns the handler and the peak heap (bytes of heap objects,
// live and not yet collected).
func runDbsync(ctx context.Context, db *sql.DB, slot, pub string, target, flush pglogrepl.LSN, timeout time.Duration, scan bool) (*handler, time.Duration, uint64, error) {
	runtime.GC()
	hs := newHeapSampler()
	defer hs.stop()
	h := newHandler(target)
	h.scan = scan
	start := time.Now()
	r, err := startSyncer(ctx, db, slot, pub, h)
	if err != nil {
		return nil, 0, 0, err
	}
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	select {
	case <-h.reached:
	case err := <-r.done:
		r.s.Close()
		return h, 0, 0, fmt.Errorf("dbsync stopped before catching up: %v", err)
	case <-deadline.C:
		r.stop()
		return h, 0, 0, fmt.Errorf("dbsync did not catch up within %s (%d changes)", timeout, h.changes.Load())
	}
	for {
		var confirmed pglogrepl.LSN
		var c string
		if err := db.QueryRowContext(ctx, `SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1`, slot).Scan(&c); err != nil {
			r.stop()
			return h, 0, 0, err
		}
		if err := confirmed.Scan(c); err != nil {
			r.stop()
			return h, 0, 0, err
		}
		if confirmed >= flush {
			break
		}
		select {
		case <-deadline.C:
			r.stop()
			return h, 0, 0, fmt.Errorf("slot stayed at %s, below the flush LSN %s", confirmed, flush)
		case <-time.After(2 * time.Millisecond):
		}
	}
	el := time.Since(start)
	if err := r.stop(); err != nil {
		return h, el, 0, err
	}
	return h, el, hs.stop(), nil
}

// heapSampler records the peak of the Go heap (runtime/metrics heap objects bytes).
type heapSampler struct {
	quit chan struct{}
	done chan struct{}
	peak uint64
	once sync.Once
}

func newHeapSampler() *heapSampler {
	h := &heapSampler{quit: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(h.done)
		s := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
		t := time.NewTicker(2 * time.Millisecond)
		defer t.Stop()
		for {
			metrics.Read(s)
			if v := s[0].Value.Uint64(); v > h.peak {
				h.peak = v
			}
			select {
			case <-h.quit:
				return
			case <-t.C:
			}
		}
	}()
	return h
}

func (h *heapSampler) stop() uint64 {
	h.once.Do(func() { close(h.quit) })
	<-h.done
	return h.peak
}

func mib(b uint64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }

var errMismatch = errors.New("contenders disagree")

// runRecvlogical streams slot with pg_recvlogical into /dev/null until it has written
// the record at endpos (the COMMIT of the workload's last transaction), the
// replication-protocol consumer PostgreSQL ships.
func runRecvlogical(ctx context.Context, bin, url, slot, pub string, endpos pglogrepl.LSN) (time.Duration, error) {
	cmd := exec.CommandContext(ctx, bin, "-d", url, "-S", slot, "--start", "--no-loop",
		"-E", endpos.String(), "-f", "/dev/null",
		"-o", "proto_version=1", "-o", "publication_names="+pq.QuoteIdentifier(pub), "-o", "messages=true")
	start := time.Now()
	out, err := cmd.CombinedOutput()
	el := time.Since(start)
	if err != nil {
		return 0, fmt.Errorf("pg_recvlogical: %w: %s", err, out)
	}
	return el, nil
}
