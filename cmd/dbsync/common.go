package main

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"

	"github.com/dbsync/dbsync"
	"github.com/lib/pq"
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
	return checkNameFlags(fs)
}

// checkNameFlags refuses a -slot or -publication given an empty value (a script's
// unset variable: `dbsync teardown -slot "$SLOT"`), which would otherwise mean
// $DBSYNC_REPLSLOT's slot or the default one: teardown would drop another
// consumer's slot. dbsync.WithReplicationSlot("") is ErrConfig for the same reason.
func checkNameFlags(fs *flag.FlagSet) error {
	var err error
	fs.Visit(func(f *flag.Flag) {
		env, def := "", ""
		switch f.Name {
		case "slot":
			env, def = dbsync.EnvReplSlot, dbsync.DefaultReplSlot
		case "publication":
			env, def = dbsync.EnvPublication, dbsync.DefaultPublication
		default:
			return
		}
		if err == nil && f.Value.String() == "" {
			err = usageError{fmt.Sprintf("-%s \"\": give a name, or leave the flag out to use $%s or %s", f.Name, env, def)}
		}
	})
	return err
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

// slotName is the slot the command works on: -slot, else $DBSYNC_REPLSLOT, else the
// default (as NewSyncer resolves it), for messages written when no Syncer exists.
func (f *slotFlags) slotName() string {
	return cmp.Or(f.slot, os.Getenv(dbsync.EnvReplSlot), dbsync.DefaultReplSlot)
}

// explain names the flag behind a configuration error about a name the user gave
// with -slot or -publication: NewSyncer's message names only the library option and
// the environment variable (WithReplicationSlot / $DBSYNC_REPLSLOT).
func (f *slotFlags) explain(err error) error {
	if !errors.Is(err, dbsync.ErrConfig) {
		return err
	}
	msg := err.Error()
	switch {
	case f.slot != "" && strings.Contains(msg, "replication slot name "+strconv.Quote(f.slot)):
		return fmt.Errorf("-slot %q: %w", f.slot, err)
	case f.publication != "" && strings.Contains(msg, "publication name "+strconv.Quote(f.publication)):
		return fmt.Errorf("-publication %q: %w", f.publication, err)
	}
	return err
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

// withConnHint wraps a command that connects with the POSTGRES_* variables: when it
// fails because it could not connect (nothing listens, wrong password or no such
// role, no pg_hba.conf entry, no such database, SSL refused), the error names the
// connection (password redacted) and the variables to check, instead of whatever
// step first touched the server ("read slot status of ...").
func withConnHint(run func(context.Context, []string, io.Writer, io.Writer) error) func(context.Context, []string, io.Writer, io.Writer) error {
	return func(ctx context.Context, args []string, stdout, stderr io.Writer) error {
		err := run(ctx, args, stdout, stderr)
		if err == nil || !isConnectError(err) {
			return err
		}
		return fmt.Errorf("cannot connect to PostgreSQL (%s): %s; check %s, %s, %s, %s, %s and %s",
			connDescription(), connCause(err), dbsync.EnvPostgresHost, dbsync.EnvPostgresPort, dbsync.EnvPostgresUser,
			dbsync.EnvPostgresPassword, dbsync.EnvPostgresDB, dbsync.EnvPostgresSSLMode)
	}
}

// isConnectError tells whether err is a failure to open a session.
func isConnectError(err error) bool {
	var ne *net.OpError
	if errors.As(err, &ne) && ne.Op == "dial" {
		return true
	}
	var pe *pq.Error
	if errors.As(err, &pe) {
		return pe.Code.Class() == "28" || pe.Code == "3D000" // invalid authorization; invalid_catalog_name
	}
	return errors.Is(err, pq.ErrSSLNotSupported)
}

// connCause is the driver's or the network's own message for a connect error.
func connCause(err error) string {
	var pe *pq.Error
	if errors.As(err, &pe) {
		return pe.Error()
	}
	var ne *net.OpError
	if errors.As(err, &ne) {
		return ne.Error()
	}
	return err.Error()
}
