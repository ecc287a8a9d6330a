package dbsync_test

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"log"
	"os"

	"github.com/dbsync/dbsync"
	"github.com/jackc/pglogrepl"
	_ "github.com/lib/pq"
)

// orderPrinter prints every change as operation, table, record ID and row, and ends
// the Syncer's Run after the third transaction.
type orderPrinter struct {
	dbsync.DefaultMessageHandler
	stop    context.CancelFunc
	commits int
}

func (p *orderPrinter) print(m pglogrepl.Message, reln *pglogrepl.RelationMessage, t *dbsync.PGTableInfo) error {
	c, err := dbsync.DecodeChange(m, reln, t)
	if err != nil {
		return err // the slot stays before this transaction; Run returns the error
	}
	row := c.New
	if c.Op == dbsync.OpDelete {
		row = c.Old // the deleted row's key columns (all columns under REPLICA IDENTITY FULL)
	}
	values, err := t.JSONRow(row) // numeric as json.Number, instants as RFC 3339, ...
	if err != nil {
		return err
	}
	doc, err := json.Marshal(values)
	if err != nil {
		return err
	}
	fmt.Println(c.Op, t.QualifiedName(), c.Key, string(doc))
	return nil
}

func (p *orderPrinter) HandleInsertMessage(_ int, m *pglogrepl.InsertMessage, reln *pglogrepl.RelationMessage, t *dbsync.PGTableInfo) error {
	return p.print(m, reln, t)
}

func (p *orderPrinter) HandleUpdateMessage(_ int, m *pglogrepl.UpdateMessage, reln *pglogrepl.RelationMessage, t *dbsync.PGTableInfo) error {
	return p.print(m, reln, t)
}

func (p *orderPrinter) HandleDeleteMessage(_ int, m *pglogrepl.DeleteMessage, reln *pglogrepl.RelationMessage, t *dbsync.PGTableInfo) error {
	return p.print(m, reln, t)
}

func (p *orderPrinter) HandleCommitMessage(_ int, m *pglogrepl.CommitMessage) error {
	if p.commits++; p.commits == 3 {
		p.stop()
	}
	return nil
}

// A Syncer delivers the changes of the published tables in commit order to a
// MessageHandler, and forwards its slot past each transaction the handler accepted.
func Example() {
	// A database on a server with wal_level = logical, and a role that may create
	// replication slots and publications.
	db, err := sql.Open("postgres", os.Getenv("DBSYNC_EXAMPLE_DSN"))
	if err != nil {
		log.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec(`CREATE TABLE orders (id bigint PRIMARY KEY, customer text NOT NULL, amount numeric(12,2))`); err != nil {
		log.Fatal(err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s, err := dbsync.NewSyncer(
		dbsync.WithDB(db),
		dbsync.ForTables("orders"), // creates the publication, the slot and the control schema
		dbsync.WithPublication("example_orders"),
		dbsync.WithReplicationSlot("example_orders"),
		dbsync.WithMessageHandler(&orderPrinter{stop: cancel}),
	)
	if err != nil {
		log.Fatal(err) // e.g. errors.Is(err, dbsync.ErrWALLevel)
	}
	defer s.Close()

	// The slot exists: every change from now on is delivered.
	for _, q := range []string{
		`INSERT INTO orders VALUES (1, 'ann', 9.50), (2, 'bob', 12)`,
		`UPDATE orders SET amount = 10.25 WHERE id = 1`,
		`DELETE FROM orders WHERE id = 2`,
	} {
		if _, err := db.Exec(q); err != nil {
			log.Fatal(err)
		}
	}
	if err := s.Run(ctx); err != nil { // until the handler cancels ctx
		log.Fatal(err)
	}
	// A slot nobody reads retains WAL: drop it (and what else setup created) when done.
	if err := s.Teardown(context.Background()); err != nil {
		log.Fatal(err)
	}
	// Output:
	// insert public.orders ["1"] {"amount":9.50,"customer":"ann","id":1}
	// insert public.orders ["2"] {"amount":12.00,"customer":"bob","id":2}
	// update public.orders ["1"] {"amount":10.25,"customer":"ann","id":1}
	// delete public.orders ["2"] {"id":2}
}
