package bench

import (
	"context"
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
	r.logf("%s: writing", wl)
	if _, err := db.ExecContext(ctx, insertOrders, 1, rows); err != nil {
		return err
	}
	return r.drainAll(ctx, wl, sl, db, pgx, true, true)
}
