package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"strings"

	"github.com/dbsync/dbsync"
)

// newFlagSet returns a flag set for a command that reports errors instead of exiting
// and prints its usage (summary, then flags) to w.
func newFlagSet(name, synopsis string, w io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("dbsync "+name, flag.ContinueOnError)
	fs.SetOutput(w)
	fs.Usage = func() {
		fmt.Fprintf(w, "Usage: dbsync %s\n", synopsis)
		fs.PrintDefaults()
	}
	return fs
}

// parse parses args, turning a bad flag into a usageError (the flag package has
// printed it and the usage already) and -h into flag.ErrHelp.
func parse(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return exitError{code: 2}
	}
	if fs.NArg() > 0 {
		return usageError{fmt.Sprintf("unexpected arguments %q", fs.Args())}
	}
	return nil
}

// slotFlags are the flags tail, status and teardown share: names that override the
// DBSYNC_* environment variables.
type slotFlags struct {
	slot, publication string
	verbose           bool
}

func addSlotFlags(fs *flag.FlagSet) *slotFlags {
	f := &slotFlags{}
	fs.StringVar(&f.slot, "slot", "", "replication slot (default $"+dbsync.EnvReplSlot+" or "+dbsync.DefaultReplSlot+")")
	fs.StringVar(&f.publication, "publication", "", "publication (default $"+dbsync.EnvPublication+" or "+dbsync.DefaultPublication+")")
	fs.BoolVar(&f.verbose, "v", false, "log what dbsync does to stderr")
	return f
}

// options turns the flags into Syncer options; the rest comes from the environment.
// level is the least log level written to stderr (raised to Debug by -v).
func (f *slotFlags) options(stderr io.Writer, level slog.Level) []dbsync.SyncerOpt {
	var opts []dbsync.SyncerOpt
	if f.slot != "" {
		opts = append(opts, dbsync.WithReplicationSlot(f.slot))
	}
	if f.publication != "" {
		opts = append(opts, dbsync.WithPublication(f.publication))
	}
	if f.verbose {
		level = slog.LevelDebug
	}
	opts = append(opts, dbsync.WithLogger(slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))))
	return opts
}

// connDescription is the connection the environment describes, password redacted.
func connDescription() string {
	return dbsync.RedactConnString(dbsync.ConnStringFromEnv(nil))
}

// splitList splits a comma-separated flag value, dropping empty items.
func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}
