package pgtest

import (
	"database/sql"
	"testing"
	"time"
)

// SlotInvalidationSettings are the Options.Settings of a cluster on which
// InvalidateSlot can invalidate a slot: a slot may retain at most 1 MB of WAL
// (max_slot_wal_keep_size) and nothing else keeps WAL (wal_keep_size). Every slot of
// such a cluster is at risk, so tests that use it start a cluster of their own.
var SlotInvalidationSettings = []string{"max_slot_wal_keep_size = 1MB", "wal_keep_size = 0"}

// InvalidateSlot makes PostgreSQL invalidate slot, as it does on a server whose slot
// falls further behind than max_slot_wal_keep_size: it writes WAL through db (four
// segment switches, each after a write so that it is not a no-op) and checkpoints —
// the checkpoint removes the WAL (InvalidateObsoleteReplicationSlots) — until the slot's
// wal_status is 'lost', for at most 30 s. The cluster must run with
// SlotInvalidationSettings, and the slot must not be in use (a checkpoint terminates
// the process holding it).
func InvalidateSlot(tb testing.TB, db *sql.DB, slot string) {
	tb.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		for i := 0; i < 4; i++ {
			for _, q := range []string{`CREATE TABLE IF NOT EXISTS pgtest_wal_filler (pad text)`,
				`INSERT INTO pgtest_wal_filler SELECT repeat('x', 200) FROM generate_series(1, 1000)`,
				`SELECT pg_switch_wal()`} {
				if _, err := db.Exec(q); err != nil {
					tb.Fatalf("pgtest: invalidate slot %s: %s: %v", slot, q, err)
				}
			}
		}
		if _, err := db.Exec(`CHECKPOINT`); err != nil {
			tb.Fatalf("pgtest: invalidate slot %s: CHECKPOINT: %v", slot, err)
		}
		var status sql.NullString
		if err := db.QueryRow(`SELECT wal_status FROM pg_replication_slots WHERE slot_name = $1`, slot).Scan(&status); err != nil {
			tb.Fatalf("pgtest: invalidate slot %s: read wal_status: %v", slot, err)
		}
		if status.String == "lost" {
			return
		}
		if time.Now().After(deadline) {
			tb.Fatalf("pgtest: slot %s still has wal_status %q after 30 s; does the cluster run with SlotInvalidationSettings?", slot, status.String)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
