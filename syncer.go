// Package dbsync keeps caches, indexes and other stores in sync with PostgreSQL tables
// through logical decoding. A Syncer reads a logical replication slot (pgoutput) with
// SQL functions over a plain database/sql connection — pg_logical_slot_peek_binary_changes
// to read, pg_replication_slot_advance to move forward — decodes each row with pglogrepl,
// delivers it in commit order to a MessageHandler (or whole polls to an
// EventsProcessor), and forwards the slot only past what was processed: at-least-once,
// nothing lost.
//
// A watermark table in the publication lets it interleave lock-free chunked reads of
// existing rows with the change stream (Netflix's DBLog): see Refresh.
package dbsync

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/lib/pq" // the "postgres" driver for WithPGConnStr and POSTGRES_*
)

// Syncer reads one logical replication slot and delivers its changes. Configure it with
// NewSyncer; run it with Run (or Start/Stop). Only one process may drive a slot. The
// exported settings may also be set on the struct: Run returns ErrConfig for a poller
// setting the matching option would refuse, Snapshot for a negative snapshot setting.
// Change the poller's settings only while Run does not run, the snapshot settings only
// while no Snapshot does.
type Syncer struct {
	// MessageHandler receives changes one message at a time (see WithMessageHandler).
	MessageHandler MessageHandler
	// EventsProcessor, when set, receives whole polls of raw rows instead.
	EventsProcessor EventsProcessor
	// Batcher, when set, receives each poll's net upserts and deletes per table before
	// the slot is forwarded (in addition to MessageHandler).
	Batcher Batcher

	// DelayBetweenPeekRetries is the wait after the first peek that found nothing
	// although the WAL flush LSN had moved (other tables writing). While the flush LSN
	// does not move the poller only compares it with what it delivered, every 100 ms
	// (every 250 ms once nothing was flushed for 2 s),
	// and peeks as soon as it moves.
	DelayBetweenPeekRetries time.Duration
	// TimerDelayBackoffFactor multiplies the wait after each further empty peek (>= 1).
	TimerDelayBackoffFactor float64
	// MaxDelayBetweenEmptyPeeks caps the wait between empty peeks; it bounds the
	// latency of a change that arrives while other tables keep the WAL moving.
	MaxDelayBetweenEmptyPeeks time.Duration
	// MinPollInterval is the least time from the start of one poll to the start of the
	// next while the Syncer keeps up with the WAL (DefaultMinPollInterval; 0: poll
	// again as soon as a poll delivered something). Every peek decodes the WAL again
	// from the slot's restart_lsn, so a Syncer polling back to back under a steady
	// write load keeps a server backend busy (the whole server at ~88% of a core at
	// 1,000 transactions/s on the development machine, ~49% with the 10 ms default;
	// docs/BENCHMARKS.md); the interval trades change latency (up to about the
	// interval more) for that CPU. It does not slow down a backlog: a poll that
	// stopped short of the WAL flush LSN is followed at once.
	MinPollInterval time.Duration
	// MaxRestartLSNLag is how far, in bytes of WAL, the slot's restart_lsn may trail
	// its confirmed_flush_lsn before the Syncer has PostgreSQL log an xl_running_xacts
	// record so that restart_lsn can move up (DefaultMaxRestartLSNLag; 0 or less: never,
	// restart_lsn then moves about every 15 s). Every poll decodes the WAL again from
	// restart_lsn; see restartlsn.go and README "Reading the slot". The record is logged
	// by creating and at once dropping a temporary logical slot, so it needs a free
	// max_replication_slots entry for a moment; checks run beside the polls (their own
	// goroutine and pool connection) at most every 250 ms while Run's polls read
	// something, or after a Forward (or GetMessages with consume) that moved the slot,
	// and back off when an open transaction pins restart_lsn.
	MaxRestartLSNLag int64
	// MaxMessagesToRead is the upto_nchanges bound of one peek (rows; 0: none).
	MaxMessagesToRead int
	// HandlerErrorPolicy says whether a failing handler stops the Syncer or is retried.
	HandlerErrorPolicy HandlerErrorPolicy
	// SnapshotChunkSize is the rows per Snapshot chunk (0: DefaultSnapshotChunkSize).
	SnapshotChunkSize int
	// SnapshotChunksInFlight is how many chunks Snapshot reads ahead of the oldest one
	// not yet handed over (0: DefaultSnapshotChunksInFlight).
	SnapshotChunksInFlight int
	// SnapshotParallel is how many Snapshot chunks are read at once (0:
	// DefaultSnapshotParallel).
	SnapshotParallel int
	// SnapshotProgress, when set, is called by Snapshot after each delivered chunk.
	SnapshotProgress func(SnapshotProgress)

	db    *sql.DB
	ownDB bool
	// sockets are the sockets of the pool NewSyncer opened (nil on one given with
	// WithDB): sockets.go.
	sockets *socketTracker
	connStr string

	replicationSlot string
	ctrlNamespace   string
	wmTableName     string
	publication     string
	tableNames      []string

	// binary asks pgoutput for values in binary format (WithBinary).
	binary bool
	// replIdentFull lists tables to set REPLICA IDENTITY FULL on in Setup.
	replIdentFull []string
	// strictReplIdent makes Setup fail on tables whose updates/deletes cannot be captured
	// (or given a record ID: a generated key).
	strictReplIdent bool

	log       *slog.Logger
	lookupEnv func(string) (string, bool)
	skipSetup bool

	tables *tableCache
	dec    *decoder
	// ctrlMarks tells relations shaped like another Syncer's control tables apart
	// from the user's (isControlTable).
	ctrlMarks ctrlMarks

	// watermark windows (Refresh, Snapshot): see window.go, watermark.go
	win    *windowTracker
	runID  string        // prefix of this Syncer's selection IDs
	selSeq atomic.Uint64 // numbers this Syncer's selections
	// selectionReopens counts selections opened again after their session was lost
	// (openSelection).
	selectionReopens atomic.Uint64
	// strayWatermarks are selection IDs whose watermark rows could not be deleted
	// (the server was unreachable); the next deleteWatermarks deletes them too.
	strayMu         sync.Mutex
	strayWatermarks []string
	// pgconnPeeks counts peeks read on pgx's own connection (peekread.go).
	pgconnPeeks atomic.Uint64
	// driverPeeks counts peeks read through the driver's own interfaces (peekread.go).
	driverPeeks atomic.Uint64
	// pgconnSelects counts selections read on pgx's own connection (selectread.go).
	pgconnSelects atomic.Uint64
	// chunkBounds counts the chunkBound queries run, the last one of a table's
	// planning (no row: the open-ended range) included (snapshot.go; tests).
	chunkBounds atomic.Uint64
	// writersWaiting, when set, is called when a Snapshot of a table finds
	// transactions writing it that it waits for (waitForTableWriters; tests).
	writersWaiting func(table string, n int)
	// writersLooked, when set, is called after each look of that wait with how many
	// of the transactions it waits for are still open (tests).
	writersLooked func(table string, open int)
	// beforeSlotCreate, when set, is called by setup right before it creates the
	// slot, after it found none (ensureSlot; tests).
	beforeSlotCreate func()
	// getMessagesRow, when set, is called by GetMessages with the number of rows the
	// call has read so far, after each row (tests).
	getMessagesRow func(n int)
	// splitPeeks counts split polls (peekread.go); splitMinWAL, when not 0, replaces
	// the backlog from which polls are split (tests).
	splitPeeks  atomic.Uint64
	splitMinWAL uint64
	// restart keeps restart_lsn close to confirmed_flush_lsn (restartlsn.go).
	restart restartKeeper
	// stmtTimeout: the server gives dbsync's sessions a statement_timeout (role,
	// database or connection string), learned with each poll's flush LSN; peeks and
	// advances then run with it off (untimed.go).
	stmtTimeout atomic.Bool
	// bg bounds work that outlives a call, the restart_lsn checks that Forward and
	// GetMessages start; Close cancels it (bgCancel) and waits for them.
	bg       context.Context
	bgCancel context.CancelFunc

	// lifecycle
	mu     sync.Mutex
	closed bool // Close was called: Run refuses to start
	// calls counts the Refresh and Snapshot calls under way (beginCall): Close ends
	// them (bg) and waits for them before it closes the pool they use.
	calls   sync.WaitGroup
	running bool
	cancel  context.CancelFunc
	done    chan struct{}
	wake    chan struct{}

	// GetMessages/Forward state
	// peekSem (one slot) serialises GetMessages and Forward; a call waiting for it
	// gives up when its context ends (lockPeek).
	peekSem          chan struct{}
	lastPeekPoints   []peekPoint // the last call's rows the slot may be forwarded past
	lastPeekLen      int         // how many rows the last call returned
	lastPeekUpto     pglogrepl.LSN
	lastPeekComplete bool
}

// NewSyncer creates a Syncer. Settings come from opts, then from the environment
// (POSTGRES_DB or POSTGRES_NAME, POSTGRES_HOST, POSTGRES_PORT, POSTGRES_USER,
// POSTGRES_PASSWORD, POSTGRES_SSLMODE, DBSYNC_CTRL_NAMESPACE, DBSYNC_PUBNAME,
// DBSYNC_REPLSLOT, DBSYNC_WM_TABLENAME), then from the defaults (dbsync_ctrl,
// dbsync_mypub, dbsync_replslot, dbsync_wmtable, postgres@localhost:5432).
//
// Unless WithSetup(false) is given it runs Setup, so the errors of Setup (ErrWALLevel,
// ErrReplicationPrivilege, ErrPublicationMissing, ErrSlotMismatch, ...) come back here.
// An invalid option gives ErrConfig.
func NewSyncer(opts ...SyncerOpt) (*Syncer, error) {
	return NewSyncerContext(context.Background(), opts...)
}

// NewSyncerContext is NewSyncer with a context bounding setup.
func NewSyncerContext(ctx context.Context, opts ...SyncerOpt) (*Syncer, error) {
	s := &Syncer{
		DelayBetweenPeekRetries:   DefaultDelayBetweenPeekRetries,
		MinPollInterval:           DefaultMinPollInterval,
		MaxRestartLSNLag:          DefaultMaxRestartLSNLag,
		TimerDelayBackoffFactor:   DefaultTimerDelayBackoffFactor,
		MaxDelayBetweenEmptyPeeks: DefaultMaxDelayBetweenEmptyPeeks,
		MaxMessagesToRead:         DefaultMaxMessagesToRead,
		log:                       slog.New(slog.NewTextHandler(io.Discard, nil)),
		lookupEnv:                 os.LookupEnv,
		wake:                      make(chan struct{}, 1),
		peekSem:                   make(chan struct{}, 1),
	}
	s.bg, s.bgCancel = context.WithCancel(context.Background())
	for _, opt := range opts {
		if err := opt(s); err != nil {
			return nil, err
		}
	}
	if err := s.resolveConfig(); err != nil {
		return nil, err
	}
	if s.db == nil {
		connector, err := pq.NewConnector(s.connStr)
		if err != nil {
			return nil, fmt.Errorf("%w: connection string %q: %v", ErrConfig, RedactConnString(s.connStr), err)
		}
		// Its sockets can be closed when the server does not answer after a stop
		// (sockets.go).
		s.sockets = newSocketTracker()
		connector.Dialer(s.sockets)
		s.db, s.ownDB = sql.OpenDB(connector), true
	}
	s.tables = newTableCache(s.db)
	s.dec = newDecoder(s.tables)
	s.win = newWindowTracker()
	s.runID = newRunID()
	if !s.skipSetup {
		if err := s.Setup(ctx); err != nil {
			s.Close()
			return nil, err
		}
	}
	return s, nil
}

// DB returns the connection pool the Syncer uses.
func (s *Syncer) DB() *sql.DB { return s.db }

// ReplicationSlot returns the slot's name.
func (s *Syncer) ReplicationSlot() string { return s.replicationSlot }

// Publication returns the publication's name.
func (s *Syncer) Publication() string { return s.publication }

// CtrlNamespace returns the control schema's name.
func (s *Syncer) CtrlNamespace() string { return s.ctrlNamespace }

// WMTable returns the watermark table's name (in CtrlNamespace).
func (s *Syncer) WMTable() string { return s.wmTableName }

// Close stops the Syncer if it runs and ends the Refresh and Snapshot calls under way
// (waiting for a Run, or reading their rows): each returns an error wrapping both
// ErrRefreshAbandoned and ErrClosed (or nil, if Run's last poll handed its rows over),
// after deleting its watermark rows while the server can be reached. Close waits for
// them, ends a restart_lsn check that Forward or GetMessages started (see
// MaxRestartLSNLag) and waits for it, and then closes the connection pool if the
// Syncer opened it (not one given with WithDB). A closed Syncer does not run again:
// Run and Start return ErrClosed, and so do GetMessages, Forward, SkipBacklog, Setup,
// Teardown, TeardownWithResult, Status, ConfirmedFlushLSN, CurrentFlushLSN, TableInfo
// and CheckReplicaIdentity, also on a pool given with WithDB (they do nothing); Refresh
// and Snapshot return ErrRefreshAbandoned and ErrClosed. Close may be called more than
// once, but not from a handler, Batcher, EventsProcessor or SnapshotProgress function
// (it waits for the call that runs them). With the server unreachable (a partition,
// a frozen server) Close returns within 30 s: on the pool NewSyncer opens, the
// sockets still waiting for the server 20 s after Close began are closed (README,
// "Stopping when the server does not answer"); a lib/pq pool given with WithDB may
// keep it waiting until the operating system gives up on the connection.
func (s *Syncer) Close() error {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	ended, end := context.WithCancel(context.Background())
	end()
	defer s.unstickAfter(ended)()
	s.Stop()
	if s.win != nil {
		s.win.abandon(ErrClosed)
	}
	if s.bgCancel != nil {
		s.cancelRestartChecks(s.bgCancel)
	}
	// bg is cancelled: the calls under way end (beginCall) and delete their
	// watermark rows on the pool, which is then closed.
	s.calls.Wait()
	if s.ownDB && s.db != nil {
		return s.db.Close()
	}
	return nil
}

// beginCall starts a Refresh or Snapshot call: it returns ctx, also ended by Close,
// and end, which the call must run with its error when it returns: an error of a
// call that Close ended (a query cancelled, the pool closed) becomes one wrapping
// ErrRefreshAbandoned and ErrClosed, and one of a call whose caller's context ended
// one wrapping ErrRefreshAbandoned and the context's error, the errors the
// documentation promises. After Close it returns the first at once.
func (s *Syncer) beginCall(ctx context.Context) (context.Context, func(error) error, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ctx, nil, fmt.Errorf("%w: %w", ErrRefreshAbandoned, ErrClosed)
	}
	s.calls.Add(1)
	caller := ctx
	ctx, cancel := context.WithCancel(ctx)
	var stop func() bool
	if s.bg != nil {
		stop = context.AfterFunc(s.bg, cancel)
	}
	// A call stuck on a server that does not answer ends within the bound after ctx
	// (lib/pq: sockets.go).
	unstick := s.unstickAfter(ctx)
	end := func(err error) error {
		unstick()
		if stop != nil {
			stop()
		}
		cancel()
		s.calls.Done()
		s.mu.Lock()
		closed := s.closed
		s.mu.Unlock()
		switch {
		case err == nil:
		case closed || (s.bg != nil && s.bg.Err() != nil):
			// Close was called: also when the call ended between Close's Stop (Run
			// returning abandons the waiting selections as stopped) and its cancelling
			// bg (TestCloseAtRandomMoments).
			if !errors.Is(err, ErrClosed) {
				err = fmt.Errorf("%w: the Syncer was closed while the call ran: %w (%w)", ErrRefreshAbandoned, ErrClosed, err)
			}
		case caller.Err() != nil && !errors.Is(err, ErrRefreshAbandoned):
			// The caller's context ended: wherever the call was, it is abandoned.
			if errors.Is(err, caller.Err()) {
				err = fmt.Errorf("%w: %w", ErrRefreshAbandoned, err)
			} else {
				err = fmt.Errorf("%w: %w (%w)", ErrRefreshAbandoned, caller.Err(), err)
			}
		}
		return err
	}
	return ctx, end, nil
}

// checkOpen is ErrClosed for a call of the named method made after Close.
func (s *Syncer) checkOpen(call string) error {
	s.mu.Lock()
	closed := s.closed
	s.mu.Unlock()
	if closed {
		return fmt.Errorf("%w: %s after Close; make a new Syncer", ErrClosed, call)
	}
	return nil
}

// IsRunning tells whether Start or Run is delivering changes.
func (s *Syncer) IsRunning() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.running
}

// Run delivers changes until ctx is cancelled, Stop is called, a handler returns
// ErrStopProcessingMessages (all return nil), or a fatal error occurs (returned:
// ErrHandler under StopOnHandlerError, ErrSlotMissing, ErrSlotInvalidated,
// ErrSlotInUse, ErrSlotMismatch, ErrPublicationMissing, ErrInRecovery, ...). Connection loss, a server restart and a poll's statement
// cancelled by the server (pg_cancel_backend, a statement_timeout: 57014) are retried
// with exponential backoff (100 ms doubling up to 30 s), logged as warnings; after 10
// polls in a row cancelled so (about 1.5 minutes of backoff), Run returns
// ErrStatementCancelled: a statement_timeout of dbsync's role shorter than the poll's
// catalog reads (the peek and the advance run with it off) would have it retry forever.
// On a pool without a connection limit (the default) Run holds a lock on its slot on
// a connection of its own while it runs, and returns ErrSlotInUse at once, delivering
// nothing, when another process's Syncer (or `dbsync tail`) runs on the same slot.
// Returns ErrAlreadyRunning if the Syncer runs already, ErrClosed after Close,
// ErrConfig with nothing to deliver to, with a poller setting out of the range its
// option accepts (set on the struct directly, e.g. DelayBetweenPeekRetries 0), with an
// EventsProcessor beside a MessageHandler or a Batcher, or
// (without an EventsProcessor) on a pool limited to one connection (README, "Reading
// the slot"), and at its first poll on a session whose client_encoding is not UTF8
// (pgx takes a role's or database's; add client_encoding=UTF8 to the connection
// string).
// When a handler (or an EventsProcessor) asked to stop but the slot could not then be
// forwarded past what it processed, Run returns that error (what was processed is delivered again on the
// next run). Under StopOnHandlerError a handler or Batcher failing in the poll that a
// stop ends (the Batcher gets the poll's completed transactions at the stop) makes Run
// return that error (ErrHandler) rather than nil, the slot not forwarded past them. A panic in a handler, Batcher or EventsProcessor is not recovered: it
// goes on to Run's caller once Run has released the slot lock, with nothing of the
// poll forwarded, so a caller that recovers it may Run again and gets that poll's
// transactions again.
// Run returns within 30 s of ctx ending (or Stop) also when the server does not
// answer: the slot lock's release gives up after 5 s, and on the pool NewSyncer opens
// the sockets still waiting for the server 20 s after the stop are closed (README,
// "Stopping when the server does not answer"; not on a lib/pq pool given with WithDB).
func (s *Syncer) Run(ctx context.Context) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return ErrClosed
	}
	if s.running {
		s.mu.Unlock()
		return ErrAlreadyRunning
	}
	if s.MessageHandler == nil && s.EventsProcessor == nil && s.Batcher == nil {
		s.mu.Unlock()
		return fmt.Errorf("%w: no MessageHandler, EventsProcessor or Batcher to deliver to", ErrConfig)
	}
	if err := s.checkFields(); err != nil {
		s.mu.Unlock()
		return err
	}
	if s.EventsProcessor != nil && s.MessageHandler != nil {
		s.mu.Unlock()
		return fmt.Errorf("%w: an EventsProcessor gets the raw rows instead of the MessageHandler, which would never see a change while the slot moves past them; set one or the other", ErrConfig)
	}
	if s.EventsProcessor != nil && s.Batcher != nil {
		s.mu.Unlock()
		return fmt.Errorf("%w: an EventsProcessor gets the raw rows and decides how many were processed, so a Batcher would never get a poll's net effect before the slot moves; set one or the other", ErrConfig)
	}
	if s.EventsProcessor == nil && s.db.Stats().MaxOpenConnections == 1 {
		// A poll's rows are delivered while its connection still streams the peek,
		// and delivering a RELATION of a table not described yet reads the catalog
		// on another connection: with one, both wait for each other for good
		// (TestRunNeedsTwoConnections).
		s.mu.Unlock()
		return fmt.Errorf("%w: the connection pool may open only one connection, but Run needs two: one streams a poll's rows while the handlers get them, another reads the catalog for tables it has not described yet; allow at least two (db.SetMaxOpenConns(2)), more for a handler that uses the pool itself", ErrConfig)
	}
	ctx, cancel := context.WithCancel(ctx)
	s.running, s.cancel, s.done = true, cancel, make(chan struct{})
	done := s.done
	// Selections are taken from here on: once IsRunning says so, a Refresh does not
	// fail as if the Syncer were stopped.
	s.win.started()
	s.mu.Unlock()
	defer s.unstickAfter(ctx)()
	defer func() {
		cancel()
		s.mu.Lock()
		s.running, s.cancel = false, nil
		s.mu.Unlock()
		close(done)
	}()
	pollCtx, lost := context.WithCancelCause(ctx)
	defer lost(nil)
	// A handler's panic goes on to Run's caller, but not before the slot lock is
	// released and the waiting selections are abandoned: a caller that recovers it
	// and runs again must not find the slot locked by its own lost session
	// (TestHandlerPanicThenRunAgain).
	returned := false
	defer func() {
		if !returned {
			s.win.abandon(errors.New("a handler, Batcher or EventsProcessor panicked"))
		}
	}()
	release, err := s.lockSlotForRun(ctx, lost)
	if err == nil {
		var releaseOnce sync.Once
		unlock := func() { releaseOnce.Do(release) }
		defer unlock()
		err = s.pollLoop(pollCtx)
		// Before the waiting selections are abandoned: Close (Stop) waits for Run to
		// return before it marks them closed.
		unlock()
		if cause := context.Cause(pollCtx); err == nil && ctx.Err() == nil && errors.Is(cause, ErrSlotInUse) {
			err = cause // another process took the slot lock after its session ended
		}
	}
	cause := err
	if cause == nil {
		cause = errors.New("without error: its context ended, Stop or Close was called, or a handler returned ErrStopProcessingMessages")
	}
	returned = true
	s.win.abandon(cause) // pending Refresh/Snapshot callers get ErrRefreshAbandoned
	return err
}

// Start runs the Syncer until Stop is called (see Run) and returns Run's result.
func (s *Syncer) Start() error { return s.Run(context.Background()) }

// Stop asks a running Syncer to stop and waits until it has: the poll in progress is
// abandoned without forwarding past anything unprocessed. The handler call under way
// is waited for, but no further row is handed to the MessageHandler once Stop was
// called or Run's context ended (a Batcher still gets the poll's transactions whose
// COMMIT was taken, so that they can be forwarded); an unfinished transaction comes
// again on the next run. It does nothing if the
// Syncer is not running, including when a Start on another goroutine has not begun
// yet (`go s.Start(); s.Stop()` may leave that Start running until the next Stop).
// To bound a Syncer's life without that race, use Run with a context: a context
// cancelled before Run begins makes it return at once.
// Do not call Stop (or Close) from a handler, Batcher or EventsProcessor of this
// Syncer: it would wait for its own caller to return, for good. To stop from a
// handler, return ErrStopProcessingMessages or cancel Run's context.
func (s *Syncer) Stop() {
	s.mu.Lock()
	cancel, done := s.cancel, s.done
	s.mu.Unlock()
	if cancel == nil {
		return
	}
	cancel()
	<-done
}

// Wake makes a running Syncer poll now instead of finishing its idle wait (the flush
// LSN watch or the backoff after empty peeks). It does not shorten MinPollInterval
// between two polls that delivered rows, nor the backoff before a retry (after a
// handler error under RetryOnHandlerError, or a lost connection): a wake during one
// is not kept.
func (s *Syncer) Wake() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}
