package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"

	"github.com/dbsync/dbsync"
	"github.com/lib/pq"
)

// runStatus prints the slot's state. It creates nothing (WithSetup(false)).
func runStatus(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("status", "status [-json] [-slot s] [-publication p] [-v]", stderr)
	asJSON := fs.Bool("json", false, "print one JSON object instead of aligned lines")
	sf := addSlotFlags(fs)
	if err := parse(fs, args); err != nil {
		return err
	}
	s, err := dbsync.NewSyncerContext(ctx, append(sf.options(stderr, slog.LevelWarn), dbsync.WithSetup(false))...)
	if err != nil {
		return sf.explain(err)
	}
	defer s.Close()
	st, err := s.Status(ctx)
	if err != nil {
		return err
	}
	// An invalidated slot (wal_status lost) has no restart_lsn: null in JSON.
	var restartJSON any
	if st.RestartLSN != 0 {
		restartJSON = st.RestartLSN.String()
	}
	// A physical slot has no confirmed_flush_lsn (NULL): unset, not 0/0.
	var confirmedJSON any
	confirmed := "-"
	if st.ConfirmedFlushLSN != 0 {
		confirmedJSON, confirmed = st.ConfirmedFlushLSN.String(), st.ConfirmedFlushLSN.String()
	}
	if *asJSON {
		b, err := json.Marshal(map[string]any{
			"slot": st.Slot, "plugin": st.Plugin, "slot_type": st.SlotType, "database": st.Database,
			"active": st.Active, "active_pid": st.ActivePID,
			"confirmed_flush_lsn": confirmedJSON, "restart_lsn": restartJSON,
			"wal_status": st.WALStatus, "current_lsn": st.CurrentLSN.String(), "flush_lsn": st.FlushLSN.String(),
			"retained_wal_bytes": st.RetainedWALBytes, "lag_bytes": st.LagBytes,
			"spill_txns": st.Stats.SpillTxns, "spill_count": st.Stats.SpillCount, "spill_bytes": st.Stats.SpillBytes,
			"stream_txns": st.Stats.StreamTxns, "stream_bytes": st.Stats.StreamBytes,
			"total_txns": st.Stats.TotalTxns, "total_bytes": st.Stats.TotalBytes,
		})
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(stdout, "%s\n", b)
		return err
	}
	pid := "-"
	if st.Active {
		pid = fmt.Sprint(st.ActivePID)
	}
	// restart_lsn is NULL once a slot is invalidated (wal_status lost), but also for
	// a physical slot that was never used: only wal_status says which.
	restart := st.RestartLSN.String()
	if st.RestartLSN == 0 {
		restart = "-"
		if st.WALStatus == "lost" {
			restart += " (invalidated)"
		}
	}
	// A slot of that name dbsync cannot read (Setup and Syncer refuse it with
	// ErrSlotMismatch) is said to be one.
	plugin := st.Plugin
	switch {
	case st.SlotType != "logical":
		plugin = "(none: a " + st.SlotType + " slot, which dbsync cannot read)"
	case st.Plugin != "pgoutput":
		plugin += " (not pgoutput: dbsync cannot read this slot)"
	}
	// Slot names are per cluster: the slot may belong to another database.
	database := st.Database
	var current string
	if err := s.DB().QueryRowContext(ctx, `SELECT pg_catalog.current_database()`).Scan(&current); err != nil {
		return err
	}
	if st.SlotType == "logical" && st.Database != current {
		database += " (not " + current + ", the database of $" + dbsync.EnvPostgresDB + ": dbsync reads a slot only from its own database)"
	}
	walStatus := st.WALStatus
	if walStatus == "lost" {
		walStatus += " (the slot is invalidated: drop it with SELECT pg_drop_replication_slot(" + pq.QuoteLiteral(st.Slot) +
			"), set up again and rebuild consumers with a snapshot)"
	}
	_, err = fmt.Fprintf(stdout, ""+
		"slot:                %s\n"+
		"plugin:              %s\n"+
		"database:            %s\n"+
		"active:              %t\n"+
		"active_pid:          %s\n"+
		"confirmed_flush_lsn: %s\n"+
		"restart_lsn:         %s\n"+
		"wal_status:          %s\n"+
		"current_lsn:         %s\n"+
		"flush_lsn:           %s\n"+
		"retained_wal_bytes:  %d (%s)\n"+
		"lag_bytes:           %d (%s)\n"+
		"spilled:             %d transactions, %d times, %d bytes (%s)\n"+
		"decoded:             %d transactions, %d bytes (%s)\n",
		st.Slot, plugin, database, st.Active, pid, confirmed, restart, walStatus,
		st.CurrentLSN, st.FlushLSN, st.RetainedWALBytes, human(st.RetainedWALBytes), st.LagBytes, human(st.LagBytes),
		st.Stats.SpillTxns, st.Stats.SpillCount, st.Stats.SpillBytes, human(st.Stats.SpillBytes),
		st.Stats.TotalTxns, st.Stats.TotalBytes, human(st.Stats.TotalBytes))
	return err
}

// human formats a byte count with a binary unit.
func human(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit && exp < 4; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTP"[exp])
}
