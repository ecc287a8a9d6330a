package dbsync

import (
	"cmp"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/url"
	"os"
	"regexp"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/lib/pq"
)

// Defaults used when neither an option nor an environment variable sets a value.
const (
	DefaultCtrlNamespace = "dbsync_ctrl"
	DefaultPublication   = "dbsync_mypub"
	DefaultReplSlot      = "dbsync_replslot"
	DefaultWMTable       = "dbsync_wmtable"

	// DefaultMinPollInterval is Syncer.MinPollInterval's default: at 1,000
	// transactions/s on the development machine it cut the server's CPU from ~88% to
	// ~49% of a core (the writer's backend included) for a median commit-to-handler
	// latency of 8.7 instead of 3.5 ms (docs/BENCHMARKS-history.md, "restart_lsn kept
	// close").
	DefaultMinPollInterval = 10 * time.Millisecond
	// DefaultMaxRestartLSNLag is Syncer.MaxRestartLSNLag's default, in bytes of WAL:
	// at 1,000 transactions/s it has ~0.7 records a second logged and halves the
	// server's CPU for polling (docs/BENCHMARKS-history.md, "restart_lsn kept
	// close").
	DefaultMaxRestartLSNLag = 256 << 10
	// DefaultDelayBetweenPeekRetries is the first wait after a poll that found nothing.
	DefaultDelayBetweenPeekRetries = 100 * time.Millisecond
	// DefaultTimerDelayBackoffFactor multiplies the wait after each further empty poll.
	DefaultTimerDelayBackoffFactor = 1.5
	// DefaultMaxDelayBetweenEmptyPeeks caps the wait between empty polls.
	DefaultMaxDelayBetweenEmptyPeeks = 5 * time.Second
	// DefaultMaxMessagesToRead bounds the rows one peek returns (upto_nchanges); 0
	// means no row bound. The bound is checked by PostgreSQL at transaction boundaries,
	// so a call can return more (a large transaction always comes back whole). Every
	// call re-decodes WAL from the slot's restart_lsn, so row-bounded calls make a
	// backlog quadratic; the poller bounds each call by a window of WAL instead
	// (1 GiB past confirmed_flush_lsn) and streams rows to the handler, so no bound
	// is needed for memory.
	DefaultMaxMessagesToRead = 0
)

// Environment variables read by NewSyncer for settings no option gave.
const (
	EnvPostgresDB       = "POSTGRES_DB"   // database name; POSTGRES_NAME is accepted too
	EnvPostgresName     = "POSTGRES_NAME" // the original dbsync's name for POSTGRES_DB
	EnvPostgresHost     = "POSTGRES_HOST"
	EnvPostgresPort     = "POSTGRES_PORT"
	EnvPostgresUser     = "POSTGRES_USER"
	EnvPostgresPassword = "POSTGRES_PASSWORD"
	EnvPostgresSSLMode  = "POSTGRES_SSLMODE" // lib/pq sslmode; default "prefer"
	EnvCtrlNamespace    = "DBSYNC_CTRL_NAMESPACE"
	EnvPublication      = "DBSYNC_PUBNAME"
	EnvReplSlot         = "DBSYNC_REPLSLOT"
	EnvWMTable          = "DBSYNC_WM_TABLENAME"
)

// HandlerErrorPolicy says what the Syncer does when a handler returns an error (other
// than ErrStopProcessingMessages). Either way the slot is never forwarded past the
// transaction whose change failed.
type HandlerErrorPolicy int

const (
	// StopOnHandlerError (the default) stops the Syncer: Run/Start return the error
	// wrapped in ErrHandler. A restarted Syncer re-delivers the failed transaction.
	StopOnHandlerError HandlerErrorPolicy = iota
	// RetryOnHandlerError re-reads the slot and re-delivers the failed transaction
	// (from its BEGIN) after an exponential backoff, until the handler succeeds or the
	// Syncer is stopped.
	RetryOnHandlerError
)

// SyncerOpt configures a Syncer in NewSyncer. Options override environment variables,
// which override the defaults.
type SyncerOpt func(*Syncer) error

// WithPGConnStr sets the connection string (libpq key=value or postgres:// URL) of the
// database to sync; dbsync opens it with the lib/pq driver. It overrides POSTGRES_*.
// NewSyncer returns ErrConfig for one lib/pq cannot parse, without quoting it, and for
// an empty one (leave the option out to use POSTGRES_*): a caller's unset setting would
// otherwise connect to whatever POSTGRES_* or the default name.
func WithPGConnStr(connstr string) SyncerOpt {
	return func(s *Syncer) error {
		if connstr == "" {
			return fmt.Errorf("%w: WithPGConnStr(\"\"): give a connection string, or leave the option out to use $POSTGRES_* (host, port, user, database, password, sslmode)", ErrConfig)
		}
		s.connStr = connstr
		return nil
	}
}

// WithDB makes the Syncer use an existing connection pool (any driver, e.g. lib/pq or
// pgx's stdlib). The Syncer does not close it. It overrides WithPGConnStr and POSTGRES_*.
// Run needs it to allow at least two connections (SetMaxOpenConns), one more for a
// handler that uses it too.
func WithDB(db *sql.DB) SyncerOpt {
	return func(s *Syncer) error {
		if db == nil {
			return fmt.Errorf("%w: WithDB(nil)", ErrConfig)
		}
		s.db = db
		s.ownDB = false
		return nil
	}
}

// WithPublication sets the publication the slot is read with (pgoutput's
// publication_names). Overrides DBSYNC_PUBNAME. NewSyncer returns ErrConfig for an
// empty name and for one over 63 bytes or holding a NUL byte or invalid UTF-8, given
// here or in the environment; the same holds for the slot, the control namespace and
// the watermark table.
func WithPublication(pubname string) SyncerOpt {
	return nameOption("WithPublication", EnvPublication, DefaultPublication, pubname, func(s *Syncer) *string { return &s.publication })
}

// WithReplicationSlot sets the logical replication slot. Overrides DBSYNC_REPLSLOT.
// Slot names may hold only lower-case letters, digits and underscores.
func WithReplicationSlot(slotname string) SyncerOpt {
	return nameOption("WithReplicationSlot", EnvReplSlot, DefaultReplSlot, slotname, func(s *Syncer) *string { return &s.replicationSlot })
}

// WithWMTable sets the watermark table's name (in the control namespace). Overrides
// DBSYNC_WM_TABLENAME.
func WithWMTable(wmtablename string) SyncerOpt {
	return nameOption("WithWMTable", EnvWMTable, DefaultWMTable, wmtablename, func(s *Syncer) *string { return &s.wmTableName })
}

// WithCtrlNamespace sets the schema where dbsync keeps its own tables. Overrides
// DBSYNC_CTRL_NAMESPACE.
func WithCtrlNamespace(nsname string) SyncerOpt {
	return nameOption("WithCtrlNamespace", EnvCtrlNamespace, DefaultCtrlNamespace, nsname, func(s *Syncer) *string { return &s.ctrlNamespace })
}

// nameOption sets the Syncer field that field returns to name. An empty name is
// ErrConfig rather than the environment's or the default: a blank setting of the
// caller's would otherwise end up sharing another program's slot or schema unnoticed.
// The name's bytes are checked in resolveConfig (checkName), whichever way it came.
func nameOption(option, env, def, name string, field func(*Syncer) *string) SyncerOpt {
	return func(s *Syncer) error {
		if name == "" {
			return fmt.Errorf("%w: %s(\"\"): give a name, or leave the option out to use $%s or the default %s", ErrConfig, option, env, def)
		}
		*field(s) = name
		return nil
	}
}

// ForTables names the tables the publication is for: "table" (looked up on the
// search_path), "schema.table", or a quoted SQL name such as `"My Schema"."My Table"`.
// Setup creates the publication for them (and the watermark table) when it does not
// exist, and adds those it lacks (ALTER PUBLICATION ... ADD TABLE, which needs
// ownership of the table) when it does. Without ForTables the publication must exist;
// setup adds only the watermark table to it. Given more than once, the tables of
// every ForTables count. ForTables does not filter what is delivered: handlers get
// the changes of every table in the publication, including tables it held before or
// that were added to it since (ALTER PUBLICATION ... ADD TABLE); filter by
// Change.Table (or the RELATION message) in the handler, or give the Syncer a
// publication of its own.
func ForTables(tableNames ...string) SyncerOpt {
	return func(s *Syncer) error {
		s.tableNames = append(s.tableNames, tableNames...)
		return nil
	}
}

// WithBinary(true) asks pgoutput for column values in binary format (its 'binary'
// option: tuple kind 'b', the types' send functions) instead of text; values decode to
// the same Go values either way (PGColumnInfo.DecodeBytes), except that values of
// types without a codec (composite types, money, timetz: see UnknownValue) then arrive
// as send-function bytes, not text. See docs/VALUES.md.
func WithBinary(enabled bool) SyncerOpt {
	return func(s *Syncer) error { s.binary = enabled; return nil }
}

// WithReplicaIdentityFull makes Setup run ALTER TABLE ... REPLICA IDENTITY FULL on the
// given tables (named as in ForTables), so their updates
// and deletes carry the whole old row — needed for tables without a primary key, and
// so that unchanged TOASTed values can be filled in (docs/VALUES.md). For a
// partitioned table it sets every partition too (every level): PostgreSQL uses each
// partition's own replica identity, and ALTER TABLE does not pass it on. It needs
// ownership of each (ErrInsufficientPrivilege naming the statement otherwise). A name
// that is not a table fails Setup with ErrConfig before any table is altered. dbsync
// never changes a replica identity without this option.
func WithReplicaIdentityFull(tableNames ...string) SyncerOpt {
	return func(s *Syncer) error {
		s.replIdentFull = append(s.replIdentFull, tableNames...)
		return nil
	}
}

// WithStrictReplicaIdentity(true) makes Setup fail with ErrReplicaIdentity when a
// published table's updates or deletes cannot be captured, or its key holds a
// generated column (see CheckReplicaIdentity); by default Setup logs a warning per
// such table.
func WithStrictReplicaIdentity(strict bool) SyncerOpt {
	return func(s *Syncer) error { s.strictReplIdent = strict; return nil }
}

// WithLogger sets the structured logger. The default discards everything.
func WithLogger(l *slog.Logger) SyncerOpt {
	return func(s *Syncer) error {
		if l != nil {
			s.log = l
		}
		return nil
	}
}

// WithMessageHandler sets the handler changes are delivered to, one message at a time.
func WithMessageHandler(h MessageHandler) SyncerOpt {
	return func(s *Syncer) error { s.MessageHandler = h; return nil }
}

// WithEventsProcessor sets a batch consumer that receives the raw rows of each peek
// instead of a MessageHandler: Run returns ErrConfig when both (or an EventsProcessor
// and a Batcher) are set.
func WithEventsProcessor(p EventsProcessor) SyncerOpt {
	return func(s *Syncer) error { s.EventsProcessor = p; return nil }
}

// WithHandlerErrorPolicy chooses between stopping (StopOnHandlerError, the default)
// and retrying (RetryOnHandlerError) when a handler fails; another value is ErrConfig.
func WithHandlerErrorPolicy(p HandlerErrorPolicy) SyncerOpt {
	return func(s *Syncer) error {
		if p != StopOnHandlerError && p != RetryOnHandlerError {
			return fmt.Errorf("%w: WithHandlerErrorPolicy(%d): use StopOnHandlerError or RetryOnHandlerError", ErrConfig, p)
		}
		s.HandlerErrorPolicy = p
		return nil
	}
}

// WithMaxMessagesToRead sets the upto_nchanges bound of each peek (rows; 0 = only the
// flush-LSN bound). It must be from 0 to 2147483647 (upto_nchanges is an int4).
func WithMaxMessagesToRead(n int) SyncerOpt {
	if n > math.MaxInt32 {
		return func(*Syncer) error {
			return fmt.Errorf("%w: WithMaxMessagesToRead(%d): must be at most 2147483647 rows (the peek's upto_nchanges is an int4); use 0 for no row bound", ErrConfig, n)
		}
	}
	return atLeast("WithMaxMessagesToRead", n, 0, "rows (0: no row bound)", func(s *Syncer) { s.MaxMessagesToRead = n })
}

// WithPollBackoff sets the idle-poll backoff: wait initial after the first empty poll,
// multiply by factor after each further one, never wait longer than max. It needs
// initial > 0, a finite factor >= 1 and max >= initial (else ErrConfig).
func WithPollBackoff(initial time.Duration, factor float64, max time.Duration) SyncerOpt {
	return func(s *Syncer) error {
		// !(factor >= 1) also refuses NaN, for which every comparison is false.
		if initial <= 0 || !(factor >= 1) || math.IsInf(factor, 1) || max < initial {
			return fmt.Errorf("%w: WithPollBackoff(%v, %v, %v): needs initial > 0, a finite factor >= 1 and max >= initial", ErrConfig, initial, factor, max)
		}
		s.DelayBetweenPeekRetries, s.TimerDelayBackoffFactor, s.MaxDelayBetweenEmptyPeeks = initial, factor, max
		return nil
	}
}

// WithMinPollInterval sets Syncer.MinPollInterval: at least d (>= 0) from the start
// of one poll to the start of the next while the Syncer keeps up, trading up to about
// d of change latency for less server CPU under a steady write load. A negative d is
// ErrConfig.
func WithMinPollInterval(d time.Duration) SyncerOpt {
	return atLeast("WithMinPollInterval", d, 0, "(0: poll again at once)", func(s *Syncer) { s.MinPollInterval = d })
}

// WithMaxRestartLSNLag sets Syncer.MaxRestartLSNLag: how many bytes of WAL the slot's
// restart_lsn may trail its confirmed_flush_lsn before the Syncer has PostgreSQL log
// an xl_running_xacts record (by creating and dropping a temporary logical slot) so
// restart_lsn can move up; 0 turns this off, a negative value is ErrConfig.
func WithMaxRestartLSNLag(bytes int64) SyncerOpt {
	return atLeast("WithMaxRestartLSNLag", bytes, 0, "bytes (0: off)", func(s *Syncer) { s.MaxRestartLSNLag = bytes })
}

// atLeast is an option that checks v >= min (else an ErrConfig naming the option,
// the value and what it counts) before set applies it.
func atLeast[T cmp.Ordered](option string, v, min T, unit string, set func(*Syncer)) SyncerOpt {
	return func(s *Syncer) error {
		if v < min {
			return fmt.Errorf("%w: %s(%v): must be >= %v %s", ErrConfig, option, v, min, unit)
		}
		set(s)
		return nil
	}
}

// WithSetup(false) skips creating or checking the control schema, watermark table,
// publication and slot in NewSyncer (for read-only tools such as `dbsync status`).
func WithSetup(enabled bool) SyncerOpt {
	return func(s *Syncer) error { s.skipSetup = !enabled; return nil }
}

// withLookupEnv replaces os.LookupEnv (tests).
func withLookupEnv(f func(string) (string, bool)) SyncerOpt {
	return func(s *Syncer) error { s.lookupEnv = f; return nil }
}

// resolveConfig fills every setting no option gave from the environment, then from
// the defaults.
func (s *Syncer) resolveConfig() error {
	env := func(keys ...string) string {
		for _, k := range keys {
			if v, ok := s.lookupEnv(k); ok && v != "" {
				return v
			}
		}
		return ""
	}
	pick := func(cur *string, def string, keys ...string) {
		if *cur != "" {
			return
		}
		if v := env(keys...); v != "" {
			*cur = v
			return
		}
		*cur = def
	}
	pick(&s.ctrlNamespace, DefaultCtrlNamespace, EnvCtrlNamespace)
	pick(&s.publication, DefaultPublication, EnvPublication)
	pick(&s.replicationSlot, DefaultReplSlot, EnvReplSlot)
	pick(&s.wmTableName, DefaultWMTable, EnvWMTable)
	if s.db == nil {
		source := "WithPGConnStr"
		if s.connStr == "" {
			s.connStr, source = ConnStringFromEnv(s.lookupEnv), "POSTGRES_*"
		}
		if err := checkConnStr(s.connStr, source); err != nil {
			return err
		}
	}
	for _, n := range []struct{ what, option, env, v string }{
		{"replication slot", "WithReplicationSlot", EnvReplSlot, s.replicationSlot},
		{"publication", "WithPublication", EnvPublication, s.publication},
		{"control namespace", "WithCtrlNamespace", EnvCtrlNamespace, s.ctrlNamespace},
		{"watermark table", "WithWMTable", EnvWMTable, s.wmTableName},
	} {
		if err := checkName(n.what, n.option, n.env, n.v); err != nil {
			return err
		}
	}
	return validSlotName(s.replicationSlot)
}

// maxIdentifierBytes is PostgreSQL's limit on names (NAMEDATALEN - 1).
const maxIdentifierBytes = 63

// checkName checks a name dbsync creates an object under, given by option or env.
// PostgreSQL cuts a longer name at 63 bytes (so two long names could be taken for one
// object); it cannot store a NUL byte or invalid UTF-8, and pq.QuoteIdentifier cuts a
// name at a NUL, so the DDL would act on another object.
func checkName(what, option, env, v string) error {
	if strings.ContainsRune(v, 0) || !utf8.ValidString(v) {
		return fmt.Errorf("%w: %s name %q (%s / $%s) holds a NUL byte or invalid UTF-8, which PostgreSQL cannot store in a name; give valid UTF-8 text without NUL", ErrConfig, what, v, option, env)
	}
	if len(v) > maxIdentifierBytes {
		return fmt.Errorf("%w: %s name %q (%s / $%s) is %d bytes; PostgreSQL cuts names to 63 bytes, so it could be taken for another name: give one of at most 63 bytes", ErrConfig, what, v, option, env, len(v))
	}
	return nil
}

// checkConnStr parses connstr as lib/pq will (key=value or postgres:// URL, with the
// PG* environment) so that a malformed one fails in NewSyncer as ErrConfig, saying how
// to write it, instead of at the first connection. lib/pq's parse errors are not
// passed on when they come from its tokenizers: the key=value one quotes a word of a
// password holding an unquoted space, net/url a whole URL, password included, and
// the service file's quotes a malformed line; they would reach errors and Run's retry
// log. Its checks of parsed values ("pq: wrong value for \"port\"": ...), which quote
// the value of the key they name, are passed on, unless the value holds the password
// (a key given an empty value, "port= password=...", takes the next pair as its value).
func checkConnStr(connstr, source string) error {
	_, err := pq.NewConnector(connstr)
	if err == nil {
		return nil
	}
	var uerr *url.Error
	if msg := err.Error(); !errors.As(err, &uerr) && strings.HasPrefix(msg, "pq: ") &&
		!strings.HasPrefix(msg, "pq: line ") &&
		!strings.HasPrefix(msg, `pq: wrong value for "password"`) {
		if strings.Contains(strings.ToLower(msg), "password") {
			// A key given an empty value followed by a space takes the next word as
			// its value, as in libpq: "port= password=secret" sets port to
			// "password=secret", which the message quotes.
			key := "a key's value"
			if m := refusedKeyRE.FindStringSubmatch(msg); m != nil {
				key = "the value of " + m[1] + m[2]
			}
			return fmt.Errorf("%w: connection string (%s): lib/pq refuses %s (its message is left out: it quotes the password); a key with an empty value followed by a space, as in \"port= password=...\", takes the next key=value pair as its value: give the key a value or leave it out", ErrConfig, source, key)
		}
		return fmt.Errorf("%w: connection string (%s): %s", ErrConfig, source, strings.TrimPrefix(msg, "pq: "))
	}
	if strings.HasPrefix(connstr, "postgres://") || strings.HasPrefix(connstr, "postgresql://") {
		return fmt.Errorf("%w: the connection URL (%s) is not a valid URL (the parser's message is left out: it would show the password); percent-encode reserved characters in the user name and password (@ : / ? # [ ] %% and spaces; url.UserPassword does), or give key=value pairs", ErrConfig, source)
	}
	return fmt.Errorf("%w: the connection string (%s) cannot be parsed as key=value pairs (the parser's message is left out: it may show part of the password); put a value holding spaces, a quote or a backslash in single quotes, with ' and \\ escaped by a backslash (password='my secret'), or give a postgres:// URL", ErrConfig, source)
}

// validSlotName applies PostgreSQL's rule for slot names (lower-case letters, digits
// and underscores: ReplicationSlotValidateName) so a bad name fails early and clearly.
func validSlotName(n string) error {
	for _, c := range n {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_') {
			return fmt.Errorf("%w: replication slot name %q (WithReplicationSlot / $%s) may contain only lower-case letters, digits and underscores (PostgreSQL's rule for slot names)", ErrConfig, n, EnvReplSlot)
		}
	}
	if n == "" {
		return fmt.Errorf("%w: empty replication slot name", ErrConfig)
	}
	return nil
}

// ConnStringFromEnv builds a lib/pq key=value connection string from POSTGRES_DB (or
// POSTGRES_NAME), POSTGRES_HOST, POSTGRES_PORT, POSTGRES_USER, POSTGRES_PASSWORD and
// POSTGRES_SSLMODE, defaulting to postgres@localhost:5432/postgres with sslmode=prefer.
// lookup is os.LookupEnv when nil. The result contains the password: never log it
// (RedactConnString gives a loggable form).
func ConnStringFromEnv(lookup func(string) (string, bool)) string {
	if lookup == nil {
		lookup = os.LookupEnv
	}
	get := func(def string, keys ...string) string {
		for _, k := range keys {
			if v, ok := lookup(k); ok && v != "" {
				return v
			}
		}
		return def
	}
	parts := []string{
		"host=" + quoteConnValue(get("localhost", EnvPostgresHost)),
		"port=" + quoteConnValue(get("5432", EnvPostgresPort)),
		"user=" + quoteConnValue(get("postgres", EnvPostgresUser)),
		"dbname=" + quoteConnValue(get("postgres", EnvPostgresDB, EnvPostgresName)),
		"sslmode=" + quoteConnValue(get("prefer", EnvPostgresSSLMode)),
	}
	if pw := get("", EnvPostgresPassword); pw != "" {
		parts = append(parts, "password="+quoteConnValue(pw))
	}
	return strings.Join(parts, " ")
}

// quoteConnValue quotes a value for a libpq key=value connection string: one that is
// empty or holds whitespace of any kind (lib/pq's parser splits an unquoted value at
// any Unicode space, unicode.IsSpace, a no-break space included), a quote or a
// backslash.
func quoteConnValue(v string) string {
	if v != "" && !strings.ContainsFunc(v, func(r rune) bool { return unicode.IsSpace(r) || r == '\'' || r == '\\' }) {
		return v
	}
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(v) + "'"
}

var (
	// refusedKeyRE finds the key a lib/pq message about a parsed value names.
	refusedKeyRE = regexp.MustCompile(`^pq: (?:wrong value for ("[a-z_]+")|unsupported ([a-z_]+) )`)
	// A key=value password: quoted (backslash escapes inside), an unterminated quote
	// (lib/pq refuses it; everything to the end), or unquoted, where a backslash
	// escapes the next character, a space included (libpq's rule: password=my\ pw).
	kvPasswordRE = regexp.MustCompile(`(?s)password\s*=\s*('(\\.|[^'])*'|'.*|(\\.|[^\s\\])+\\?)`)
	// The user info ends at the authority's last '@' (as net/url reads it), so a
	// password holding a raw '@' is redacted whole.
	urlPasswordRE = regexp.MustCompile(`(://[^:/@]*:)[^/?#]*@`)
	// A password holding a raw '/', '?' or '#' ends the authority early (net/url
	// and libpq read "u:12/x@h" as host u, port 12), so where net/url finds no
	// password the user info is taken to end at the last '@' before the query, or,
	// for a URL it cannot parse, at the last '@'.
	urlLoosePasswordRE  = regexp.MustCompile(`(://[^:/@]*:)[^?]*@`)
	urlBrokenPasswordRE = regexp.MustCompile(`(?s)(://[^:/@]*:).*@`)
)

// RedactConnString returns connstr with any password replaced by "***", fit for logs
// and error messages. In a malformed URL (a password not percent-encoded) it replaces
// everything that may be the password, up to the last '@' (before the query, if
// net/url can parse the URL): a URL with no password but an '@' in its path after a
// port loses that part too.
func RedactConnString(connstr string) string {
	s := kvPasswordRE.ReplaceAllString(connstr, "password=***")
	u, err := url.Parse(s)
	switch {
	case err != nil:
		return urlBrokenPasswordRE.ReplaceAllString(s, "${1}***@")
	case u.User != nil:
		if _, ok := u.User.Password(); ok {
			return urlPasswordRE.ReplaceAllString(s, "${1}***@")
		}
	}
	return urlLoosePasswordRE.ReplaceAllString(s, "${1}***@")
}
