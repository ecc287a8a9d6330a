package handlers

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/dbsync/dbsync"
	"github.com/jackc/pglogrepl"
)

// JSONLinesWriter is a dbsync.MessageHandler that writes one JSON object per line to W
// for every row change, every table of a TRUNCATE, every logical decoding message and
// every row read by Syncer.Snapshot or Refresh (schema: see the package documentation). It stamps each change with the commit LSN,
// xid and commit time of the BEGIN that opened its transaction.
//
// A transaction's lines are buffered and written to W in one Write when its COMMIT
// arrives; if W has a Flush() error method (a *bufio.Writer) it is called too. A
// failing Write or Flush is returned from HandleCommitMessage, so the Syncer does not
// forward the slot past that transaction. A non-transactional logical message is
// written at once.
//
// Safe for use by one Syncer at a time (methods are serialised by a mutex).
type JSONLinesWriter struct {
	dbsync.DefaultMessageHandler

	// W receives the lines.
	W io.Writer
	// Relations adds a "relation" object for every RELATION message.
	Relations bool

	mu   sync.Mutex
	tx   txInfo
	inTx bool
	buf  bytes.Buffer
}

// NewJSONLinesWriter returns a JSONLinesWriter writing to w.
func NewJSONLinesWriter(w io.Writer) *JSONLinesWriter { return &JSONLinesWriter{W: w} }

// txInfo is what a BEGIN message says about its transaction.
type txInfo struct {
	commitLSN  pglogrepl.LSN
	xid        uint32
	commitTime time.Time
}

// jsonTx is the transaction stamp of a line; nil outside a transaction.
type jsonTx struct {
	CommitLSN  string    `json:"commit_lsn"`
	Xid        uint32    `json:"xid"`
	CommitTime time.Time `json:"commit_time"`
}

type jsonChange struct {
	Type string `json:"type"`
	jsonTx
	Op        dbsync.Op        `json:"op"`
	Schema    string           `json:"schema"`
	Table     string           `json:"table"`
	Key       dbsync.StringMap `json:"key"`
	OldKey    dbsync.StringMap `json:"old_key,omitempty"`
	New       dbsync.StringMap `json:"new"`
	Old       dbsync.StringMap `json:"old"`
	Unchanged []string         `json:"unchanged,omitempty"`
}

type jsonTruncate struct {
	Type string `json:"type"`
	jsonTx
	Schema          string `json:"schema"`
	Table           string `json:"table"`
	Cascade         bool   `json:"cascade"`
	RestartIdentity bool   `json:"restart_identity"`
}

type jsonMessage struct {
	Type string `json:"type"`
	*jsonTx
	LSN           string  `json:"lsn"`
	Transactional bool    `json:"transactional"`
	Prefix        string  `json:"prefix"`
	Content       *string `json:"content,omitempty"`
	ContentBase64 []byte  `json:"content_base64,omitempty"`
}

type jsonRefresh struct {
	Type   string           `json:"type"`
	Schema string           `json:"schema"`
	Table  string           `json:"table"`
	Key    dbsync.StringMap `json:"key"`
	New    dbsync.StringMap `json:"new"`
}

type jsonRelation struct {
	Type string `json:"type"`
	jsonTx
	Schema          string          `json:"schema"`
	Table           string          `json:"table"`
	RelationID      uint32          `json:"relation_id"`
	ReplicaIdentity string          `json:"replica_identity"`
	Columns         []jsonRelColumn `json:"columns"`
}

type jsonRelColumn struct {
	Name         string `json:"name"`
	TypeOID      uint32 `json:"type_oid"`
	TypeModifier int32  `json:"type_modifier"`
	Key          bool   `json:"key"`
}

func (j *JSONLinesWriter) stamp() jsonTx {
	return jsonTx{CommitLSN: j.tx.commitLSN.String(), Xid: j.tx.xid, CommitTime: j.tx.commitTime.UTC()}
}

// line appends one encoded object to the transaction's buffer.
func (j *JSONLinesWriter) line(v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("handlers: JSONLinesWriter: encode %T: %w", v, err)
	}
	j.buf.Write(b)
	j.buf.WriteByte('\n')
	return nil
}

// flush writes the buffered lines to W (and flushes W if it can).
func (j *JSONLinesWriter) flush() error {
	if j.buf.Len() == 0 {
		return nil
	}
	defer j.buf.Reset()
	if _, err := j.W.Write(j.buf.Bytes()); err != nil {
		return fmt.Errorf("handlers: JSONLinesWriter: write: %w", err)
	}
	if f, ok := j.W.(interface{ Flush() error }); ok {
		if err := f.Flush(); err != nil {
			return fmt.Errorf("handlers: JSONLinesWriter: flush: %w", err)
		}
	}
	return nil
}

// HandleBeginMessage records the transaction's commit LSN, xid and commit time and
// drops lines of an earlier transaction that never committed (a re-delivery).
func (j *JSONLinesWriter) HandleBeginMessage(_ int, m *pglogrepl.BeginMessage) error {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.buf.Reset()
	j.tx = txInfo{commitLSN: m.FinalLSN, xid: m.Xid, commitTime: m.CommitTime}
	j.inTx = true
	return nil
}

// HandleCommitMessage writes the transaction's lines to W.
func (j *JSONLinesWriter) HandleCommitMessage(_ int, _ *pglogrepl.CommitMessage) error {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.inTx = false
	return j.flush()
}

// HandleRelationMessage writes a "relation" object when Relations is set.
func (j *JSONLinesWriter) HandleRelationMessage(_ int, m *pglogrepl.RelationMessage, info *dbsync.PGTableInfo) error {
	if !j.Relations {
		return nil
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	r := jsonRelation{Type: "relation", jsonTx: j.stamp(), Schema: m.Namespace, Table: m.RelationName,
		RelationID: m.RelationID, ReplicaIdentity: string(rune(m.ReplicaIdentity)), Columns: []jsonRelColumn{}}
	for _, c := range m.Columns {
		key := c.Flags&1 != 0
		if info != nil && info.ColInfo[c.Name] != nil {
			key = info.ColInfo[c.Name].KeyPosition > 0
		}
		r.Columns = append(r.Columns, jsonRelColumn{Name: c.Name, TypeOID: c.DataType, TypeModifier: c.TypeModifier, Key: key})
	}
	return j.line(r)
}

func (j *JSONLinesWriter) change(msg pglogrepl.Message, oldTupleType uint8, reln *pglogrepl.RelationMessage, info *dbsync.PGTableInfo) error {
	c, err := dbsync.DecodeChange(msg, reln, info)
	if err != nil {
		return err
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	line := jsonChange{Type: "change", jsonTx: j.stamp(), Op: c.Op, Schema: info.Namespace, Table: info.TableName,
		New: c.New, Old: c.Old, Unchanged: c.Unchanged}
	if c.Op == dbsync.OpDelete {
		line.Key = keyColumns(info, c.Old)
	} else {
		line.Key = keyColumns(info, c.New)
	}
	if c.OldKey != "" {
		line.OldKey = keyColumns(info, c.Old)
	}
	if oldTupleType == pglogrepl.UpdateMessageTupleTypeKey {
		// Only the key columns were sent; the others are placeholders, not NULLs.
		line.Old = keyColumns(info, c.Old)
	}
	// Lossless JSON for every type (NaN, numeric scale, infinite dates, ...).
	for _, m := range []*dbsync.StringMap{&line.Key, &line.OldKey, &line.New, &line.Old} {
		if *m == nil {
			continue
		}
		if *m, err = info.JSONRow(*m); err != nil {
			return fmt.Errorf("handlers: JSONLinesWriter: %w", err)
		}
	}
	return j.line(line)
}

// HandleInsertMessage buffers a "change" object with op "insert".
func (j *JSONLinesWriter) HandleInsertMessage(_ int, m *pglogrepl.InsertMessage, reln *pglogrepl.RelationMessage, info *dbsync.PGTableInfo) error {
	return j.change(m, 0, reln, info)
}

// HandleUpdateMessage buffers a "change" object with op "update".
func (j *JSONLinesWriter) HandleUpdateMessage(_ int, m *pglogrepl.UpdateMessage, reln *pglogrepl.RelationMessage, info *dbsync.PGTableInfo) error {
	return j.change(m, m.OldTupleType, reln, info)
}

// HandleDeleteMessage buffers a "change" object with op "delete".
func (j *JSONLinesWriter) HandleDeleteMessage(_ int, m *pglogrepl.DeleteMessage, reln *pglogrepl.RelationMessage, info *dbsync.PGTableInfo) error {
	return j.change(m, m.OldTupleType, reln, info)
}

// HandleTruncateMessage buffers one "truncate" object per truncated table.
func (j *JSONLinesWriter) HandleTruncateMessage(_ int, m *pglogrepl.TruncateMessage, relns []*pglogrepl.RelationMessage, _ []*dbsync.PGTableInfo) error {
	j.mu.Lock()
	defer j.mu.Unlock()
	for _, r := range relns {
		if err := j.line(jsonTruncate{Type: "truncate", jsonTx: j.stamp(), Schema: r.Namespace, Table: r.RelationName,
			Cascade: m.Option&pglogrepl.TruncateOptionCascade != 0, RestartIdentity: m.Option&pglogrepl.TruncateOptionRestartIdentity != 0}); err != nil {
			return err
		}
	}
	return nil
}

// HandleRefresh buffers a "refresh" object for a row read by Snapshot or Refresh. Such
// rows arrive inside the high watermark's transaction and are written with it; outside
// a transaction the line is written at once.
func (j *JSONLinesWriter) HandleRefresh(_ string, item dbsync.DBItem) error {
	if item.Table == nil {
		return fmt.Errorf("handlers: JSONLinesWriter: HandleRefresh(%q) without a table", item.Key)
	}
	line := jsonRefresh{Type: "refresh", Schema: item.Table.Namespace, Table: item.Table.TableName}
	var err error
	if line.Key, err = item.Table.JSONRow(keyColumns(item.Table, item.Values)); err != nil {
		return fmt.Errorf("handlers: JSONLinesWriter: %w", err)
	}
	if line.New, err = item.Table.JSONRow(item.Values); err != nil {
		return fmt.Errorf("handlers: JSONLinesWriter: %w", err)
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	if err := j.line(line); err != nil {
		return err
	}
	if !j.inTx {
		return j.flush()
	}
	return nil
}

// HandleLogicalMessage buffers a "message" object (written at once when the message is
// not transactional).
func (j *JSONLinesWriter) HandleLogicalMessage(_ int, m *pglogrepl.LogicalDecodingMessage) error {
	j.mu.Lock()
	defer j.mu.Unlock()
	line := jsonMessage{Type: "message", LSN: m.LSN.String(), Transactional: m.Transactional, Prefix: m.Prefix}
	if j.inTx && m.Transactional {
		st := j.stamp()
		line.jsonTx = &st
	}
	if utf8.Valid(m.Content) {
		s := string(m.Content)
		line.Content = &s
	} else {
		line.ContentBase64 = m.Content
	}
	if j.inTx && m.Transactional {
		return j.line(line)
	}
	// Not part of a transaction: write it now, apart from any buffered lines.
	b, err := json.Marshal(line)
	if err != nil {
		return fmt.Errorf("handlers: JSONLinesWriter: encode message: %w", err)
	}
	if _, err := j.W.Write(append(b, '\n')); err != nil {
		return fmt.Errorf("handlers: JSONLinesWriter: write: %w", err)
	}
	if f, ok := j.W.(interface{ Flush() error }); ok {
		if err := f.Flush(); err != nil {
			return fmt.Errorf("handlers: JSONLinesWriter: flush: %w", err)
		}
	}
	return nil
}

// keyColumns returns the key columns (PGTableInfo.PrimaryKey: the replica identity
// index's, else the primary key's) of values (an empty map when the table has no key
// or values is nil).
func keyColumns(info *dbsync.PGTableInfo, values dbsync.StringMap) dbsync.StringMap {
	key := dbsync.StringMap{}
	for _, k := range info.PrimaryKey {
		if v, ok := values[k]; ok {
			key[k] = v
		}
	}
	return key
}
