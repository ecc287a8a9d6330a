package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"

	"github.com/dbsync/dbsync"
)

// runTeardown removes the slot, the watermark table's publication entry and the
// control schema (Syncer.Teardown). It creates nothing (WithSetup(false)).
func runTeardown(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("teardown", "teardown [-slot s] [-publication p] [-v]", stderr)
	sf := addSlotFlags(fs)
	if err := parse(fs, args); err != nil {
		return err
	}
	s, err := dbsync.NewSyncerContext(ctx, append(sf.options(stderr, slog.LevelInfo), dbsync.WithSetup(false))...)
	if err != nil {
		return err
	}
	defer s.Close()
	if err := s.Teardown(ctx); err != nil {
		return err
	}
	_, err = fmt.Fprintf(stdout, "teardown: slot %s, watermark table %s.%s (publication %s) and schema %s are gone\n",
		s.ReplicationSlot(), s.CtrlNamespace(), s.WMTable(), s.Publication(), s.CtrlNamespace())
	return err
}
