package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/dbsync/dbsync/internal/demo"
)

// runDemo runs internal/demo: progress on stderr, and as the last line on stdout
// "demo: <N> rows in <T> tables, <M> mismatches". Exit status 1 when M > 0.
func runDemo(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("demo", "demo [-writers n] [-duration d] [-tx n] [-keys n] [-seed-rows n] [-seed n] [-v]", stderr)
	writers := fs.Int("writers", 4, "concurrent writer goroutines")
	duration := fs.Duration("duration", 8*time.Second, "how long the writers run")
	maxTx := fs.Int("tx", 0, "stop each writer after this many transactions (0: only -duration)")
	keys := fs.Int("keys", 300, "keys per writer and table (smaller: more updates and deletes per insert)")
	seedRows := fs.Int("seed-rows", 2000, "rows per table inserted before the slot exists, loaded by a snapshot while writers run")
	seed := fs.Uint64("seed", 0, "random seed for the writers (0: random)")
	verbose := fs.Bool("v", false, "log what the syncer does to stderr")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *writers < 1 || *duration <= 0 || *keys < 1 || *maxTx < 0 || *seedRows < 0 {
		return usageError{"-writers and -keys must be >= 1, -duration > 0, -tx >= 0, -seed-rows >= 0"}
	}
	cfg := demo.Config{Writers: *writers, Duration: *duration, MaxTxPerWriter: *maxTx, KeysPerWriter: *keys,
		SeedRows: *seedRows, Seed: *seed, Progress: stderr}
	if *verbose {
		cfg.Logger = slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	res, err := demo.Run(ctx, cfg)
	if err != nil {
		// Interrupted (Ctrl-C, SIGTERM), wherever the error came from: a statement
		// lib/pq was running ends with the server's 57014, not context.Canceled.
		if ctx.Err() != nil {
			return exitError{code: 130, err: errors.New("interrupted; the demo removed what it had created")}
		}
		return err
	}
	fmt.Fprintf(stderr, "demo: %d transactions committed, %d rolled back; copy applied %d changes (%d unchanged TOAST values kept, %d key changes) in %.1fs\n",
		res.Committed, res.RolledBack, res.Cache.Changes, res.Cache.KeptUnchanged, res.Cache.KeyChanges, res.Elapsed.Seconds())
	for _, d := range res.Details {
		fmt.Fprintln(stderr, "demo: mismatch:", d)
	}
	if _, err := fmt.Fprintln(stdout, res.Line()); err != nil {
		return err
	}
	if res.Mismatches > 0 {
		return exitError{code: 1}
	}
	return nil
}
