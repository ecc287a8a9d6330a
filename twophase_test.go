package dbsync

import (
	"context"
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

// twoPhaseServer starts a cluster of the test's own that allows prepared transactions
// (PREPARE TRANSACTION needs max_prepared_transactions > 0) and spills decoded
// transactions to disk early (logical_decoding_work_mem at its minimum), so that
// subtransactions with many rows take the reorder buffer's spill path.
func twoPhaseServer(t *testing.T) *pgtest.Server {
	t.Helper()
	srv, err := pgtest.Start(pgtest.Options{Settings: []string{"max_prepared_transactions = 10", "logical_decoding_work_mem = 64kB"}})
	require.NoError(t, err)
	t.Cleanup(func() { srv.Stop() })
	return srv
}

// prepare runs stmts in a transaction on a connection of its own and prepares it as
// gid (PREPARE TRANSACTION): it stays open, without a session, until COMMIT PREPARED
// or ROLLBACK PREPARED. The test rolls it back at the end if it is still prepared.
func prepare(t *testing.T, db *sql.DB, gid string, stmts ...string) {
	t.Helper()
	ctx := context.Background()
	conn, err := db.Conn(ctx)
	require.NoError(t, err)
	defer conn.Close()
	_, err = conn.ExecContext(ctx, "BEGIN")
	require.NoError(t, err)
	for _, q := range stmts {
		_, err = conn.ExecContext(ctx, q)
		require.NoError(t, err, q)
	}
	_, err = conn.ExecContext(ctx, fmt.Sprintf("PREPARE TRANSACTION '%s'", gid))
	require.NoError(t, err)
	t.Cleanup(func() {
		var n int
		if db.QueryRow(`SELECT count(*) FROM pg_prepared_xacts WHERE gid = $1`, gid).Scan(&n) == nil && n > 0 {
			db.Exec(fmt.Sprintf("ROLLBACK PREPARED '%s'", gid))
		}
	})
}

// TestPreparedTransactionsDeliveredAtCommitPrepared: a transaction prepared while Run
// runs reaches the handler once, whole, at its COMMIT PREPARED's place in commit
// order (after transactions that committed while it was prepared, before later
// ones); one ended by ROLLBACK PREPARED delivers nothing. Savepoints inside a
// prepared transaction behave as in any other: a rolled-back subtransaction
// delivers nothing, a released one its changes in order inside the top transaction.
func TestPreparedTransactionsDeliveredAtCommitPrepared(t *testing.T) {
	srv := twoPhaseServer(t)
	d := srv.NewDatabase(t)
	execAll(t, d.DB, `CREATE TABLE tp (id int PRIMARY KEY, v text)`)
	rec := &recorder{}
	s := newTestSyncer(t, d, ForTables("tp"), WithMessageHandler(rec))
	r := runInBackground(s)

	prepare(t, d.DB, "tp_commit",
		`INSERT INTO tp VALUES (1, 'p1')`,
		`SAVEPOINT a`, `INSERT INTO tp VALUES (2, 'gone')`, `ROLLBACK TO SAVEPOINT a`,
		`SAVEPOINT b`, `UPDATE tp SET v = 'p1b' WHERE id = 1`, `RELEASE SAVEPOINT b`)
	execAll(t, d.DB, `INSERT INTO tp VALUES (10, 'between')`)
	prepare(t, d.DB, "tp_rollback", `INSERT INTO tp VALUES (3, 'never')`, `UPDATE tp SET v = 'never' WHERE id = 10`)
	execAll(t, d.DB, `INSERT INTO tp VALUES (20, 'between2')`)
	// Everything committed so far is delivered; the prepared ones are not.
	catchUp(t, s)
	require.Equal(t, []string{
		"BEGIN", "INSERT public.tp id=10,v=between", "COMMIT",
		"BEGIN", "INSERT public.tp id=20,v=between2", "COMMIT",
	}, rec.snapshot())

	execAll(t, d.DB, `COMMIT PREPARED 'tp_commit'`)
	execAll(t, d.DB, `INSERT INTO tp VALUES (11, 'after')`)
	execAll(t, d.DB, `ROLLBACK PREPARED 'tp_rollback'`)
	execAll(t, d.DB, `INSERT INTO tp VALUES (12, 'last')`)
	catchUp(t, s)
	require.NoError(t, r.stop(t))
	require.Equal(t, []string{
		"BEGIN", "INSERT public.tp id=10,v=between", "COMMIT",
		"BEGIN", "INSERT public.tp id=20,v=between2", "COMMIT",
		"BEGIN", "INSERT public.tp id=1,v=p1", "UPDATE public.tp id=1,v=p1b old:-", "COMMIT",
		"BEGIN", "INSERT public.tp id=11,v=after", "COMMIT",
		"BEGIN", "INSERT public.tp id=12,v=last", "COMMIT",
	}, rec.snapshot())
}

// TestSubtransactionsManyRows: a transaction whose subtransactions (savepoints)
// write many rows, some rolled back, some released, with the reorder buffer spilling
// to disk (logical_decoding_work_mem = 64kB), arrives at its commit as one
// transaction with exactly the released subtransactions' changes in order; a
// prepared one likewise at COMMIT PREPARED.
func TestSubtransactionsManyRows(t *testing.T) {
	srv := twoPhaseServer(t)
	d := srv.NewDatabase(t)
	execAll(t, d.DB, `CREATE TABLE st (id int PRIMARY KEY, v text)`)
	rec := &recorder{}
	s := newTestSyncer(t, d, ForTables("st"), WithMessageHandler(rec))
	r := runInBackground(s)

	const n = 3000
	body := []string{
		`INSERT INTO st VALUES (0, 'top')`,
		`SAVEPOINT s1`, fmt.Sprintf(`INSERT INTO st SELECT g, 'kept' FROM generate_series(1, %d) g`, n), `RELEASE SAVEPOINT s1`,
		`SAVEPOINT s2`, fmt.Sprintf(`INSERT INTO st SELECT g, 'gone' FROM generate_series(%d, %d) g`, n+1, 2*n), `ROLLBACK TO SAVEPOINT s2`,
		`SAVEPOINT s3`, `SAVEPOINT s4`, `UPDATE st SET v = 'nested' WHERE id = 1`, `RELEASE SAVEPOINT s4`,
		`SAVEPOINT s5`, `DELETE FROM st WHERE id = 2`, `ROLLBACK TO SAVEPOINT s5`, `RELEASE SAVEPOINT s3`,
		`DELETE FROM st WHERE id = 3`,
	}
	ctx := context.Background()
	conn, err := d.DB.Conn(ctx)
	require.NoError(t, err)
	_, err = conn.ExecContext(ctx, "BEGIN")
	require.NoError(t, err)
	for _, q := range body {
		_, err = conn.ExecContext(ctx, q)
		require.NoError(t, err, q)
	}
	_, err = conn.ExecContext(ctx, "COMMIT")
	require.NoError(t, err)
	require.NoError(t, conn.Close())

	shifted := make([]string, len(body))
	for i, q := range body {
		shifted[i] = q
	}
	shifted[0] = `INSERT INTO st VALUES (100000, 'top2')`
	shifted[2] = fmt.Sprintf(`INSERT INTO st SELECT g, 'kept2' FROM generate_series(%d, %d) g`, 2*n+1, 3*n)
	shifted[5] = fmt.Sprintf(`INSERT INTO st SELECT g, 'gone2' FROM generate_series(%d, %d) g`, 3*n+1, 4*n)
	shifted[9] = fmt.Sprintf(`UPDATE st SET v = 'nested2' WHERE id = %d`, 2*n+1)
	shifted[12] = fmt.Sprintf(`DELETE FROM st WHERE id = %d`, 2*n+2)
	shifted[15] = fmt.Sprintf(`DELETE FROM st WHERE id = %d`, 2*n+3)
	prepare(t, d.DB, "st_prep", shifted...)
	execAll(t, d.DB, `INSERT INTO st VALUES (-1, 'plain')`)
	execAll(t, d.DB, `COMMIT PREPARED 'st_prep'`)
	catchUp(t, s)
	require.NoError(t, r.stop(t))

	tx := func(top string, from, to int, kept, nested string) []string {
		out := []string{"BEGIN", "INSERT public.st " + top}
		for i := from; i <= to; i++ {
			out = append(out, fmt.Sprintf("INSERT public.st id=%d,v=%s", i, kept))
		}
		out = append(out, fmt.Sprintf("UPDATE public.st id=%d,v=%s old:-", from, nested))
		out = append(out, fmt.Sprintf("DELETE public.st id=%d,v=NULL", from+2), "COMMIT")
		return out
	}
	want := tx("id=0,v=top", 1, n, "kept", "nested")
	want = append(want, "BEGIN", "INSERT public.st id=-1,v=plain", "COMMIT")
	want = append(want, tx("id=100000,v=top2", 2*n+1, 3*n, "kept2", "nested2")...)
	got := rec.snapshot()
	require.Equal(t, len(want), len(got))
	require.Equal(t, want, got)
	var count int
	require.NoError(t, d.DB.QueryRow(`SELECT count(*) FROM st`).Scan(&count))
	require.Equal(t, 2*n+1, count)
	_ = time.Second
}

// TestPreparedTransactionSurvivesRestart: a Syncer closed between PREPARE TRANSACTION
// and COMMIT PREPARED, after its slot was confirmed far past the PREPARE record (many
// transactions after it, checkpoints, and the restart_lsn keeper asked to keep
// restart_lsn within 1 kB), loses nothing: the slot's restart_lsn stays at or before
// the prepared transaction's start, and the next Syncer delivers it once at COMMIT
// PREPARED, in commit order, also when it commits while no Syncer runs.
func TestPreparedTransactionSurvivesRestart(t *testing.T) {
	setRestartTimings(t, 10*time.Millisecond, 300*time.Millisecond)
	srv := twoPhaseServer(t)
	d := srv.NewDatabase(t)
	execAll(t, d.DB, `CREATE TABLE pr (id int PRIMARY KEY, v text)`)
	rec1 := &recorder{}
	s1 := newTestSyncer(t, d, ForTables("pr"), WithMessageHandler(rec1), WithMaxRestartLSNLag(1024))
	slot := s1.ReplicationSlot()
	r1 := runInBackground(s1)

	lsnText := func(q string) pglogrepl.LSN {
		var s string
		require.NoError(t, d.DB.QueryRow(q).Scan(&s))
		l, err := pglogrepl.ParseLSN(s)
		require.NoError(t, err)
		return l
	}
	start := lsnText(`SELECT pg_current_wal_insert_lsn()::text`)
	prepare(t, d.DB, "pr_a", `INSERT INTO pr VALUES (1, 'a')`)
	prepare(t, d.DB, "pr_b", `INSERT INTO pr VALUES (2, 'b')`)
	prepared := lsnText(`SELECT pg_current_wal_insert_lsn()::text`)
	var want1 []string
	for i := 0; i < 100; i++ {
		execAll(t, d.DB, fmt.Sprintf(`INSERT INTO pr VALUES (%d, repeat('x', 200))`, 100+i))
		want1 = append(want1, "BEGIN", fmt.Sprintf("INSERT public.pr id=%d,v=%s", 100+i, strings.Repeat("x", 200)), "COMMIT")
		if i%25 == 24 {
			execAll(t, d.DB, `CHECKPOINT`)
		}
	}
	catchUp(t, s1)
	restart, confirmed := slotLag(t, d.DB, slot)
	require.Greater(t, confirmed, prepared, "slot confirmed past the PREPARE records")
	require.LessOrEqual(t, restart, start, "restart_lsn stays before the prepared transactions' start")
	require.NoError(t, r1.stop(t))
	require.NoError(t, s1.Close())
	require.Equal(t, want1, rec1.snapshot())

	// pr_a commits while no Syncer runs; pr_b while the next one does.
	execAll(t, d.DB, `COMMIT PREPARED 'pr_a'`, `INSERT INTO pr VALUES (3, 'c')`)
	restart, _ = slotLag(t, d.DB, slot)
	require.LessOrEqual(t, restart, start)
	rec2 := &recorder{}
	s2 := newTestSyncer(t, d, ForTables("pr"), WithMessageHandler(rec2), WithMaxRestartLSNLag(1024))
	r2 := runInBackground(s2)
	catchUp(t, s2)
	execAll(t, d.DB, `COMMIT PREPARED 'pr_b'`, `INSERT INTO pr VALUES (4, 'd')`)
	catchUp(t, s2)
	require.NoError(t, r2.stop(t))
	require.Equal(t, []string{
		"BEGIN", "INSERT public.pr id=1,v=a", "COMMIT",
		"BEGIN", "INSERT public.pr id=3,v=c", "COMMIT",
		"BEGIN", "INSERT public.pr id=2,v=b", "COMMIT",
		"BEGIN", "INSERT public.pr id=4,v=d", "COMMIT",
	}, rec2.snapshot())
	require.Empty(t, otherSlots(t, d.DB, slot), "no temporary slot of the keeper left behind")
}

// TestRefreshWithPreparedTransactionOpen: a prepared transaction that changed rows a
// Refresh selects is in progress in the SELECT's snapshot (pg_current_snapshot()'s
// xip), so the selection reads the rows as they were; its changes reach the stream
// at COMMIT PREPARED, long after the high watermark, and win. After COMMIT PREPARED
// of one and ROLLBACK PREPARED of the other the consumer's copy equals the table.
func TestRefreshWithPreparedTransactionOpen(t *testing.T) {
	srv := twoPhaseServer(t)
	d := srv.NewDatabase(t)
	execAll(t, d.DB, `CREATE TABLE rp (id int PRIMARY KEY, v text)`,
		`INSERT INTO rp SELECT g, 'v' || g FROM generate_series(1, 10) g`)
	h := newCacheHandler()
	s, stop := startSyncer(t, d.DSN(), pgtest.Ident(t, "slot"), h, ForTables("rp"))
	prepare(t, d.DB, "rp_commit", `UPDATE rp SET v = 'c3' WHERE id = 3`, `DELETE FROM rp WHERE id = 4`, `INSERT INTO rp VALUES (11, 'c11')`)
	prepare(t, d.DB, "rp_rollback", `UPDATE rp SET v = 'r5' WHERE id = 5`, `DELETE FROM rp WHERE id = 6`, `INSERT INTO rp VALUES (12, 'r12')`)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	st, err := s.RefreshContext(ctx, `SELECT * FROM rp WHERE id BETWEEN 2 AND 7`)
	require.NoError(t, err)
	require.Equal(t, 6, st.Selected)
	require.Equal(t, 6, st.Emitted)
	catchUp(t, s)
	require.Empty(t, mismatches(h.tableRows("public.rp"), rowsOf(t, d.DB, 2, 7)))
	execAll(t, d.DB, `COMMIT PREPARED 'rp_commit'`, `ROLLBACK PREPARED 'rp_rollback'`)
	catchUp(t, s)
	require.NoError(t, stop())
	require.Equal(t, []string{
		`refresh public.rp ["2"]`, `refresh public.rp ["3"]`, `refresh public.rp ["4"]`,
		`refresh public.rp ["5"]`, `refresh public.rp ["6"]`, `refresh public.rp ["7"]`,
		`update public.rp ["3"]`, `delete public.rp ["4"]`, `insert public.rp ["11"]`,
	}, h.eventList())
	got := h.tableRows("public.rp")
	want := dbRows(t, d.DB, "rp")
	delete(want, `["1"]`) // never selected nor changed
	for i := 8; i <= 10; i++ {
		delete(want, fmt.Sprintf(`["%d"]`, i))
	}
	require.Empty(t, mismatches(got, want))
}

// rowsOf is dbRows of table rp restricted to ids from..to.
func rowsOf(t *testing.T, db *sql.DB, from, to int) map[string]StringMap {
	all := dbRows(t, db, "rp")
	out := map[string]StringMap{}
	for i := from; i <= to; i++ {
		k := fmt.Sprintf(`["%d"]`, i)
		if v, ok := all[k]; ok {
			out[k] = v
		}
	}
	return out
}

// TestSnapshotWaitsForPreparedWriterOfAddedTable: a transaction that wrote a table
// before ALTER PUBLICATION ... ADD TABLE and was then prepared has those changes
// left out of the slot (pgoutput publishes by the publication as of each change) and
// its rows invisible to the chunks while it stays prepared. Snapshot waited for
// such writers only when they had a session (a virtualxid), so a prepared one was
// not waited for and its row never reached the consumer. Snapshot now waits for it
// too, until COMMIT PREPARED, and the consumer's copy equals the table.
func TestSnapshotWaitsForPreparedWriterOfAddedTable(t *testing.T) {
	srv := twoPhaseServer(t)
	d := srv.NewDatabase(t)
	execAll(t, d.DB, `CREATE TABLE a (id int PRIMARY KEY)`, `CREATE TABLE w (id int PRIMARY KEY, v text)`,
		`INSERT INTO w VALUES (0, 'o')`)
	h := newCacheHandler()
	slot := pgtest.Ident(t, "slot")
	s, stop := startSyncer(t, d.DSN(), slot, h, ForTables("a"))
	prepare(t, d.DB, "w_prep", `INSERT INTO w VALUES (1, 'p')`)
	execAll(t, d.DB, `ALTER PUBLICATION `+pq.QuoteIdentifier(slot+"_pub")+` ADD TABLE w`)

	waiting := make(chan int, 1)
	s.writersWaiting = func(table string, n int) {
		if table == "public.w" {
			waiting <- n
		}
	}
	// The first look of the wait, after the writers were listed, tells whether the
	// prepared one is waited for (open 1) or taken for ended (open 0).
	looked := make(chan int, 1)
	s.writersLooked = func(table string, open int) {
		if table == "public.w" {
			select {
			case looked <- open:
			default:
			}
		}
	}
	snapDone := make(chan error, 1)
	go func() { snapDone <- s.Snapshot(context.Background(), "w") }()
	select {
	case n := <-waiting:
		require.Equal(t, 1, n, "transactions writing w")
	case <-time.After(30 * time.Second):
		t.Fatal("Snapshot did not find the prepared writer")
	}
	select {
	case open := <-looked:
		require.Equal(t, 1, open, "the prepared transaction that wrote w before its ADD TABLE is still open")
	case <-time.After(30 * time.Second):
		t.Fatal("Snapshot's wait did not look")
	}
	execAll(t, d.DB, `COMMIT PREPARED 'w_prep'`)
	require.NoError(t, <-snapDone)
	catchUp(t, s)
	require.NoError(t, stop())
	require.Equal(t, []string{`refresh public.w ["0"]`, `refresh public.w ["1"]`}, h.eventList())
	require.Empty(t, mismatches(h.tableRows("public.w"), dbRows(t, d.DB, "w")))
}

// TestRefreshWaitsForPreparedTableLock: a prepared transaction that took the table's
// ACCESS EXCLUSIVE lock (LOCK TABLE, or an ALTER TABLE) keeps it until COMMIT or
// ROLLBACK PREPARED. A Refresh's selection (LOCK TABLE ... IN ACCESS SHARE MODE)
// waits for it, bounded by the caller's context: the error wraps the context's, and
// nothing was delivered; once the prepared transaction ends the Refresh succeeds.
// A prepared row lock (UPDATE) does not block the selection at all.
func TestRefreshWaitsForPreparedTableLock(t *testing.T) {
	srv := twoPhaseServer(t)
	d := srv.NewDatabase(t)
	execAll(t, d.DB, `CREATE TABLE lk (id int PRIMARY KEY, v text)`, `INSERT INTO lk VALUES (1, 'a'), (2, 'b')`)
	h := newCacheHandler()
	s, stop := startSyncer(t, d.DSN(), pgtest.Ident(t, "slot"), h, ForTables("lk"))
	prepare(t, d.DB, "lk_row", `UPDATE lk SET v = 'locked' WHERE id = 2`)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	st, err := s.RefreshContext(ctx, `SELECT * FROM lk WHERE id = 2`)
	cancel()
	require.NoError(t, err)
	require.Equal(t, 1, st.Emitted)
	execAll(t, d.DB, `ROLLBACK PREPARED 'lk_row'`)

	prepare(t, d.DB, "lk_table", `LOCK TABLE lk IN ACCESS EXCLUSIVE MODE`)
	ctx, cancel = context.WithTimeout(context.Background(), 2*time.Second)
	start := time.Now()
	_, err = s.RefreshContext(ctx, `SELECT * FROM lk WHERE id = 1`)
	took := time.Since(start)
	cancel()
	require.Error(t, err)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.Less(t, took, 10*time.Second)
	t.Logf("Refresh blocked by the prepared lock: %v", err)
	execAll(t, d.DB, `COMMIT PREPARED 'lk_table'`)
	ctx, cancel = context.WithTimeout(context.Background(), 30*time.Second)
	st, err = s.RefreshContext(ctx, `SELECT * FROM lk WHERE id = 1`)
	cancel()
	require.NoError(t, err)
	require.Equal(t, 1, st.Emitted)
	catchUp(t, s)
	require.NoError(t, stop())
	require.Equal(t, []string{`refresh public.lk ["2"]`, `refresh public.lk ["1"]`}, h.eventList())
	require.Empty(t, mismatches(h.tableRows("public.lk"), dbRows(t, d.DB, "lk")))
}

// TestSetupWaitsForPreparedTransaction: creating the slot waits for a prepared
// transaction (it holds its xid until COMMIT or ROLLBACK PREPARED), in any database of
// the cluster. NewSyncerContext's context bounds the wait: the error wraps the
// context's, the wait is logged naming the prepared transaction (its gid and
// database, which COMMIT PREPARED or ROLLBACK PREPARED needs), and no slot is
// left; once it ends, setup creates the slot.
func TestSetupWaitsForPreparedTransaction(t *testing.T) {
	srv := twoPhaseServer(t)
	d := srv.NewDatabase(t)
	other := srv.NewDatabase(t)
	execAll(t, d.DB, `CREATE TABLE sw (id int PRIMARY KEY)`)
	execAll(t, other.DB, `CREATE TABLE o (id int)`)
	prepare(t, other.DB, "sw_prep", `INSERT INTO o VALUES (1)`)
	var logs pgtest.Buffer
	logger := slog.New(slog.NewTextHandler(&logs, nil))
	opts := []SyncerOpt{WithPGConnStr(d.DSN()), WithReplicationSlot(pgtest.Ident(t, "slot")), WithPublication(pgtest.Ident(t, "pub")),
		ForTables("sw"), WithLogger(logger)}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Second)
	start := time.Now()
	s, err := NewSyncerContext(ctx, opts...)
	took := time.Since(start)
	cancel()
	if s != nil {
		s.Close()
	}
	require.Error(t, err)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.Less(t, took, 10*time.Second)
	require.Contains(t, logs.String(), "prepared_transactions=1")
	// The operator needs the prepared transaction's gid and database to end it (no
	// session, so no PID).
	require.Contains(t, logs.String(), "oldest_prepared_gid=sw_prep ")
	require.Contains(t, logs.String(), "oldest_prepared_database="+other.Name+" ")
	require.Contains(t, logs.String(), "COMMIT PREPARED")
	require.Equal(t, 0, slotCount(t, d))
	execAll(t, other.DB, `ROLLBACK PREPARED 'sw_prep'`)
	s, err = NewSyncer(opts...)
	require.NoError(t, err)
	require.NoError(t, s.Close())
	require.Equal(t, 1, slotCount(t, d))
	execAll(t, d.DB, `SELECT pg_drop_replication_slot(`+pq.QuoteLiteral(pgtest.Ident(t, "slot"))+`)`)
}

// TestSnapshotWithPreparedTransactionsOpen: a Snapshot of a published table that
// prepared transactions changed waits for them (as for any open writer of the table),
// bounded by its context (ErrRefreshAbandoned wrapping the context's error). Started
// again, it goes on once they end — one by COMMIT PREPARED, the other by ROLLBACK
// PREPARED — and the consumer's copy equals the table: the committed changes arrive
// once, in commit order, the rolled-back ones never.
func TestSnapshotWithPreparedTransactionsOpen(t *testing.T) {
	srv := twoPhaseServer(t)
	d := srv.NewDatabase(t)
	execAll(t, d.DB, `CREATE TABLE sp (id int PRIMARY KEY, v text)`,
		`INSERT INTO sp SELECT g, 'v' || g FROM generate_series(1, 6) g`)
	h := newCacheHandler()
	s, stop := startSyncer(t, d.DSN(), pgtest.Ident(t, "slot"), h, ForTables("sp"))
	s.SnapshotChunkSize = 2
	prepare(t, d.DB, "sp_commit", `UPDATE sp SET v = 'c2' WHERE id = 2`, `DELETE FROM sp WHERE id = 3`, `INSERT INTO sp VALUES (7, 'c7')`)
	prepare(t, d.DB, "sp_rollback", `UPDATE sp SET v = 'r4' WHERE id = 4`, `DELETE FROM sp WHERE id = 5`, `INSERT INTO sp VALUES (8, 'r8')`)

	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	err := s.Snapshot(ctx, "sp")
	cancel()
	require.ErrorIs(t, err, ErrRefreshAbandoned)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.Contains(t, err.Error(), "COMMIT PREPARED or ROLLBACK PREPARED")
	require.Empty(t, h.eventList())

	looked := make(chan int, 100)
	s.writersLooked = func(table string, open int) {
		select {
		case looked <- open:
		default:
		}
	}
	snapDone := make(chan error, 1)
	go func() { snapDone <- s.Snapshot(context.Background(), "sp") }()
	waitOpen := func(n int) {
		t.Helper()
		for {
			select {
			case open := <-looked:
				if open == n {
					return
				}
				require.Greater(t, open, n)
			case err := <-snapDone:
				t.Fatalf("Snapshot returned (%v) while %d prepared writers were open", err, n)
			case <-time.After(30 * time.Second):
				t.Fatalf("no look saw %d open writers", n)
			}
		}
	}
	waitOpen(2)
	execAll(t, d.DB, `COMMIT PREPARED 'sp_commit'`)
	waitOpen(1)
	execAll(t, d.DB, `ROLLBACK PREPARED 'sp_rollback'`)
	require.NoError(t, <-snapDone)
	catchUp(t, s)
	require.NoError(t, stop())
	require.Equal(t, []string{
		`update public.sp ["2"]`, `delete public.sp ["3"]`, `insert public.sp ["7"]`,
		`refresh public.sp ["1"]`, `refresh public.sp ["2"]`, `refresh public.sp ["4"]`,
		`refresh public.sp ["5"]`, `refresh public.sp ["6"]`, `refresh public.sp ["7"]`,
	}, h.eventList())
	require.Empty(t, mismatches(h.tableRows("public.sp"), dbRows(t, d.DB, "sp")))
}

// TestSnapshotWaitsForWriterPreparedWhileWaiting: a session's transaction wrote a
// table before its ADD TABLE, and Snapshot waits for it; the session then prepares
// it (PREPARE TRANSACTION): the session's virtual transaction ends, but the
// transaction does not. Snapshot goes on waiting until COMMIT PREPARED, and the row
// reaches the consumer.
func TestSnapshotWaitsForWriterPreparedWhileWaiting(t *testing.T) {
	srv := twoPhaseServer(t)
	d := srv.NewDatabase(t)
	execAll(t, d.DB, `CREATE TABLE a (id int PRIMARY KEY)`, `CREATE TABLE w (id int PRIMARY KEY, v text)`,
		`INSERT INTO w VALUES (0, 'o')`)
	h := newCacheHandler()
	slot := pgtest.Ident(t, "slot")
	s, stop := startSyncer(t, d.DSN(), slot, h, ForTables("a"))
	ctx := context.Background()
	conn, err := d.DB.Conn(ctx)
	require.NoError(t, err)
	defer conn.Close()
	for _, q := range []string{`BEGIN`, `INSERT INTO w VALUES (1, 'p')`} {
		_, err = conn.ExecContext(ctx, q)
		require.NoError(t, err)
	}
	execAll(t, d.DB, `ALTER PUBLICATION `+pq.QuoteIdentifier(slot+"_pub")+` ADD TABLE w`)

	looked := make(chan int, 1000)
	s.writersLooked = func(table string, open int) {
		if table == "public.w" {
			looked <- open
		}
	}
	snapDone := make(chan error, 1)
	go func() { snapDone <- s.Snapshot(context.Background(), "w") }()
	next := func() int {
		t.Helper()
		select {
		case open := <-looked:
			return open
		case err := <-snapDone:
			t.Fatalf("Snapshot returned (%v) while the transaction that wrote w before its ADD TABLE was open", err)
			return -1
		case <-time.After(30 * time.Second):
			t.Fatal("Snapshot's wait did not look")
			return -1
		}
	}
	require.Equal(t, 1, next(), "the session's transaction is open")
	_, err = conn.ExecContext(ctx, `PREPARE TRANSACTION 'w_later'`)
	require.NoError(t, err)
	t.Cleanup(func() { d.DB.Exec(`ROLLBACK PREPARED 'w_later'`) })
	// Drain the looks made before the PREPARE; one may be under way, so the second
	// look from here on is the first that surely began after the PREPARE: it must
	// still count the transaction as open.
	for len(looked) > 0 {
		<-looked
	}
	first := next()
	require.Equal(t, 1, next(), "the transaction, now prepared, is still open (the look before: %d)", first)
	execAll(t, d.DB, `COMMIT PREPARED 'w_later'`)
	require.NoError(t, <-snapDone)
	catchUp(t, s)
	require.NoError(t, stop())
	require.Equal(t, []string{`refresh public.w ["0"]`, `refresh public.w ["1"]`}, h.eventList())
	require.Empty(t, mismatches(h.tableRows("public.w"), dbRows(t, d.DB, "w")))
}
