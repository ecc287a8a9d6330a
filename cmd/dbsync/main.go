// Command dbsync streams, inspects and removes a dbsync logical replication slot, and
// runs a self-checking demo. Run `dbsync help` for the commands; docs/CLI.md describes
// them, their flags, the environment variables and the JSON-lines output.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

// command is one subcommand. run gets the arguments after the command name; it
// returns nil on success, flag.ErrHelp after printing help, a usageError for bad
// arguments (exit 2), an exitError to choose the exit status, or any other error
// (printed, exit 1). Ctrl-C (SIGINT) and SIGTERM cancel ctx.
type command struct {
	name    string
	summary string
	run     func(ctx context.Context, args []string, stdout, stderr io.Writer) error
}

// commands is the dispatch table, in the order `dbsync help` lists them. A new
// command lives in its own file and is added here with one line.
var commands = []command{
	{"tail", "stream changes as JSON lines to stdout until Ctrl-C", withConnHint(runTail)},
	{"status", "show the replication slot: position, activity, retained WAL and lag", withConnHint(runStatus)},
	{"teardown", "drop the slot, and dbsync's control schema unless other slots may use it", withConnHint(runTeardown)},
	{"snapshot", "read whole tables through the change stream as JSON lines, with progress", withConnHint(runSnapshot)},
	{"demo", "sync concurrent writes into an in-memory copy and verify it row by row", runDemo},
	{"bench", "benchmark dbsync against PostgreSQL's limits on a throwaway cluster (docs/BENCHMARKS.md)", runBench},
}

// usageError is a bad command line: the message is printed with a hint, exit status 2.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

// exitError ends the program with status code after printing err (if non-nil).
type exitError struct {
	code int
	err  error
}

func (e exitError) Error() string {
	if e.err == nil {
		return fmt.Sprintf("exit status %d", e.code)
	}
	return e.err.Error()
}

func (e exitError) Unwrap() error { return e.err }

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	// The first Ctrl-C (or SIGTERM) asks the command to stop cleanly; once it has, the
	// signals' default action is back, so a second one ends a stop that is stuck (a
	// write to a pipe nobody reads, an unreachable server).
	go func() { <-ctx.Done(); stop() }()
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run dispatches args to a command and returns the exit status.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		usage(stderr)
		return 2
	}
	name := args[0]
	if name == "help" || name == "-h" || name == "-help" || name == "--help" {
		if len(args) > 1 {
			if c := lookup(args[1]); c != nil {
				_ = c.run(ctx, []string{"-h"}, stdout, stdout)
				return 0
			}
			fmt.Fprintf(stderr, "dbsync: unknown command %q\n", args[1])
			usage(stderr)
			return 2
		}
		usage(stdout)
		return 0
	}
	c := lookup(name)
	if c == nil {
		fmt.Fprintf(stderr, "dbsync: unknown command %q\n", name)
		usage(stderr)
		return 2
	}
	err := c.run(ctx, args[1:], stdout, stderr)
	var ue usageError
	var ee exitError
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		return 0
	case errors.As(err, &ue):
		fmt.Fprintf(stderr, "dbsync %s: %s\nRun 'dbsync help %s' for usage.\n", name, ue.msg, name)
		return 2
	case errors.As(err, &ee):
		if ee.err != nil {
			fmt.Fprintf(stderr, "dbsync %s: %v\n", name, ee.err)
		}
		return ee.code
	default:
		fmt.Fprintf(stderr, "dbsync %s: %v\n", name, err)
		return 1
	}
}

func lookup(name string) *command {
	for i := range commands {
		if commands[i].name == name {
			return &commands[i]
		}
	}
	return nil
}

func usage(w io.Writer) {
	fmt.Fprintf(w, "dbsync keeps caches in sync with PostgreSQL tables through logical decoding.\n\nUsage:\n  dbsync <command> [flags]\n\nCommands:\n")
	for _, c := range commands {
		fmt.Fprintf(w, "  %-10s %s\n", c.name, c.summary)
	}
	fmt.Fprintf(w, "  %-10s %s\n", "help", "show this list, or a command's flags: dbsync help <command>")
	fmt.Fprint(w, `
Connection and names come from the environment: POSTGRES_DB (or POSTGRES_NAME),
POSTGRES_HOST, POSTGRES_PORT, POSTGRES_USER, POSTGRES_PASSWORD, POSTGRES_SSLMODE,
DBSYNC_CTRL_NAMESPACE, DBSYNC_PUBNAME, DBSYNC_REPLSLOT, DBSYNC_WM_TABLENAME.
See docs/CLI.md.
`)
}
