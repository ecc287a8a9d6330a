package dbsync

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/dbsync/dbsync/internal/pgtest"
	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/lib/pq"
	"github.com/stretchr/testify/require"
)

// TestPeekTransportsAgree reads one slot through lib/pq (rows through the driver's own
// interfaces, lsn and xid parsed from text), through lib/pq behind a driver that
// offers only driver.Conn (rows through database/sql) and through pgx's stdlib driver
// (rows read in binary form on pgx's own connection): every row must come out
// identical, for every
// message kind, a non-transactional logical message (xid 0), a row larger than a
// data slab's share, and pgoutput's text and binary value formats.
func TestPeekTransportsAgree(t *testing.T) {
	d := pgtest.NewDatabase(t)
	execAll(t, d.DB, `CREATE TABLE items (id int PRIMARY KEY, name text, doc jsonb, n numeric, at timestamptz)`)
	pgxDB, err := sql.Open("pgx", d.DSN())
	require.NoError(t, err)
	t.Cleanup(func() { pgxDB.Close() })
	pqc, err := pq.NewConnector(d.DSN())
	require.NoError(t, err)
	plainConnDB := sql.OpenDB(plainConnector{pqc})
	t.Cleanup(func() { plainConnDB.Close() })
	for _, binary := range []bool{false, true} {
		slot := pgtest.Ident(t, "slot")
		if binary {
			slot += "_b"
		}
		opts := []SyncerOpt{ForTables("items"), WithReplicationSlot(slot), WithPublication(pgtest.Ident(t, "pub")), WithBinary(binary)}
		viaPQ, err := NewSyncer(append(opts, WithDB(d.DB))...)
		require.NoError(t, err)
		t.Cleanup(func() { viaPQ.Close() })
		viaPgx, err := NewSyncer(append(opts, WithDB(pgxDB))...)
		require.NoError(t, err)
		t.Cleanup(func() { viaPgx.Close() })
		viaSQL, err := NewSyncer(append(opts, WithDB(plainConnDB))...)
		require.NoError(t, err)
		t.Cleanup(func() { viaSQL.Close() })
		require.NoError(t, viaPQ.Setup(context.Background()))
		require.NoError(t, viaPgx.Setup(context.Background()))

		big := strings.Repeat("large ", dataSlabSize/4) // its own allocation, TOASTed
		execAll(t, d.DB,
			`INSERT INTO items VALUES (1, 'a', '{"k": [1, 2]}', 12.50, '2024-03-01 12:00:00+02'), (2, NULL, NULL, NULL, NULL)`,
			`UPDATE items SET name = 'b', n = -0.001 WHERE id = 1`,
			`INSERT INTO items VALUES (3, '`+big+`', '[]', 1e20, 'infinity')`,
			`UPDATE items SET id = 4 WHERE id = 3`,
			`DELETE FROM items WHERE id = 2`,
			`SELECT pg_logical_emit_message(false, 'dbsync-test', 'outside a transaction')`,
			`BEGIN; SELECT pg_logical_emit_message(true, 'dbsync-test', 'in a transaction'); INSERT INTO items VALUES (5, 'e'); COMMIT`,
			`TRUNCATE items`)

		fromPQ, err := viaPQ.GetMessages(0, false, nil)
		require.NoError(t, err)
		fromPgx, err := viaPgx.GetMessages(0, false, nil)
		require.NoError(t, err)
		fromSQL, err := viaSQL.GetMessages(0, false, nil)
		require.NoError(t, err)
		require.Zero(t, viaPQ.pgconnPeeks.Load())
		require.Equal(t, uint64(1), viaPQ.driverPeeks.Load(), "lib/pq's connection must be read through its driver interfaces")
		require.Equal(t, uint64(1), viaPgx.pgconnPeeks.Load(), "pgx's connection must be read natively")
		require.Zero(t, viaPgx.driverPeeks.Load())
		require.Zero(t, viaSQL.pgconnPeeks.Load()+viaSQL.driverPeeks.Load(), "a driver.Conn without QueryerContext is read through database/sql")

		var seq []byte
		var xids []uint32
		for _, m := range fromPQ {
			seq = append(seq, m.Data[0])
			xids = append(xids, m.Xid)
		}
		// 7 transactions, a non-transactional message (no BEGIN/COMMIT), a
		// transactional one; pgoutput describes the relation again before TRUNCATE.
		require.Equal(t, "BRIIC"+"BUC"+"BIC"+"BUC"+"BDC"+"M"+"BMIC"+"BRTC", string(seq))
		require.Contains(t, xids, uint32(0), "the non-transactional message has no xid")
		require.Len(t, fromPgx, len(fromPQ))
		require.Len(t, fromSQL, len(fromPQ))
		for i := range fromPQ {
			require.Equal(t, fromPQ[i], fromPgx[i], "row %d", i)
			require.Equal(t, fromPQ[i], fromSQL[i], "row %d", i)
		}
		var bigRows int
		for _, m := range fromPgx {
			if len(m.Data) > dataSlabSize/4 {
				bigRows++
			}
		}
		require.Equal(t, 2, bigRows, "the large value's INSERT and the key UPDATE (old key and full new row)")
	}
}

// plainConnector hands out its driver's connections without driver.QueryerContext (it
// keeps ExecerContext: setup runs multi-statement scripts), so database/sql prepares
// every query: how a driver without QueryerContext is read.
type plainConnector struct{ driver.Connector }

func (c plainConnector) Connect(ctx context.Context) (driver.Conn, error) {
	conn, err := c.Connector.Connect(ctx)
	if err != nil {
		return nil, err
	}
	return plainConn{conn}, nil
}

type plainConn struct{ driver.Conn }

func (c plainConn) ExecContext(ctx context.Context, q string, args []driver.NamedValue) (driver.Result, error) {
	return c.Conn.(driver.ExecerContext).ExecContext(ctx, q, args)
}

// TestServerErrorsThroughPgx checks that server errors map to the named errors through
// pgx's stdlib driver as through lib/pq (SQLSTATEs come as *pgconn.PgError there),
// including on the peek, which pgx reads on its own connection.
func TestServerErrorsThroughPgx(t *testing.T) {
	d := pgtest.NewDatabase(t)
	execAll(t, d.DB, `CREATE TABLE items (id int PRIMARY KEY)`)
	pgxDB, err := sql.Open("pgx", d.DSN())
	require.NoError(t, err)
	t.Cleanup(func() { pgxDB.Close() })

	_, err = pgxDB.Exec(`SELECT pg_replication_slot_advance('no_such_slot', '0/1')`)
	var pgErr *pgconn.PgError
	require.True(t, errors.As(err, &pgErr))
	require.True(t, hasSQLState(err, "42704"))
	require.ErrorIs(t, classify(err, "advance"), ErrSlotMissing)
	require.True(t, errors.As(classify(err, "advance"), &pgErr), "the driver's error stays in the chain")
	_, err = d.DB.Exec(`SELECT pg_replication_slot_advance('no_such_slot', '0/1')`)
	var pqErr *pq.Error
	require.True(t, errors.As(err, &pqErr))
	require.ErrorIs(t, classify(err, "advance"), ErrSlotMissing)

	// No publication and no tables to create it for.
	_, err = NewSyncer(WithDB(pgxDB), WithReplicationSlot(pgtest.Ident(t, "slot")), WithPublication(pgtest.Ident(t, "nopub")))
	require.ErrorIs(t, err, ErrPublicationMissing)

	// The slot disappears under a running Syncer: the peek fails with ErrSlotMissing.
	s2, err := NewSyncer(WithDB(pgxDB), ForTables("items"), WithMessageHandler(DefaultMessageHandler{}), WithReplicationSlot(pgtest.Ident(t, "slot")), WithPublication(pgtest.Ident(t, "pub")))
	require.NoError(t, err)
	defer s2.Close()
	require.NoError(t, s2.Setup(context.Background()))
	execAll(t, d.DB, `SELECT pg_drop_replication_slot('`+s2.ReplicationSlot()+`')`)
	_, err = s2.GetMessages(0, false, nil)
	require.ErrorIs(t, err, ErrSlotMissing)
	require.Equal(t, uint64(1), s2.pgconnPeeks.Load())
	require.ErrorIs(t, s2.Run(context.Background()), ErrSlotMissing)
}

// peekSyncer is a Syncer on db (d's database) for the table items (created with cols)
// with a slot and publication named after the test; it is set up, not running.
func peekSyncer(t *testing.T, d *pgtest.Database, db *sql.DB, cols string) *Syncer {
	t.Helper()
	execAll(t, d.DB, `CREATE TABLE items (`+cols+`)`)
	s, err := NewSyncer(WithDB(db), ForTables("items"), WithReplicationSlot(pgtest.Ident(t, "slot")), WithPublication(pgtest.Ident(t, "pub")))
	require.NoError(t, err)
	t.Cleanup(func() { s.Close() })
	return s
}

// collect returns a peekRowFunc appending to *into.
func collect(into *[]PGMSG) peekRowFunc {
	return func(m PGMSG) error { *into = append(*into, m); return nil }
}

// TestSplitPeekMatchesOnePeek reads a backlog as a split poll (the slot up to mid, a
// temporary copy from mid on) for mids at every kind of position — each COMMIT's end
// and start, one byte either side, each BEGIN, random LSNs — and requires exactly the
// rows of one peek: no transaction lost or repeated at the seam, non-transactional
// messages once, the relation described before its changes. The copies must be gone
// afterwards.
func TestSplitPeekMatchesOnePeek(t *testing.T) {
	for _, driver := range []string{"postgres", "pgx"} {
		t.Run(driver, func(t *testing.T) { testSplitPeekMatchesOnePeek(t, driver) })
	}
}

func testSplitPeekMatchesOnePeek(t *testing.T, driver string) {
	d := pgtest.NewDatabase(t)
	db, err := sql.Open(driver, d.DSN())
	require.NoError(t, err)
	t.Cleanup(func() { db.Close() })
	s := peekSyncer(t, d, db, "id int PRIMARY KEY, name text")
	ctx := context.Background()
	confirmed, err := s.ConfirmedFlushLSN(ctx)
	require.NoError(t, err)
	rng := rand.New(rand.NewPCG(5, 6))
	id := 0
	for tx := 0; tx < 40; tx++ {
		n := 1 + rng.IntN(30)
		execAll(t, d.DB, fmt.Sprintf(`INSERT INTO items SELECT g, repeat('x', g %% 300) FROM generate_series(%d, %d) g`, id+1, id+n))
		id += n
		switch tx % 10 {
		case 3:
			execAll(t, d.DB, `SELECT pg_logical_emit_message(false, 'split', 'non-transactional')`)
		case 6:
			execAll(t, d.DB, `BEGIN; UPDATE items SET name = 'u' WHERE id % 7 = 0; SELECT pg_logical_emit_message(true, 'split', 'in tx'); COMMIT`)
		case 8:
			execAll(t, d.DB, fmt.Sprintf(`ALTER TABLE items ADD COLUMN c%d int DEFAULT 1`, tx))
		}
	}
	execAll(t, d.DB, `DELETE FROM items WHERE id % 3 = 0`)
	upto, err := s.CurrentFlushLSN(ctx)
	require.NoError(t, err)

	var want []PGMSG
	require.NoError(t, s.readPeek(ctx, upto, 0, collect(&want)))
	require.Greater(t, len(want), 500)
	mids := map[pglogrepl.LSN]bool{confirmed + 1: true, upto - 1: true}
	for _, m := range want {
		switch m.Data[0] {
		case 'C':
			c, err := commitLSN(m.Data)
			require.NoError(t, err)
			for _, l := range []pglogrepl.LSN{m.LSN - 1, m.LSN, m.LSN + 1, c - 1, c, c + 1} {
				if rng.IntN(3) == 0 { // a third of them, to keep the test short
					mids[l] = true
				}
			}
		case 'B', 'M':
			if rng.IntN(3) == 0 {
				mids[m.LSN] = true
			}
		}
	}
	for i := 0; i < 10; i++ {
		mids[confirmed+pglogrepl.LSN(rng.Uint64N(uint64(upto-confirmed)))] = true
	}
	// Inside a WAL page header (24 bytes at each 8 KiB page start): a record starting
	// right after it starts after mid, but the record before ends before mid, so the
	// slot's call reads it too. That is where the seam's duplicates come from.
	for p := (confirmed + 8191) &^ 8191; p < upto; p += 8192 {
		mids[p+8] = true
	}
	// pgoutput describes each relation once per call, so the copy's call repeats a
	// RELATION row the slot's call already sent (as every poll's call does): the
	// streams must be equal without such repeats.
	wantOnce := dropRepeatedRelations(t, want)
	for mid := range mids {
		var got []PGMSG
		require.NoError(t, s.readPeekSplit(ctx, mid, upto, collect(&got)), "mid %s", mid)
		require.Greater(t, len(got), len(want)-1, "mid %s", mid)
		got = dropRepeatedRelations(t, got)
		require.Equal(t, len(wantOnce), len(got), "mid %s", mid)
		for i := range wantOnce {
			require.Equal(t, wantOnce[i], got[i], "mid %s, row %d", mid, i)
		}
	}
	require.Equal(t, uint64(len(mids)), s.splitPeeks.Load())
	var slots int
	require.NoError(t, d.DB.QueryRow(`SELECT count(*) FROM pg_replication_slots`).Scan(&slots))
	require.Equal(t, 1, slots, "the temporary copies are dropped")
}

// dropRepeatedRelations removes the RELATION rows that describe a relation exactly as
// the previous RELATION row of that relation did.
func dropRepeatedRelations(t *testing.T, msgs []PGMSG) []PGMSG {
	seen := map[uint32]string{}
	var out []PGMSG
	for _, m := range msgs {
		if m.Data[0] == 'R' {
			msg, err := Parse(m.Data)
			require.NoError(t, err)
			id := msg.(*pglogrepl.RelationMessage).RelationID
			if seen[id] == string(m.Data) {
				continue
			}
			seen[id] = string(m.Data)
		}
		out = append(out, m)
	}
	return out
}

// TestSplitPeekMidBehindSlot splits a poll at an LSN the slot has already passed (its
// position as the poller knew it was stale): the copy cannot be forwarded to mid, and
// the rows must still be those of one peek.
func TestSplitPeekMidBehindSlot(t *testing.T) {
	d := pgtest.NewDatabase(t)
	s := peekSyncer(t, d, d.DB, "id int PRIMARY KEY")
	ctx := context.Background()
	stale, err := s.ConfirmedFlushLSN(ctx)
	require.NoError(t, err)
	execAll(t, d.DB, `INSERT INTO items VALUES (1)`)
	execAll(t, d.DB, `SELECT pg_replication_slot_advance('`+s.ReplicationSlot()+`', pg_current_wal_flush_lsn())`)
	execAll(t, d.DB, `INSERT INTO items VALUES (2)`, `INSERT INTO items VALUES (3)`)
	upto, err := s.CurrentFlushLSN(ctx)
	require.NoError(t, err)
	var want, got []PGMSG
	require.NoError(t, s.readPeek(ctx, upto, 0, collect(&want)))
	require.Len(t, want, 7, "BEGIN RELATION INSERT COMMIT BEGIN INSERT COMMIT")
	require.NoError(t, s.readPeekSplit(ctx, stale+1, upto, collect(&got)))
	require.Equal(t, want, got)
}

// TestSplitPeekSeamInPageHeader splits a poll at an LSN inside a WAL page header whose
// page begins with a COMMIT record (or a non-transactional message): the record before
// it ends before mid, so the slot's call reads that record too, and the copy
// (forwarded to mid) also returns it. It must be delivered once. The test makes that
// layout by inserting rows of computed sizes until an INSERT's records end exactly at
// a page boundary, then commits (or emits the message first).
func TestSplitPeekSeamInPageHeader(t *testing.T) {
	for _, seam := range []string{"commit", "message"} {
		t.Run(seam, func(t *testing.T) { testSplitPeekSeamInPageHeader(t, seam == "message") })
	}
}

func testSplitPeekSeamInPageHeader(t *testing.T, message bool) {
	d := pgtest.NewDatabase(t)
	s := peekSyncer(t, d, d.DB, "id serial PRIMARY KEY, name text")
	ctx := context.Background()
	execAll(t, d.DB, `INSERT INTO items (name) VALUES ('before')`)

	const page = 8192
	conn, err := d.DB.Conn(ctx)
	require.NoError(t, err)
	defer conn.Close()
	insertLSN := func() pglogrepl.LSN {
		var l string
		require.NoError(t, conn.QueryRowContext(ctx, `SELECT pg_current_wal_insert_lsn()::text`).Scan(&l))
		lsn, err := pglogrepl.ParseLSN(l)
		require.NoError(t, err)
		return lsn
	}
	insert := func(n int) pglogrepl.LSN {
		_, err := conn.ExecContext(ctx, `INSERT INTO items (name) VALUES (repeat('x', $1))`, n)
		require.NoError(t, err)
		return insertLSN()
	}
	var boundary pglogrepl.LSN
	for attempt := 0; attempt < 20 && boundary == 0; attempt++ {
		_, err := conn.ExecContext(ctx, `BEGIN`)
		require.NoError(t, err)
		// Names of 200-1800 bytes: one varlena header size, never TOASTed, so an INSERT
		// record grows exactly with the name (in steps of 8 bytes, MAXALIGN).
		before := insertLSN()
		size := int(insert(200) - before) // one INSERT record with a 200-byte name
		for i := 0; i < 200 && boundary == 0; i++ {
			at := insertLSN()
			left := page - int(at%page)
			switch {
			case left >= size && left-size <= 1600:
				// pg_current_wal_insert_lsn() is where the next record goes: past the
				// next page's header (24 bytes) when the last one ended at the page end.
				if e := insert(200 + left - size); e%page == 24 {
					boundary = e - 24
				}
			case left > size:
				insert(1000) // move towards the boundary
			default:
				insert(200) // too close: cross into the next page
			}
		}
		if boundary != 0 {
			if message {
				_, err = conn.ExecContext(ctx, `SELECT pg_logical_emit_message(false, 'seam', 'after the page header')`)
				require.NoError(t, err)
			}
			_, err = conn.ExecContext(ctx, `COMMIT`)
		} else {
			_, err = conn.ExecContext(ctx, `ROLLBACK`)
		}
		require.NoError(t, err)
	}
	require.NotZero(t, boundary, "no INSERT record ended at a page boundary")
	execAll(t, d.DB, `INSERT INTO items (name) VALUES ('after')`)
	upto, err := s.CurrentFlushLSN(ctx)
	require.NoError(t, err)

	var want, got []PGMSG
	require.NoError(t, s.readPeek(ctx, upto, 0, collect(&want)))
	var commits []pglogrepl.LSN
	for _, m := range want {
		if m.Data[0] == 'C' {
			c, err := commitLSN(m.Data)
			require.NoError(t, err)
			commits = append(commits, c)
		}
	}
	require.Len(t, commits, 3)
	if message {
		var msgs []pglogrepl.LSN
		for _, m := range want {
			if m.Data[0] == 'M' {
				msgs = append(msgs, m.LSN)
			}
		}
		require.Len(t, msgs, 1)
		// A message row's LSN is its record's end.
		require.Greater(t, msgs[0], boundary+24, "the message starts after the page header")
		require.Less(t, msgs[0], boundary+256)
	} else {
		require.Greater(t, commits[1], boundary, "the COMMIT starts after the page header")
		require.Less(t, commits[1], boundary+64)
	}
	require.NoError(t, s.readPeekSplit(ctx, boundary+8, upto, collect(&got)))
	require.Equal(t, dropRepeatedRelations(t, want), dropRepeatedRelations(t, got))
}

// TestSplitPeekWithoutFreeSlot fills max_replication_slots: the copy cannot be made, so
// the poll is one peek of the slot, with the same rows.
func TestSplitPeekWithoutFreeSlot(t *testing.T) {
	d := pgtest.NewDatabase(t)
	s := peekSyncer(t, d, d.DB, "id int PRIMARY KEY")
	ctx := context.Background()
	execAll(t, d.DB, `INSERT INTO items SELECT generate_series(1, 100)`, `INSERT INTO items VALUES (101)`)
	upto, err := s.CurrentFlushLSN(ctx)
	require.NoError(t, err)
	var want, got []PGMSG
	require.NoError(t, s.readPeek(ctx, upto, 0, collect(&want)))
	require.Len(t, want, 1+1+100+1+1+1+1)

	var free int
	require.NoError(t, d.DB.QueryRow(`SELECT current_setting('max_replication_slots')::int - count(*) FROM pg_replication_slots`).Scan(&free))
	for i := 0; i < free; i++ {
		name := fmt.Sprintf("%s_filler_%d", pgtest.Ident(t, "slot"), i)
		execAll(t, d.DB, `SELECT pg_create_physical_replication_slot('`+name+`')`)
		t.Cleanup(func() { d.DB.Exec(`SELECT pg_drop_replication_slot($1)`, name) })
	}
	confirmed, err := s.ConfirmedFlushLSN(ctx)
	require.NoError(t, err)
	require.NoError(t, s.readPeekSplit(ctx, confirmed+(upto-confirmed)/2, upto, collect(&got)))
	require.Equal(t, want, got)
	require.Zero(t, s.splitPeeks.Load(), "no copy could be made")
}

// TestPeekUptoIncludesCommitEndingThere pins the fact the lost-watermark check
// (windowTracker.polledThrough) relies on: a peek with upto_lsn at the end of a
// transaction's commit record returns that transaction (logicalfuncs.c decodes each
// record, then stops once a record's end reaches upto_lsn), while a peek that stops
// before the commit record is decoded (upto_lsn at the start of the INSERT's record)
// returns nothing of it.
func TestPeekUptoIncludesCommitEndingThere(t *testing.T) {
	d := pgtest.NewDatabase(t)
	slot := pgtest.Ident(t, "slot")
	execAll(t, d.DB, `CREATE TABLE items (id int PRIMARY KEY)`, `CREATE PUBLICATION `+pq.QuoteIdentifier(slot)+` FOR TABLE items`,
		`SELECT pg_create_logical_replication_slot(`+pq.QuoteLiteral(slot)+`, 'pgoutput')`,
		`INSERT INTO items VALUES (1)`)
	peek := func(upto pglogrepl.LSN) (lsns []pglogrepl.LSN, kinds string) {
		for _, row := range queryStrings(t, d.DB, `SELECT lsn::text || ' ' || chr(get_byte(data, 0)) FROM pg_logical_slot_peek_binary_changes($1, $2::pg_lsn, NULL,
			'proto_version', '1', 'publication_names', $3)`, slot, upto.String(), pq.QuoteIdentifier(slot)) {
			f := strings.Fields(row)
			lsn, err := pglogrepl.ParseLSN(f[0])
			require.NoError(t, err)
			lsns, kinds = append(lsns, lsn), kinds+f[1]
		}
		return lsns, kinds
	}
	flush, err := pglogrepl.ParseLSN(flushLSN(t, d.DB))
	require.NoError(t, err)
	lsns, kinds := peek(flush)
	require.Equal(t, "BRIC", kinds)
	insertStart, commitEnd := lsns[2], lsns[3] // a change row's lsn is its record's start, COMMIT's the commit record's end
	_, got := peek(commitEnd)
	require.Equal(t, "BRIC", got, "upto_lsn at the commit record's end returns the transaction")
	_, got = peek(insertStart)
	require.Equal(t, "", got, "a peek that stops before the commit record returns nothing of the transaction")
}

// TestCancelledPeekReleasesSlot: a peek of a large backlog whose context ends stops on
// the server at once and releases the slot, through either driver, so a Syncer
// stopped mid-peek can be started again without ErrSlotInUse. Both drivers send
// PostgreSQL's cancel request: lib/pq when the context ends, pgx (v5.12) when it
// closes the connection its cancelled context broke (pgconn's asyncClose). Were the
// server left decoding, it would hold the slot for seconds.
func TestCancelledPeekReleasesSlot(t *testing.T) {
	d := pgtest.NewDatabase(t)
	execAll(t, d.DB, `CREATE TABLE big (id int, pad text)`)
	pgxDB, err := sql.Open("pgx", d.DSN())
	require.NoError(t, err)
	t.Cleanup(func() { pgxDB.Close() })
	drivers := map[string]*sql.DB{"lib/pq": d.DB, "pgx": pgxDB}
	syncers := map[string]*Syncer{}
	for name, db := range drivers {
		s, err := NewSyncer(WithDB(db), ForTables("big"), WithReplicationSlot(pgtest.Ident(t, "slot_"+strings.ReplaceAll(name, "/", ""))),
			WithPublication(pgtest.Ident(t, "pub")))
		require.NoError(t, err)
		t.Cleanup(func() { s.Close() })
		syncers[name] = s
	}
	// One transaction of 1,000,000 rows: decoding it takes the server seconds. How
	// long exactly is measured (a whole peek, rows counted on the server), so the
	// bound below follows the machine's load: a server that went on decoding after
	// the cancel would hold the slot for most of that time, one that stopped for a
	// cancel request's round trip.
	execAll(t, d.DB, `INSERT INTO big SELECT g, repeat('x', 50) FROM generate_series(1, 1000000) g`)
	start := time.Now()
	require.Equal(t, []string{"1000003"}, queryStrings(t, d.DB, `SELECT count(*) FROM pg_logical_slot_peek_binary_changes($1, NULL, NULL,
		'proto_version', '1', 'publication_names', $2)`, syncers["lib/pq"].ReplicationSlot(), pgtest.Ident(t, "pub")))
	decode := time.Since(start)
	for _, name := range []string{"lib/pq", "pgx"} {
		t.Run(name, func(t *testing.T) {
			s := syncers[name]
			ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
			defer cancel()
			_, err := s.GetMessagesContext(ctx, 0, false, nil)
			require.Error(t, err)
			require.ErrorIs(t, ctx.Err(), context.DeadlineExceeded, "the peek ended before its context: %v", err)
			ended := time.Now()
			waitFor(t, 10*time.Second, func() bool {
				var active bool
				require.NoError(t, d.DB.QueryRow(`SELECT active FROM pg_replication_slots WHERE slot_name = $1`, s.ReplicationSlot()).Scan(&active))
				return !active
			}, "slot released")
			require.Less(t, time.Since(ended), decode/2, "the server went on decoding after the peek was cancelled (a whole peek took %v)", decode)
		})
	}
}
