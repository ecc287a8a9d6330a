package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"

	"github.com/dbsync/dbsync"
	"github.com/dbsync/dbsync/handlers"
)

// runSnapshot reads whole tables through the change stream (Syncer.Snapshot) and
// prints every refresh row and every change as JSON lines on stdout, with progress
// (rows done of the estimated total) on stderr. It ends when every table was read,
// or with -follow keeps streaming changes until ctx ends (Ctrl-C). An interrupted
// snapshot resumes at the last delivered chunk when run again with the same slot.
func runSnapshot(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("snapshot", "snapshot [-chunk-size n] [-chunks-in-flight n] [-parallel n] [-follow] [-slot s] [-publication p] [-v] table...", stderr)
	chunk := fs.Int("chunk-size", dbsync.DefaultSnapshotChunkSize, "rows per chunk (one watermark window each)")
	inFlight := fs.Int("chunks-in-flight", dbsync.DefaultSnapshotChunksInFlight, "chunks read ahead of the oldest one not yet handed over (each held in memory)")
	parallel := fs.Int("parallel", dbsync.DefaultSnapshotParallel, "chunks read at once, each on its own connection (at most -chunks-in-flight)")
	follow := fs.Bool("follow", false, "keep streaming changes after the snapshot until Ctrl-C")
	sf := addSlotFlags(fs)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return exitError{code: 2}
	}
	if err := checkNameFlags(fs); err != nil {
		return err
	}
	tables := fs.Args()
	if len(tables) == 0 {
		return usageError{"name at least one table to snapshot"}
	}
	for _, t := range tables {
		// The flag package stops at the first table name: a flag after it would be
		// taken for a table.
		if len(t) > 1 && t[0] == '-' {
			return usageError{fmt.Sprintf("flag %s after the table names: flags go first: dbsync snapshot [flags] table...", t)}
		}
	}
	// Checked here so the error names the flag, not the library option it sets.
	for _, n := range []struct {
		flag string
		v    int
		unit string
	}{{"-chunk-size", *chunk, "rows per chunk"}, {"-chunks-in-flight", *inFlight, "chunks"}, {"-parallel", *parallel, "chunks at once"}} {
		if n.v < 1 {
			return fmt.Errorf("%w: %s %d: must be >= 1 %s", dbsync.ErrConfig, n.flag, n.v, n.unit)
		}
	}
	out := bufio.NewWriterSize(stdout, 64<<10)
	// Refresh rows and changes as JSON lines (handlers.JSONLinesWriter: docs/CLI.md),
	// each transaction's lines written and flushed at its COMMIT, before the Syncer may
	// forward the slot past it.
	h := handlers.NewJSONLinesWriter(out)
	opts := append(sf.options(stderr, slog.LevelWarn),
		dbsync.WithMessageHandler(h),
		dbsync.ForTables(tables...),
		dbsync.WithSnapshotChunkSize(*chunk),
		dbsync.WithSnapshotChunksInFlight(*inFlight),
		dbsync.WithSnapshotParallel(*parallel),
		dbsync.WithSnapshotProgress(func(p dbsync.SnapshotProgress) {
			est := "?"
			if p.Estimated >= 0 {
				est = fmt.Sprint(p.Estimated)
			}
			state := ""
			if p.Done {
				state = ", done"
			}
			fmt.Fprintf(stderr, "dbsync snapshot: %s: %d of ~%s rows (%d chunks%s)\n", p.Table, p.Rows, est, p.Chunks, state)
		}))
	s, err := dbsync.NewSyncerContext(ctx, opts...)
	if err != nil && ctx.Err() != nil {
		// Ctrl-C (or SIGTERM) during setup, typically while the slot's creation waits
		// for open transactions: interrupted before every table was read, like later.
		return exitError{code: 130, err: interruptedErr(sf.slotName())}
	}
	if err != nil {
		return sf.explain(err)
	}
	defer s.Close()

	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	runDone := make(chan error, 1)
	go func() { runDone <- s.Run(runCtx) }()

	snapErr := s.Snapshot(ctx, tables...)
	var runErr error
	ran := false
	if snapErr == nil && *follow {
		fmt.Fprintln(stderr, "dbsync snapshot: done; streaming changes, Ctrl-C to stop")
		select {
		case <-ctx.Done():
		case runErr = <-runDone: // the Syncer stopped on its own (slot dropped, ...)
			ran = true
		}
	}
	cancel()
	if !ran {
		runErr = <-runDone
	}
	if ferr := out.Flush(); ferr != nil && runErr == nil {
		runErr = ferr
	}
	if snapErr != nil && ctx.Err() != nil {
		// Ctrl-C (or SIGTERM) before every table was read, with or without -follow:
		// not a clean end. What was printed was delivered; the progress of every
		// delivered chunk is recorded, so the next run resumes after it.
		return exitError{code: 130, err: errors.Join(interruptedErr(s.ReplicationSlot()), runErr)}
	}
	if snapErr != nil && runErr != nil && errors.Is(snapErr, dbsync.ErrRefreshAbandoned) {
		// The Syncer stopped (ErrSlotInUse, a dropped slot, ...) and the snapshot was
		// abandoned for it: Run's error says why, and snapErr only repeats it with
		// advice for programs that forgot to call Run.
		return runErr
	}
	if snapErr != nil {
		return errors.Join(snapErr, runErr)
	}
	return runErr
}

// interruptedErr says a snapshot of slot was interrupted before it finished.
func interruptedErr(slot string) error {
	return fmt.Errorf("interrupted before the snapshot finished; run it again with the same slot (%s) to resume after the last delivered chunk", slot)
}
