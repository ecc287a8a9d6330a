// Package pgtest starts throwaway PostgreSQL clusters for dbsync's tests, benchmarks
// and demo, and hands out one fresh database per test.
//
// A cluster is created with the system's initdb/pg_ctl (found on PATH, or the newest
// /usr/lib/postgresql/*/bin) in a temporary directory, configured for logical decoding
// (wal_level=logical, fsync=off, synchronous_commit=on: see
// shared/reference/pg-logical-decoding.md §3), listening on 127.0.0.1 at a free port
// and on a private Unix socket. When the process runs as root the server runs as the
// "postgres" OS user, as PostgreSQL refuses to run as root.
//
// Set DBSYNC_TEST_DSN to a libpq connection string (URL or key=value) to run tests
// against an existing server instead; it must have wal_level=logical and a superuser.
package pgtest

import (
	"context"
	"database/sql"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"reflect"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/lib/pq"
)

// EnvDSN names the environment variable that points tests at an existing server.
const EnvDSN = "DBSYNC_TEST_DSN"

// InstallHint says how to get the PostgreSQL server binaries on this kind of machine.
const InstallHint = "PostgreSQL server binaries (initdb, pg_ctl) were not found on PATH or in " +
	"/usr/lib/postgresql/*/bin. Install them with `apt-get update && apt-get install -y postgresql` " +
	"(Debian/Ubuntu), or set " + EnvDSN + " to the connection string of a server with wal_level=logical " +
	"and a superuser role"

// Options configure a throwaway cluster. The zero value gives a cluster fit for dbsync.
type Options struct {
	// WALLevel is the wal_level setting; "" means "logical".
	WALLevel string
	// Settings are extra postgresql.conf lines ("name = value").
	Settings []string
	// Env is extra environment ("NAME=value") for the server's processes, e.g.
	// LANGUAGE=de with the setting lc_messages = 'C.UTF-8' for a server that reports
	// errors in German (LocalizedMessages).
	Env []string
}

// LocalizedMessages returns Options whose server writes its error messages in lang
// (a gettext language such as "de"), as servers installed with a non-English locale
// do: the SQLSTATEs stay, the texts change. It needs the server's translations
// (/usr/share/locale/<lang>/LC_MESSAGES/postgres-*.mo, part of Debian's
// postgresql package), not an installed OS locale: lc_messages = 'C.UTF-8' plus the
// LANGUAGE environment variable select them.
func LocalizedMessages(lang string) Options {
	return Options{Settings: []string{"lc_messages = 'C.UTF-8'"}, Env: []string{"LANGUAGE=" + lang}}
}

// Server is a running PostgreSQL server: either a throwaway cluster owned by this
// process or an existing server named by DBSYNC_TEST_DSN.
type Server struct {
	// Host, Port and User address the server over TCP.
	Host string
	Port int
	User string
	// Version is the server_version_num, e.g. 150018.
	Version int

	base    string // a DSN (key=value form) without dbname
	dataDir string // "" for an external server
	binDir  string
	dir     string
	cred    *syscall.Credential
	env     []string // Options.Env, for pg_ctl start
	dbSeq   atomic.Int64
	stopped atomic.Bool
	// watchdog is the write end of the pipe the cluster's watchdog waits on (watch).
	watchdog *os.File
}

// BinDir returns the directory holding initdb, pg_ctl, pg_recvlogical and friends,
// or an error carrying InstallHint.
func BinDir() (string, error) {
	if p, err := exec.LookPath("initdb"); err == nil {
		if real, err := filepath.EvalSymlinks(p); err == nil {
			p = real
		}
		return filepath.Dir(p), nil
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(dirs, func(i, j int) bool { return versionOf(dirs[i]) > versionOf(dirs[j]) })
	for _, d := range dirs {
		if _, err := os.Stat(filepath.Join(d, "initdb")); err == nil {
			return d, nil
		}
	}
	return "", errors.New(InstallHint)
}

func versionOf(binDir string) int {
	v, _ := strconv.Atoi(filepath.Base(filepath.Dir(binDir)))
	return v
}

// Start creates and starts a new throwaway cluster. Stop it with Stop.
// The error includes the server log when the server fails to start.
func Start(opts Options) (*Server, error) {
	binDir, err := BinDir()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "dbsync-pg-")
	if err != nil {
		return nil, err
	}
	s := &Server{Host: "127.0.0.1", User: "postgres", binDir: binDir, dir: dir, dataDir: filepath.Join(dir, "data"), env: opts.Env}
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			os.RemoveAll(dir)
			return nil, fmt.Errorf("pgtest: running as root needs the \"postgres\" OS user to run the server: %w", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		s.cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
		if err := os.Chown(dir, uid, gid); err != nil {
			os.RemoveAll(dir)
			return nil, err
		}
	} else if u, err := user.Current(); err == nil {
		s.User = u.Username
	}
	if out, err := s.run("initdb", "-D", s.dataDir, "-U", s.User, "-A", "trust", "-E", "UTF8", "--locale=C", "--no-sync"); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("pgtest: initdb failed: %w\n%s", err, out)
	}
	walLevel := opts.WALLevel
	if walLevel == "" {
		walLevel = "logical"
	}
	var lastErr error
	for attempt := 0; attempt < 5; attempt++ {
		port, err := freePort()
		if err != nil {
			return nil, err
		}
		conf := []string{
			"listen_addresses = '127.0.0.1'",
			fmt.Sprintf("port = %d", port),
			fmt.Sprintf("unix_socket_directories = '%s'", dir),
			"wal_level = " + walLevel,
			"max_replication_slots = 100",
			"max_wal_senders = 100",
			"max_connections = 300",
			"fsync = off",
			"synchronous_commit = on",
			"full_page_writes = off",
			"shared_buffers = 128MB",
			"max_wal_size = 4GB",
			"logging_collector = off",
			"log_min_messages = warning",
		}
		conf = append(conf, opts.Settings...)
		if err := os.WriteFile(filepath.Join(s.dataDir, "postgresql.auto.conf"), []byte(strings.Join(conf, "\n")+"\n"), 0o600); err != nil {
			return nil, err
		}
		if s.cred != nil {
			os.Chown(filepath.Join(s.dataDir, "postgresql.auto.conf"), int(s.cred.Uid), int(s.cred.Gid))
		}
		logFile := filepath.Join(dir, "server.log")
		out, err := s.run("pg_ctl", "-D", s.dataDir, "-l", logFile, "-w", "-t", "60", "start")
		if err != nil {
			log, _ := os.ReadFile(logFile)
			lastErr = fmt.Errorf("pgtest: pg_ctl start failed: %w\n%s\nserver log:\n%s", err, out, log)
			if strings.Contains(string(log), "already in use") {
				continue
			}
			s.cleanup()
			return nil, lastErr
		}
		s.Port = port
		s.base = fmt.Sprintf("host=%s port=%d user=%s sslmode=disable", s.Host, s.Port, s.User)
		if err := s.watch(); err != nil {
			s.Stop()
			return nil, err
		}
		if err := s.readVersion(); err != nil {
			s.Stop()
			return nil, err
		}
		return s, nil
	}
	s.cleanup()
	return nil, lastErr
}

// External returns a Server for the existing server named by dsn (DBSYNC_TEST_DSN).
func External(dsn string) (*Server, error) {
	base, err := stripDBName(dsn)
	if err != nil {
		return nil, err
	}
	s := &Server{base: base}
	if err := s.readVersion(); err != nil {
		return nil, fmt.Errorf("pgtest: %s=%q: %w", EnvDSN, redact(dsn), err)
	}
	return s, nil
}

func (s *Server) readVersion() error {
	db, err := sql.Open("postgres", s.DSN("postgres"))
	if err != nil {
		return err
	}
	defer db.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var v string
	if err := db.QueryRowContext(ctx, "SHOW server_version_num").Scan(&v); err != nil {
		return err
	}
	s.Version, _ = strconv.Atoi(v)
	if s.Host == "" {
		_ = db.QueryRowContext(ctx, "SELECT current_user").Scan(&s.User)
	}
	return nil
}

// DSN returns a key=value connection string for database dbname.
func (s *Server) DSN(dbname string) string {
	return s.base + " dbname=" + quoteConnValue(dbname)
}

// URL returns a postgres:// URL for database dbname (for tools such as pg_recvlogical).
func (s *Server) URL(dbname string) string {
	u := url.URL{Scheme: "postgres", User: url.User(s.User), Host: net.JoinHostPort(s.Host, strconv.Itoa(s.Port)), Path: "/" + dbname}
	u.RawQuery = "sslmode=disable"
	return u.String()
}

// BinPath returns the path of a PostgreSQL program (e.g. "pg_recvlogical").
func (s *Server) BinPath(name string) string {
	if s.binDir == "" {
		if d, err := BinDir(); err == nil {
			return filepath.Join(d, name)
		}
		return name
	}
	return filepath.Join(s.binDir, name)
}

// DataDir returns the cluster's data directory ("" for an external server).
func (s *Server) DataDir() string { return s.dataDir }

// Restart stops and starts the cluster (fast shutdown, or immediate when crash is true,
// which simulates a server crash: slot positions roll back to the last checkpoint).
func (s *Server) Restart(crash bool) error {
	if s.dataDir == "" {
		return errors.New("pgtest: cannot restart an external server")
	}
	mode := "fast"
	if crash {
		mode = "immediate"
	}
	if out, err := s.run("pg_ctl", "-D", s.dataDir, "-m", mode, "-w", "stop"); err != nil {
		return fmt.Errorf("pgtest: stop: %w\n%s", err, out)
	}
	logFile := filepath.Join(s.dir, "server.log")
	if out, err := s.run("pg_ctl", "-D", s.dataDir, "-l", logFile, "-w", "-t", "60", "start"); err != nil {
		log, _ := os.ReadFile(logFile)
		return fmt.Errorf("pgtest: start: %w\n%s\nserver log:\n%s", err, out, log)
	}
	return nil
}

// Stop stops a throwaway cluster and removes its files. It does nothing for an
// external server. It is safe to call more than once.
func (s *Server) Stop() error {
	if s.dataDir == "" || !s.stopped.CompareAndSwap(false, true) {
		return nil
	}
	out, err := s.run("pg_ctl", "-D", s.dataDir, "-m", "immediate", "-w", "stop")
	s.cleanup()
	if s.watchdog != nil {
		s.watchdog.Close() // the watchdog finds nothing left to do
	}
	if err != nil {
		return fmt.Errorf("pgtest: pg_ctl stop: %w\n%s", err, out)
	}
	return nil
}

func (s *Server) cleanup() { os.RemoveAll(s.dir) }

// watch starts the cluster's watchdog: a shell in its own session that waits for the
// end of a pipe whose only writer is this process, then stops the cluster and removes
// its files. A test binary that is killed (a timeout, SIGPIPE from "| head", Ctrl-C)
// closes the pipe by dying, so its cluster does not outlive it; after Stop the
// watchdog finds nothing left to do.
func (s *Server) watch() error {
	r, w, err := os.Pipe() // close-on-exec: no other child holds the write end
	if err != nil {
		return err
	}
	defer r.Close()
	const script = `cat >/dev/null; "$0" -D "$1" -m immediate -w stop >/dev/null 2>&1; rm -rf "$2"`
	cmd := exec.Command("/bin/sh", "-c", script, filepath.Join(s.binDir, "pg_ctl"), s.dataDir, s.dir)
	cmd.Stdin = r
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Credential: s.cred}
	if err := cmd.Start(); err != nil {
		w.Close()
		return fmt.Errorf("pgtest: start the cluster's watchdog: %w", err)
	}
	go cmd.Wait() // reaps it once the pipe closes
	s.watchdog = w
	return nil
}

func (s *Server) run(prog string, args ...string) ([]byte, error) {
	cmd := exec.Command(filepath.Join(s.binDir, prog), args...)
	cmd.Dir = s.dir
	cmd.Env = append(append(os.Environ(), "LC_ALL=C"), s.env...)
	if s.cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: s.cred}
	}
	return cmd.CombinedOutput()
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

var (
	sharedMu  sync.Mutex
	shared    *Server
	sharedErr error
)

// Shared returns the process-wide server for tests: DBSYNC_TEST_DSN if set, otherwise
// a throwaway cluster started on first use. Call StopShared (Main does) when done.
// A missing PostgreSQL fails the test with InstallHint; it never skips.
func Shared(t testing.TB) *Server {
	t.Helper()
	s, err := sharedServer()
	if err != nil {
		t.Fatalf("pgtest: no PostgreSQL server for tests: %v", err)
	}
	return s
}

// sharedServer returns the process-wide server, starting it on first use.
func sharedServer() (*Server, error) {
	sharedMu.Lock()
	defer sharedMu.Unlock()
	if shared == nil && sharedErr == nil {
		if dsn := os.Getenv(EnvDSN); dsn != "" {
			shared, sharedErr = External(dsn)
		} else {
			shared, sharedErr = Start(Options{})
		}
	}
	return shared, sharedErr
}

// StopShared stops the shared throwaway cluster, if one was started.
func StopShared() {
	sharedMu.Lock()
	defer sharedMu.Unlock()
	if shared != nil {
		shared.Stop()
		shared = nil
	}
}

// Main runs a test binary's tests and stops the shared cluster afterwards. Use it as
//
//	func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }
func Main(m *testing.M) int {
	code := m.Run()
	StopShared()
	return code
}

// EnvExampleDSN names the environment variable MainWithExamples sets for a test
// binary's examples: the key=value connection string of a fresh database.
const EnvExampleDSN = "DBSYNC_EXAMPLE_DSN"

// MainWithExamples is Main for a package with runnable examples that need a server:
// when the run selects any of the binary's examples, it creates a fresh database on
// the shared server before the tests, sets EnvExampleDSN to it, and drops it
// afterwards. Examples take no *testing.T, so they cannot ask for a database
// themselves. A missing PostgreSQL ends the binary with InstallHint, as a test would
// fail.
func MainWithExamples(m *testing.M) int {
	flag.Parse()
	if list := flag.Lookup("test.list"); list != nil && list.Value.String() != "" {
		return Main(m)
	}
	pattern := ""
	if run := flag.Lookup("test.run"); run != nil {
		pattern = run.Value.String()
	}
	if !selectsExamples(pattern, exampleNames(m)) {
		return Main(m)
	}
	dsn, drop, err := exampleDatabase()
	if err != nil {
		fmt.Fprintf(os.Stderr, "pgtest: no database for the examples: %v\n", err)
		StopShared()
		return 1
	}
	os.Setenv(EnvExampleDSN, dsn)
	code := m.Run()
	drop()
	StopShared()
	return code
}

// exampleNames returns the names of m's examples, read from the unexported field
// testing.M keeps them in; nil if that field is not there (then every run is taken
// to select examples).
func exampleNames(m *testing.M) []string {
	f := reflect.ValueOf(m).Elem().FieldByName("examples")
	if !f.IsValid() || f.Kind() != reflect.Slice {
		return nil
	}
	names := make([]string, 0, f.Len())
	for i := 0; i < f.Len(); i++ {
		if n := f.Index(i).FieldByName("Name"); n.IsValid() && n.Kind() == reflect.String {
			names = append(names, n.String())
		}
	}
	return names
}

// selectsExamples tells whether a -test.run pattern ("" runs everything) selects one
// of the examples named; with no names known, or a pattern it cannot judge (subtest
// parts, or not a regular expression: the test binary reports that), it says yes.
func selectsExamples(pattern string, names []string) bool {
	if pattern == "" || names == nil || strings.Contains(pattern, "/") {
		return true
	}
	re, err := regexp.Compile(pattern)
	if err != nil {
		return true
	}
	for _, n := range names {
		if re.MatchString(n) {
			return true
		}
	}
	return false
}

// exampleDatabase creates a fresh database on the shared server for the examples.
func exampleDatabase() (dsn string, drop func(), err error) {
	s, err := sharedServer()
	if err != nil {
		return "", nil, err
	}
	name, err := s.create("examples", "")
	if err != nil {
		return "", nil, err
	}
	return s.DSN(name), func() {
		if err := s.drop(name); err != nil {
			fmt.Fprintf(os.Stderr, "pgtest: cleanup: %v\n", err)
		}
	}, nil
}

// Database is one fresh database on a Server, owned by one test.
type Database struct {
	Server *Server
	// Name is the database name, derived from the test name.
	Name string
	// DB is a superuser connection pool to it, closed at cleanup.
	DB *sql.DB
}

// DSN returns the key=value connection string of the database.
func (d *Database) DSN() string { return d.Server.DSN(d.Name) }

// NewDatabase creates a fresh database on the shared server named after t.Name(), and
// drops it (with every replication slot in it) when the test ends.
func NewDatabase(t testing.TB) *Database {
	t.Helper()
	return Shared(t).NewDatabase(t)
}

// NewDatabase creates a fresh database on s named after t.Name(); see the package function.
func (s *Server) NewDatabase(t testing.TB) *Database {
	t.Helper()
	return s.newDatabase(t, "")
}

// NewDatabaseWithEncoding is NewDatabase with the given server encoding (e.g.
// "SQL_ASCII", "LATIN1"), copied from template0 with the C locale, which every
// encoding accepts.
func (s *Server) NewDatabaseWithEncoding(t testing.TB, encoding string) *Database {
	t.Helper()
	return s.newDatabase(t, " ENCODING "+pq.QuoteLiteral(encoding)+" TEMPLATE template0 LC_COLLATE 'C' LC_CTYPE 'C'")
}

func (s *Server) newDatabase(t testing.TB, options string) *Database {
	t.Helper()
	name, err := s.create(Ident(t, ""), options)
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	db, err := sql.Open("postgres", s.DSN(name))
	if err != nil {
		t.Fatal(err)
	}
	d := &Database{Server: s, Name: name, DB: db}
	t.Cleanup(func() { s.dropDatabase(t, d) })
	return d
}

// create creates a database named prefix plus this process's and the server's
// sequence numbers (so concurrent test binaries never collide), with CREATE DATABASE
// options, and returns its name.
func (s *Server) create(prefix, options string) (string, error) {
	name := fmt.Sprintf("%s_%d_%d", prefix, os.Getpid()%10000, s.dbSeq.Add(1))
	admin, err := sql.Open("postgres", s.DSN("postgres"))
	if err != nil {
		return "", err
	}
	defer admin.Close()
	if _, err := admin.Exec("CREATE DATABASE " + pq.QuoteIdentifier(name) + options); err != nil {
		return "", fmt.Errorf("create database %s: %w", name, err)
	}
	return name, nil
}

func (s *Server) dropDatabase(t testing.TB, d *Database) {
	d.DB.Close()
	if err := s.drop(d.Name); err != nil {
		t.Errorf("pgtest: cleanup: %v", err)
	}
}

// drop drops database name with every replication slot in it.
func (s *Server) drop(name string) error {
	if s.stopped.Load() {
		return nil
	}
	admin, err := sql.Open("postgres", s.DSN("postgres"))
	if err != nil {
		return err
	}
	defer admin.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	// Terminate sessions first: an active slot cannot be dropped.
	_, _ = admin.ExecContext(ctx, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()`, name)
	for i := 0; i < 50; i++ {
		_, err = admin.ExecContext(ctx, `SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE database = $1`, name)
		if err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		return fmt.Errorf("drop slots of %s: %w", name, err)
	}
	if _, err := admin.ExecContext(ctx, "DROP DATABASE IF EXISTS "+pq.QuoteIdentifier(name)+" WITH (FORCE)"); err != nil {
		return fmt.Errorf("drop database %s: %w", name, err)
	}
	return nil
}

var nonIdent = regexp.MustCompile(`[^a-z0-9_]+`)

// Ident derives a lower-case identifier from t.Name() plus suffix, at most 50 bytes,
// for slot, publication and database names (slot names allow only [a-z0-9_]).
func Ident(t testing.TB, suffix string) string {
	n := nonIdent.ReplaceAllString(strings.ToLower(t.Name()), "_")
	n = strings.Trim(n, "_")
	if len(n) > 40 {
		n = n[len(n)-40:]
	}
	if suffix != "" {
		n += "_" + suffix
	}
	if n == "" || (n[0] >= '0' && n[0] <= '9') {
		n = "t_" + n
	}
	return n
}

func quoteConnValue(v string) string {
	if v != "" && !strings.ContainsAny(v, ` '\`) {
		return v
	}
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(v) + "'"
}

// stripDBName removes dbname from a DSN so other databases can be addressed.
func stripDBName(dsn string) (string, error) {
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		kv, err := pq.ParseURL(dsn)
		if err != nil {
			return "", fmt.Errorf("pgtest: %s is not a valid URL: %w", EnvDSN, err)
		}
		dsn = kv
	}
	var parts []string
	for _, f := range splitConn(dsn) {
		if !strings.HasPrefix(f, "dbname=") {
			parts = append(parts, f)
		}
	}
	return strings.Join(parts, " "), nil
}

// splitConn splits a key=value connection string on unquoted spaces.
func splitConn(s string) []string {
	var out []string
	var cur strings.Builder
	inQuote := false
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '\\' && i+1 < len(s):
			cur.WriteByte(c)
			i++
			cur.WriteByte(s[i])
		case c == '\'':
			inQuote = !inQuote
			cur.WriteByte(c)
		case c == ' ' && !inQuote:
			if cur.Len() > 0 {
				out = append(out, cur.String())
				cur.Reset()
			}
		default:
			cur.WriteByte(c)
		}
	}
	if cur.Len() > 0 {
		out = append(out, cur.String())
	}
	return out
}

var (
	kvPasswordRE  = regexp.MustCompile(`password=('[^']*'|\S+)`)
	urlPasswordRE = regexp.MustCompile(`(://[^:/@]+:)[^@]*@`)
)

func redact(dsn string) string {
	return urlPasswordRE.ReplaceAllString(kvPasswordRE.ReplaceAllString(dsn, "password=***"), "$1***@")
}

// Strings runs q on db and returns its single text column, row by row; any error
// fails tb.
func Strings(tb testing.TB, db *sql.DB, q string, args ...any) []string {
	tb.Helper()
	rows, err := db.Query(q, args...)
	if err != nil {
		tb.Fatalf("%s: %v", q, err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var v string
		if err := rows.Scan(&v); err != nil {
			tb.Fatalf("%s: %v", q, err)
		}
		out = append(out, v)
	}
	if err := rows.Err(); err != nil {
		tb.Fatalf("%s: %v", q, err)
	}
	return out
}
