package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"

	"github.com/dbsync/dbsync"
)

// runTeardown removes the slot and, unless other slots may still use them, the
// watermark table's publication entry and the control schema
// (Syncer.TeardownWithResult). It creates nothing (WithSetup(false)). It says on
// stdout what is gone, and what was kept and why.
func runTeardown(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("teardown", "teardown [-slot s] [-publication p] [-v]", stderr)
	sf := addSlotFlags(fs)
	if err := parse(fs, args); err != nil {
		return err
	}
	s, err := dbsync.NewSyncerContext(ctx, append(sf.options(stderr, slog.LevelInfo), dbsync.WithSetup(false))...)
	if err != nil {
		return sf.explain(err)
	}
	defer s.Close()
	res, err := s.TeardownWithResult(ctx)
	if err != nil {
		return err
	}
	if !res.Kept() {
		_, err = fmt.Fprintf(stdout, "teardown: slot %s, watermark table %s.%s (publication %s) and schema %s are gone\n",
			s.ReplicationSlot(), s.CtrlNamespace(), s.WMTable(), s.Publication(), s.CtrlNamespace())
		return err
	}
	progress := ""
	if res.ProgressRowsDeleted > 0 {
		progress = fmt.Sprintf(", and so are its %d snapshot progress rows", res.ProgressRowsDeleted)
	}
	_, err = fmt.Fprintf(stdout, "teardown: slot %s is gone%s\n"+
		"teardown: kept schema %s and watermark table %s.%s (publication %s): other slots of this database may use them: %s; the teardown of the last of them removes them\n",
		s.ReplicationSlot(), progress, s.CtrlNamespace(), s.CtrlNamespace(), s.WMTable(), s.Publication(),
		strings.Join(res.OtherSlots, ", "))
	return err
}
