// Command fuzzseeds captures real pgoutput messages from a throwaway PostgreSQL cluster
// and writes them as the seed corpus of dbsync's FuzzDecodeMessage: one file per row
// change (and per TRUNCATE / logical message), holding the RELATION message in force
// and the change, in the `go test fuzz v1` format. Both pgoutput formats (text and
// binary) are captured, for a table with a column of every type dbsync decodes.
//
//	go run ./internal/fuzzseeds -out testdata/fuzz/FuzzDecodeMessage
package main

import (
	"database/sql"
	"encoding/binary"
	"flag"
	"fmt"
	"log"
	"os"
	"path/filepath"

	"github.com/dbsync/dbsync/internal/pgtest"
	_ "github.com/lib/pq"
)

const schema = `
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE DOMAIN posint AS int4 CHECK (VALUE > 0);
CREATE TYPE address AS (num int, street text);
CREATE TABLE seeds (
    id int, k text,
    c_int2 int2, c_int8 int8, c_numeric numeric, c_float8 float8, c_text text, c_bytea bytea,
    c_bool bool, c_uuid uuid, c_json json, c_jsonb jsonb, c_date date, c_time time, c_ts timestamp,
    c_tstz timestamptz, c_interval interval, c_inet inet, c_cidr cidr, c_macaddr macaddr,
    c_int4arr int4[], c_textarr text[], c_int4range int4range, c_tstzrange tstzrange, c_int8mr int8multirange,
    c_enum mood, c_enumarr mood[], c_domain posint, c_composite address, c_money money,
    PRIMARY KEY (k, id)
);
CREATE TABLE fullident (id int PRIMARY KEY, big text, n int);
ALTER TABLE fullident REPLICA IDENTITY FULL;
CREATE PUBLICATION seedpub FOR TABLE seeds, fullident;
`

const changes = `
INSERT INTO seeds VALUES (1, 'a', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
    NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL);
INSERT INTO seeds VALUES (2, 'b,"c', -32768, 9223372036854775807, '-1234567890.0987654321', 'NaN', E'h\u00e9 "q"', '\x00ff',
    true, 'ffffffff-ffff-ffff-ffff-ffffffffffff', '{"a": [1, 2.5]}', '{"b": null}', 'infinity', '24:00', '2020-02-29 12:00',
    '1900-01-01 00:00+05:53:28', '-1 year +2 days -00:00:01', '2001:db8::1/64', '10.0.0.0/8', '08:00:2b:01:02:03',
    '{{1,NULL},{3,4}}', '{"a,b",NULL,"NULL"}', '[1,10)', '(-infinity,2020-01-01 00:00+00]', '{[1,3),[5,7)}',
    'happy', '{sad,NULL}', 7, ROW(1, 'x "y"'), '12.34');
INSERT INTO fullident SELECT 1, string_agg(md5(i::text), ''), 0 FROM generate_series(1, 200) i;
UPDATE seeds SET c_text = 'changed', c_float8 = '-Infinity' WHERE id = 2;
UPDATE seeds SET id = 3 WHERE id = 2;
UPDATE fullident SET n = 1;
DELETE FROM seeds WHERE id = 1;
DELETE FROM fullident;
TRUNCATE seeds;
SELECT pg_logical_emit_message(false, 'pfx', 'payload');
`

func main() {
	out := flag.String("out", "testdata/fuzz/FuzzDecodeMessage", "corpus directory")
	flag.Parse()
	srv, err := pgtest.Start(pgtest.Options{})
	if err != nil {
		log.Fatal(err)
	}
	defer srv.Stop()
	db, err := sql.Open("postgres", srv.DSN("postgres"))
	if err != nil {
		log.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec(schema); err != nil {
		log.Fatal(err)
	}
	if _, err := db.Exec(`SELECT pg_create_logical_replication_slot('seeds', 'pgoutput')`); err != nil {
		log.Fatal(err)
	}
	if _, err := db.Exec(changes); err != nil {
		log.Fatal(err)
	}
	if err := os.MkdirAll(*out, 0o755); err != nil {
		log.Fatal(err)
	}
	n := 0
	for _, mode := range []string{"false", "true"} {
		rows, err := db.Query(`SELECT data FROM pg_logical_slot_peek_binary_changes('seeds', NULL, NULL,
			'proto_version', '1', 'publication_names', 'seedpub', 'messages', 'true', 'binary', $1)`, mode)
		if err != nil {
			log.Fatal(err)
		}
		relations := map[uint32][]byte{}
		for rows.Next() {
			var data []byte
			if err := rows.Scan(&data); err != nil {
				log.Fatal(err)
			}
			var rel []byte
			switch data[0] {
			case 'R':
				relations[binary.BigEndian.Uint32(data[1:5])] = data
				continue
			case 'I', 'U', 'D':
				rel = relations[binary.BigEndian.Uint32(data[1:5])]
			case 'T', 'M':
				for _, r := range relations {
					rel = r
				}
			default:
				continue
			}
			n++
			name := filepath.Join(*out, fmt.Sprintf("%c_%02d_binary_%s", data[0], n, mode))
			body := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n[]byte(%q)\n", rel, data)
			if err := os.WriteFile(name, []byte(body), 0o644); err != nil {
				log.Fatal(err)
			}
		}
		if err := rows.Err(); err != nil {
			log.Fatal(err)
		}
		rows.Close()
	}
	log.Printf("wrote %d seeds to %s", n, *out)
}
