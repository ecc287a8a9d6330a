package handlers

import (
	"fmt"
	"sort"
	"strings"
	"testing"

	"github.com/dbsync/dbsync"

	"github.com/dbsync/dbsync/internal/pgtest"
	"github.com/stretchr/testify/require"
)

// TestUnchangedTOASTScenariosPostgres: what a consumer receives for unchanged
// TOASTed values under REPLICA IDENTITY USING INDEX, DEFAULT (with a TOASTed text key),
// FULL and NOTHING; EXTERNAL against compressed storage; SET col = col; a row updated
// twice in one transaction. Unchanged lists exactly the columns not sent, Filled those
// taken from the old row or key, and the Cache ends equal to the tables.
func TestUnchangedTOASTScenariosPostgres(t *testing.T) {
	d := pgtest.NewDatabase(t)
	_, err := d.DB.Exec(`
		CREATE TABLE ui (id int PRIMARY KEY, u int NOT NULL, big text, n int);
		CREATE UNIQUE INDEX ui_u ON ui (u);
		ALTER TABLE ui REPLICA IDENTITY USING INDEX ui_u;
		ALTER TABLE ui ALTER COLUMN big SET STORAGE EXTERNAL;
		CREATE TABLE tk (k text PRIMARY KEY, big text, n int);
		ALTER TABLE tk ALTER COLUMN big SET STORAGE EXTERNAL;
		CREATE TABLE st (id int PRIMARY KEY, ext text, cmp text, inl text, n int);
		ALTER TABLE st ALTER COLUMN ext SET STORAGE EXTERNAL;
		CREATE TABLE tw (id int PRIMARY KEY, big text, n int);
		ALTER TABLE tw ALTER COLUMN big SET STORAGE EXTERNAL;
		CREATE TABLE twf (id int PRIMARY KEY, big text, n int);
		ALTER TABLE twf ALTER COLUMN big SET STORAGE EXTERNAL;
		ALTER TABLE twf REPLICA IDENTITY FULL;
		CREATE TABLE nt (id int PRIMARY KEY, big text, n int);
		ALTER TABLE nt REPLICA IDENTITY NOTHING;`)
	require.NoError(t, err)
	r := &recordingCache{Cache: NewCache()}
	s := newTestSyncer(t, d, r, "ui", "tk", "st", "tw", "twf", "nt")
	slot := pgtest.Ident(t, "slot")
	runErr, cancel := runInBackground(s)
	defer cancel()
	k1 := `(SELECT string_agg(md5(i::text), '' ORDER BY i) FROM generate_series(1, 75) i)`
	k2 := `(SELECT string_agg(md5((i+1000)::text), '' ORDER BY i) FROM generate_series(1, 75) i)`
	for _, q := range []string{
		fmt.Sprintf(`INSERT INTO ui VALUES (1, 10, '%s', 0)`, bigBody),
		`UPDATE ui SET n = 1`,
		`UPDATE ui SET u = 11`,
		`UPDATE ui SET id = 2`,
		`DELETE FROM ui`,
		fmt.Sprintf(`INSERT INTO tk VALUES (%s, '%s', 0)`, k1, bigBody),
		`UPDATE tk SET n = 1`,
		`UPDATE tk SET k = ` + k2,
		`DELETE FROM tk`,
		`INSERT INTO st VALUES (1, repeat('x', 100000), repeat('y', 100000), repeat('z', 1000), 0)`,
		`INSERT INTO st VALUES (2, repeat('x', 3000), (SELECT string_agg(md5(i::text), '') FROM generate_series(1, 200) i) || repeat('q', 100000), 'a', 0)`,
		`UPDATE st SET n = 1`,
		fmt.Sprintf(`INSERT INTO tw VALUES (1, '%s', 0)`, bigBody),
		`UPDATE tw SET big = big`,
		fmt.Sprintf(`UPDATE tw SET big = '%s'`, bigBody),
		`BEGIN; UPDATE tw SET big = big || 'X'; UPDATE tw SET n = 5; COMMIT`,
		`BEGIN; UPDATE tw SET n = 6; UPDATE tw SET big = big || 'Y'; UPDATE tw SET n = 7; COMMIT`,
		fmt.Sprintf(`INSERT INTO twf VALUES (1, '%s', 0)`, bigBody),
		`BEGIN; UPDATE twf SET big = big || 'X'; UPDATE twf SET n = 5; COMMIT`,
		`BEGIN; INSERT INTO twf VALUES (2, repeat('w', 10000), 0); UPDATE twf SET n = 9 WHERE id = 2; UPDATE twf SET id = 3 WHERE id = 2; COMMIT`,
		fmt.Sprintf(`INSERT INTO nt VALUES (1, '%s', 0)`, bigBody),
	} {
		_, err := d.DB.Exec(q)
		require.NoError(t, err, q)
	}
	_, err = d.DB.Exec(`UPDATE nt SET n = 1`)
	require.ErrorContains(t, err, `cannot update table "nt" because it does not have a replica identity and publishes updates`)
	_, err = d.DB.Exec(`DELETE FROM nt`)
	require.ErrorContains(t, err, `cannot delete from table "nt" because it does not have a replica identity and publishes deletes`)
	var cmp2 string
	require.NoError(t, d.DB.QueryRow(`SELECT cmp FROM st WHERE id = 2`).Scan(&cmp2))
	waitCaughtUp(t, d, slot, runErr)
	var key1, key2 string
	require.NoError(t, d.DB.QueryRow(`SELECT `+k1+`, `+k2).Scan(&key1, &key2))
	var got []string
	for _, c := range r.recorded() {
		cols := func(m map[string]any) []string {
			var out []string
			for k := range m {
				out = append(out, k)
			}
			sort.Strings(out)
			return out
		}
		line := fmt.Sprintf("%s %s %s<-%s new%v old%v unchanged%v filled%v", c.Op, c.Table.TableName, c.Key, c.OldKey, cols(c.New), cols(c.Old), c.Unchanged, c.Filled)
		got = append(got, strings.NewReplacer(key1, "K1", key2, "K2").Replace(line))
	}
	require.Equal(t, []string{
		// USING INDEX (u): keyed by u; big unchanged, never NULL; the old key only when u changes.
		`insert ui ["10"]<- new[big id n u] old[] unchanged[] filled[]`,
		`update ui ["10"]<- new[id n u] old[] unchanged[big] filled[]`,
		`update ui ["11"]<-["10"] new[id n u] old[u] unchanged[big] filled[]`,
		`update ui ["11"]<- new[id n u] old[] unchanged[big] filled[]`,
		`delete ui ["11"]<- new[] old[u] unchanged[] filled[]`,
		// A TOASTed text key: filled from the old key when unchanged, sent when changed.
		`insert tk ["K1"]<- new[big k n] old[] unchanged[] filled[]`,
		`update tk ["K1"]<- new[k n] old[k] unchanged[big] filled[k]`,
		`update tk ["K2"]<-["K1"] new[k n] old[k] unchanged[big] filled[]`,
		`delete tk ["K2"]<- new[] old[k] unchanged[] filled[]`,
		// Out of line (EXTERNAL, or compressed above the threshold) is 'u'; compressed inline is sent.
		`insert st ["1"]<- new[cmp ext id inl n] old[] unchanged[] filled[]`,
		`insert st ["2"]<- new[cmp ext id inl n] old[] unchanged[] filled[]`,
		`update st ["1"]<- new[cmp id inl n] old[] unchanged[ext] filled[]`,
		`update st ["2"]<- new[id inl n] old[] unchanged[ext cmp] filled[]`,
		// SET big = big keeps the TOAST pointer ('u'); the same value written again is sent.
		`insert tw ["1"]<- new[big id n] old[] unchanged[] filled[]`,
		`update tw ["1"]<- new[id n] old[] unchanged[big] filled[]`,
		`update tw ["1"]<- new[big id n] old[] unchanged[] filled[]`,
		// One transaction: big changed, then n alone (big 'u'); and the other way round.
		`update tw ["1"]<- new[big id n] old[] unchanged[] filled[]`,
		`update tw ["1"]<- new[id n] old[] unchanged[big] filled[]`,
		`update tw ["1"]<- new[id n] old[] unchanged[big] filled[]`,
		`update tw ["1"]<- new[big id n] old[] unchanged[] filled[]`,
		`update tw ["1"]<- new[id n] old[] unchanged[big] filled[]`,
		// FULL: the old row fills it, also for a value written earlier in the transaction.
		`insert twf ["1"]<- new[big id n] old[] unchanged[] filled[]`,
		`update twf ["1"]<- new[big id n] old[big id n] unchanged[] filled[]`,
		`update twf ["1"]<- new[big id n] old[big id n] unchanged[] filled[big]`,
		`insert twf ["2"]<- new[big id n] old[] unchanged[] filled[]`,
		`update twf ["2"]<- new[big id n] old[big id n] unchanged[] filled[big]`,
		`update twf ["3"]<-["2"] new[big id n] old[big id n] unchanged[] filled[big]`,
		// NOTHING: only the insert; the UPDATE and DELETE failed on the primary.
		`insert nt ["1"]<- new[big id n] old[] unchanged[] filled[]`,
	}, got)
	w := strings.Repeat("w", 10000)
	require.Equal(t, map[string]map[string]dbsync.StringMap{
		"public.st": {
			`["1"]`: {"id": int32(1), "ext": strings.Repeat("x", 100000), "cmp": strings.Repeat("y", 100000), "inl": strings.Repeat("z", 1000), "n": int32(1)},
			`["2"]`: {"id": int32(2), "ext": strings.Repeat("x", 3000), "cmp": cmp2, "inl": "a", "n": int32(1)},
		},
		"public.tw":  {`["1"]`: {"id": int32(1), "big": bigBody + "XY", "n": int32(7)}},
		"public.twf": {`["1"]`: {"id": int32(1), "big": bigBody + "X", "n": int32(5)}, `["3"]`: {"id": int32(3), "big": w, "n": int32(9)}},
		"public.nt":  {`["1"]`: {"id": int32(1), "big": bigBody, "n": int32(0)}},
		"public.ui":  {},
		"public.tk":  {},
	}, r.Snapshot())
	st := r.Stats()
	require.Equal(t, int64(12), st.KeptUnchanged)
	require.Equal(t, int64(0), st.UnknownUnchanged)
}
