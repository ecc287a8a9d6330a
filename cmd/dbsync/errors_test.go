package main

import (
	"bufio"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dbsync/dbsync/internal/pgtest"
	"github.com/stretchr/testify/require"
)

// buildBinary builds cmd/dbsync into a temporary directory and returns its path.
func buildBinary(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "dbsync")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// refreshIDs parses snapshot output: every line must be a whole JSON object; it
// returns the ids of the refresh rows in output order.
func refreshIDs(t *testing.T, out string) []int {
	t.Helper()
	var ids []int
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		var l struct {
			Type string
			Key  struct{ ID int }
		}
		require.NoError(t, json.Unmarshal(sc.Bytes(), &l), "line %q", sc.Text())
		if l.Type == "refresh" {
			ids = append(ids, l.Key.ID)
		}
	}
	require.True(t, strings.HasSuffix(out, "\n") || out == "", "output ends mid-line")
	return ids
}

// TestSnapshotInterruptedResumes: Ctrl-C (SIGINT) during `dbsync snapshot` stops it
// with exit status 130 and a line saying it was interrupted and how to resume, never
// a bare "context canceled"; every line printed is whole, and running the command
// again resumes after the last delivered chunk instead of starting over, so the two
// runs together print every row. With -follow, Ctrl-C before the snapshot finished is
// an interruption too (130), not a clean end.
func TestSnapshotInterruptedResumes(t *testing.T) {
	d := pgtest.NewDatabase(t)
	setEnv(t, d)
	const rows = 20000
	_, err := d.DB.Exec(`CREATE TABLE t (id int PRIMARY KEY, v text);
		INSERT INTO t SELECT g, 'v' || g FROM generate_series(1, 20000) g; ANALYZE t`)
	require.NoError(t, err)
	bin := buildBinary(t)

	interrupt := func(args ...string) (code int, stdout, stderr string) {
		t.Helper()
		var out, errb pgtest.Buffer
		cmd := exec.Command(bin, append([]string{"snapshot", "-chunk-size", "50"}, args...)...)
		cmd.Stdout, cmd.Stderr = &out, &errb
		require.NoError(t, cmd.Start())
		defer func() { _ = cmd.Process.Kill() }()
		waitFor(t, 30*time.Second, func() bool { return strings.Contains(errb.String(), " chunks)") }, "a chunk: "+errb.String())
		require.NoError(t, cmd.Process.Signal(os.Interrupt))
		err := cmd.Wait()
		var ee *exec.ExitError
		if err != nil {
			require.ErrorAs(t, err, &ee, errb.String())
			ws := ee.Sys().(syscall.WaitStatus)
			require.False(t, ws.Signaled(), "killed by a signal: %s", errb.String())
			code = ee.ExitCode()
		}
		return code, out.String(), errb.String()
	}

	for _, args := range [][]string{{"t"}, {"-follow", "t"}} {
		code, out, errOut := interrupt(args...)
		require.Equal(t, 130, code, "%v: stderr:\n%s", args, errOut)
		require.NotContains(t, errOut, "context canceled")
		require.Contains(t, errOut, "dbsync snapshot: interrupted before the snapshot finished; run it again with the same slot ("+pgtest.Ident(t, "slot")+") to resume after the last delivered chunk\n")
		first := refreshIDs(t, out)
		require.NotEmpty(t, first)
		require.Less(t, len(first), rows, "interrupted, not finished")
		var active bool
		require.NoError(t, d.DB.QueryRow(`SELECT active FROM pg_replication_slots WHERE slot_name = $1`, pgtest.Ident(t, "slot")).Scan(&active))
		require.False(t, active)

		// The next run resumes: it starts after the last delivered chunk (not at 1),
		// and the two runs together print every row.
		res, err := exec.Command(bin, "snapshot", "-chunk-size", "5000", "t").Output()
		require.NoError(t, err)
		second := refreshIDs(t, string(res))
		require.NotEmpty(t, second)
		require.Greater(t, second[0], 1, "resumed, not started over")
		require.LessOrEqual(t, second[0], first[len(first)-1]+1, "nothing skipped")
		seen := map[int]bool{}
		for _, id := range append(first, second...) {
			seen[id] = true
		}
		require.Len(t, seen, rows)
	}
}

// TestSnapshotFlagAfterTables: the flag package stops at the first table name, so
// `dbsync snapshot items -follow` took "-follow" for a table and failed after
// connecting with `table "-follow" does not exist`. A flag after the tables is a bad
// command line (exit 2) saying to put it first, before anything connects.
func TestSnapshotFlagAfterTables(t *testing.T) {
	t.Setenv("POSTGRES_HOST", "127.0.0.1")
	t.Setenv("POSTGRES_PORT", "1") // nothing listens: the command must not get that far
	for _, args := range [][]string{{"snapshot", "items", "-follow"}, {"snapshot", "items", "-chunk-size", "10", "orders"}} {
		code, out, errOut := runCLI(args...)
		require.Equal(t, 2, code, "%v: %s", args, errOut)
		require.Empty(t, out)
		require.Contains(t, errOut, "dbsync snapshot: flag "+args[2]+" after the table names: flags go first: dbsync snapshot [flags] table...\n")
	}
}

// TestConnectFailureSaysWhatToDo: a server nobody listens on, a wrong password and a
// database that does not exist each give one line naming the connection (password
// redacted) and the variables to check, exit 1; the password is never printed.
func TestConnectFailureSaysWhatToDo(t *testing.T) {
	srv, err := pgtest.Start(pgtest.Options{})
	require.NoError(t, err)
	t.Cleanup(func() { srv.Stop() })
	d := srv.NewDatabase(t)
	setEnv(t, d)
	_, err = d.DB.Exec(`CREATE ROLE pwuser LOGIN REPLICATION PASSWORD 'right-pw'`)
	require.NoError(t, err)
	hba := filepath.Join(srv.DataDir(), "pg_hba.conf")
	old, err := os.ReadFile(hba)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(hba, append([]byte("host all pwuser 127.0.0.1/32 scram-sha-256\n"), old...), 0o600))
	_, err = d.DB.Exec(`SELECT pg_reload_conf()`)
	require.NoError(t, err)

	const hint = "; check POSTGRES_HOST, POSTGRES_PORT, POSTGRES_USER, POSTGRES_PASSWORD, POSTGRES_DB and POSTGRES_SSLMODE\n"
	t.Setenv("POSTGRES_USER", "pwuser")
	t.Setenv("POSTGRES_PASSWORD", "wrong-pw")
	code, _, errOut := runCLI("status")
	require.Equal(t, 1, code)
	require.Regexp(t, `^dbsync status: cannot connect to PostgreSQL \(host=127\.0\.0\.1 port=\d+ user=pwuser dbname=\S+ sslmode=disable password=\*\*\*\): .*password authentication failed for user "pwuser"[^;]*`+regexp.QuoteMeta(hint)+`$`, errOut)

	t.Setenv("POSTGRES_PASSWORD", "right-pw")
	t.Setenv("POSTGRES_DB", "no_such_db")
	code, _, errOut = runCLI("tail")
	require.Equal(t, 1, code)
	require.Regexp(t, `^dbsync tail: cannot connect to PostgreSQL \(host=.* dbname=no_such_db .*\): .*database "no_such_db" does not exist[^;]*`+regexp.QuoteMeta(hint)+`$`, errOut)

	t.Setenv("POSTGRES_PORT", "1")
	code, _, errOut = runCLI("snapshot", "t")
	require.Equal(t, 1, code)
	require.Regexp(t, `^dbsync snapshot: cannot connect to PostgreSQL \(host=127\.0\.0\.1 port=1 .*\): .*connection refused`+regexp.QuoteMeta(hint)+`$`, errOut)
	require.NotContains(t, errOut, "right-pw")
}
