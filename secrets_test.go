package dbsync

import (
	"bytes"
	"context"
	"database/sql"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dbsync/dbsync/internal/pgtest"
	"github.com/lib/pq"
	"github.com/stretchr/testify/require"
)

// logCapture is a slog handler keeping every record, at every level, with its
// attributes rendered as text (groups and With attributes included).
type logCapture struct {
	mu    *sync.Mutex
	buf   *bytes.Buffer
	inner slog.Handler
}

func newLogCapture() (*slog.Logger, *logCapture) {
	c := &logCapture{mu: &sync.Mutex{}, buf: &bytes.Buffer{}}
	c.inner = slog.NewTextHandler(c.buf, &slog.HandlerOptions{Level: slog.LevelDebug})
	return slog.New(c), c
}

func (c *logCapture) Enabled(context.Context, slog.Level) bool { return true }
func (c *logCapture) Handle(ctx context.Context, r slog.Record) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.inner.Handle(ctx, r)
}
func (c *logCapture) WithAttrs(as []slog.Attr) slog.Handler {
	return &logCapture{mu: c.mu, buf: c.buf, inner: c.inner.WithAttrs(as)}
}
func (c *logCapture) WithGroup(g string) slog.Handler {
	return &logCapture{mu: c.mu, buf: c.buf, inner: c.inner.WithGroup(g)}
}
func (c *logCapture) String() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.buf.String()
}

// TestMalformedConnStrNeverShowsPassword: a connection string lib/pq cannot parse is
// ErrConfig from NewSyncer, with or without setup, saying how to write it, and
// neither the error nor any log record holds a piece of the password. lib/pq's own
// parse errors quote the string (net/url quotes a whole URL, password included) or
// the word after a password with an unquoted space, and they reached the caller
// through setup's "check server settings: ..." and, without setup, Run's retry log.
func TestMalformedConnStrNeverShowsPassword(t *testing.T) {
	for _, dsn := range []string{
		"host=127.0.0.1 port=1 user=u password=ab TOPSECRET dbname=x",
		"host=127.0.0.1 port=1 user=u password='TOPSECRET dbname=x",
		"host=127.0.0.1 port=1 user=u password=TOPSECRET dbname=x sslmode=bogus",
		"postgres://u:TOP%zzSECRET@127.0.0.1:1/x",
		"postgres://u:TOPSECRET@127.0.0.1:abc/x",
		"postgres://u:TOP/SECRET@127.0.0.1:1/x",
		"postgres://u:TOP SECRET@127.0.0.1:1/x",
		"postgresql://u:TOPSECRET@127.0.0.1:1/x?sslmode=bogus",
	} {
		for _, setup := range []bool{true, false} {
			l, logs := newLogCapture()
			s, err := NewSyncer(WithPGConnStr(dsn), WithSetup(setup), WithLogger(l), env(nil),
				WithMessageHandler(DefaultMessageHandler{}), WithPollBackoff(time.Millisecond, 1, time.Millisecond))
			if err == nil {
				// Without setup nothing connects before Run: its retry loop logs
				// each failed poll.
				ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
				_ = s.Run(ctx)
				cancel()
				s.Close()
			}
			for _, text := range []string{errText(err), logs.String()} {
				for _, piece := range []string{"TOP", "SECRET"} {
					require.NotContains(t, text, piece, "dsn %q, setup %v", dsn, setup)
				}
			}
			require.ErrorIs(t, err, ErrConfig, "dsn %q, setup %v", dsn, setup)
			require.Contains(t, err.Error(), "WithPGConnStr")
			switch {
			case strings.Contains(dsn, "bogus"):
				require.Contains(t, err.Error(), `wrong value for "sslmode": "bogus"`)
			case strings.Contains(dsn, "://"):
				require.Contains(t, err.Error(), "percent-encode")
			default:
				require.Contains(t, err.Error(), "in single quotes")
			}
		}
	}
}

// TestMalformedServiceFileNeverShowsPassword: lib/pq quotes a malformed line of the
// pg_service.conf that service= names; a password line missing its '=' stays out of
// NewSyncer's error.
func TestMalformedServiceFileNeverShowsPassword(t *testing.T) {
	file := filepath.Join(t.TempDir(), "pg_service.conf")
	require.NoError(t, os.WriteFile(file, []byte("[mysvc]\nhost=127.0.0.1\npassword TOPSECRET\n"), 0o600))
	t.Setenv("PGSERVICEFILE", file)
	_, err := NewSyncer(WithPGConnStr("service=mysvc"), WithSetup(false), env(nil))
	require.ErrorIs(t, err, ErrConfig)
	require.NotContains(t, err.Error(), "SECRET")
}

func errText(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// TestPasswordNeverLogged: on a server that checks passwords (scram-sha-256), a
// Syncer given its password as a quoted key=value, a percent-encoded URL,
// POSTGRES_PASSWORD, PGPASSWORD or a .pgpass entry (PGPASSFILE) sets up, delivers,
// survives its sessions being ended and the server restarting (the retry loop), and
// closes, and no log record at any level nor any error holds the password; a wrong
// password fails setup without showing it either.
func TestPasswordNeverLogged(t *testing.T) {
	srv, err := pgtest.Start(pgtest.Options{})
	require.NoError(t, err)
	defer srv.Stop()
	if srv.DataDir() == "" {
		t.Skip("needs a throwaway cluster to change pg_hba.conf")
	}
	const password = `p@ss:w/rd %TOPSECRET'x`
	admin, err := sql.Open("postgres", srv.DSN("postgres"))
	require.NoError(t, err)
	defer admin.Close()
	execAll(t, admin, `CREATE ROLE pwuser LOGIN SUPERUSER PASSWORD `+pq.QuoteLiteral(password), `CREATE TABLE t (id int PRIMARY KEY)`)
	hba := "local all all trust\nhost all " + srv.User + " 127.0.0.1/32 trust\nhost all all 127.0.0.1/32 scram-sha-256\n"
	require.NoError(t, os.WriteFile(filepath.Join(srv.DataDir(), "pg_hba.conf"), []byte(hba), 0o644))
	execAll(t, admin, `SELECT pg_reload_conf()`)
	port := strconv.Itoa(srv.Port)
	noPassword := "host=127.0.0.1 port=" + port + " user=pwuser dbname=postgres sslmode=disable"
	_, err = NewSyncer(WithPGConnStr(noPassword), env(nil))
	require.Error(t, err, "the server must ask for a password, or this test shows nothing")

	pgpass := filepath.Join(t.TempDir(), "pgpass")
	require.NoError(t, os.WriteFile(pgpass, []byte("127.0.0.1:"+port+":*:pwuser:"+strings.ReplaceAll(password, ":", `\:`)+"\n"), 0o600))
	u := url.URL{Scheme: "postgres", User: url.UserPassword("pwuser", password), Host: "127.0.0.1:" + port, Path: "/postgres", RawQuery: "sslmode=disable"}
	cases := []struct {
		name    string
		opts    []SyncerOpt
		environ map[string]string // the process environment, read by lib/pq
		restart bool
	}{
		{name: "key=value", opts: []SyncerOpt{WithPGConnStr(noPassword + " password=" + quoteConnValue(password)), env(nil)}, restart: true},
		{name: "URL", opts: []SyncerOpt{WithPGConnStr(u.String()), env(nil)}},
		{name: "POSTGRES_PASSWORD", opts: []SyncerOpt{env(map[string]string{"POSTGRES_HOST": "127.0.0.1", "POSTGRES_PORT": port,
			"POSTGRES_USER": "pwuser", "POSTGRES_SSLMODE": "disable", "POSTGRES_PASSWORD": password})}},
		{name: "PGPASSWORD", opts: []SyncerOpt{WithPGConnStr(noPassword), env(nil)}, environ: map[string]string{"PGPASSWORD": password}},
		{name: "pgpass", opts: []SyncerOpt{WithPGConnStr(noPassword), env(nil)}, environ: map[string]string{"PGPASSFILE": pgpass}},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			for k, v := range c.environ {
				t.Setenv(k, v)
			}
			l, logs := newLogCapture()
			rec := &recorder{}
			slot := fmt.Sprintf("pwslot%d", i)
			s, err := NewSyncer(append(c.opts, WithLogger(l), WithReplicationSlot(slot), WithPublication(fmt.Sprintf("pwpub%d", i)),
				ForTables("t"), WithMessageHandler(rec), WithPollBackoff(5*time.Millisecond, 2, 50*time.Millisecond))...)
			require.NoError(t, err)
			r := runInBackground(s)
			execAll(t, admin, fmt.Sprintf(`INSERT INTO t VALUES (%d)`, 2*i))
			waitLines(t, rec, 3)
			// Connection failures: the Syncer's sessions ended, or the server gone
			// for a moment.
			execAll(t, admin, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = 'pwuser'`)
			if c.restart {
				require.NoError(t, srv.Restart(false))
			}
			execAll(t, admin, fmt.Sprintf(`INSERT INTO t VALUES (%d)`, 2*i+1))
			waitLines(t, rec, 6)
			require.NoError(t, r.stop(t))
			require.NoError(t, s.Close())
			_, err = NewSyncer(append(c.opts, WithLogger(l), WithReplicationSlot(slot), WithPublication(fmt.Sprintf("pwpub%d", i)),
				WithPGConnStr("host=127.0.0.1 port="+port+" user=pwuser dbname=postgres sslmode=disable password='wrong TOPSECRET'"))...)
			require.Error(t, err)
			require.NotContains(t, err.Error(), "TOPSECRET")
			out := logs.String()
			require.Contains(t, out, "level=INFO msg=\"dbsync: created replication slot\"", "the capture sees setup")
			if c.restart {
				require.Contains(t, out, "poll failed; retrying", "the capture sees the retry loop")
			}
			require.NotContains(t, out, "TOPSECRET")
			require.NotContains(t, out, "%25TOPSECRET")
		})
	}
}
