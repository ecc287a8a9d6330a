package demo

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync/atomic"

	"github.com/lib/pq"
)

// writer runs random multi-statement transactions on the demo tables. Writer w of n
// only touches keys k with k mod n == w, so writers never wait on each other's row
// locks (no deadlocks) while their transactions still interleave in the WAL.
type writer struct {
	db                    *sql.DB
	id, n, keys           int
	rng                   *rand.Rand
	committed, rolledBack *atomic.Int64
}

var owners = []string{"alice", "Bob O'Brien", "Zoë", `quote " and \ backslash`, "", "tab\there", "ünïcødé 名前"}

// key returns a random key of this writer's partition.
func (w *writer) key() int64 { return int64(w.id + w.n*w.rng.IntN(w.keys)) }

// run writes until ctx ends or maxTx transactions (0: no limit) were attempted.
// Transactions already begun finish (or roll back) even when ctx ends.
func (w *writer) run(ctx context.Context, maxTx int) error {
	for i := 0; maxTx == 0 || i < maxTx; i++ {
		if ctx.Err() != nil {
			return nil
		}
		if err := w.tx(context.WithoutCancel(ctx)); err != nil {
			return fmt.Errorf("demo: writer %d: %w", w.id, err)
		}
	}
	return nil
}

func (w *writer) tx(ctx context.Context) error {
	tx, err := w.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	nstmt := 1 + w.rng.IntN(6)
	for i := 0; i < nstmt; i++ {
		if err := w.statement(ctx, tx); err != nil {
			_ = tx.Rollback()
			var pqErr *pq.Error
			if errors.As(err, &pqErr) && (pqErr.Code == "40P01" || pqErr.Code == "40001" || pqErr.Code == "23505") {
				w.rolledBack.Add(1)
				return nil
			}
			return err
		}
	}
	if w.rng.IntN(20) == 0 {
		// Some transactions abort: their changes must never reach the copy.
		w.rolledBack.Add(1)
		return tx.Rollback()
	}
	if err := tx.Commit(); err != nil {
		return err
	}
	w.committed.Add(1)
	return nil
}

func (w *writer) statement(ctx context.Context, tx *sql.Tx) error {
	r := w.rng
	exec := func(q string, args ...any) error {
		_, err := tx.ExecContext(ctx, q, args...)
		return err
	}
	switch r.IntN(3) {
	case 0: // accounts
		id := w.key()
		switch op := r.IntN(10); {
		case op < 4:
			var flags any
			if r.IntN(3) > 0 {
				flags = pq.Array([]int64{int64(r.IntN(10)), int64(r.IntN(100))})
			}
			return exec(`INSERT INTO dbsync_demo.accounts (id, owner, balance, flags, updated_at)
				VALUES ($1, $2, $3, $4, now()) ON CONFLICT (id) DO UPDATE SET owner = EXCLUDED.owner, flags = EXCLUDED.flags`,
				id, owners[r.IntN(len(owners))], fmt.Sprintf("%d.%02d", r.IntN(100000), r.IntN(100)), flags)
		case op < 7:
			return exec(`UPDATE dbsync_demo.accounts SET balance = balance + $2, updated_at = now() WHERE id = $1`,
				id, fmt.Sprintf("%d.%02d", r.IntN(100), r.IntN(100)))
		case op < 8:
			return exec(`UPDATE dbsync_demo.accounts SET id = $2 WHERE id = $1
				AND NOT EXISTS (SELECT 1 FROM dbsync_demo.accounts WHERE id = $2)`, id, w.key())
		default:
			return exec(`DELETE FROM dbsync_demo.accounts WHERE id = $1`, id)
		}
	case 1: // order_lines, composite key
		order := w.key()
		line := 1 + r.IntN(5)
		switch op := r.IntN(10); {
		case op < 4:
			var note any
			if r.IntN(2) == 0 {
				note = owners[r.IntN(len(owners))]
			}
			return exec(`INSERT INTO dbsync_demo.order_lines VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING`,
				order, line, fmt.Sprintf("SKU-%04d", r.IntN(10000)), 1+r.IntN(9), note)
		case op < 7:
			return exec(`UPDATE dbsync_demo.order_lines SET qty = qty + 1, note = NULL WHERE order_id = $1 AND line_no = $2`, order, line)
		case op < 8:
			return exec(`UPDATE dbsync_demo.order_lines SET line_no = $3 WHERE order_id = $1 AND line_no = $2
				AND NOT EXISTS (SELECT 1 FROM dbsync_demo.order_lines WHERE order_id = $1 AND line_no = $3)`, order, line, 1+r.IntN(5))
		case op < 9:
			return exec(`DELETE FROM dbsync_demo.order_lines WHERE order_id = $1 AND line_no = $2`, order, line)
		default:
			return exec(`DELETE FROM dbsync_demo.order_lines WHERE order_id = $1`, order)
		}
	default: // documents, large body stored out of line
		id := w.key()
		switch op := r.IntN(10); {
		case op < 3:
			var body any
			if r.IntN(8) > 0 {
				body = bigText(r, 2500+r.IntN(3000))
			}
			return exec(`INSERT INTO dbsync_demo.documents VALUES ($1, $2, 1, $3) ON CONFLICT DO NOTHING`,
				id, fmt.Sprintf("doc %d", id), body)
		case op < 7:
			// body is not modified: the change carries it as unchanged TOAST ('u').
			return exec(`UPDATE dbsync_demo.documents SET title = $2, version = version + 1 WHERE id = $1`,
				id, fmt.Sprintf("doc %d v%d", id, r.IntN(1000)))
		case op < 8:
			return exec(`UPDATE dbsync_demo.documents SET body = $2, version = version + 1 WHERE id = $1`,
				id, bigText(r, 2500+r.IntN(3000)))
		case op < 9:
			// Key change with the body left unchanged.
			return exec(`UPDATE dbsync_demo.documents SET id = $2 WHERE id = $1
				AND NOT EXISTS (SELECT 1 FROM dbsync_demo.documents WHERE id = $2)`, id, w.key())
		default:
			return exec(`DELETE FROM dbsync_demo.documents WHERE id = $1`, id)
		}
	}
}
