package bench

import (
	"context"
	"database/sql"
	"fmt"
)

// bigTx is workload (c): one transaction inserting rows rows, drained by every
// contender; dbsync's peak Go heap must stay under 64 MiB whatever the size. It runs a
// quarter-size transaction first so the table shows whether the heap grows with it.
func (r *runner) bigTx(ctx context.Context) error {
	n := r.scaled(1000000, 10000)
	for _, rows := range []int{n / 4, n} {
		if err := r.bigTxOne(ctx, rows); err != nil {
			return err
		}
	}
	return nil
}

func (r *runner) bigTxOne(ctx context.Context, rows int) error {
	wl := fmt.Sprintf("c one tx of %d rows", rows)
	sl, db, pgx, err := r.prepare(ctx, "bigtx", ordersDDL)
	if err != nil {
		return err
	}
	defer r.dropDatabase(sl.dbName, db)
	defer pgx.Close()
	// A pool whose sessions decode with a larger logical_decoding_work_mem, set as a
	// connection option (what a user can do, or ALTER ROLE … SET): past the default
	// 64MB the reorder buffer spills a large transaction to disk and reads it back.
	tuned, err := sql.Open("pgx", sl.dsn+" options='-c logical_decoding_work_mem="+tunedDecodingWorkMem+"'")
	if err != nil {
		return err
	}
	defer tuned.Close()
	var got string
	if err := tuned.QueryRowContext(ctx, `SELECT current_setting('logical_decoding_work_mem')`).Scan(&got); err != nil {
		return err
	}
	if got != tunedDecodingWorkMem {
		return fmt.Errorf("tuned pool: logical_decoding_work_mem is %s, want %s", got, tunedDecodingWorkMem)
	}
	r.logf("%s: writing", wl)
	if _, err := db.ExecContext(ctx, insertOrders, 1, rows); err != nil {
		return err
	}
	return r.drainAll(ctx, wl, sl, db, pgx, tuned, true, true)
}

// tunedDecodingWorkMem is the logical_decoding_work_mem of the big-transaction
// workload's tuned contenders: enough for its 1,000,000-row transaction to be decoded
// without spilling on PostgreSQL 15.
const tunedDecodingWorkMem = "256MB"
