package handlers

import (
	"context"
	"fmt"
	"sync"
	"testing"

	"github.com/dbsync/dbsync"
	"github.com/dbsync/dbsync/internal/pgtest"
	"github.com/jackc/pglogrepl"
	"github.com/stretchr/testify/require"
)

// recordingCache is a Cache that also records every change as DecodeChange gives it.
type recordingCache struct {
	*Cache
	mu      sync.Mutex
	changes []*dbsync.Change
}

func (r *recordingCache) record(m pglogrepl.Message, reln *pglogrepl.RelationMessage, info *dbsync.PGTableInfo) error {
	ch, err := dbsync.DecodeChange(m, reln, info)
	if err != nil {
		return err
	}
	r.mu.Lock()
	r.changes = append(r.changes, ch)
	r.mu.Unlock()
	return nil
}

func (r *recordingCache) HandleInsertMessage(x int, m *pglogrepl.InsertMessage, reln *pglogrepl.RelationMessage, info *dbsync.PGTableInfo) error {
	if err := r.record(m, reln, info); err != nil {
		return err
	}
	return r.Cache.HandleInsertMessage(x, m, reln, info)
}

func (r *recordingCache) HandleUpdateMessage(x int, m *pglogrepl.UpdateMessage, reln *pglogrepl.RelationMessage, info *dbsync.PGTableInfo) error {
	if err := r.record(m, reln, info); err != nil {
		return err
	}
	return r.Cache.HandleUpdateMessage(x, m, reln, info)
}

func (r *recordingCache) HandleDeleteMessage(x int, m *pglogrepl.DeleteMessage, reln *pglogrepl.RelationMessage, info *dbsync.PGTableInfo) error {
	if err := r.record(m, reln, info); err != nil {
		return err
	}
	return r.Cache.HandleDeleteMessage(x, m, reln, info)
}

func (r *recordingCache) recorded() []*dbsync.Change {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]*dbsync.Change(nil), r.changes...)
}

// TestCacheReplicaIdentitySwitchPostgres: REPLICA IDENTITY FULL and back to DEFAULT
// while a Syncer runs ("live": each step delivered before the next) or with every
// step waiting in the slot ("backlog"), with UPDATEs that leave a TOASTed column
// (STORAGE EXTERNAL) unchanged and key-changing UPDATEs under each identity. Under
// DEFAULT the column is listed in Unchanged, under FULL filled from the old row
// (Filled); the Cache keeps or takes the value and never holds a NULL for it, and
// after a Snapshot it equals the table.
func TestCacheReplicaIdentitySwitchPostgres(t *testing.T) {
	for _, live := range []bool{true, false} {
		t.Run(map[bool]string{true: "live", false: "backlog"}[live], func(t *testing.T) {
			d := pgtest.NewDatabase(t)
			_, err := d.DB.Exec(`CREATE TABLE rf (id int PRIMARY KEY, big text, n int);
				ALTER TABLE rf ALTER COLUMN big SET STORAGE EXTERNAL`)
			require.NoError(t, err)
			r := &recordingCache{Cache: NewCache()}
			s := newTestSyncer(t, d, r, "rf")
			slot := pgtest.Ident(t, "slot")
			var runErr <-chan error
			var cancel context.CancelFunc = func() {}
			defer func() { cancel() }()
			if live {
				runErr, cancel = runInBackground(s)
			}
			b1, b2, b5 := bigBody+"-B1", bigBody+"-B2", bigBody+"-B5"
			for _, q := range []string{
				fmt.Sprintf(`INSERT INTO rf VALUES (1, '%s', 0), (2, '%s', 0), (5, '%s', 0)`, b1, b2, b5),
				`UPDATE rf SET n = 1 WHERE id = 1`, // DEFAULT: big unchanged
				`ALTER TABLE rf REPLICA IDENTITY FULL`,
				`UPDATE rf SET n = 2 WHERE id = 1`,  // FULL: filled from the old row
				`UPDATE rf SET id = 3 WHERE id = 2`, // FULL, key change
				`DELETE FROM rf WHERE id = 5`,       // FULL: the whole old row
				`ALTER TABLE rf REPLICA IDENTITY DEFAULT`,
				`UPDATE rf SET n = 3 WHERE id = 1`,  // DEFAULT again
				`UPDATE rf SET id = 4 WHERE id = 3`, // DEFAULT, key change
				`DELETE FROM rf WHERE id = 1`,
			} {
				_, err := d.DB.Exec(q)
				require.NoError(t, err, q)
				if live {
					waitCaughtUp(t, d, slot, runErr)
				}
			}
			if !live {
				runErr, cancel = runInBackground(s)
			}
			waitCaughtUp(t, d, slot, runErr)

			type got struct {
				Op                dbsync.Op
				Key, OldKey       string
				New, Old          dbsync.StringMap
				Unchanged, Filled []string
				ReplicaIdent      byte
				PrimaryKey        []string
			}
			var gots []got
			for _, c := range r.recorded() {
				gots = append(gots, got{c.Op, c.Key, c.OldKey, c.New, c.Old, c.Unchanged, c.Filled, c.Table.ReplicaIdentity, c.Table.PrimaryKey})
			}
			id := []string{"id"}
			require.Equal(t, []got{
				{dbsync.OpInsert, `["1"]`, "", dbsync.StringMap{"id": int32(1), "big": b1, "n": int32(0)}, nil, nil, nil, 'd', id},
				{dbsync.OpInsert, `["2"]`, "", dbsync.StringMap{"id": int32(2), "big": b2, "n": int32(0)}, nil, nil, nil, 'd', id},
				{dbsync.OpInsert, `["5"]`, "", dbsync.StringMap{"id": int32(5), "big": b5, "n": int32(0)}, nil, nil, nil, 'd', id},
				{dbsync.OpUpdate, `["1"]`, "", dbsync.StringMap{"id": int32(1), "n": int32(1)}, nil, []string{"big"}, nil, 'd', id},
				{dbsync.OpUpdate, `["1"]`, "", dbsync.StringMap{"id": int32(1), "big": b1, "n": int32(2)},
					dbsync.StringMap{"id": int32(1), "big": b1, "n": int32(1)}, nil, []string{"big"}, 'f', id},
				{dbsync.OpUpdate, `["3"]`, `["2"]`, dbsync.StringMap{"id": int32(3), "big": b2, "n": int32(0)},
					dbsync.StringMap{"id": int32(2), "big": b2, "n": int32(0)}, nil, []string{"big"}, 'f', id},
				{dbsync.OpDelete, `["5"]`, "", nil, dbsync.StringMap{"id": int32(5), "big": b5, "n": int32(0)}, nil, nil, 'f', id},
				{dbsync.OpUpdate, `["1"]`, "", dbsync.StringMap{"id": int32(1), "n": int32(3)}, nil, []string{"big"}, nil, 'd', id},
				{dbsync.OpUpdate, `["4"]`, `["3"]`, dbsync.StringMap{"id": int32(4), "n": int32(0)},
					dbsync.StringMap{"id": int32(3)}, []string{"big"}, nil, 'd', id},
				{dbsync.OpDelete, `["1"]`, "", nil, dbsync.StringMap{"id": int32(1)}, nil, nil, 'd', id},
			}, gots)

			want := map[string]map[string]dbsync.StringMap{"public.rf": {`["4"]`: {"id": int32(4), "big": b2, "n": int32(0)}}}
			require.Equal(t, want, r.Snapshot())
			st := r.Stats()
			require.Equal(t, int64(3), st.KeptUnchanged, "the three DEFAULT updates kept big from the cached row")
			require.Equal(t, int64(0), st.UnknownUnchanged)
			require.Equal(t, int64(2), st.KeyChanges)

			require.NoError(t, s.Snapshot(context.Background(), "rf"))
			waitCaughtUp(t, d, slot, runErr)
			require.Equal(t, want, r.Snapshot(), "after a Snapshot the Cache equals SELECT * FROM rf")
			cancel()
			require.NoError(t, <-runErr)
		})
	}
}

// TestCacheTableRecreatedPostgres: DROP TABLE t; CREATE TABLE t with other columns
// (and a text key); ALTER PUBLICATION ... ADD TABLE t, with changes of the old t
// before (a DELETE in the DROP's transaction) and of the new t after, live or waiting
// in the slot. The old
// table's changes carry the old relation OID and columns, the new one's the new;
// the Cache never mixes the two tables' rows under public.t, and a Snapshot of the
// new t leaves it equal to the table.
func TestCacheTableRecreatedPostgres(t *testing.T) {
	for _, live := range []bool{true, false} {
		t.Run(map[bool]string{true: "live", false: "backlog"}[live], func(t *testing.T) {
			d := pgtest.NewDatabase(t)
			_, err := d.DB.Exec(`CREATE TABLE t (id int PRIMARY KEY, v text)`)
			require.NoError(t, err)
			var oldOID uint32
			require.NoError(t, d.DB.QueryRow(`SELECT 't'::regclass::oid`).Scan(&oldOID))
			r := &recordingCache{Cache: NewCache()}
			s := newTestSyncer(t, d, r, "t")
			slot, pub := pgtest.Ident(t, "slot"), pgtest.Ident(t, "pub")
			var runErr <-chan error
			var cancel context.CancelFunc = func() {}
			defer func() { cancel() }()
			if live {
				runErr, cancel = runInBackground(s)
			}
			for _, q := range []string{
				`INSERT INTO t VALUES (1, 'old1'), (2, 'old2'), (3, 'old3')`,
				`UPDATE t SET v = 'old2b' WHERE id = 2`,
				`BEGIN; DELETE FROM t WHERE id = 3; DROP TABLE t; CREATE TABLE t (code text PRIMARY KEY, w bigint, id int); COMMIT`,
				`INSERT INTO t VALUES ('1', 10, 1)`, // before ADD TABLE: not published
				`ALTER PUBLICATION ` + pub + ` ADD TABLE t`,
				`INSERT INTO t VALUES ('2', 20, 2), ('x', 30, 3)`,
				`UPDATE t SET w = 21 WHERE code = '2'`,
				`DELETE FROM t WHERE code = 'x'`,
			} {
				_, err := d.DB.Exec(q)
				require.NoError(t, err, q)
				if live {
					waitCaughtUp(t, d, slot, runErr)
				}
			}
			if !live {
				runErr, cancel = runInBackground(s)
			}
			waitCaughtUp(t, d, slot, runErr)
			var newOID uint32
			require.NoError(t, d.DB.QueryRow(`SELECT 't'::regclass::oid`).Scan(&newOID))

			var lines []string
			for _, c := range r.recorded() {
				var cols []string
				for _, col := range c.Table.Columns {
					cols = append(cols, col.ColumnName+":"+col.TypeName)
				}
				oid := map[uint32]string{oldOID: "old", newOID: "new"}[c.Table.RelationID]
				lines = append(lines, fmt.Sprintf("%s %s %s %s %v key=%v %v %v", c.Op, oid, c.Table.QualifiedName(), c.Key, cols, c.Table.PrimaryKey, c.New, c.Old))
			}
			require.Equal(t, []string{
				`insert old public.t ["1"] [id:integer v:text] key=[id] map[id:1 v:old1] map[]`,
				`insert old public.t ["2"] [id:integer v:text] key=[id] map[id:2 v:old2] map[]`,
				`insert old public.t ["3"] [id:integer v:text] key=[id] map[id:3 v:old3] map[]`,
				`update old public.t ["2"] [id:integer v:text] key=[id] map[id:2 v:old2b] map[]`,
				`delete old public.t ["3"] [id:integer v:text] key=[id] map[] map[id:3]`,
				`insert new public.t ["2"] [code:text w:bigint id:integer] key=[code] map[code:2 id:2 w:20] map[]`,
				`insert new public.t ["x"] [code:text w:bigint id:integer] key=[code] map[code:x id:3 w:30] map[]`,
				`update new public.t ["2"] [code:text w:bigint id:integer] key=[code] map[code:2 id:2 w:21] map[]`,
				`delete new public.t ["x"] [code:text w:bigint id:integer] key=[code] map[] map[code:x]`,
			}, lines)
			// The new table's rows only: the old table's rows 1 and 2 (under the same
			// record IDs ["1"], ["2"]) are out of sight, not mixed in.
			require.Equal(t, map[string]map[string]dbsync.StringMap{"public.t": {
				`["2"]`: {"code": "2", "w": int64(21), "id": int32(2)},
			}}, r.Snapshot())
			require.Equal(t, newOID, r.TableInfo("public.t").RelationID)

			require.NoError(t, s.Snapshot(context.Background(), "t"))
			waitCaughtUp(t, d, slot, runErr)
			require.Equal(t, map[string]map[string]dbsync.StringMap{"public.t": {
				`["1"]`: {"code": "1", "w": int64(10), "id": int32(1)},
				`["2"]`: {"code": "2", "w": int64(21), "id": int32(2)},
			}}, r.Snapshot(), "after a Snapshot the Cache equals SELECT * FROM t")
			cancel()
			require.NoError(t, <-runErr)
		})
	}
}
