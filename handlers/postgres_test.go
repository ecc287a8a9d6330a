package handlers

import (
	"context"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/dbsync/dbsync"
	"github.com/dbsync/dbsync/internal/pgtest"
	"github.com/stretchr/testify/require"
)

var bigBody = strings.Repeat("0123456789", 500) // 5,000 bytes, stored out of line (STORAGE EXTERNAL)

// script is the transactions every real-PostgreSQL handler test runs, one per element.
var script = []string{
	`INSERT INTO items VALUES ('1', 'a', '` + bigBody + `'), ('2', 'b', NULL)`,
	`UPDATE items SET name = 'c' WHERE id = '1'`,
	`UPDATE items SET id = '3' WHERE id = '1'`,
	`DELETE FROM items WHERE id = '2'; SELECT pg_logical_emit_message(true, 'app', 'hello')`,
	`INSERT INTO fullt VALUES ('k', 'v1'); INSERT INTO other VALUES ('o'); UPDATE fullt SET v = 'v2'`,
	`DELETE FROM fullt`,
	`TRUNCATE other`,
}

// runScript creates the tables, starts a Syncer delivering to h, runs the script and
// returns each transaction's xid once done(h) holds; the Syncer has stopped by then.
func runScript(t *testing.T, h dbsync.MessageHandler, done func() bool) []string {
	t.Helper()
	d := pgtest.NewDatabase(t)
	_, err := d.DB.Exec(`CREATE TABLE items (id text PRIMARY KEY, name text, body text);
		ALTER TABLE items ALTER COLUMN body SET STORAGE EXTERNAL;
		CREATE TABLE fullt (id text PRIMARY KEY, v text);
		ALTER TABLE fullt REPLICA IDENTITY FULL;
		CREATE TABLE other (k text PRIMARY KEY)`)
	require.NoError(t, err)
	s := newTestSyncer(t, d, h, "items", "fullt", "other")
	runErr, cancel := runInBackground(s)
	defer cancel()
	var xids []string
	for _, stmt := range script {
		tx, err := d.DB.Begin()
		require.NoError(t, err)
		var xid string
		require.NoError(t, tx.QueryRow(`SELECT txid_current()::text`).Scan(&xid))
		_, err = tx.Exec(stmt)
		require.NoError(t, err, stmt)
		require.NoError(t, tx.Commit())
		xids = append(xids, xid)
	}
	deadline := time.Now().Add(15 * time.Second)
	for !done() {
		select {
		case err := <-runErr:
			t.Fatalf("syncer stopped early: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("timed out waiting for the handler to see the script")
		}
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	require.NoError(t, <-runErr)
	return xids
}

var (
	jsonStampRE = regexp.MustCompile(`"commit_lsn":"[0-9A-F]+/[0-9A-F]+","xid":(\d+),"commit_time":"([^"]+)"`)
	jsonLSNRE   = regexp.MustCompile(`"lsn":"[0-9A-F]+/[0-9A-F]+"`)
)

func TestJSONLinesWriterPostgres(t *testing.T) {
	var out pgtest.Buffer
	w := NewJSONLinesWriter(&out)
	want := []string{
		`{"type":"change",T0,"op":"insert","schema":"public","table":"items","key":{"id":"1"},"new":{"body":"` + bigBody + `","id":"1","name":"a"},"old":null}`,
		`{"type":"change",T0,"op":"insert","schema":"public","table":"items","key":{"id":"2"},"new":{"body":null,"id":"2","name":"b"},"old":null}`,
		`{"type":"change",T1,"op":"update","schema":"public","table":"items","key":{"id":"1"},"new":{"id":"1","name":"c"},"old":null,"unchanged":["body"]}`,
		`{"type":"change",T2,"op":"update","schema":"public","table":"items","key":{"id":"3"},"old_key":{"id":"1"},"new":{"id":"3","name":"c"},"old":{"id":"1"},"unchanged":["body"]}`,
		`{"type":"change",T3,"op":"delete","schema":"public","table":"items","key":{"id":"2"},"new":null,"old":{"id":"2"}}`,
		`{"type":"message",T3,LSN,"transactional":true,"prefix":"app","content":"hello"}`,
		`{"type":"change",T4,"op":"insert","schema":"public","table":"fullt","key":{"id":"k"},"new":{"id":"k","v":"v1"},"old":null}`,
		`{"type":"change",T4,"op":"insert","schema":"public","table":"other","key":{"k":"o"},"new":{"k":"o"},"old":null}`,
		`{"type":"change",T4,"op":"update","schema":"public","table":"fullt","key":{"id":"k"},"new":{"id":"k","v":"v2"},"old":{"id":"k","v":"v1"}}`,
		`{"type":"change",T5,"op":"delete","schema":"public","table":"fullt","key":{"id":"k"},"new":null,"old":{"id":"k","v":"v2"}}`,
		`{"type":"truncate",T6,"schema":"public","table":"other","cascade":false,"restart_identity":false}`,
	}
	start := time.Now()
	xids := runScript(t, w, func() bool { return strings.Count(out.String(), "\n") >= len(want) })
	xidIndex := map[string]int{}
	for i, x := range xids {
		xidIndex[x] = i
	}
	lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
	for i, l := range lines {
		m := jsonStampRE.FindStringSubmatch(l)
		require.NotNil(t, m, "line %d: %s", i, l)
		n, ok := xidIndex[m[1]]
		require.True(t, ok, "line %d: xid %s is not one of the script's %v", i, m[1], xids)
		ct, err := time.Parse(time.RFC3339Nano, m[2])
		require.NoError(t, err)
		require.WithinDuration(t, start, ct, time.Minute)
		require.Equal(t, time.UTC, ct.Location())
		l = jsonStampRE.ReplaceAllString(l, fmt.Sprintf("T%d", n))
		lines[i] = jsonLSNRE.ReplaceAllString(l, "LSN")
	}
	require.Equal(t, want, lines)
}

var (
	echoBeginRE  = regexp.MustCompile(`^BEGIN xid=(\d+) commit_lsn=[0-9A-F]+/[0-9A-F]+ commit_time=\S+Z$`)
	echoCommitRE = regexp.MustCompile(`^COMMIT commit_lsn=[0-9A-F]+/[0-9A-F]+ end_lsn=[0-9A-F]+/[0-9A-F]+$`)
)

func TestEchoMessageHandlerPostgres(t *testing.T) {
	var out pgtest.Buffer
	e := NewEchoMessageHandler(&out)
	want := []string{
		"BEGIN T0", "INSERT public.items id=1 name=a body=" + bigBody, "INSERT public.items id=2 name=b body=NULL", "COMMIT",
		"BEGIN T1", "UPDATE public.items id=1 name=c body=<unchanged>", "COMMIT",
		"BEGIN T2", "UPDATE public.items id=3 name=c body=<unchanged> (old key: id=1)", "COMMIT",
		"BEGIN T3", "DELETE public.items id=2", `MESSAGE transactional prefix=app content="hello"`, "COMMIT",
		"BEGIN T4", "INSERT public.fullt id=k v=v1", "INSERT public.other k=o", "UPDATE public.fullt id=k v=v2 old: id=k v=v1", "COMMIT",
		"BEGIN T5", "DELETE public.fullt id=k v=v2", "COMMIT",
		"BEGIN T6", "TRUNCATE public.other", "COMMIT",
	}
	xids := runScript(t, e, func() bool { return strings.Count(out.String(), "\n") >= len(want) })
	lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
	for i, l := range lines {
		if m := echoBeginRE.FindStringSubmatch(l); m != nil {
			for n, x := range xids {
				if x == m[1] {
					lines[i] = fmt.Sprintf("BEGIN T%d", n)
				}
			}
		} else if echoCommitRE.MatchString(l) {
			lines[i] = "COMMIT"
		}
	}
	require.Equal(t, want, lines)
}

func TestCachePostgres(t *testing.T) {
	c := NewCache()
	runScript(t, c, func() bool { return c.Stats().Transactions >= int64(len(script)) })
	require.Equal(t, map[string]map[string]dbsync.StringMap{
		"public.items": {`["3"]`: {"id": "3", "name": "c", "body": bigBody}},
		"public.fullt": {},
		"public.other": {},
	}, c.Snapshot())
	st := c.Stats()
	require.Equal(t, int64(len(script)), st.Transactions)
	require.Equal(t, int64(9), st.Changes)
	require.Equal(t, int64(2), st.KeptUnchanged)
	require.Equal(t, int64(1), st.KeyChanges)
	require.Equal(t, int64(1), st.Truncates)
	require.Equal(t, int64(0), st.UnknownUnchanged)
	require.Equal(t, []string{"id"}, c.TableInfo("public.items").PrimaryKey)
}

// TestKeylessTablePostgres: a table with neither a primary key nor a replica identity
// index, under REPLICA IDENTITY FULL. The JSON lines writer writes its changes with
// "key":{} (docs/CLI.md); the Cache, which stores rows by key, refuses the first one
// with ErrNoKey and stores nothing.
func TestKeylessTablePostgres(t *testing.T) {
	d := pgtest.NewDatabase(t)
	_, err := d.DB.Exec(`CREATE TABLE nokey (a int, b text); ALTER TABLE nokey REPLICA IDENTITY FULL`)
	require.NoError(t, err)
	newSyncer := func(h dbsync.MessageHandler) *dbsync.Syncer { return newTestSyncer(t, d, h, "nokey") }
	var out pgtest.Buffer
	s := newSyncer(NewJSONLinesWriter(&out))
	for _, stmt := range []string{`INSERT INTO nokey VALUES (1, 'x')`, `UPDATE nokey SET b = 'y'`, `DELETE FROM nokey`} {
		_, err := d.DB.Exec(stmt)
		require.NoError(t, err, stmt)
	}
	runErr, cancel := runInBackground(s)
	deadline := time.Now().Add(15 * time.Second)
	for strings.Count(out.String(), "\n") < 3 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	require.NoError(t, <-runErr)
	lines := strings.Split(strings.TrimSuffix(jsonStampRE.ReplaceAllString(out.String(), "T"), "\n"), "\n")
	require.Equal(t, []string{
		`{"type":"change",T,"op":"insert","schema":"public","table":"nokey","key":{},"new":{"a":1,"b":"x"},"old":null}`,
		`{"type":"change",T,"op":"update","schema":"public","table":"nokey","key":{},"new":{"a":1,"b":"y"},"old":{"a":1,"b":"x"}}`,
		`{"type":"change",T,"op":"delete","schema":"public","table":"nokey","key":{},"new":null,"old":{"a":1,"b":"y"}}`,
	}, lines)

	// The same slot, now read into a Cache: Run ends with the Cache's error.
	_, err = d.DB.Exec(`INSERT INTO nokey VALUES (2, 'z')`)
	require.NoError(t, err)
	c := NewCache()
	ctx, stop := context.WithTimeout(context.Background(), 30*time.Second)
	defer stop()
	err = newSyncer(c).Run(ctx)
	require.ErrorIs(t, err, dbsync.ErrNoKey)
	require.ErrorIs(t, err, dbsync.ErrHandler)
	require.Contains(t, err.Error(), "public.nokey has no key its changes carry (neither a primary key nor a replica identity index")
	require.Empty(t, c.Snapshot())
}

// TestDeepJSONPostgres: a json document nested deeper than encoding/json allows
// (10,001 levels), which PostgreSQL accepts. It is decoded (DecodeChange gives the
// document itself) and written by the JSON lines writer as its text, a JSON string,
// instead of stopping the Syncer for good on a value that is not malformed.
func TestDeepJSONPostgres(t *testing.T) {
	d := pgtest.NewDatabase(t)
	_, err := d.DB.Exec(`CREATE TABLE items (id int PRIMARY KEY, doc json)`)
	require.NoError(t, err)
	var out pgtest.Buffer
	s := newTestSyncer(t, d, NewJSONLinesWriter(&out), "items")
	deep := strings.Repeat("[", 10001) + strings.Repeat("]", 10001)
	_, err = d.DB.Exec(`INSERT INTO items VALUES (1, $1), (2, '{"a": [1]}')`, deep)
	require.NoError(t, err)
	runErr, cancel := runInBackground(s)
	deadline := time.Now().Add(15 * time.Second)
	for strings.Count(out.String(), "\n") < 2 && time.Now().Before(deadline) {
		select {
		case err := <-runErr:
			t.Fatalf("Run ended: %v", err)
		case <-time.After(20 * time.Millisecond):
		}
	}
	cancel()
	require.NoError(t, <-runErr)
	lines := strings.Split(strings.TrimSuffix(jsonStampRE.ReplaceAllString(out.String(), "T"), "\n"), "\n")
	require.Equal(t, []string{
		`{"type":"change",T,"op":"insert","schema":"public","table":"items","key":{"id":1},"new":{"doc":"` + deep + `","id":1},"old":null}`,
		`{"type":"change",T,"op":"insert","schema":"public","table":"items","key":{"id":2},"new":{"doc":{"a":[1]},"id":2},"old":null}`,
	}, lines)
}

// drain runs a Syncer on slot into h until the slot's confirmed position reaches the
// server's flush LSN taken at the start, then stops it. tables are passed to
// ForTables (the publication is created on the first call); none: the publication
// must exist.
func drain(t *testing.T, d *pgtest.Database, slot, pub string, h dbsync.MessageHandler, tables ...string) {
	t.Helper()
	opts := []dbsync.SyncerOpt{dbsync.WithPGConnStr(d.DSN()), dbsync.WithReplicationSlot(slot), dbsync.WithPublication(pub),
		dbsync.WithMessageHandler(h), dbsync.WithPollBackoff(5*time.Millisecond, 1.5, 50*time.Millisecond)}
	if len(tables) > 0 {
		opts = append(opts, dbsync.ForTables(tables...))
	}
	s, err := dbsync.NewSyncer(opts...)
	require.NoError(t, err)
	defer s.Close()
	done, cancel := runInBackground(s)
	defer cancel()
	waitCaughtUp(t, d, slot, done)
	cancel()
	require.NoError(t, <-done)
}

// TestCacheRedeliveryPostgres: T2 and T3 come again to the same Cache, read from a copy
// of the slot taken before them (as after a failed forward, or a server crash that put
// the slot back to its last checkpoint). T2 moves row 1 to id 2 leaving its TOASTed
// body unchanged; T3 inserts a new row 1. Applied again, T2 would copy the body from
// the current row 1, T3's: row 2 would end with TWO while the table has ONE.
func TestCacheRedeliveryPostgres(t *testing.T) {
	d := pgtest.NewDatabase(t)
	_, err := d.DB.Exec(`CREATE TABLE items (id text PRIMARY KEY, name text, body text);
		ALTER TABLE items ALTER COLUMN body SET STORAGE EXTERNAL`)
	require.NoError(t, err)
	slot, pub := pgtest.Ident(t, "slot"), pgtest.Ident(t, "pub")
	c := NewCache()
	drain(t, d, slot, pub, c, "items") // creates the slot and the publication
	one, two := bigBody+"-ONE", bigBody+"-TWO"
	_, err = d.DB.Exec(`INSERT INTO items VALUES ('1', 'a', $1)`, one) // T1
	require.NoError(t, err)
	drain(t, d, slot, pub, c, "items")
	copySlot := slot + "_copy"
	_, err = d.DB.Exec(`SELECT pg_copy_logical_replication_slot($1, $2)`, slot, copySlot)
	require.NoError(t, err)
	t.Cleanup(func() { _, _ = d.DB.Exec(`SELECT pg_drop_replication_slot($1)`, copySlot) })
	_, err = d.DB.Exec(`UPDATE items SET id = '2' WHERE id = '1'`) // T2: body unchanged ('u')
	require.NoError(t, err)
	_, err = d.DB.Exec(`INSERT INTO items VALUES ('1', 'z', $1)`, two) // T3
	require.NoError(t, err)
	drain(t, d, slot, pub, c, "items")
	want := map[string]map[string]dbsync.StringMap{"public.items": {
		`["1"]`: {"id": "1", "name": "z", "body": two},
		`["2"]`: {"id": "2", "name": "a", "body": one},
	}}
	require.Equal(t, want, c.Snapshot())
	st := c.Stats()
	require.Equal(t, int64(3), st.Transactions)
	require.Equal(t, int64(0), st.Redelivered)

	drain(t, d, copySlot, pub, c, "items") // T2 and T3 again
	row2, _ := c.Row("public.items", `["2"]`)
	require.Equal(t, "-ONE", tail(row2["body"]), "row 2's body after re-delivery")
	require.Equal(t, want, c.Snapshot())
	var body2 string
	require.NoError(t, d.DB.QueryRow(`SELECT body FROM items WHERE id = '2'`).Scan(&body2))
	require.Equal(t, one, body2)
	st2 := c.Stats()
	require.Equal(t, int64(2), st2.Redelivered)
	require.Equal(t, st.Transactions, st2.Transactions)
	require.Equal(t, st.LastCommitLSN, st2.LastCommitLSN)
}

// tail gives the last 4 characters of a string value, to show which big body it is.
func tail(v any) string {
	s, _ := v.(string)
	if len(s) < 4 {
		return s
	}
	return s[len(s)-4:]
}

// TestCacheSchemaChangesPostgres: DDL waiting in the slot between changes. Row 2 is not
// changed after DROP COLUMN body and must lose it (SELECT * has no body); row 1,
// changed before ADD COLUMN extra, lacks extra (documented: SELECT * shows its
// default, which no RELATION message carries); after RENAME TO things the rows are
// under the new name only; after ALTER COLUMN extra TYPE bigint, row 4, not changed
// since, keeps its int32 (documented), row 3, changed, has an int64.
func TestCacheSchemaChangesPostgres(t *testing.T) {
	d := pgtest.NewDatabase(t)
	_, err := d.DB.Exec(`CREATE TABLE items (id text PRIMARY KEY, name text, body text)`)
	require.NoError(t, err)
	slot, pub := pgtest.Ident(t, "slot"), pgtest.Ident(t, "pub")
	c := NewCache()
	drain(t, d, slot, pub, c, "items")
	for _, q := range []string{
		`INSERT INTO items VALUES ('1', 'a', 'x'), ('2', 'b', 'y'), ('4', 'f', 'z')`,
		`ALTER TABLE items DROP COLUMN body`,
		`UPDATE items SET name = 'c' WHERE id = '1'`,
		`ALTER TABLE items ADD COLUMN extra int DEFAULT 7`,
		`INSERT INTO items VALUES ('3', 'd', 8)`,
		`ALTER TABLE items RENAME TO things`,
		`UPDATE things SET name = 'e' WHERE id = '4'`,
		`ALTER TABLE things ALTER COLUMN extra TYPE bigint`,
		`UPDATE things SET name = 'h' WHERE id = '3'`,
	} {
		_, err = d.DB.Exec(q)
		require.NoError(t, err, q)
	}
	drain(t, d, slot, pub, c) // the publication holds the table, whatever its name
	require.Equal(t, map[string]map[string]dbsync.StringMap{"public.things": {
		`["1"]`: {"id": "1", "name": "c"},
		`["2"]`: {"id": "2", "name": "b"},
		`["3"]`: {"id": "3", "name": "h", "extra": int64(8)},
		`["4"]`: {"id": "4", "name": "e", "extra": int32(7)},
	}}, c.Snapshot())
	st := c.Stats()
	require.Equal(t, int64(1), st.DroppedColumns)
	require.Equal(t, int64(5), st.Transactions)
	require.Equal(t, "things", c.TableInfo("public.things").TableName)
	var extra1 int
	require.NoError(t, d.DB.QueryRow(`SELECT extra FROM things WHERE id = '1'`).Scan(&extra1))
	require.Equal(t, 7, extra1, "what the Cache cannot know for row 1")
}
