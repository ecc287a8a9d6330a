package dbsync

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dbsync/dbsync/internal/pgtest"
	"github.com/lib/pq"
	"github.com/stretchr/testify/require"
)

// TestEmptyConnStrIsConfigError: WithPGConnStr("") (say, from an unset variable of
// the caller's) is ErrConfig naming the option, not a silent switch to POSTGRES_* or
// the postgres@localhost default, which would set up a slot in another database.
func TestEmptyConnStrIsConfigError(t *testing.T) {
	s, err := NewSyncer(WithPGConnStr(""), WithSetup(false), env(map[string]string{"POSTGRES_HOST": "envhost"}))
	if s != nil {
		t.Cleanup(func() { s.Close() })
		t.Fatalf("NewSyncer accepted an empty connection string and uses %q", RedactConnString(s.connStr))
	}
	require.ErrorIs(t, err, ErrConfig)
	require.Equal(t, `dbsync: invalid configuration: WithPGConnStr(""): give a connection string, or leave the option out to use $POSTGRES_* (host, port, user, database, password, sslmode)`, err.Error())
}

// TestConnStrEmptyValueNeverShowsPassword: in a key=value string a key with an empty
// value followed by a space ("port= password=...", a template given an empty port)
// takes the next word as its value, so lib/pq's "wrong value" message quoted
// "password=<the password>". NewSyncer's ErrConfig names the key and says what to do,
// without the password.
func TestConnStrEmptyValueNeverShowsPassword(t *testing.T) {
	for dsn, key := range map[string]string{
		"host=127.0.0.1 port= password=TOPSECRET dbname=x":            `"port"`,
		"host=127.0.0.1 connect_timeout= password=TOPSECRET dbname=x": `"connect_timeout"`,
		"host=127.0.0.1 sslmode= password=TOPSECRET dbname=x":         `"sslmode"`,
		"host=127.0.0.1 hostaddr= password=TOPSECRET dbname=x":        `"hostaddr"`,
		"host=127.0.0.1 client_encoding= password=TOPSECRET dbname=x": `client_encoding`,
		"host=127.0.0.1 sslmode= sslpassword=TOPSECRET dbname=x":      `"sslmode"`,
	} {
		_, err := NewSyncer(WithPGConnStr(dsn), WithSetup(false), env(nil))
		require.ErrorIs(t, err, ErrConfig, dsn)
		for _, piece := range []string{"TOP", "SECRET"} {
			require.NotContains(t, err.Error(), piece, dsn)
		}
		require.Contains(t, err.Error(), "WithPGConnStr", dsn)
		require.Contains(t, err.Error(), key, dsn)
		require.Contains(t, err.Error(), "give the key a value or leave it out", dsn)
	}
}

// TestRedactConnStringBackslashEscapes: libpq (and lib/pq) let a backslash escape a
// space in an unquoted value, so "password=my\ secret" is the password "my secret";
// RedactConnString left " secret" in place. An unterminated quote (which lib/pq
// refuses) is redacted to the end rather than up to its first space.
func TestRedactConnStringBackslashEscapes(t *testing.T) {
	for in, want := range map[string]string{
		`host=x password=my\ TOP\ SECRET user=u`: "host=x password=*** user=u",
		`host=x password=TOP\\ user=u`:           "host=x password=*** user=u",
		`host=x password='TOP SECRET`:            "host=x password=***",
		"host=x password='TOP\\\nSECRET' user=u": "host=x password=*** user=u",
		"host=x sslpassword=TOP\\ SECRET user=u": "host=x sslpassword=*** user=u",
	} {
		require.Equal(t, want, RedactConnString(in), in)
	}
	// The escaped form is what lib/pq reads as a password with a space.
	cfg, err := pq.NewConfig(`host=x password=my\ TOP\ SECRET user=u`)
	require.NoError(t, err)
	require.Equal(t, "my TOP SECRET", cfg.Password)
}

// TestMessageHandlerAndEventsProcessorIsConfigError: with both set, the
// EventsProcessor got every poll and the MessageHandler nothing, while the slot moved
// past the changes it never saw; Run refuses the pair at once, as it does an
// EventsProcessor with a Batcher.
func TestMessageHandlerAndEventsProcessorIsConfigError(t *testing.T) {
	d := pgtest.NewDatabase(t)
	execAll(t, d.DB, `CREATE TABLE both_t (id int PRIMARY KEY)`)
	rec := &recorder{}
	var polls atomic.Int64
	s := newTestSyncer(t, d, ForTables("both_t"), WithMessageHandler(rec),
		WithEventsProcessor(func(msgs []PGMSG, err error) (int, bool) { polls.Add(1); return len(msgs), false }))
	execAll(t, d.DB, `INSERT INTO both_t VALUES (1)`)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	err := s.Run(ctx)
	require.ErrorIs(t, err, ErrConfig)
	require.Contains(t, err.Error(), "MessageHandler")
	require.NoError(t, ctx.Err(), "Run must refuse at once, not when its context ends")
	require.Empty(t, rec.snapshot())
	require.Zero(t, polls.Load())
}

// TestRedactMalformedURL: a URL whose password holds a raw '/', '?' or '#' (not
// percent-encoded: lib/pq refuses it) was returned unredacted, as no authority ends
// at its '@'; it is redacted up to its last '@'.
func TestRedactMalformedURL(t *testing.T) {
	for in, want := range map[string]string{
		"postgres://u:TOP/SECRET@h:1/x":        "postgres://u:***@h:1/x",
		"postgresql://u:TOP?SECRET@h/x?a=b":    "postgresql://u:***@h/x?a=b",
		"postgres://u:TOP#SECRET@h/x":          "postgres://u:***@h/x",
		"postgres://u:TOP/SEC@RET@h/x":         "postgres://u:***@h/x",
		"postgres://u:p%40ss@h/db?a=b@c":       "postgres://u:***@h/db?a=b@c", // valid: unchanged behaviour
		"postgres://h:5432/db?application=a@b": "postgres://h:5432/db?application=a@b",
	} {
		require.Equal(t, want, RedactConnString(in), in)
	}
	_, err := NewSyncer(WithPGConnStr("postgres://u:TOP/SECRET@h:1/x"), WithSetup(false), env(nil))
	require.ErrorIs(t, err, ErrConfig, "lib/pq refuses it")
}

// TestConnStringFromEnvQuotesUnicodeSpace: lib/pq splits an unquoted key=value value
// at any Unicode space (unicode.IsSpace), so a POSTGRES_* value holding one (a
// no-break space from a copied password, say) must be quoted too: unquoted, NewSyncer
// failed with advice to quote a string the user never wrote, and "pw\u00a0sslmode=
// disable" set sslmode. Each value reaches lib/pq exactly as given.
func TestConnStringFromEnvQuotesUnicodeSpace(t *testing.T) {
	for _, v := range []string{"a\u00a0b", "a\u2003b", "a\u0085b", "a\u3000b", "TOP\u00a0sslmode=disable"} {
		m := map[string]string{"POSTGRES_HOST": "h", "POSTGRES_USER": v, "POSTGRES_DB": v, "POSTGRES_PASSWORD": v, "POSTGRES_SSLMODE": "require"}
		cs := ConnStringFromEnv(func(k string) (string, bool) { x, ok := m[k]; return x, ok })
		cfg, err := pq.NewConfig(cs)
		require.NoError(t, err, "%q", cs)
		require.Equal(t, v, cfg.Password, "%q", cs)
		require.Equal(t, v, cfg.User, "%q", cs)
		require.Equal(t, v, cfg.Database, "%q", cs)
		require.Equal(t, pq.SSLModeRequire, cfg.SSLMode, "%q", cs)
		require.Equal(t, "host=h port=5432 user=*** dbname=*** sslmode=require password=***",
			strings.NewReplacer(quoteConnValue(v), "***").Replace(RedactConnString(cs)))
		s, err := NewSyncer(WithSetup(false), withLookupEnv(func(k string) (string, bool) { x, ok := m[k]; return x, ok }))
		require.NoError(t, err, "%q", cs)
		s.Close()
	}
}

// TestForTablesAccumulates: ForTables given twice (base options plus a caller's
// extra tables, say) publishes the tables of both, as WithReplicaIdentityFull given
// twice sets both; the second used to replace the first, whose table then never
// reached the publication and whose changes were never delivered.
func TestForTablesAccumulates(t *testing.T) {
	d := pgtest.NewDatabase(t)
	execAll(t, d.DB, `CREATE TABLE acc_a (id int PRIMARY KEY)`, `CREATE TABLE acc_b (id int PRIMARY KEY)`)
	s := newTestSyncer(t, d, ForTables("acc_a"), ForTables("acc_b"))
	rows, err := d.DB.Query(`SELECT tablename FROM pg_publication_tables WHERE pubname = $1 AND schemaname = 'public' ORDER BY 1`, s.Publication())
	require.NoError(t, err)
	defer rows.Close()
	var got []string
	for rows.Next() {
		var n string
		require.NoError(t, rows.Scan(&n))
		got = append(got, n)
	}
	require.NoError(t, rows.Err())
	require.Equal(t, []string{"acc_a", "acc_b"}, got)
}
