package dbsync

import (
	"context"
	"database/sql"
	"errors"
	"strings"
	"testing"

	"github.com/dbsync/dbsync/internal/pgtest"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/lib/pq"
	"github.com/stretchr/testify/require"
)

// TestPeekTransportsAgree reads one slot through lib/pq (rows through database/sql,
// lsn and xid parsed from text) and through pgx's stdlib driver (rows read in binary
// form on pgx's own connection): every row must come out identical, for every
// message kind, a non-transactional logical message (xid 0), a row larger than a
// data slab's share, and pgoutput's text and binary value formats.
func TestPeekTransportsAgree(t *testing.T) {
	d := pgtest.NewDatabase(t)
	execAll(t, d.DB, `CREATE TABLE items (id int PRIMARY KEY, name text, doc jsonb, n numeric, at timestamptz)`)
	pgxDB, err := sql.Open("pgx", d.DSN())
	require.NoError(t, err)
	t.Cleanup(func() { pgxDB.Close() })
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
		require.Zero(t, viaPQ.pgconnPeeks.Load())
		require.Equal(t, uint64(1), viaPgx.pgconnPeeks.Load(), "pgx's connection must be read natively")

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
		for i := range fromPQ {
			require.Equal(t, fromPQ[i], fromPgx[i], "row %d", i)
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
