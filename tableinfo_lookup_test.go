package dbsync

import (
	"context"
	"testing"

	"github.com/dbsync/dbsync/internal/pgtest"
	"github.com/stretchr/testify/require"
)

func TestTableInfoByName(t *testing.T) {
	d := pgtest.NewDatabase(t)
	_, err := d.DB.Exec(`CREATE SCHEMA "Odd Schema"; CREATE TABLE "Odd Schema"."T.1" (b text, a int, c text, PRIMARY KEY (a, b));
		CREATE TABLE plain (id int PRIMARY KEY, v text)`)
	require.NoError(t, err)
	s, err := NewSyncer(WithPGConnStr(d.DSN()), WithSetup(false))
	require.NoError(t, err)
	defer s.Close()
	ctx := context.Background()

	info, err := s.TableInfo(ctx, `"Odd Schema"."T.1"`)
	require.NoError(t, err)
	require.Equal(t, "Odd Schema", info.Namespace)
	require.Equal(t, "T.1", info.TableName)
	require.Equal(t, []string{"a", "b"}, info.PrimaryKey)
	require.Equal(t, []string{"b", "a", "c"}, []string{info.Columns[0].ColumnName, info.Columns[1].ColumnName, info.Columns[2].ColumnName})
	require.Equal(t, 2, info.ColInfo["b"].KeyPosition)
	require.Equal(t, "integer", info.ColInfo["a"].ColumnType)

	info, err = s.TableInfo(ctx, "plain")
	require.NoError(t, err)
	require.Equal(t, "public.plain", info.QualifiedName())
	require.Equal(t, []string{"id"}, info.PrimaryKey)

	_, err = s.TableInfo(ctx, "public.nope")
	require.ErrorIs(t, err, ErrConfig)
}
