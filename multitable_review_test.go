package dbsync

import (
	"context"
	"fmt"
	"github.com/jackc/pglogrepl"
	"strings"
	"testing"
	"time"

	"github.com/dbsync/dbsync/internal/pgtest"
	"github.com/lib/pq"
	"github.com/stretchr/testify/require"
)

// TestTruncateOfControlTableNotDelivered: dbsync's own tables (the watermark table,
// which setup adds to the publication, and snapshot_progress under FOR ALL TABLES)
// are not delivered as changes: the handler never gets their RELATION messages, nor
// their rows. A TRUNCATE naming one of them together with user tables must reach
// the handler with the user tables only (and msg.RelationIDs naming only those); one
// naming only control tables must not reach it at all, as for the Batcher.
func TestTruncateOfControlTableNotDelivered(t *testing.T) {
	d := pgtest.NewDatabase(t)
	execAll(t, d.DB,
		`CREATE TABLE ta (id int PRIMARY KEY)`,
		`CREATE TABLE tb (id int PRIMARY KEY)`,
		`INSERT INTO ta VALUES (1)`, `INSERT INTO tb VALUES (1)`)
	rec := &recorder{}
	ids := &truncateIDs{recorder: rec}
	s := newTestSyncer(t, d, ForTables("ta", "tb"), WithMessageHandler(ids))
	wm := pq.QuoteIdentifier(s.CtrlNamespace()) + "." + pq.QuoteIdentifier(s.WMTable())
	execAll(t, d.DB,
		`TRUNCATE ta, `+wm+`, tb`,
		`TRUNCATE `+wm,
		`INSERT INTO ta VALUES (2)`)
	r := runInBackground(s)
	want := []string{
		"BEGIN", "TRUNCATE public.ta,public.tb cascade=false restart=false", "COMMIT",
		"BEGIN", "COMMIT",
		"BEGIN", "INSERT public.ta id=2", "COMMIT",
	}
	r.waitFor(t, 30*time.Second, func() bool { return len(rec.snapshot()) >= len(want) }, "%d lines, have %v", len(want), rec)
	catchUp(t, s)
	require.NoError(t, r.stop(t))
	require.Equal(t, want, rec.snapshot())
	var ta, tb uint32
	require.NoError(t, d.DB.QueryRow(`SELECT 'ta'::regclass::oid, 'tb'::regclass::oid`).Scan(&ta, &tb))
	require.Equal(t, [][]uint32{{ta, tb}}, ids.get(), "msg.RelationIDs and RelationNum of each TRUNCATE delivered")
}

// truncateIDs records each delivered TRUNCATE's msg.RelationIDs (checked against
// RelationNum and the relations passed) and hands everything to a recorder.
type truncateIDs struct {
	*recorder
	ids [][]uint32
}

func (h *truncateIDs) HandleTruncateMessage(idx int, m *pglogrepl.TruncateMessage, relns []*pglogrepl.RelationMessage, infos []*PGTableInfo) error {
	if int(m.RelationNum) != len(m.RelationIDs) || len(relns) != len(m.RelationIDs) || len(infos) != len(relns) {
		return fmt.Errorf("TRUNCATE with RelationNum %d, %d relation IDs, %d relations, %d infos", m.RelationNum, len(m.RelationIDs), len(relns), len(infos))
	}
	for i, r := range relns {
		if r.RelationID != m.RelationIDs[i] || infos[i].RelationID != r.RelationID {
			return fmt.Errorf("TRUNCATE relation %d: ID %d, relation %d, info %d", i, m.RelationIDs[i], r.RelationID, infos[i].RelationID)
		}
	}
	h.recorder.mu.Lock()
	h.ids = append(h.ids, append([]uint32(nil), m.RelationIDs...))
	h.recorder.mu.Unlock()
	return h.recorder.HandleTruncateMessage(idx, m, relns, infos)
}

func (h *truncateIDs) get() [][]uint32 {
	h.recorder.mu.Lock()
	defer h.recorder.mu.Unlock()
	return append([][]uint32(nil), h.ids...)
}

// refreshRecorder is a recorder that also records refresh rows with their table's
// name and the columns their description has.
type refreshRecorder struct{ *recorder }

func (h refreshRecorder) HandleRefresh(key string, item DBItem) error {
	cols := make([]string, len(item.Table.Columns))
	for i, c := range item.Table.Columns {
		cols[i] = c.ColumnName
	}
	reln := item.Table.Relation()
	return h.add("REFRESH %s (relation %s.%s) %s cols=%v %v", item.Table.QualifiedName(), reln.Namespace, reln.RelationName, key, cols, item.Values)
}

// TestRefreshTableRenamedInWindow: a Refresh reads its rows; before its high
// watermark, ALTER TABLE t RENAME TO t2 (or SET SCHEMA) commits and another row is
// updated, so the stream names the table by its new name before the refresh rows.
// Those rows belong to the same relation, with the same columns: their Table must
// name it as the stream last did (the name SELECT reads it by now), not as it was
// called when the rows were read, which would hand a Batcher a doctype the table no
// longer has and move handlers.Cache's table back to its old name.
func TestRefreshTableRenamedInWindow(t *testing.T) {
	for _, c := range []struct{ ddl, now string }{
		{`ALTER TABLE t RENAME TO t2`, "public.t2"},
		{`ALTER TABLE t SET SCHEMA other`, "other.t"},
	} {
		t.Run(c.now, func(t *testing.T) {
			d := pgtest.NewDatabase(t)
			execAll(t, d.DB, `CREATE SCHEMA other`, `CREATE TABLE t (id int PRIMARY KEY, v text)`, `INSERT INTO t VALUES (1, 'a'), (2, 'b')`)
			rec := &recorder{}
			s := newTestSyncer(t, d, ForTables("t"), WithMessageHandler(refreshRecorder{rec}))
			r := runInBackground(s)
			s.win.afterSelect = func() {
				execAll(t, d.DB, c.ddl, `UPDATE `+c.now+` SET v = 'b2' WHERE id = 2`)
			}
			st, err := s.RefreshContext(context.Background(), `SELECT * FROM t`)
			require.NoError(t, err)
			require.Equal(t, 1, st.Emitted)
			catchUp(t, s)
			require.NoError(t, r.stop(t))
			require.Equal(t, []string{
				"BEGIN", "COMMIT", // low watermark
				"BEGIN", "UPDATE " + c.now + " id=2,v=b2 old:-", "COMMIT",
				"BEGIN", "REFRESH " + c.now + " (relation " + c.now + ") [\"1\"] cols=[id v] map[id:1 v:a]", "COMMIT", // high watermark
				"BEGIN", "COMMIT", // the watermark rows deleted
			}, rec.snapshot())
		})
	}
}

// TestRefreshTableReplacedInWindow: a Refresh of t reads its rows; before its high
// watermark another table takes the name t (DROP TABLE t and CREATE TABLE t, or a
// swap: RENAME t TO t_old, t_new TO t) and is written, so the stream names that other
// relation public.t before the refresh rows. The rows are the old relation's: handed
// over as public.t they mixed its rows into the new table's (a Batcher's doctype
// public.t, handlers.Cache moved the name back to the old relation). The selection
// runs again instead, and fails as any selection finding its table replaced does.
func TestRefreshTableReplacedInWindow(t *testing.T) {
	for _, c := range []struct{ name, ddl, err string }{
		{"recreated", `DROP TABLE t; CREATE TABLE t (id int PRIMARY KEY, w text); ALTER PUBLICATION %PUB% ADD TABLE t`,
			`public.t was dropped and created again since the snapshot or refresh described it`},
		{"swapped", `ALTER TABLE t RENAME TO t_old; ALTER TABLE t_new RENAME TO t`,
			`public.t was dropped and created again since the snapshot or refresh described it`},
	} {
		t.Run(c.name, func(t *testing.T) {
			d := pgtest.NewDatabase(t)
			execAll(t, d.DB, `CREATE TABLE t (id int PRIMARY KEY, v text)`, `INSERT INTO t VALUES (1, 'old1'), (2, 'old2')`,
				`CREATE TABLE t_new (id int PRIMARY KEY, w text)`)
			rec := &recorder{}
			s := newTestSyncer(t, d, ForTables("t", "t_new"), WithMessageHandler(refreshRecorder{rec}))
			r := runInBackground(s)
			s.win.afterSelect = func() {
				s.win.afterSelect = nil
				execAll(t, d.DB, strings.ReplaceAll(c.ddl, "%PUB%", s.Publication()), `INSERT INTO t VALUES (10, 'new10')`)
			}
			_, err := s.RefreshContext(context.Background(), `SELECT * FROM t WHERE id < 10`)
			require.ErrorIs(t, err, ErrRefreshAbandoned)
			require.ErrorContains(t, err, c.err)
			catchUp(t, s)
			require.NoError(t, r.stop(t))
			for _, l := range rec.snapshot() {
				require.NotContains(t, l, "REFRESH", "no row of the replaced table is handed over")
			}
			require.Contains(t, rec.snapshot(), "INSERT public.t id=10,w=new10")
		})
	}
}
