package dbsync_test

import (
	"context"
	"database/sql"
	"fmt"
	"log"
	"os"
	"slices"

	"github.com/dbsync/dbsync"
	"github.com/dbsync/dbsync/handlers"
	_ "github.com/lib/pq"
)

// Snapshot fills a cache with the rows a table held before its slot existed, while
// the Syncer keeps delivering changes; RefreshContext reads chosen rows again the same
// way. handlers.Cache applies both and equals the table once the Syncer caught up.
func ExampleSyncer_Snapshot() {
	db, err := sql.Open("postgres", os.Getenv("DBSYNC_EXAMPLE_DSN"))
	if err != nil {
		log.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec(`CREATE TABLE items (id int PRIMARY KEY, name text NOT NULL, price int NOT NULL);
		INSERT INTO items SELECT i, 'item ' || i, 10 * i FROM generate_series(1, 3) i`); err != nil {
		log.Fatal(err)
	}

	cache := handlers.NewCache()
	s, err := dbsync.NewSyncer(
		dbsync.WithDB(db),
		dbsync.ForTables("items"),
		dbsync.WithPublication("example_items"),
		dbsync.WithReplicationSlot("example_items"),
		dbsync.WithMessageHandler(cache),
	)
	if err != nil {
		log.Fatal(err)
	}
	defer s.Close()
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan error, 1)
	go func() { ran <- s.Run(ctx) }() // a snapshot's rows are delivered by Run

	// Every row, in chunks of 10,000 by primary key; it returns when all were
	// delivered, and resumes after the last delivered chunk if interrupted.
	if err := s.Snapshot(ctx, "items"); err != nil {
		log.Fatal(err)
	}
	if _, err := db.Exec(`UPDATE items SET price = 25 WHERE id = 2; DELETE FROM items WHERE id = 3`); err != nil {
		log.Fatal(err)
	}
	// A refresh's rows come after every change committed before it, so when it
	// returns, the update and the delete above are in the cache too.
	stats, err := s.RefreshContext(ctx, `SELECT * FROM items WHERE id = 1`)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("refreshed", stats.Emitted, "row")

	rows := cache.Snapshot()["public.items"]
	keys := make([]string, 0, len(rows))
	for k := range rows {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		fmt.Println(k, rows[k])
	}

	cancel()
	if err := <-ran; err != nil {
		log.Fatal(err)
	}
	if err := s.Teardown(context.Background()); err != nil {
		log.Fatal(err)
	}
	// Output:
	// refreshed 1 row
	// ["1"] map[id:1 name:item 1 price:10]
	// ["2"] map[id:2 name:item 2 price:25]
}
