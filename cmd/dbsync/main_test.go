package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/dbsync/dbsync/internal/pgtest"
	"github.com/stretchr/testify/require"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

func waitFor(t *testing.T, timeout time.Duration, cond func() bool, msg string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out: %s", msg)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func runCLI(args ...string) (code int, stdout, stderr string) {
	var out, errb bytes.Buffer
	code = run(context.Background(), args, &out, &errb)
	return code, out.String(), errb.String()
}

func TestHelpAndUsage(t *testing.T) {
	code, out, _ := runCLI("help")
	require.Equal(t, 0, code)
	for _, c := range commands {
		require.Contains(t, out, "  "+c.name+" ")
	}
	require.Contains(t, out, "POSTGRES_HOST")
	code, _, errOut := runCLI()
	require.Equal(t, 2, code)
	require.Contains(t, errOut, "Commands:")
	code, _, errOut = runCLI("frobnicate")
	require.Equal(t, 2, code)
	require.Contains(t, errOut, `unknown command "frobnicate"`)
	code, out, _ = runCLI("help", "tail")
	require.Equal(t, 0, code)
	require.Contains(t, out, "-tables")
	code, _, _ = runCLI("tail", "-h")
	require.Equal(t, 0, code)
	code, _, errOut = runCLI("tail", "-nope")
	require.Equal(t, 2, code)
	require.Contains(t, errOut, "flag provided but not defined: -nope")
	code, _, errOut = runCLI("status", "extra")
	require.Equal(t, 2, code)
	require.Contains(t, errOut, `unexpected arguments ["extra"]`)
}

// setEnv points the POSTGRES_* and DBSYNC_* variables at a test database.
func setEnv(t *testing.T, d *pgtest.Database) {
	t.Setenv("POSTGRES_HOST", d.Server.Host)
	t.Setenv("POSTGRES_PORT", strconv.Itoa(d.Server.Port))
	t.Setenv("POSTGRES_USER", d.Server.User)
	t.Setenv("POSTGRES_DB", d.Name)
	t.Setenv("POSTGRES_NAME", "")
	t.Setenv("POSTGRES_SSLMODE", "disable")
	// Trust authentication ignores it; it must never be printed.
	t.Setenv("POSTGRES_PASSWORD", "s3cret-pw")
	t.Setenv("DBSYNC_REPLSLOT", pgtest.Ident(t, "slot"))
	t.Setenv("DBSYNC_PUBNAME", pgtest.Ident(t, "pub"))
	t.Setenv("DBSYNC_CTRL_NAMESPACE", "cli_ctrl")
	t.Setenv("DBSYNC_WM_TABLENAME", "cli_wm")
}

var stampRE = regexp.MustCompile(`"commit_lsn":"[0-9A-F]+/[0-9A-F]+","xid":(\d+),"commit_time":"([^"]+)"`)

func TestTailStatusTeardown(t *testing.T) {
	if pgtest.Shared(t).Host == "" {
		t.Fatal("this test needs a TCP server address for POSTGRES_HOST")
	}
	d := pgtest.NewDatabase(t)
	setEnv(t, d)
	_, err := d.DB.Exec(`CREATE TABLE items (id text PRIMARY KEY, name text, body text);
		ALTER TABLE items ALTER COLUMN body SET STORAGE EXTERNAL;
		CREATE TABLE other (k text PRIMARY KEY)`)
	require.NoError(t, err)

	// status before anything exists: a clear error, and nothing created.
	code, _, errOut := runCLI("status")
	require.Equal(t, 1, code)
	require.Contains(t, errOut, "replication slot does not exist")

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var out, errb pgtest.Buffer
	done := make(chan int, 1)
	go func() { done <- run(ctx, []string{"tail", "-tables", "items"}, &out, &errb) }()
	waitFor(t, 10*time.Second, func() bool { return strings.Contains(errb.String(), "Ctrl-C to stop") }, "tail to start")

	big := strings.Repeat("0123456789", 400)
	var xids []string
	for _, stmt := range []string{
		`INSERT INTO items VALUES ('1', 'a', '` + big + `'), ('2', 'b b', NULL)`,
		`UPDATE items SET name = 'c' WHERE id = '1'`,
		`UPDATE items SET id = '3' WHERE id = '2'`,
		`DELETE FROM items WHERE id = '1'`,
		`INSERT INTO other VALUES ('not published')`,
	} {
		tx, err := d.DB.Begin()
		require.NoError(t, err)
		var xid string
		require.NoError(t, tx.QueryRow(`SELECT txid_current()::text`).Scan(&xid))
		_, err = tx.Exec(stmt)
		require.NoError(t, err)
		require.NoError(t, tx.Commit())
		xids = append(xids, xid)
	}
	want := []string{
		`{"type":"change",STAMP0,"op":"insert","schema":"public","table":"items","key":{"id":"1"},"new":{"body":"` + big + `","id":"1","name":"a"},"old":null}`,
		`{"type":"change",STAMP0,"op":"insert","schema":"public","table":"items","key":{"id":"2"},"new":{"body":null,"id":"2","name":"b b"},"old":null}`,
		`{"type":"change",STAMP1,"op":"update","schema":"public","table":"items","key":{"id":"1"},"new":{"id":"1","name":"c"},"old":null,"unchanged":["body"]}`,
		`{"type":"change",STAMP2,"op":"update","schema":"public","table":"items","key":{"id":"3"},"old_key":{"id":"2"},"new":{"body":null,"id":"3","name":"b b"},"old":{"id":"2"}}`,
		`{"type":"change",STAMP3,"op":"delete","schema":"public","table":"items","key":{"id":"1"},"new":null,"old":{"id":"1"}}`,
	}
	waitFor(t, 15*time.Second, func() bool { return strings.Count(out.String(), "\n") >= len(want) }, "tail output")
	cancel()
	require.Equal(t, 0, <-done, "stderr: %s", errb.String())
	require.Contains(t, errb.String(), "dbsync tail: stopped; slot")

	lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
	require.Len(t, lines, len(want))
	for i, l := range lines {
		m := stampRE.FindStringSubmatch(l)
		require.NotNil(t, m, "line %d has no commit stamp: %s", i, l)
		ct, err := time.Parse(time.RFC3339Nano, m[2])
		require.NoError(t, err)
		require.WithinDuration(t, time.Now(), ct, time.Minute)
		require.True(t, strings.HasSuffix(m[2], "Z"), "commit_time in UTC: %s", m[2])
		tx := strings.Index(want[i], "STAMP") + 5
		n := int(want[i][tx] - '0')
		require.Equal(t, xids[n], m[1], "line %d xid", i)
		lines[i] = stampRE.ReplaceAllString(l, fmt.Sprintf("STAMP%d", n))
	}
	require.Equal(t, want, lines)

	// The slot was forwarded past everything printed: status shows no lag to speak of
	// beyond the unpublished insert (which the poller forwards over too).
	code, statusOut, errOut := runCLI("status")
	require.Equal(t, 0, code, errOut)
	require.Contains(t, statusOut, "slot:                "+pgtest.Ident(t, "slot")+"\n")
	require.Contains(t, statusOut, "plugin:              pgoutput\n")
	require.Contains(t, statusOut, "database:            "+d.Name+"\n")
	require.Contains(t, statusOut, "active:              false\n")
	require.Contains(t, statusOut, "wal_status:          reserved\n")
	require.Regexp(t, `(?m)^retained_wal_bytes:  \d+ \(`, statusOut)
	// A few small transactions never spill (pg_stat_replication_slots).
	require.Contains(t, statusOut, "spilled:             0 transactions, 0 times, 0 bytes (0 B)\n")
	require.Regexp(t, `(?m)^decoded:             \d+ transactions, \d+ bytes \(`, statusOut)
	code, jsonOut, errOut := runCLI("status", "-json")
	require.Equal(t, 0, code, errOut)
	var st map[string]any
	require.NoError(t, json.Unmarshal([]byte(jsonOut), &st))
	require.Equal(t, pgtest.Ident(t, "slot"), st["slot"])
	require.Equal(t, false, st["active"])
	var confirmed string
	require.NoError(t, d.DB.QueryRow(`SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1`, pgtest.Ident(t, "slot")).Scan(&confirmed))
	require.Equal(t, confirmed, st["confirmed_flush_lsn"])
	require.Equal(t, float64(0), st["spill_bytes"])
	require.Contains(t, st, "total_txns")

	// A second tail re-prints nothing: everything printed was confirmed.
	ctx2, cancel2 := context.WithCancel(context.Background())
	var out2, err2 pgtest.Buffer
	done2 := make(chan int, 1)
	go func() { done2 <- run(ctx2, []string{"tail", "-format", "text"}, &out2, &err2) }()
	waitFor(t, 10*time.Second, func() bool { return strings.Contains(err2.String(), "Ctrl-C to stop") }, "second tail to start")
	_, err = d.DB.Exec(`INSERT INTO items VALUES ('4', 'd', NULL)`)
	require.NoError(t, err)
	waitFor(t, 10*time.Second, func() bool { return strings.Contains(out2.String(), "COMMIT") }, "second tail output")
	cancel2()
	require.Equal(t, 0, <-done2, err2.String())
	textLines := strings.Split(strings.TrimSuffix(out2.String(), "\n"), "\n")
	require.Len(t, textLines, 3, out2.String())
	require.Regexp(t, `^BEGIN xid=\d+ commit_lsn=[0-9A-F]+/[0-9A-F]+ commit_time=\S+Z$`, textLines[0])
	require.Equal(t, "INSERT public.items id=4 name=d body=NULL", textLines[1])
	require.Regexp(t, `^COMMIT commit_lsn=[0-9A-F]+/[0-9A-F]+ end_lsn=[0-9A-F]+/[0-9A-F]+$`, textLines[2])

	code, tdOut, errOut := runCLI("teardown")
	require.Equal(t, 0, code, errOut)
	require.Equal(t, fmt.Sprintf("teardown: slot %s, watermark table cli_ctrl.cli_wm (publication %s) and schema cli_ctrl are gone\n",
		pgtest.Ident(t, "slot"), pgtest.Ident(t, "pub")), tdOut)
	require.Contains(t, errOut, "dropped replication slot")
	var n int
	require.NoError(t, d.DB.QueryRow(`SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1`, pgtest.Ident(t, "slot")).Scan(&n))
	require.Equal(t, 0, n)
	require.NoError(t, d.DB.QueryRow(`SELECT count(*) FROM pg_namespace WHERE nspname = 'cli_ctrl'`).Scan(&n))
	require.Equal(t, 0, n)
	code, _, errOut = runCLI("teardown")
	require.Equal(t, 0, code, "teardown is idempotent: %s", errOut)
	code, _, errOut = runCLI("status")
	require.Equal(t, 1, code)
	require.Contains(t, errOut, "does not exist")

	for _, s := range []string{out.String(), errb.String(), out2.String(), err2.String(), statusOut, errOut} {
		require.NotContains(t, s, "s3cret-pw")
	}
	require.Contains(t, errb.String(), "password=***")
}

func TestDemoCommandThrowawayServer(t *testing.T) {
	t.Setenv("POSTGRES_HOST", "")
	var out, errb bytes.Buffer
	start := time.Now()
	code := run(context.Background(), []string{"demo", "-duration", "2s", "-writers", "3", "-keys", "50"}, &out, &errb)
	require.Equal(t, 0, code, "stderr:\n%s", errb.String())
	require.Less(t, time.Since(start), time.Minute)
	lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
	require.Regexp(t, `^demo: [1-9][0-9]* rows in 3 tables, 0 mismatches$`, lines[len(lines)-1])
	require.Contains(t, errb.String(), "starting a throwaway PostgreSQL")
	// Progress while the writers run: "snapshot" while the rebuild runs, "writing"
	// after it; on a loaded machine the rebuild can outlast the 2 s of writing, so
	// either phase may be the only one.
	require.Regexp(t, `(?m)^demo: (snapshot|writing) +\d+\.\ds  committed \d+ txns`, errb.String())
	require.Regexp(t, `(?m)^demo: caught up +\d+\.\ds  committed \d+ txns`, errb.String())
}

func TestExitStatusFromCommand(t *testing.T) {
	saved := commands
	t.Cleanup(func() { commands = saved })
	commands = append(append([]command(nil), saved...),
		command{"fail1", "exit 1 after a line", func(_ context.Context, _ []string, stdout, _ io.Writer) error {
			fmt.Fprintln(stdout, "demo: 3 rows in 1 tables, 1 mismatches")
			return exitError{code: 1}
		}},
		command{"fail", "plain error", func(context.Context, []string, io.Writer, io.Writer) error {
			return errors.New("boom")
		}})
	code, out, errOut := runCLI("fail1")
	require.Equal(t, 1, code)
	require.Equal(t, "demo: 3 rows in 1 tables, 1 mismatches\n", out)
	require.Equal(t, "", errOut)
	code, _, errOut = runCLI("fail")
	require.Equal(t, 1, code)
	require.Equal(t, "dbsync fail: boom\n", errOut)
}

// TestTailStopsOnSIGINT runs the built binary and interrupts it like Ctrl-C does.
func TestTailStopsOnSIGINT(t *testing.T) {
	d := pgtest.NewDatabase(t)
	setEnv(t, d)
	_, err := d.DB.Exec(`CREATE TABLE items (id int PRIMARY KEY, name text)`)
	require.NoError(t, err)
	bin := filepath.Join(t.TempDir(), "dbsync")
	build := exec.Command("go", "build", "-o", bin, ".")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	var out, errb pgtest.Buffer
	cmd := exec.Command(bin, "tail", "-tables", "items")
	cmd.Stdout, cmd.Stderr = &out, &errb
	require.NoError(t, cmd.Start())
	defer func() { _ = cmd.Process.Kill() }()
	waitFor(t, 15*time.Second, func() bool { return strings.Contains(errb.String(), "Ctrl-C to stop") }, "tail to start")
	_, err = d.DB.Exec(`INSERT INTO items VALUES (1, 'x')`)
	require.NoError(t, err)
	waitFor(t, 10*time.Second, func() bool { return strings.Contains(out.String(), `"op":"insert"`) }, "tail output")
	require.NoError(t, cmd.Process.Signal(os.Interrupt))
	require.NoError(t, cmd.Wait(), "stderr: %s", errb.String())
	require.Contains(t, errb.String(), "dbsync tail: stopped; slot")
	var active bool
	require.NoError(t, d.DB.QueryRow(`SELECT active FROM pg_replication_slots WHERE slot_name = $1`, pgtest.Ident(t, "slot")).Scan(&active))
	require.False(t, active)
	// Everything printed was confirmed: a peek finds nothing left.
	var left int
	require.NoError(t, d.DB.QueryRow(`SELECT count(*) FROM pg_logical_slot_peek_binary_changes($1, NULL, NULL,
		'proto_version', '1', 'publication_names', $2)`, pgtest.Ident(t, "slot"), pgtest.Ident(t, "pub")).Scan(&left))
	require.Equal(t, 0, left)
}

func TestTailFromNowSkipsBacklog(t *testing.T) {
	d := pgtest.NewDatabase(t)
	setEnv(t, d)
	_, err := d.DB.Exec(`CREATE TABLE items (id text PRIMARY KEY)`)
	require.NoError(t, err)
	// The first tail sets up the slot; stop it at once.
	ctx, cancel := context.WithCancel(context.Background())
	var errb pgtest.Buffer
	done := make(chan int, 1)
	go func() { done <- run(ctx, []string{"tail", "-tables", "items"}, io.Discard, &errb) }()
	waitFor(t, 10*time.Second, func() bool { return strings.Contains(errb.String(), "Ctrl-C to stop") }, "tail to start")
	cancel()
	require.Equal(t, 0, <-done, errb.String())

	_, err = d.DB.Exec(`INSERT INTO items VALUES ('backlog')`)
	require.NoError(t, err)
	ctx, cancel = context.WithCancel(context.Background())
	defer cancel()
	var out pgtest.Buffer
	errb = pgtest.Buffer{}
	go func() { done <- run(ctx, []string{"tail", "-from-now"}, &out, &errb) }()
	waitFor(t, 10*time.Second, func() bool { return strings.Contains(errb.String(), "Ctrl-C to stop") }, "tail to start")
	require.Contains(t, errb.String(), "skipped the backlog")
	_, err = d.DB.Exec(`INSERT INTO items VALUES ('new')`)
	require.NoError(t, err)
	waitFor(t, 10*time.Second, func() bool { return strings.Contains(out.String(), "\n") }, "tail output")
	cancel()
	require.Equal(t, 0, <-done, errb.String())
	lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
	require.Len(t, lines, 1)
	require.Contains(t, lines[0], `"key":{"id":"new"}`)
}

// TestStatusAndTailOnInvalidatedSlot: on a slot PostgreSQL invalidated (wal_status
// lost), status reports it with what to do (exit 0; restart_lsn null in JSON) and tail
// refuses it with ErrSlotInvalidated's message (exit 1) instead of reading past the
// gap. It runs on a cluster of its own (pgtest.SlotInvalidationSettings).
func TestStatusAndTailOnInvalidatedSlot(t *testing.T) {
	srv, err := pgtest.Start(pgtest.Options{Settings: pgtest.SlotInvalidationSettings})
	require.NoError(t, err)
	t.Cleanup(func() { srv.Stop() })
	d := srv.NewDatabase(t)
	setEnv(t, d)
	slot := pgtest.Ident(t, "slot")
	_, err = d.DB.Exec(`CREATE TABLE items (id int PRIMARY KEY)`)
	require.NoError(t, err)
	_, err = d.DB.Exec(`SELECT pg_create_logical_replication_slot($1, 'pgoutput')`, slot)
	require.NoError(t, err)
	pgtest.InvalidateSlot(t, d.DB, slot)

	code, out, errOut := runCLI("status")
	require.Equal(t, 0, code, errOut)
	require.Contains(t, out, "restart_lsn:         - (invalidated)\n")
	require.Contains(t, out, "wal_status:          lost (the slot is invalidated: drop it with SELECT pg_drop_replication_slot('"+slot+"'), set up again and rebuild consumers with a snapshot)\n")
	code, out, errOut = runCLI("status", "-json")
	require.Equal(t, 0, code, errOut)
	var st map[string]any
	require.NoError(t, json.Unmarshal([]byte(out), &st))
	require.Equal(t, "lost", st["wal_status"])
	require.Contains(t, st, "restart_lsn")
	require.Nil(t, st["restart_lsn"])

	code, out, errOut = runCLI("tail", "-tables", "items")
	require.Equal(t, 1, code, out)
	require.Contains(t, errOut, "replication slot was invalidated")
	require.Contains(t, errOut, "pg_drop_replication_slot('"+slot+"')")
	require.Equal(t, "", out)

	// teardown removes the invalidated slot like any other.
	code, _, errOut = runCLI("teardown")
	require.Equal(t, 0, code, errOut)
	var n int
	require.NoError(t, d.DB.QueryRow(`SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1`, slot).Scan(&n))
	require.Equal(t, 0, n)
}
