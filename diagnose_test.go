package dbsync

import (
	"context"
	"testing"
	"time"

	"github.com/dbsync/dbsync/internal/pgtest"
	"github.com/lib/pq"
	"github.com/stretchr/testify/require"
)

// TestNamedErrorsInGerman runs against a server that writes its messages in German
// (lc_messages, as servers installed under a German locale do), where classify's
// English message checks cannot tell the cases of a SQLSTATE apart, and requires the
// same named errors as in English, found from the catalog (Syncer.diagnose): a slot
// dropped under a running Syncer (42704: ErrSlotMissing), a publication dropped under
// one (42704: ErrPublicationMissing), and a slot invalidated under one (55000:
// ErrSlotInvalidated, from Run and from GetMessages).
func TestNamedErrorsInGerman(t *testing.T) {
	opts := pgtest.LocalizedMessages("de")
	opts.Settings = append(opts.Settings, pgtest.SlotInvalidationSettings...)
	srv, err := pgtest.Start(opts)
	require.NoError(t, err)
	t.Cleanup(func() { srv.Stop() })
	ctx := context.Background()

	// start runs a gated Syncer on a fresh database with a table items.
	start := func(t *testing.T) (*pgtest.Database, string, string, *gateHandler, *running) {
		d := srv.NewDatabase(t)
		execAll(t, d.DB, `CREATE TABLE items (id int PRIMARY KEY, pad text)`)
		slot, pub := pgtest.Ident(t, "slot"), pgtest.Ident(t, "pub")
		h, r := startGated(t, d, slot, pub)
		return d, slot, pub, h, r
	}

	t.Run("server speaks German", func(t *testing.T) {
		d := srv.NewDatabase(t)
		_, err := d.DB.Exec(`SELECT pg_drop_replication_slot('nope')`)
		require.ErrorContains(t, err, "existiert nicht", "the server did not answer in German: are PostgreSQL's translations installed (/usr/share/locale/de/LC_MESSAGES/postgres-*.mo, Debian's postgresql package)?")
		require.NotErrorIs(t, classify(err, "drop"), ErrSlotMissing, "classify alone must not name it: the test would prove nothing")
	})

	t.Run("slot gone", func(t *testing.T) {
		d, slot, _, h, r := start(t)
		execAll(t, d.DB, `INSERT INTO items VALUES (1, 'a')`)
		h.waitEntered(t)
		execAll(t, d.DB, `SELECT pg_drop_replication_slot(`+pq.QuoteLiteral(slot)+`)`)
		close(h.release)
		err := r.wait(t, 20*time.Second)
		require.ErrorIs(t, err, ErrSlotMissing)
		require.ErrorContains(t, err, "existiert nicht")
	})

	t.Run("pub gone", func(t *testing.T) {
		d, _, pub, h, r := start(t)
		close(h.release)
		execAll(t, d.DB, `DROP PUBLICATION `+pq.QuoteIdentifier(pub), `INSERT INTO items VALUES (1, 'a')`)
		err := r.wait(t, 20*time.Second)
		require.ErrorIs(t, err, ErrPublicationMissing)
		require.ErrorContains(t, err, "existiert nicht")
		require.Empty(t, h.delivered())
	})

	t.Run("slot invalidated", func(t *testing.T) {
		d, slot, pub, h, r := start(t)
		execAll(t, d.DB, `INSERT INTO items VALUES (1, 'a')`)
		h.waitEntered(t)
		pgtest.InvalidateSlot(t, d.DB, slot)
		close(h.release)
		require.ErrorIs(t, r.wait(t, 20*time.Second), ErrSlotInvalidated)
		ro, err := NewSyncer(WithPGConnStr(d.DSN()), WithReplicationSlot(slot), WithPublication(pub), WithSetup(false))
		require.NoError(t, err)
		defer ro.Close()
		_, err = ro.GetMessagesContext(ctx, 100, false, nil)
		require.ErrorIs(t, err, ErrSlotInvalidated)
		require.NotContains(t, err.Error(), "can no longer get changes", "the server's message must be German")
	})

	// Someone else advances the slot past where the Syncer's poll wants to forward it
	// (PostgreSQL: 55000 "... minimum is ..."): the Syncer takes the slot's position
	// and goes on, whatever the language of the message.
	t.Run("slot advanced by someone else", func(t *testing.T) {
		d, slot, _, h, r := start(t)
		execAll(t, d.DB, `INSERT INTO items VALUES (1, 'a')`)
		h.waitEntered(t)
		execAll(t, d.DB, `INSERT INTO items VALUES (2, 'b')`)
		var moved string
		require.NoError(t, d.DB.QueryRow(`SELECT end_lsn::text FROM pg_replication_slot_advance($1, pg_current_wal_flush_lsn())`, slot).Scan(&moved))
		close(h.release)
		execAll(t, d.DB, `INSERT INTO items VALUES (3, 'c')`)
		waitFor(t, 20*time.Second, func() bool { return len(h.delivered()) == 2 }, "two inserts delivered")
		require.Equal(t, []string{`["1"]`, `["3"]`}, h.delivered(), "2 was skipped by the other advance")
		require.NoError(t, r.stop(t))
	})
}

// TestNamedErrorDespiteObjectName: a publication whose name contains "replication
// slot" is dropped under a running Syncer. The server's message quotes that name, so
// classify's English check alone takes the 42704 for a missing slot; the catalog says
// the slot exists and the publication does not, and that wins (Syncer.diagnose).
func TestNamedErrorDespiteObjectName(t *testing.T) {
	d := pgtest.NewDatabase(t)
	execAll(t, d.DB, `CREATE TABLE items (id int PRIMARY KEY, pad text)`)
	slot, pub := pgtest.Ident(t, "slot"), "old replication slot feed"
	h, r := startGated(t, d, slot, pub)
	close(h.release)
	execAll(t, d.DB, `INSERT INTO items VALUES (1, 'a')`)
	waitFor(t, 20*time.Second, func() bool { return len(h.delivered()) == 1 }, "the first insert")
	execAll(t, d.DB, `DROP PUBLICATION `+pq.QuoteIdentifier(pub), `INSERT INTO items VALUES (2, 'b')`)
	runErr := r.wait(t, 20*time.Second)
	require.ErrorIs(t, runErr, ErrPublicationMissing)
	require.NotErrorIs(t, runErr, ErrSlotMissing)
	require.ErrorContains(t, runErr, `publication "old replication slot feed" does not exist`)
	require.Equal(t, []string{`["1"]`}, h.delivered())
}
