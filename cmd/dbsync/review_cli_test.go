package main

import (
	"context"
	"database/sql"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/dbsync/dbsync"
	"github.com/dbsync/dbsync/internal/pgtest"
	"github.com/jackc/pglogrepl"
	"github.com/stretchr/testify/require"
)

// blockingInserts is a handler whose HandleInsertMessage waits until release is
// closed, so the Syncer running it keeps the slot before that insert.
type blockingInserts struct {
	dbsync.DefaultMessageHandler
	reached chan struct{}
	release chan struct{}
}

func (b *blockingInserts) HandleInsertMessage(int, *pglogrepl.InsertMessage, *pglogrepl.RelationMessage, *dbsync.PGTableInfo) error {
	select {
	case b.reached <- struct{}{}:
	default:
	}
	<-b.release
	return nil
}

func confirmedFlush(t *testing.T, db *sql.DB, slot string) string {
	t.Helper()
	var lsn string
	require.NoError(t, db.QueryRow(`SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1`, slot).Scan(&lsn))
	return lsn
}

// TestTailFromNowRefusesDrivenSlot: `tail -from-now` on a slot a running Syncer drives
// (an application, another tail) is refused with ErrSlotInUse before it moves the
// slot: it used to forward the slot to the flush LSN first, skipping the changes the
// application had not processed yet (lost to it), and only then fail at Run's lock.
func TestTailFromNowRefusesDrivenSlot(t *testing.T) {
	d := pgtest.NewDatabase(t)
	setEnv(t, d)
	slot := pgtest.Ident(t, "slot")
	_, err := d.DB.Exec(`CREATE TABLE items (id int PRIMARY KEY)`)
	require.NoError(t, err)

	h := &blockingInserts{reached: make(chan struct{}, 1), release: make(chan struct{})}
	var releaseOnce sync.Once
	release := func() { releaseOnce.Do(func() { close(h.release) }) }
	app, err := dbsync.NewSyncer(dbsync.ForTables("items"), dbsync.WithMessageHandler(h))
	require.NoError(t, err)
	defer app.Close()
	defer release() // before Close, which waits for the handler
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	runDone := make(chan error, 1)
	go func() { runDone <- app.Run(ctx) }()
	_, err = d.DB.Exec(`INSERT INTO items VALUES (1)`)
	require.NoError(t, err)
	select {
	case <-h.reached:
	case <-time.After(15 * time.Second):
		t.Fatal("the application's handler never got the insert")
	}
	before := confirmedFlush(t, d.DB, slot)

	code, out, errOut := runCLI("tail", "-from-now")
	require.Equal(t, 1, code, errOut)
	require.Equal(t, "", out)
	require.Contains(t, errOut, "dbsync tail: ")
	require.Contains(t, errOut, "is driven by a running Syncer")
	require.NotContains(t, errOut, "skipped the backlog")
	require.Equal(t, before, confirmedFlush(t, d.DB, slot), "the slot was moved under the running Syncer")

	release()
	cancel()
	require.NoError(t, <-runDone)
	require.False(t, strings.Contains(errOut, "s3cret-pw"))
}

// TestSnapshotBadNumberFlagsNameTheFlag: a zero or negative -chunk-size,
// -chunks-in-flight or -parallel is a configuration error (exit 1, docs/CLI.md) that
// names the flag the user typed, not the library option (WithSnapshotChunkSize) the
// CLI passes it to; nothing connects.
func TestSnapshotBadNumberFlagsNameTheFlag(t *testing.T) {
	t.Setenv("POSTGRES_HOST", "127.0.0.1")
	t.Setenv("POSTGRES_PORT", "1") // nothing listens: the command must not get that far
	for _, c := range []struct{ flag, value, want string }{
		{"-chunk-size", "0", "dbsync snapshot: dbsync: invalid configuration: -chunk-size 0: must be >= 1 rows per chunk\n"},
		{"-chunks-in-flight", "-2", "dbsync snapshot: dbsync: invalid configuration: -chunks-in-flight -2: must be >= 1 chunks\n"},
		{"-parallel", "0", "dbsync snapshot: dbsync: invalid configuration: -parallel 0: must be >= 1 chunks at once\n"},
	} {
		code, out, errOut := runCLI("snapshot", c.flag, c.value, "t")
		require.Equal(t, 1, code, errOut)
		require.Equal(t, "", out)
		require.Equal(t, c.want, errOut)
	}
}

// TestBadNameFlagNamesTheFlag: a -slot or -publication value NewSyncer refuses is
// reported with the flag the user gave, not only the library option and variable
// (WithReplicationSlot / $DBSYNC_REPLSLOT) the user never set.
func TestBadNameFlagNamesTheFlag(t *testing.T) {
	t.Setenv("POSTGRES_HOST", "127.0.0.1")
	t.Setenv("POSTGRES_PORT", "1")
	long := strings.Repeat("p", 64)
	for _, cmd := range []string{"tail", "status", "teardown"} {
		code, out, errOut := runCLI(cmd, "-slot", "Bad")
		require.Equal(t, 1, code, errOut)
		require.Equal(t, "", out)
		require.True(t, strings.HasPrefix(errOut, "dbsync "+cmd+`: -slot "Bad": dbsync: invalid configuration: replication slot name "Bad"`), errOut)
		code, _, errOut = runCLI(cmd, "-publication", long)
		require.Equal(t, 1, code, errOut)
		require.True(t, strings.HasPrefix(errOut, "dbsync "+cmd+`: -publication "`+long+`": dbsync: invalid configuration: publication name`), errOut)
	}
	code, _, errOut := runCLI("snapshot", "-slot", "Bad", "t")
	require.Equal(t, 1, code, errOut)
	require.True(t, strings.HasPrefix(errOut, `dbsync snapshot: -slot "Bad": dbsync: invalid configuration: replication slot name "Bad"`), errOut)
	// Through the environment the message names the variable, as before.
	t.Setenv("DBSYNC_REPLSLOT", "Bad")
	code, _, errOut = runCLI("status")
	require.Equal(t, 1, code, errOut)
	require.True(t, strings.HasPrefix(errOut, `dbsync status: dbsync: invalid configuration: replication slot name "Bad" (WithReplicationSlot / $DBSYNC_REPLSLOT)`), errOut)
}

// TestTailInterruptedDuringSetup: Ctrl-C while tail waits for the slot's creation
// (an open transaction holds it up) ends tail like any Ctrl-C of tail (exit 0, as
// docs/CLI.md says), saying it stopped before streaming, rather than failing with a
// bare "context canceled"; no slot is left behind.
func TestTailInterruptedDuringSetup(t *testing.T) {
	d := pgtest.NewDatabase(t)
	setEnv(t, d)
	_, err := d.DB.Exec(`CREATE TABLE items (id int PRIMARY KEY)`)
	require.NoError(t, err)
	tx, err := d.DB.Begin()
	require.NoError(t, err)
	defer tx.Rollback()
	_, err = tx.Exec(`SELECT txid_current()`)
	require.NoError(t, err)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var out, errb pgtest.Buffer
	done := make(chan int, 1)
	go func() { done <- run(ctx, []string{"tail", "-tables", "items"}, &out, &errb) }()
	waitFor(t, 20*time.Second, func() bool { return strings.Contains(errb.String(), "level=WARN") }, "the slot creation wait warning")
	cancel()
	var code int
	select {
	case code = <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("tail did not stop")
	}
	require.Equal(t, 0, code, errb.String())
	require.Equal(t, "", out.String())
	require.NotContains(t, errb.String(), "context canceled")
	require.Contains(t, errb.String(), "dbsync tail: interrupted while setting up slot "+pgtest.Ident(t, "slot")+"; nothing was read\n")
	var n int
	require.NoError(t, d.DB.QueryRow(`SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1`, pgtest.Ident(t, "slot")).Scan(&n))
	require.Equal(t, 0, n)

	// snapshot interrupted there is interrupted before every table was read: 130
	// with the line saying so, as for an interruption after setup.
	ctx, cancel = context.WithCancel(context.Background())
	defer cancel()
	out, errb = pgtest.Buffer{}, pgtest.Buffer{}
	go func() { done <- run(ctx, []string{"snapshot", "items"}, &out, &errb) }()
	waitFor(t, 20*time.Second, func() bool { return strings.Contains(errb.String(), "level=WARN") }, "the slot creation wait warning")
	cancel()
	select {
	case code = <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("snapshot did not stop")
	}
	require.Equal(t, 130, code, errb.String())
	require.Equal(t, "", out.String())
	require.NotContains(t, errb.String(), "context canceled")
	require.Contains(t, errb.String(), "\ndbsync snapshot: interrupted before the snapshot finished; run it again with the same slot ("+pgtest.Ident(t, "slot")+") to resume after the last delivered chunk\n")
	require.NoError(t, d.DB.QueryRow(`SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1`, pgtest.Ident(t, "slot")).Scan(&n))
	require.Equal(t, 0, n)
}

// cancelAfterLines is a stdout that cancels the command's context (as Ctrl-C does)
// once it has received n lines, and keeps accepting what comes after.
type cancelAfterLines struct {
	mu     sync.Mutex
	buf    strings.Builder
	n      int
	cancel context.CancelFunc
}

func (w *cancelAfterLines) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf.Write(p)
	if strings.Count(w.buf.String(), "\n") >= w.n {
		w.cancel()
	}
	return len(p), nil
}

func (w *cancelAfterLines) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}

var insertedIDRE = regexp.MustCompile(`"key":\{"id":(\d+)\}`)

func insertedIDs(t *testing.T, out string) []int {
	t.Helper()
	var ids []int
	for _, l := range strings.Split(strings.TrimSuffix(out, "\n"), "\n") {
		if l == "" {
			continue
		}
		m := insertedIDRE.FindStringSubmatch(l)
		require.NotNil(t, m, l)
		id, err := strconv.Atoi(m[1])
		require.NoError(t, err)
		ids = append(ids, id)
	}
	return ids
}

// TestTailCtrlCMidBacklog: Ctrl-C while tail prints a backlog stops it cleanly
// (exit 0) with the slot forwarded past exactly what it printed: the next tail starts
// with the transaction after the last one printed, nothing skipped.
func TestTailCtrlCMidBacklog(t *testing.T) {
	d := pgtest.NewDatabase(t)
	setEnv(t, d)
	_, err := d.DB.Exec(`CREATE TABLE items (id int PRIMARY KEY)`)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	var errb pgtest.Buffer
	done := make(chan int, 1)
	go func() { done <- run(ctx, []string{"tail", "-tables", "items"}, io.Discard, &errb) }()
	waitFor(t, 20*time.Second, func() bool { return strings.Contains(errb.String(), "Ctrl-C to stop") }, "tail to start")
	cancel()
	require.Equal(t, 0, <-done, errb.String())

	const n = 3000
	_, err = d.DB.Exec(`DO $$ BEGIN FOR i IN 1..3000 LOOP INSERT INTO items VALUES (i); COMMIT; END LOOP; END $$`)
	require.NoError(t, err)

	ctx, cancel = context.WithCancel(context.Background())
	defer cancel()
	w := &cancelAfterLines{n: 500, cancel: cancel}
	errb = pgtest.Buffer{}
	require.Equal(t, 0, run(ctx, []string{"tail"}, w, &errb), errb.String())
	first := insertedIDs(t, w.String())
	require.GreaterOrEqual(t, len(first), 500)
	require.Less(t, len(first), n, "stopped before the end of the backlog")
	for i, id := range first {
		require.Equal(t, i+1, id)
	}

	ctx, cancel = context.WithCancel(context.Background())
	defer cancel()
	w2 := &cancelAfterLines{n: 1, cancel: cancel}
	errb = pgtest.Buffer{}
	require.Equal(t, 0, run(ctx, []string{"tail"}, w2, &errb), errb.String())
	second := insertedIDs(t, w2.String())
	require.NotEmpty(t, second)
	require.Equal(t, first[len(first)-1]+1, second[0], "the next tail starts right after the last printed transaction")
}

// TestTailPublicationDroppedWhileRunning: a publication dropped while tail runs ends
// it (ErrPublicationMissing, exit 1) with the CLI's way to create it again (-tables),
// as at setup, not only the library's "pass ForTables to NewSyncer".
func TestTailPublicationDroppedWhileRunning(t *testing.T) {
	d := pgtest.NewDatabase(t)
	setEnv(t, d)
	_, err := d.DB.Exec(`CREATE TABLE items (id int PRIMARY KEY)`)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var out, errb pgtest.Buffer
	done := make(chan int, 1)
	go func() { done <- run(ctx, []string{"tail", "-tables", "items"}, &out, &errb) }()
	waitFor(t, 20*time.Second, func() bool { return strings.Contains(errb.String(), "Ctrl-C to stop") }, "tail to start")
	_, err = d.DB.Exec(`DROP PUBLICATION ` + pgtest.Ident(t, "pub"))
	require.NoError(t, err)
	_, err = d.DB.Exec(`INSERT INTO items VALUES (1)`)
	require.NoError(t, err)
	var code int
	select {
	case code = <-done:
	case <-time.After(30 * time.Second):
		t.Fatalf("tail did not stop: %s", errb.String())
	}
	require.Equal(t, 1, code, errb.String())
	require.Equal(t, "", out.String())
	require.Contains(t, errb.String(), "publication does not exist")
	require.True(t, strings.HasSuffix(errb.String(), "\n(with dbsync tail, give -tables t1,schema.t2 to create it)\n"), errb.String())
}

// TestSnapshotBesideRunningTailNamesTheCause: snapshot on a slot a tail drives stops
// (exit 1) with Run's error, once: ErrSlotInUse and what to do. It used to print it
// twice, the first time inside the library's "Refresh and Snapshot need Run or Start
// in another goroutine", advice for a program, which the CLI follows already.
func TestSnapshotBesideRunningTailNamesTheCause(t *testing.T) {
	d := pgtest.NewDatabase(t)
	setEnv(t, d)
	_, err := d.DB.Exec(`CREATE TABLE items (id int PRIMARY KEY); INSERT INTO items SELECT generate_series(1, 10)`)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var errb pgtest.Buffer
	done := make(chan int, 1)
	go func() { done <- run(ctx, []string{"tail", "-tables", "items"}, io.Discard, &errb) }()
	waitFor(t, 20*time.Second, func() bool { return strings.Contains(errb.String(), "Ctrl-C to stop") }, "tail to start")

	code, out, errOut := runCLI("snapshot", "items")
	require.Equal(t, 1, code, errOut)
	require.Equal(t, "", out)
	require.Regexp(t, `^dbsync snapshot: dbsync: replication slot is active in another process: slot "`+pgtest.Ident(t, "slot")+`" is driven by a running Syncer \(or `+"`dbsync tail`"+`\): backend PID \d+ holds its lock; [^\n]*\n$`, errOut)
	require.NotContains(t, errOut, "need Run or Start")
	cancel()
	require.Equal(t, 0, <-done, errb.String())
}

// TestStatusPhysicalSlotHasNoConfirmedPosition: a physical slot has no
// confirmed_flush_lsn (NULL in pg_replication_slots); status printed it as 0/0, a
// position, in text and JSON. It is unset: "-" and null, as restart_lsn is.
func TestStatusPhysicalSlotHasNoConfirmedPosition(t *testing.T) {
	d := pgtest.NewDatabase(t)
	setEnv(t, d)
	phys := pgtest.Ident(t, "phys")
	_, err := d.DB.Exec(`SELECT pg_create_physical_replication_slot($1)`, phys)
	require.NoError(t, err)
	t.Cleanup(func() { d.DB.Exec(`SELECT pg_drop_replication_slot($1)`, phys) })

	code, out, errOut := runCLI("status", "-slot", phys)
	require.Equal(t, 0, code, errOut)
	require.Contains(t, out, "confirmed_flush_lsn: -\n")
	require.Contains(t, out, "lag_bytes:           0 (0 B)\n")
	code, out, errOut = runCLI("status", "-json", "-slot", phys)
	require.Equal(t, 0, code, errOut)
	var st map[string]any
	require.NoError(t, json.Unmarshal([]byte(out), &st))
	require.Contains(t, st, "confirmed_flush_lsn")
	require.Nil(t, st["confirmed_flush_lsn"])
	require.Nil(t, st["restart_lsn"])
}

// TestSecondCtrlCEndsStuckCommand: a second Ctrl-C ends a command whose clean stop is
// stuck, as in most command-line tools. Here tail's stdout is a pipe nobody reads
// (`dbsync tail | less`, scrolled back): the first SIGINT asks tail to stop, but its
// write at COMMIT blocks; the second one used to be swallowed as well, leaving kill -9.
// Nothing past what was written is forwarded either way: the write never finished.
func TestSecondCtrlCEndsStuckCommand(t *testing.T) {
	d := pgtest.NewDatabase(t)
	setEnv(t, d)
	_, err := d.DB.Exec(`CREATE TABLE items (id int PRIMARY KEY, v text)`)
	require.NoError(t, err)
	bin := buildBinary(t)
	r, w, err := os.Pipe()
	require.NoError(t, err)
	defer r.Close()
	var errb pgtest.Buffer
	cmd := exec.Command(bin, "tail", "-tables", "items")
	cmd.Stdout, cmd.Stderr = w, &errb
	require.NoError(t, cmd.Start())
	w.Close()
	defer func() { _ = cmd.Process.Kill() }()
	waitFor(t, 20*time.Second, func() bool { return strings.Contains(errb.String(), "Ctrl-C to stop") }, "tail to start")
	before := confirmedFlush(t, d.DB, pgtest.Ident(t, "slot"))
	// More than a pipe holds (64 KiB), in one transaction.
	_, err = d.DB.Exec(`INSERT INTO items SELECT g, repeat('x', 200) FROM generate_series(1, 2000) g`)
	require.NoError(t, err)
	time.Sleep(2 * time.Second) // tail reaches the blocking write

	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	require.NoError(t, cmd.Process.Signal(os.Interrupt))
	select {
	case err := <-exited:
		t.Fatalf("tail stopped on the first Ctrl-C although its write blocks (%v): %s", err, errb.String())
	case <-time.After(2 * time.Second):
	}
	require.NoError(t, cmd.Process.Signal(os.Interrupt))
	select {
	case err := <-exited:
		var ee *exec.ExitError
		require.ErrorAs(t, err, &ee)
		ws := ee.Sys().(syscall.WaitStatus)
		require.True(t, ws.Signaled(), "%v: %s", err, errb.String())
		require.Equal(t, syscall.SIGINT, ws.Signal())
	case <-time.After(10 * time.Second):
		go io.Copy(io.Discard, r) // let it finish
		t.Fatalf("tail ignored the second Ctrl-C: %s", errb.String())
	}
	// The slot may have moved over other WAL before the transaction (an idle poll
	// forwards it to the flush LSN), never past it: all of its rows are still there.
	var inserts int
	require.NoError(t, d.DB.QueryRow(`SELECT count(*) FROM pg_logical_slot_peek_binary_changes($1, NULL, NULL,
		'proto_version', '1', 'publication_names', $2) WHERE get_byte(data, 0) = 73`, pgtest.Ident(t, "slot"), pgtest.Ident(t, "pub")).Scan(&inserts))
	require.Equal(t, 2000, inserts, "the transaction tail could not write was not forwarded (slot at %s, %s before)",
		confirmedFlush(t, d.DB, pgtest.Ident(t, "slot")), before)
}
