package dbsync

import (
	"context"
	"fmt"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/dbsync/dbsync/internal/pgtest"
	"github.com/lib/pq"
	"github.com/stretchr/testify/require"
)

// nameSettings are the four names dbsync creates objects under, with their option and
// environment variable.
var nameSettings = []struct {
	option string
	env    string
	opt    func(string) SyncerOpt
	get    func(*Syncer) string
}{
	{"WithReplicationSlot", EnvReplSlot, WithReplicationSlot, (*Syncer).ReplicationSlot},
	{"WithPublication", EnvPublication, WithPublication, (*Syncer).Publication},
	{"WithCtrlNamespace", EnvCtrlNamespace, WithCtrlNamespace, (*Syncer).CtrlNamespace},
	{"WithWMTable", EnvWMTable, WithWMTable, (*Syncer).WMTable},
}

// TestConfigNameTooLong: a name over 63 bytes (PostgreSQL would cut it to 63 and
// could take it for another name), from the option or the environment, is ErrConfig
// naming the option and the variable and saying to shorten it; 63 bytes of multi-byte
// characters (31 runes and one byte) are kept whole.
func TestConfigNameTooLong(t *testing.T) {
	for _, n := range nameSettings {
		long := strings.Repeat("é", 32) // 64 bytes, 32 characters
		if n.option == "WithReplicationSlot" {
			long = strings.Repeat("s", 64)
		}
		for _, via := range []SyncerOpt{n.opt(long), env(map[string]string{n.env: long})} {
			_, err := NewSyncer(via, WithSetup(false), WithPGConnStr("host=h"))
			require.ErrorIs(t, err, ErrConfig, n.option)
			for _, want := range []string{n.option, n.env, "at most 63 bytes", "64 bytes"} {
				require.Contains(t, err.Error(), want, n.option)
			}
		}
		fits := strings.Repeat("É", 31) + "x"
		if n.option == "WithReplicationSlot" {
			fits = strings.Repeat("s", 63)
		}
		s := resolved(t, n.opt(fits), env(nil), WithPGConnStr("host=h"))
		require.Equal(t, fits, n.get(s))
	}
}

// TestConfigNameEmptyOrInvalid: an option given an empty name is ErrConfig naming it,
// rather than quietly falling back to the environment or the default (a blank setting
// of the caller's would then share another program's slot); a name holding a NUL byte
// or invalid UTF-8 is ErrConfig too. PostgreSQL cannot store either: as a parameter
// the server refuses it as an encoding error (ErrEncoding, advising about SQL_ASCII
// databases), and pq.QuoteIdentifier cuts a name at its NUL, so the DDL of
// setup and teardown acted on another object ("a\x00b" created schema "a").
func TestConfigNameEmptyOrInvalid(t *testing.T) {
	for _, n := range nameSettings {
		_, err := NewSyncer(n.opt(""), env(map[string]string{n.env: "fromenv"}), WithSetup(false), WithPGConnStr("host=h"))
		require.ErrorIs(t, err, ErrConfig, n.option)
		require.Contains(t, err.Error(), n.option+`("")`)
		require.Contains(t, err.Error(), "leave the option out")
		for _, bad := range []string{"a\x00b", "a\xffb"} {
			_, err := NewSyncer(n.opt(bad), env(nil), WithSetup(false), WithPGConnStr("host=h"))
			require.ErrorIs(t, err, ErrConfig, "%s(%q)", n.option, bad)
			require.NotErrorIs(t, err, ErrEncoding)
			require.Contains(t, err.Error(), n.option, "%s(%q)", n.option, bad)
		}
	}
}

// pad63 pads name with rune r to exactly 63 bytes (r of one or two bytes).
func pad63(t *testing.T, name string, r string) string {
	for len(name)+len(r) <= maxIdentifierBytes {
		name += r
	}
	for len(name) < maxIdentifierBytes {
		name += "x"
	}
	require.Len(t, name, maxIdentifierBytes)
	return name
}

// TestLongUnicodeNamesEndToEnd: a slot, publication, control namespace and watermark
// table named with exactly 63 bytes (upper case, spaces, quotes and two-byte
// characters in the three SQL names) are created under exactly those names, deliver
// changes, split polls (whose temporary copy's name is cut to fit), a Snapshot's
// watermarks and a Refresh, and are removed by Teardown.
func TestLongUnicodeNamesEndToEnd(t *testing.T) {
	d := pgtest.NewDatabase(t)
	execAll(t, d.DB, `CREATE TABLE "Größe ""T""" (id int PRIMARY KEY, v text)`, `INSERT INTO "Größe ""T""" VALUES (1, 'a'), (2, 'b')`)
	slot := pad63(t, pgtest.Ident(t, "s"), "_")
	pub := pad63(t, `Pub "Ä" ;`, "é")
	ns := pad63(t, `Ctrl NS ü`, "Ö")
	wm := pad63(t, `WM 'x" `, "ß")
	rec := &recorder{}
	s := newTestSyncer(t, d, WithReplicationSlot(slot), WithPublication(pub), WithCtrlNamespace(ns), WithWMTable(wm),
		ForTables(`"Größe ""T"""`), WithMessageHandler(rec))
	s.splitMinWAL = 1
	require.Equal(t, []string{slot}, queryStrings(t, d.DB, `SELECT slot_name::text FROM pg_replication_slots WHERE slot_name = $1`, slot))
	require.Equal(t, []string{pub}, queryStrings(t, d.DB, `SELECT pubname::text FROM pg_publication`))
	require.Equal(t, []string{ns + "." + wm, "public." + `Größe "T"`},
		queryStrings(t, d.DB, `SELECT schemaname || '.' || tablename FROM pg_publication_tables WHERE pubname = $1 ORDER BY 1`, pub))

	// A backlog, so that polls are split.
	for i := 3; i <= 6; i++ {
		execAll(t, d.DB, fmt.Sprintf(`INSERT INTO "Größe ""T""" VALUES (%d, 'x')`, i))
	}
	r := runInBackground(s)
	waitLines(t, rec, 12)
	require.NotZero(t, s.splitPeeks.Load(), "polls must have been split")
	require.NoError(t, s.Snapshot(context.Background(), `"Größe ""T"""`))
	require.NoError(t, s.Refresh(`SELECT * FROM "Größe ""T""" WHERE id = 1`))
	waitCaughtUp(t, d.DB, slot)
	require.NoError(t, r.stop(t))
	lines := rec.snapshot()
	require.Contains(t, lines, `INSERT public.Größe "T" id=6,v=x`)
	var n int
	require.NoError(t, d.DB.QueryRow(`SELECT count(*) FROM `+pq.QuoteIdentifier(ns)+`.snapshot_progress WHERE slot_name = $1`, slot).Scan(&n))
	require.Equal(t, 1, n, "the Snapshot's progress under the 63-byte control schema")

	require.NoError(t, s.Teardown(context.Background()))
	require.Empty(t, queryStrings(t, d.DB, `SELECT slot_name::text FROM pg_replication_slots WHERE slot_name LIKE $1`, slot[:20]+"%"))
	require.Empty(t, queryStrings(t, d.DB, `SELECT nspname::text FROM pg_namespace WHERE nspname = $1`, ns))
}

// TestConfigInvalidFactorAndPolicy: a NaN or infinite backoff factor (NaN passed the
// factor >= 1 check by failing factor < 1, and made every idle wait after the first a
// negative duration: empty polls back to back) and a HandlerErrorPolicy that is
// neither StopOnHandlerError nor RetryOnHandlerError (it quietly stopped) are ErrConfig
// saying what is allowed.
func TestConfigInvalidFactorAndPolicy(t *testing.T) {
	for _, f := range []float64{math.NaN(), math.Inf(1)} {
		_, err := NewSyncer(WithPollBackoff(time.Millisecond, f, time.Second), WithSetup(false), env(nil))
		require.ErrorIs(t, err, ErrConfig, "factor %v", f)
		require.Contains(t, err.Error(), "finite", "factor %v", f)
	}
	for _, p := range []HandlerErrorPolicy{-1, 2, 7} {
		_, err := NewSyncer(WithHandlerErrorPolicy(p), WithSetup(false), env(nil))
		require.ErrorIs(t, err, ErrConfig, "policy %d", p)
		require.Contains(t, err.Error(), "StopOnHandlerError or RetryOnHandlerError")
	}
	for _, p := range []HandlerErrorPolicy{StopOnHandlerError, RetryOnHandlerError} {
		require.Equal(t, p, resolved(t, WithHandlerErrorPolicy(p), env(nil)).HandlerErrorPolicy)
	}
}

// TestTableNameOver63Bytes: a table named in ForTables, WithReplicaIdentityFull or
// Snapshot with a part over 63 bytes is ErrConfig saying so, in every form (bare,
// schema.table, quoted), instead of being taken, through PostgreSQL's cut at 63 bytes,
// for the table whose name is its first 63 bytes.
func TestTableNameOver63Bytes(t *testing.T) {
	d := pgtest.NewDatabase(t)
	short := strings.Repeat("ä", 31) + "a" // 63 bytes
	long := short + "b"
	execAll(t, d.DB, `CREATE TABLE `+pq.QuoteIdentifier(short)+` (id int PRIMARY KEY)`, `CREATE TABLE other (id int PRIMARY KEY)`)
	for _, name := range []string{long, "public." + long, pq.QuoteIdentifier(long), `public.` + pq.QuoteIdentifier(long)} {
		for _, opt := range []SyncerOpt{ForTables(name), WithReplicaIdentityFull(name)} {
			_, err := NewSyncer(WithPGConnStr(d.DSN()), WithReplicationSlot(pgtest.Ident(t, "slot")), WithPublication("p"), ForTables("other"), opt)
			require.ErrorIs(t, err, ErrConfig, name)
			require.Contains(t, err.Error(), "63 bytes", name)
		}
	}
	require.Empty(t, queryStrings(t, d.DB, `SELECT tablename::text FROM pg_publication_tables WHERE tablename <> 'other' AND schemaname = 'public'`))
	s := newTestSyncer(t, d, ForTables("other"), WithMessageHandler(DefaultMessageHandler{}))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := s.Snapshot(ctx, long)
	require.ErrorIs(t, err, ErrConfig)
	require.Contains(t, err.Error(), "63 bytes")
}

// TestConfigMaxMessagesToReadFitsInt4: the peek's upto_nchanges is an int4, so a
// bound over 2147483647 is ErrConfig from NewSyncer naming the limit, where Run used
// to fail at its first poll with the server's bare "out of range for type integer".
func TestConfigMaxMessagesToReadFitsInt4(t *testing.T) {
	_, err := NewSyncer(WithMaxMessagesToRead(math.MaxInt32+1), WithSetup(false), env(nil))
	require.ErrorIs(t, err, ErrConfig)
	require.Contains(t, err.Error(), "2147483647")
	require.Equal(t, math.MaxInt32, resolved(t, WithMaxMessagesToRead(math.MaxInt32), env(nil)).MaxMessagesToRead)
}
