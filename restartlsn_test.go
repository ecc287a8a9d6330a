package dbsync

import (
	"database/sql"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/dbsync/dbsync/internal/pgtest"
	"github.com/jackc/pglogrepl"
	"github.com/lib/pq"
	"github.com/stretchr/testify/require"
)

func TestRestartKeeperJudge(t *testing.T) {
	const maxLag = 100
	k := &restartKeeper{}
	// Within the lag: nothing to do.
	require.False(t, k.judge(1000, 1100, maxLag))
	// Past it: log.
	require.True(t, k.judge(1000, 1101, maxLag))
	k.tried++
	k.logged, k.restartAtLog = 1200, 1000
	// The slot has not been forwarded past the record: wait, however far behind.
	require.False(t, k.judge(1000, 1150, maxLag))
	require.Equal(t, 1, k.tried)
	// restart_lsn moved: the record helped; judge the new lag.
	require.False(t, k.judge(1190, 1250, maxLag))
	require.Equal(t, 0, k.tried)
	require.Equal(t, pglogrepl.LSN(0), k.logged)
	// Forwarded past a record and restart_lsn did not move: log again, and the count
	// of records that did not help keeps growing (backoff).
	require.True(t, k.judge(1190, 1400, maxLag))
	k.tried++
	k.logged, k.restartAtLog = 1450, 1190
	require.True(t, k.judge(1190, 1500, maxLag))
	k.tried++
	require.Equal(t, 2, k.tried)
	// A slot whose restart_lsn is ahead of confirmed_flush_lsn (a fresh slot) is fine.
	k = &restartKeeper{}
	require.False(t, k.judge(2000, 1000, maxLag))
}

func TestRestartKeeperBackoff(t *testing.T) {
	k := &restartKeeper{}
	want := []time.Duration{restartCheckInterval, restartCheckInterval, 2 * restartCheckInterval, 4 * restartCheckInterval}
	for tried, w := range want {
		k.tried = tried
		require.Equal(t, w, k.backoff(), "tried %d", tried)
	}
	k.tried = 100
	require.Equal(t, restartCheckMaxInterval, k.backoff())
}

// setRestartTimings shrinks the restart_lsn checks' timings for a test.
func setRestartTimings(t *testing.T, interval, timeout time.Duration) {
	oi, ot := restartCheckInterval, restartLogTimeout
	restartCheckInterval, restartLogTimeout = interval, timeout
	t.Cleanup(func() { restartCheckInterval, restartLogTimeout = oi, ot })
}

// slotLag reads a slot's restart_lsn and confirmed_flush_lsn.
func slotLag(t *testing.T, db *sql.DB, slot string) (restart, confirmed pglogrepl.LSN) {
	t.Helper()
	var r, c string
	require.NoError(t, db.QueryRow(`SELECT restart_lsn::text, confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1`, slot).Scan(&r, &c))
	restart, err := pglogrepl.ParseLSN(r)
	require.NoError(t, err)
	confirmed, err = pglogrepl.ParseLSN(c)
	require.NoError(t, err)
	return restart, confirmed
}

// otherSlots lists the slots of the cluster other than the given ones.
func otherSlots(t *testing.T, db *sql.DB, own ...string) []string {
	t.Helper()
	return queryStrings(t, db, `SELECT slot_name FROM pg_replication_slots WHERE NOT slot_name = ANY($1) ORDER BY 1`, "{"+strings.Join(own, ",")+"}")
}

// TestAdvanceMovesRestartLSNToFirstRecord pins down the PostgreSQL 15 behaviour the
// restart_lsn notes describe (restartlsn.go, docs/BENCHMARKS.md): an advance over
// several xl_running_xacts records beyond confirmed_flush_lsn moves restart_lsn only to
// the first of them (logical.c keeps one restart candidate until it is confirmed); a
// second advance to the same LSN, decoding them again below confirmed_flush_lsn, moves
// it to the last.
//
// It runs on a cluster of its own with autovacuum off: a transaction in progress
// anywhere in the cluster when a record is logged (another test's, an autovacuum
// ANALYZE's) holds that record's restart point back to its own start.
func TestAdvanceMovesRestartLSNToFirstRecord(t *testing.T) {
	srv, err := pgtest.Start(pgtest.Options{Settings: []string{"autovacuum = off"}})
	require.NoError(t, err)
	t.Cleanup(func() { srv.Stop() }) // after the slot's and the database's cleanups
	d := srv.NewDatabase(t)
	slot := pgtest.Ident(t, "slot")
	execAll(t, d.DB, `CREATE TABLE rx (id int PRIMARY KEY, pad text)`,
		`SELECT pg_create_logical_replication_slot(`+pq.QuoteLiteral(slot)+`, 'pgoutput')`)
	t.Cleanup(func() { d.DB.Exec(`SELECT pg_drop_replication_slot($1)`, slot) })
	restart0, _ := slotLag(t, d.DB, slot)
	insertLSN := func() pglogrepl.LSN {
		var s string
		require.NoError(t, d.DB.QueryRow(`SELECT pg_current_wal_insert_lsn()::text`).Scan(&s))
		l, err := pglogrepl.ParseLSN(s)
		require.NoError(t, err)
		return l
	}
	// Five transactions, each followed by a record (logged by creating a slot), at
	// before[i] or later.
	var before []pglogrepl.LSN
	for i := 0; i < 5; i++ {
		_, err = d.DB.Exec(`INSERT INTO rx SELECT g, repeat('x', 100) FROM generate_series($1::int, $1::int + 999) g`, i*1000)
		require.NoError(t, err)
		before = append(before, insertLSN())
		_, err = d.DB.Exec(`SELECT pg_drop_replication_slot(slot_name) FROM pg_create_logical_replication_slot($1, 'pgoutput', true)`, slot+"_tmp")
		require.NoError(t, err)
	}
	end := insertLSN()
	advance := func() {
		_, err := d.DB.Exec(`SELECT pg_replication_slot_advance($1, $2::pg_lsn)`, slot, end.String())
		require.NoError(t, err)
	}

	advance()
	restart, confirmed := slotLag(t, d.DB, slot)
	require.Equal(t, end, confirmed)
	// The first record past confirmed_flush_lsn is ours (logged after before[0]) or one
	// the background writer or a checkpoint logged earlier: either way before before[1].
	require.Greater(t, restart, restart0, "restart_lsn moves to the first record")
	require.Less(t, restart, before[1], "but no further in one advance")

	advance()
	restart, confirmed = slotLag(t, d.DB, slot)
	require.Equal(t, end, confirmed)
	require.GreaterOrEqual(t, restart, before[4], "the second advance moves it to the last record")
}

// writeSteadily inserts n rows of about 1 KB into table, one transaction each, pausing
// between them so that polls interleave with the writes.
func writeSteadily(t *testing.T, db *sql.DB, table string, from, n int) {
	t.Helper()
	for i := from; i < from+n; i++ {
		_, err := db.Exec(`INSERT INTO `+table+` VALUES ($1, repeat('x', 1000))`, i)
		require.NoError(t, err)
		if i%10 == 0 {
			time.Sleep(5 * time.Millisecond)
		}
	}
}

// TestRestartLSNFollowsConfirmed writes ~2 MB of WAL in small transactions while a
// Syncer keeps up, and checks that the slot's restart_lsn follows its
// confirmed_flush_lsn within MaxRestartLSNLag (PostgreSQL alone moves it only about
// every 15 s), that every change is delivered once and in order, and that the
// temporary slots used to log the records are gone.
func TestRestartLSNFollowsConfirmed(t *testing.T) {
	setRestartTimings(t, 20*time.Millisecond, 2*time.Second)
	d := pgtest.NewDatabase(t)
	execAll(t, d.DB, `CREATE TABLE rx (id int PRIMARY KEY, pad text)`)
	slot := pgtest.Ident(t, "slot")
	h := newCacheHandler()
	const maxLag = 64 << 10
	s, stop := startSyncer(t, d.DSN(), slot, h, ForTables("rx"), WithMaxRestartLSNLag(maxLag))
	waitCaughtUp(t, d.DB, slot)
	restart0, _ := slotLag(t, d.DB, slot)

	const n = 2000
	writeSteadily(t, d.DB, "rx", 1, n)
	waitFor(t, 20*time.Second, func() bool { return len(h.eventList()) == n }, "%d inserts", n)
	waitCaughtUp(t, d.DB, slot)
	var restart, confirmed pglogrepl.LSN
	waitFor(t, 10*time.Second, func() bool {
		restart, confirmed = slotLag(t, d.DB, slot)
		return uint64(confirmed-restart) <= 2*maxLag
	}, "restart_lsn to come within %d bytes of confirmed_flush_lsn", 2*maxLag)
	require.NoError(t, stop())

	t.Logf("restart_lsn %s -> %s, confirmed_flush_lsn %s, %d records logged", restart0, restart, confirmed, s.RestartLSNLogs())
	require.Greater(t, uint64(confirmed-restart0), uint64(2<<20), "the test must write more than 2 MB of WAL")
	require.GreaterOrEqual(t, s.RestartLSNLogs(), uint64(10), "one record per ~%d bytes", maxLag)
	for i, e := range h.eventList() {
		require.Equal(t, fmt.Sprintf(`insert public.rx ["%d"]`, i+1), e)
	}
	require.Empty(t, otherSlots(t, d.DB, slot), "temporary slots left behind")
}

// TestRestartLSNOpenTransaction holds a transaction open, which pins restart_lsn and
// makes creating a slot wait: the Syncer must keep delivering, give up each record
// within restartLogTimeout without leaving a slot behind, back off, and move
// restart_lsn once the transaction ends.
func TestRestartLSNOpenTransaction(t *testing.T) {
	setRestartTimings(t, 20*time.Millisecond, 300*time.Millisecond)
	d := pgtest.NewDatabase(t)
	execAll(t, d.DB, `CREATE TABLE rx (id int PRIMARY KEY, pad text)`, `CREATE TABLE other (id int)`)
	slot := pgtest.Ident(t, "slot")
	h := newCacheHandler()
	const maxLag = 64 << 10
	s, stop := startSyncer(t, d.DSN(), slot, h, ForTables("rx"), WithMaxRestartLSNLag(maxLag))
	waitCaughtUp(t, d.DB, slot)

	open, err := d.DB.Begin()
	require.NoError(t, err)
	defer open.Rollback()
	_, err = open.Exec(`INSERT INTO other VALUES (1)`) // takes an xid
	require.NoError(t, err)
	var openedAt pglogrepl.LSN
	require.NoError(t, d.DB.QueryRow(`SELECT pg_current_wal_insert_lsn()`).Scan(&openedAt))
	restart0, _ := slotLag(t, d.DB, slot)

	start := time.Now()
	writeSteadily(t, d.DB, "rx", 1, 1000)
	waitFor(t, 20*time.Second, func() bool { return len(h.eventList()) == 1000 }, "1000 inserts")
	waitCaughtUp(t, d.DB, slot)
	time.Sleep(time.Second) // more checks while the transaction stays open
	restart, confirmed := slotLag(t, d.DB, slot)
	pinned := time.Since(start)
	require.Less(t, restart, openedAt, "an open transaction pins restart_lsn before its first record")
	require.Greater(t, uint64(confirmed-restart), uint64(maxLag))
	require.Zero(t, s.RestartLSNLogs(), "creating a slot must not finish while the transaction is open")
	// A creation may be under way right now (its slot exists until it completes or is
	// cancelled, for up to restartLogTimeout, and PostgresMain's error recovery drops
	// it after reporting the cancellation): wait for a moment with none. A slot that a cancelled
	// creation left behind stays, and fails this.
	waitFor(t, 5*time.Second, func() bool { return len(otherSlots(t, d.DB, slot)) == 0 },
		"a cancelled slot creation must not leave its slot (a slot other than the Syncer's stayed for 5 s)")

	require.NoError(t, open.Commit())
	next := 1001
	waitFor(t, 30*time.Second, func() bool {
		writeSteadily(t, d.DB, "rx", next, 100)
		next += 100
		restart, confirmed = slotLag(t, d.DB, slot)
		// The records the cancelled creations wrote (and the background writer's) may
		// move restart_lsn too: also wait for a record of a creation that completed.
		return s.RestartLSNLogs() > 0 && restart > openedAt && uint64(confirmed-restart) <= 4*maxLag
	}, "a record logged and restart_lsn moved after the transaction ended")
	waitFor(t, 20*time.Second, func() bool { return len(h.eventList()) == next-1 }, "%d inserts", next-1)
	require.NoError(t, stop())
	t.Logf("pinned for %v; then %d records logged, restart_lsn %s -> %s", pinned, s.RestartLSNLogs(), restart0, restart)
	require.NotZero(t, s.RestartLSNLogs())
	require.Empty(t, otherSlots(t, d.DB, slot))
	events := h.eventList()
	for i, e := range events {
		require.Equal(t, fmt.Sprintf(`insert public.rx ["%d"]`, i+1), e)
	}
}

// TestRestartLSNNoFreeSlot runs a Syncer on a cluster whose only replication slot
// entry is its own: logging a record fails (SQLSTATE 53400) at every check. Delivery
// must go on, and the Syncer warns once, saying what to do.
func TestRestartLSNNoFreeSlot(t *testing.T) {
	setRestartTimings(t, 20*time.Millisecond, 2*time.Second)
	srv, err := pgtest.Start(pgtest.Options{Settings: []string{"max_replication_slots = 1"}})
	require.NoError(t, err)
	defer srv.Stop()
	d := srv.NewDatabase(t)
	execAll(t, d.DB, `CREATE TABLE rx (id int PRIMARY KEY, pad text)`)
	slot := pgtest.Ident(t, "slot")
	h := newCacheHandler()
	logs := &pgtest.Buffer{}
	s, stop := startSyncer(t, d.DSN(), slot, h, ForTables("rx"), WithMaxRestartLSNLag(64<<10),
		WithLogger(slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelWarn}))))
	next := 1
	waitFor(t, 30*time.Second, func() bool {
		writeSteadily(t, d.DB, "rx", next, 200)
		next += 200
		return strings.Contains(logs.String(), "max_replication_slots")
	}, "the warning about max_replication_slots")
	writeSteadily(t, d.DB, "rx", next, 500) // more failed checks
	next += 500
	waitFor(t, 20*time.Second, func() bool { return len(h.eventList()) == next-1 }, "%d inserts", next-1)
	require.NoError(t, stop())
	require.Zero(t, s.RestartLSNLogs())
	require.Equal(t, 1, strings.Count(logs.String(), "level=WARN"), logs.String())
	require.Contains(t, logs.String(), "raise max_replication_slots by one")
	require.Contains(t, logs.String(), "53400")
	for i, e := range h.eventList() {
		require.Equal(t, fmt.Sprintf(`insert public.rx ["%d"]`, i+1), e)
	}
}

// TestRestartLSNFollowsForward is TestRestartLSNFollowsConfirmed for a caller of the
// low-level API: no Run, only GetMessages and Forward. restart_lsn must follow
// confirmed_flush_lsn all the same, every insert must come once and in order, and
// Close must leave no temporary slot behind.
func TestRestartLSNFollowsForward(t *testing.T) {
	setRestartTimings(t, 20*time.Millisecond, 2*time.Second)
	d := pgtest.NewDatabase(t)
	execAll(t, d.DB, `CREATE TABLE rx (id int PRIMARY KEY, pad text)`)
	const maxLag = 64 << 10
	s := newTestSyncer(t, d, ForTables("rx"), WithMaxRestartLSNLag(maxLag))
	slot := s.ReplicationSlot()
	restart0, _ := slotLag(t, d.DB, slot)

	var ids []int
	// poll reads what is there, records the inserted ids, and forwards past it.
	poll := func() {
		msgs, err := s.GetMessages(0, false, nil)
		require.NoError(t, err)
		var reln *pglogrepl.RelationMessage
		for _, m := range msgs {
			msg, err := Parse(m.Data)
			require.NoError(t, err)
			switch v := msg.(type) {
			case *pglogrepl.RelationMessage:
				reln = v
			case *pglogrepl.InsertMessage:
				require.NotNil(t, reln)
				var id int
				var pad string
				require.NoError(t, tableInfoFromRelation(reln).ScanTuple(reln, v.Tuple, &id, &pad))
				ids = append(ids, id)
			}
		}
		require.NoError(t, s.Forward(len(msgs)))
	}
	const n = 2000
	for i := 1; i <= n; i += 50 {
		writeSteadily(t, d.DB, "rx", i, 50)
		poll()
	}
	var restart, confirmed pglogrepl.LSN
	waitFor(t, 10*time.Second, func() bool {
		poll()
		restart, confirmed = slotLag(t, d.DB, slot)
		return uint64(confirmed-restart) <= 2*maxLag
	}, "restart_lsn to come within %d bytes of confirmed_flush_lsn", 2*maxLag)
	require.NoError(t, s.Close())

	t.Logf("restart_lsn %s -> %s, confirmed_flush_lsn %s, %d records logged", restart0, restart, confirmed, s.RestartLSNLogs())
	require.Greater(t, uint64(confirmed-restart0), uint64(2<<20), "the test must write more than 2 MB of WAL")
	require.GreaterOrEqual(t, s.RestartLSNLogs(), uint64(10), "one record per ~%d bytes", maxLag)
	require.Len(t, ids, n)
	for i, id := range ids {
		require.Equal(t, i+1, id)
	}
	require.Empty(t, otherSlots(t, d.DB, slot), "temporary slots left behind")
}
