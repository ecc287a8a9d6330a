package dbsync

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/lib/pq"
	"github.com/stretchr/testify/require"
)

// TestRawBatchKeepsNullAndEmptyApart feeds colScanner what drivers hand database/sql
// (lib/pq: []byte views of its buffer; pgx: strings; NULL: nil) and checks the rows
// come back with NULL as nil and an empty value as a non-nil empty slice, copied out of
// the driver's buffer.
func TestRawBatchKeepsNullAndEmptyApart(t *testing.T) {
	b := newRawBatch(0, 0)
	cols := []colScanner{{&b}, {&b}, {&b}}
	driverBuf := []byte("abc")
	rows := [][]any{
		{"", nil, driverBuf[:0]}, // empty values first: the batch buffer is still empty
		{driverBuf, "xyz", nil},
		{nil, nil, nil},
	}
	for _, r := range rows {
		for j, v := range r {
			require.NoError(t, cols[j].Scan(v))
		}
		b.n++
	}
	copy(driverBuf, "zzz") // the driver reuses its buffer
	raw := make([]sql.RawBytes, 3)
	want := [][]sql.RawBytes{
		{{}, nil, {}},
		{sql.RawBytes("abc"), sql.RawBytes("xyz"), nil},
		{nil, nil, nil},
	}
	for i := range want {
		b.row(i, raw)
		for j := range raw {
			if want[i][j] == nil {
				require.Nil(t, raw[j], "row %d col %d", i, j)
			} else {
				require.NotNil(t, raw[j], "row %d col %d", i, j)
				require.Equal(t, string(want[i][j]), string(raw[j]), "row %d col %d", i, j)
			}
		}
	}
	// lib/pq's int64 (an integer column selected as it is) is printed back.
	require.NoError(t, cols[0].Scan(int64(-9223372036854775808)))
	require.NoError(t, cols[1].Scan(int64(0)))
	require.NoError(t, cols[2].Scan(nil))
	b.n++
	b.row(3, raw)
	require.Equal(t, []string{"-9223372036854775808", "0"}, []string{string(raw[0]), string(raw[1])})
	require.Nil(t, raw[2])
	// Values the driver converted from text (a float, a time) cannot be printed back
	// exactly: an error, never a guess.
	err := cols[0].Scan(float64(1))
	require.True(t, errors.Is(err, ErrDecodeValue), "%v", err)
}

// TestSelectionQueryErr: a SELECT the server refused is the query's fault (ErrConfig),
// but not when the session was lost under it (57P01 admin_shutdown,
// pg_terminate_backend; a broken connection): that is retried and must not tell the
// caller to fix the query.
func TestSelectionQueryErr(t *testing.T) {
	info := &PGTableInfo{Namespace: "public", TableName: "items"}
	require.ErrorIs(t, selectionQueryErr(context.Background(), info, &pq.Error{Code: "42703", Message: "column t.x does not exist"}), ErrConfig)
	for _, err := range []error{&pq.Error{Code: "57P01", Message: "terminating connection due to administrator command"},
		&pgconn.PgError{Code: "57P01"}, driver.ErrBadConn} {
		got := selectionQueryErr(context.Background(), info, err)
		require.NotErrorIs(t, got, ErrConfig, "%v", err)
		require.ErrorIs(t, got, err)
		require.True(t, isTransient(got))
	}
	// The server cut the SELECT short for reasons of its own (statement_timeout, a lock
	// timeout, a deadlock, resources): abandoned, not the query's fault.
	for _, err := range []error{&pq.Error{Code: "57014", Message: "canceling statement due to statement timeout"},
		&pgconn.PgError{Code: "57014"}, &pq.Error{Code: "55P03"}, &pgconn.PgError{Code: "40P01"}, &pq.Error{Code: "53200"}} {
		got := selectionQueryErr(context.Background(), info, err)
		require.NotErrorIs(t, got, ErrConfig, "%v", err)
		require.ErrorIs(t, got, ErrRefreshAbandoned, "%v", err)
		require.ErrorIs(t, got, err)
		require.False(t, isTransient(got), "%v", err)
	}
	// The caller's context ended: lib/pq's cancel request makes the server answer 57014.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	got := selectionQueryErr(ctx, info, &pq.Error{Code: "57014", Message: "canceling statement due to user request"})
	require.NotErrorIs(t, got, ErrConfig)
	require.ErrorIs(t, got, context.Canceled)
}

// TestIsTransientIdleTimeouts: a session the server ended for idling
// (idle_in_transaction_session_timeout 25P03, idle_session_timeout 57P05) is a lost
// session, retried like a restart; a query error is not.
func TestIsTransientIdleTimeouts(t *testing.T) {
	for _, code := range []string{"25P03", "57P05", "57P01", "08006"} {
		require.True(t, isTransient(&pq.Error{Code: pq.ErrorCode(code)}), code)
		require.True(t, isTransient(&pgconn.PgError{Code: code}), code)
	}
	require.False(t, isTransient(&pq.Error{Code: "42703"}))
}
