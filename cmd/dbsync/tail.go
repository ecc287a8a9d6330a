package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/dbsync/dbsync"
	"github.com/dbsync/dbsync/handlers"
)

// runTail streams the slot's changes to stdout until ctx is cancelled (Ctrl-C). Each
// transaction's lines are written and flushed at its COMMIT before the Syncer may
// forward the slot past it, so a stop (or a crash) never loses a change: at worst the
// last transactions are printed again by the next tail.
func runTail(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("tail", "tail [-tables t1,t2] [-from-now] [-format json|text] [-relations] [-slot s] [-publication p] [-v]", stderr)
	tables := fs.String("tables", "", "comma-separated tables (table or schema.table) to create the publication for if it does not exist, or to add to it")
	fromNow := fs.Bool("from-now", false, "skip the slot's backlog: forward the slot to the current WAL flush LSN before streaming (the skipped changes are lost to every consumer of this slot)")
	format := fs.String("format", "json", "output format: json (JSON lines, see docs/CLI.md) or text (human-readable)")
	relations := fs.Bool("relations", false, "also print RELATION messages (table layouts)")
	sf := addSlotFlags(fs)
	if err := parse(fs, args); err != nil {
		return err
	}
	out := bufio.NewWriterSize(stdout, 64<<10)
	var h dbsync.MessageHandler
	switch *format {
	case "json":
		h = &handlers.JSONLinesWriter{W: out, Relations: *relations}
	case "text":
		h = &handlers.EchoMessageHandler{W: &flushingWriter{out}, Relations: *relations}
	default:
		return usageError{fmt.Sprintf("-format %q: want json or text", *format)}
	}
	opts := append(sf.options(stderr, slog.LevelWarn), dbsync.WithMessageHandler(h))
	if t := splitList(*tables); len(t) > 0 {
		opts = append(opts, dbsync.ForTables(t...))
	}
	s, err := dbsync.NewSyncerContext(ctx, opts...)
	if err != nil && ctx.Err() != nil {
		// Ctrl-C (or SIGTERM) during setup, typically while the slot's creation waits
		// for open transactions: a stop like any other (exit 0); a cancelled creation
		// leaves no slot.
		fmt.Fprintf(stderr, "dbsync tail: interrupted while setting up slot %s; nothing was read\n", sf.slotName())
		return nil
	}
	if err != nil {
		return sf.explain(tablesHint(err))
	}
	defer s.Close()
	if *fromNow {
		// SkipBacklog refuses (ErrSlotInUse) a slot another Syncer or tail drives:
		// advancing it under that consumer would lose its unprocessed changes.
		lsn, err := s.SkipBacklog(ctx)
		if err != nil {
			return fmt.Errorf("skip the backlog of slot %s: %w", s.ReplicationSlot(), err)
		}
		fmt.Fprintf(stderr, "dbsync tail: skipped the backlog; slot %s now at %s\n", s.ReplicationSlot(), lsn)
	}
	fmt.Fprintf(stderr, "dbsync tail: slot %s, publication %s, %s; Ctrl-C to stop\n",
		s.ReplicationSlot(), s.Publication(), connDescription())
	runErr := s.Run(ctx)
	if ferr := out.Flush(); runErr == nil && ferr != nil {
		runErr = ferr
	}
	if runErr != nil {
		// The publication can also be dropped while tail runs.
		return tablesHint(runErr)
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if lsn, err := s.ConfirmedFlushLSN(sctx); err == nil {
		fmt.Fprintf(stderr, "dbsync tail: stopped; slot %s confirmed up to %s\n", s.ReplicationSlot(), lsn)
	}
	return nil
}

// flushingWriter flushes a bufio.Writer after every write (for line-by-line text).
type flushingWriter struct{ w *bufio.Writer }

func (f *flushingWriter) Write(p []byte) (int, error) {
	n, err := f.w.Write(p)
	if err != nil {
		return n, err
	}
	return n, f.w.Flush()
}

// tablesHint adds the CLI's way to create a missing publication to an
// ErrPublicationMissing, whose message says to pass dbsync.ForTables: -tables here.
func tablesHint(err error) error {
	if errors.Is(err, dbsync.ErrPublicationMissing) {
		return fmt.Errorf("%w\n(with dbsync tail, give -tables t1,schema.t2 to create it)", err)
	}
	return err
}
