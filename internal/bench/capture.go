package bench

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"path/filepath"

	"github.com/dbsync/dbsync/internal/pgtest"
	"github.com/lib/pq"
)

// CaptureFiles maps the files Capture writes to what they hold: raw pgoutput messages
// (protocol version 1, text values) of the realistic orders table, as
// pg_logical_slot_peek_binary_changes returns them in its data column.
var CaptureFiles = map[string]string{
	"begin.bin":      "BEGIN",
	"relation.bin":   "RELATION of orders",
	"insert.bin":     "INSERT of one orders row",
	"update.bin":     "UPDATE of a non-key column (new tuple only)",
	"update_key.bin": "UPDATE changing the key (old key 'K' and new tuple)",
	"delete.bin":     "DELETE (old key 'K')",
	"truncate.bin":   "TRUNCATE of orders",
	"message.bin":    "transactional pg_logical_emit_message",
	"commit.bin":     "COMMIT",
}

// Capture starts a throwaway cluster, makes one change of every kind on the orders
// table, and writes the first pgoutput message of each kind into dir (see
// CaptureFiles), for the decode micro-benchmarks in the root package.
func Capture(ctx context.Context, dir string) error {
	srv, err := pgtest.Start(pgtest.Options{Settings: []string{"timezone = 'UTC'"}})
	if err != nil {
		return err
	}
	defer srv.Stop()
	db, err := sql.Open("postgres", srv.DSN("postgres"))
	if err != nil {
		return err
	}
	defer db.Close()
	steps := []string{
		ordersDDL,
		`CREATE PUBLICATION bench_pub FOR TABLE orders`,
		`SELECT pg_create_logical_replication_slot('capture', 'pgoutput')`,
		`INSERT INTO orders VALUES (42, 'customer-42', 7, 1234.50, '2026-01-02 03:04:05.123456+00', '{"sku": "sku-42", "tags": ["a", "b"], "n": 42}')`,
		`UPDATE orders SET qty = 8 WHERE id = 42`,
		`UPDATE orders SET id = 43 WHERE id = 42`,
		`DELETE FROM orders WHERE id = 43`,
		`TRUNCATE orders`,
		`SELECT pg_logical_emit_message(true, 'bench', 'hello')`,
	}
	for _, q := range steps {
		if _, err := db.ExecContext(ctx, q); err != nil {
			return fmt.Errorf("capture: %s: %w", q, err)
		}
	}
	rows, err := db.QueryContext(ctx, `SELECT data FROM pg_logical_slot_peek_binary_changes($1, NULL, NULL, `+peekOptions+`)`,
		"capture", pq.QuoteIdentifier("bench_pub"))
	if err != nil {
		return err
	}
	defer rows.Close()
	got := map[string][]byte{}
	for rows.Next() {
		var data []byte
		if err := rows.Scan(&data); err != nil {
			return err
		}
		var name string
		switch data[0] {
		case 'B':
			name = "begin.bin"
		case 'R':
			name = "relation.bin"
		case 'I':
			name = "insert.bin"
		case 'U':
			name = "update.bin"
			if data[5] == 'K' {
				name = "update_key.bin"
			}
		case 'D':
			name = "delete.bin"
		case 'T':
			name = "truncate.bin"
		case 'M':
			name = "message.bin"
		case 'C':
			name = "commit.bin"
		default:
			continue
		}
		if _, ok := got[name]; !ok {
			got[name] = data
		}
	}
	if err := rows.Err(); err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for name := range CaptureFiles {
		b, ok := got[name]
		if !ok {
			return fmt.Errorf("capture: no %s message was decoded", CaptureFiles[name])
		}
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			return err
		}
	}
	return nil
}
