package dbsync

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

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
