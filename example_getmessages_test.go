package dbsync_test

import (
	"context"
	"database/sql"
	"fmt"
	"log"
	"os"

	"github.com/dbsync/dbsync"
	"github.com/jackc/pglogrepl"
	_ "github.com/lib/pq"
)

// GetMessages and Forward are the calls Run is made of: read rows at the head of the
// slot without consuming them, parse them, and forward the slot past what was
// processed. Rows not forwarded are returned again by the next call.
func ExampleSyncer_GetMessages() {
	db, err := sql.Open("postgres", os.Getenv("DBSYNC_EXAMPLE_DSN"))
	if err != nil {
		log.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec(`CREATE TABLE tags (id int PRIMARY KEY, label text)`); err != nil {
		log.Fatal(err)
	}
	s, err := dbsync.NewSyncer(
		dbsync.WithDB(db),
		dbsync.ForTables("tags"),
		dbsync.WithPublication("example_tags"),
		dbsync.WithReplicationSlot("example_tags"),
	)
	if err != nil {
		log.Fatal(err)
	}
	defer s.Close()
	if _, err := db.Exec(`INSERT INTO tags VALUES (1, 'red'), (2, 'blue')`); err != nil {
		log.Fatal(err)
	}

	msgs, err := s.GetMessages(0, false, nil) // every row up to the WAL flush LSN
	if err != nil {
		log.Fatal(err)
	}
	var p dbsync.Parser // parses many rows with fewer allocations than dbsync.Parse
	for _, m := range msgs {
		msg, err := p.Parse(m)
		if err != nil {
			log.Fatal(err)
		}
		switch msg := msg.(type) {
		case *pglogrepl.BeginMessage:
			fmt.Println("BEGIN")
		case *pglogrepl.RelationMessage:
			fmt.Println("RELATION", msg.Namespace, msg.RelationName, len(msg.Columns), "columns")
		case *pglogrepl.InsertMessage:
			fmt.Println("INSERT", string(msg.Tuple.Columns[0].Data), string(msg.Tuple.Columns[1].Data))
		case *pglogrepl.CommitMessage:
			fmt.Println("COMMIT")
		}
	}
	if err := s.Forward(len(msgs)); err != nil { // the slot moves past all of them
		log.Fatal(err)
	}
	again, err := s.GetMessages(0, false, nil)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(len(again), "rows after Forward")
	if err := s.Teardown(context.Background()); err != nil {
		log.Fatal(err)
	}
	// Output:
	// BEGIN
	// RELATION public tags 2 columns
	// INSERT 1 red
	// INSERT 2 blue
	// COMMIT
	// 0 rows after Forward
}
