package pgtest

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// testM is the binary's testing.M, for TestExampleNames.
var testM *testing.M

func TestMain(m *testing.M) {
	testM = m
	os.Exit(Main(m))
}

func TestNewDatabaseIsLogical(t *testing.T) {
	d := NewDatabase(t)
	var level, syncCommit string
	require.NoError(t, d.DB.QueryRow("SHOW wal_level").Scan(&level))
	require.NoError(t, d.DB.QueryRow("SHOW synchronous_commit").Scan(&syncCommit))
	require.Equal(t, "logical", level)
	require.Equal(t, "on", syncCommit)
	var name string
	require.NoError(t, d.DB.QueryRow("SELECT current_database()").Scan(&name))
	require.Equal(t, d.Name, name)
	// A slot left behind must not stop cleanup from dropping the database.
	_, err := d.DB.Exec("SELECT pg_create_logical_replication_slot($1, 'pgoutput')", Ident(t, "slot"))
	require.NoError(t, err)
}

func TestRedact(t *testing.T) {
	require.Equal(t, "host=x password=*** user=u", redact("host=x password=secret user=u"))
	require.Equal(t, "postgres://u:***@h/db", redact("postgres://u:secret@h/db"))
}

func TestIdent(t *testing.T) {
	require.Equal(t, "testident_slot", Ident(t, "slot"))
}

// TestKilledProcessLeavesNoCluster starts a cluster in a child process (this test
// binary again), kills the child with SIGKILL, and requires the cluster's server to
// stop and its files to go: the watchdog does what the dead process cannot.
func TestKilledProcessLeavesNoCluster(t *testing.T) {
	if os.Getenv("PGTEST_CHILD") == "1" {
		s, err := Start(Options{})
		if err != nil {
			fmt.Println("error:", err)
			os.Exit(1)
		}
		fmt.Printf("cluster %s %d\n", s.DataDir(), s.Port)
		select {} // until killed
	}
	cmd := exec.Command(os.Args[0], "-test.run", "^TestKilledProcessLeavesNoCluster$")
	cmd.Env = append(os.Environ(), "PGTEST_CHILD=1")
	out, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	var dataDir string
	var port int
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		if n, _ := fmt.Sscanf(sc.Text(), "cluster %s %d", &dataDir, &port); n == 2 {
			break
		}
		t.Log(sc.Text())
	}
	require.NotEmpty(t, dataDir, "the child did not start a cluster")
	_, err = os.Stat(dataDir)
	require.NoError(t, err)
	conn, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port))
	require.NoError(t, err, "the child's server is up")
	conn.Close()

	require.NoError(t, cmd.Process.Kill())
	cmd.Wait()
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, statErr := os.Stat(filepath.Dir(dataDir))
		c, dialErr := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if c != nil {
			c.Close()
		}
		if os.IsNotExist(statErr) && dialErr != nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("30 s after the child was killed: files %v, server reachable %v", statErr == nil, dialErr == nil)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func TestSelectsExamples(t *testing.T) {
	names := []string{"Example", "ExampleSyncer_Snapshot"}
	for pattern, want := range map[string]bool{
		"":                        true,
		".":                       true,
		"^Example$":               true,
		"ExampleSyncer_Snapshot$": true,
		"TestA|Example":           true,
		"Snapshot":                true,
		"^TestRedact$":            false,
		"^TestSnapshot":           false,
		"TestA/sub":               true,
		"(":                       true,
	} {
		if got := selectsExamples(pattern, names); got != want {
			t.Errorf("selectsExamples(%q) = %v, want %v", pattern, got, want)
		}
	}
	if !selectsExamples("^TestRedact$", nil) {
		t.Error("with no example names known, a pattern must be taken to select examples")
	}
}

// TestExampleNames reads this binary's examples from testing.M: none here, so the
// field must be found and empty (a nil result would mean it was not found).
func TestExampleNames(t *testing.T) {
	names := exampleNames(testM)
	require.NotNil(t, names, "testing.M's examples field was not found")
	require.Empty(t, names)
}
