package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"sync"

	"github.com/dbsync/dbsync"
	"github.com/jackc/pglogrepl"
)

// runSnapshot reads whole tables through the change stream (Syncer.Snapshot) and
// prints every refresh row and every change as JSON lines on stdout, with progress
// (rows done of the estimated total) on stderr. It ends when every table was read,
// or with -follow keeps streaming changes until ctx ends (Ctrl-C). An interrupted
// snapshot resumes at the last delivered chunk when run again with the same slot.
func runSnapshot(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("dbsync snapshot", flag.ContinueOnError)
	fs.SetOutput(stderr)
	chunk := fs.Int("chunk-size", dbsync.DefaultSnapshotChunkSize, "rows per chunk (one watermark window each)")
	follow := fs.Bool("follow", false, "keep streaming changes after the snapshot until Ctrl-C")
	slot := fs.String("slot", "", "replication slot (default $"+dbsync.EnvReplSlot+" or "+dbsync.DefaultReplSlot+")")
	pub := fs.String("publication", "", "publication (default $"+dbsync.EnvPublication+" or "+dbsync.DefaultPublication+"); created for the tables if missing")
	verbose := fs.Bool("v", false, "log what dbsync does to stderr")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "Usage: dbsync snapshot [-chunk-size n] [-follow] [-slot s] [-publication p] [-v] table...")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	tables := fs.Args()
	if len(tables) == 0 {
		fs.Usage()
		return errors.New("dbsync snapshot: name at least one table")
	}
	level := slog.LevelWarn
	if *verbose {
		level = slog.LevelDebug
	}
	out := bufio.NewWriterSize(stdout, 64<<10)
	h := &snapshotPrinter{w: out}
	opts := []dbsync.SyncerOpt{
		dbsync.WithMessageHandler(h),
		dbsync.ForTables(tables...),
		dbsync.WithSnapshotChunkSize(*chunk),
		dbsync.WithLogger(slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))),
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
		}),
	}
	if *slot != "" {
		opts = append(opts, dbsync.WithReplicationSlot(*slot))
	}
	if *pub != "" {
		opts = append(opts, dbsync.WithPublication(*pub))
	}
	s, err := dbsync.NewSyncerContext(ctx, opts...)
	if err != nil {
		return err
	}
	defer s.Close()

	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	runDone := make(chan error, 1)
	go func() { runDone <- s.Run(runCtx) }()

	snapErr := s.Snapshot(ctx, tables...)
	if snapErr == nil && *follow {
		fmt.Fprintln(stderr, "dbsync snapshot: done; streaming changes, Ctrl-C to stop")
		<-ctx.Done()
	}
	cancel()
	runErr := <-runDone
	if ferr := h.flush(); ferr != nil && runErr == nil {
		runErr = ferr
	}
	if snapErr != nil && !(*follow && ctx.Err() != nil) {
		return errors.Join(snapErr, runErr)
	}
	return runErr
}

// snapshotPrinter writes refresh rows and changes as JSON lines, flushing at every
// COMMIT (the high watermark's COMMIT comes right after its refresh rows), so nothing
// is forwarded past what was written. Line shapes:
//
//	{"type":"refresh","schema":"public","table":"t","key":{"id":"1"},"new":{...}}
//	{"type":"change","op":"update","schema":"public","table":"t","key":{...},"old_key":{...},"new":{...},"old":{...},"unchanged":[...]}
//
// NOTE for the merge: handlers.JSONLinesWriter (branch cli) prints changes with the
// documented schema; give it a HandleRefresh writing the "refresh" line above and use
// it here instead.
type snapshotPrinter struct {
	dbsync.DefaultMessageHandler
	mu sync.Mutex
	w  *bufio.Writer
}

type snapshotLine struct {
	Type      string           `json:"type"`
	Op        dbsync.Op        `json:"op,omitempty"`
	Schema    string           `json:"schema"`
	Table     string           `json:"table"`
	Key       dbsync.StringMap `json:"key"`
	OldKey    dbsync.StringMap `json:"old_key,omitempty"`
	New       dbsync.StringMap `json:"new,omitempty"`
	Old       dbsync.StringMap `json:"old,omitempty"`
	Unchanged []string         `json:"unchanged,omitempty"`
}

func keyOf(t *dbsync.PGTableInfo, values dbsync.StringMap) dbsync.StringMap {
	if values == nil {
		return nil
	}
	k := dbsync.StringMap{}
	for _, c := range t.PrimaryKey {
		if v, ok := values[c]; ok {
			k[c] = v
		}
	}
	return k
}

func (p *snapshotPrinter) write(l snapshotLine) error {
	b, err := json.Marshal(l)
	if err != nil {
		return err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.w.Write(b)
	return p.w.WriteByte('\n')
}

func (p *snapshotPrinter) flush() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.w.Flush()
}

func (p *snapshotPrinter) HandleRefresh(_ string, it dbsync.DBItem) error {
	return p.write(snapshotLine{Type: "refresh", Schema: it.Table.Namespace, Table: it.Table.TableName,
		Key: keyOf(it.Table, it.Values), New: it.Values})
}

func (p *snapshotPrinter) change(m pglogrepl.Message, reln *pglogrepl.RelationMessage, t *dbsync.PGTableInfo) error {
	c, err := dbsync.DecodeChange(m, reln, t)
	if err != nil {
		return err
	}
	l := snapshotLine{Type: "change", Op: c.Op, Schema: t.Namespace, Table: t.TableName, New: c.New, Old: c.Old, Unchanged: c.Unchanged}
	if c.Op == dbsync.OpDelete {
		l.Key = keyOf(t, c.Old)
	} else {
		l.Key = keyOf(t, c.New)
	}
	if c.OldKey != "" {
		l.OldKey = keyOf(t, c.Old)
	}
	return p.write(l)
}

func (p *snapshotPrinter) HandleInsertMessage(_ int, m *pglogrepl.InsertMessage, r *pglogrepl.RelationMessage, t *dbsync.PGTableInfo) error {
	return p.change(m, r, t)
}

func (p *snapshotPrinter) HandleUpdateMessage(_ int, m *pglogrepl.UpdateMessage, r *pglogrepl.RelationMessage, t *dbsync.PGTableInfo) error {
	return p.change(m, r, t)
}

func (p *snapshotPrinter) HandleDeleteMessage(_ int, m *pglogrepl.DeleteMessage, r *pglogrepl.RelationMessage, t *dbsync.PGTableInfo) error {
	return p.change(m, r, t)
}

func (p *snapshotPrinter) HandleCommitMessage(int, *pglogrepl.CommitMessage) error { return p.flush() }
