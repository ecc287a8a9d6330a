package handlers

import (
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/dbsync/dbsync"
	"github.com/jackc/pglogrepl"
)

// EchoMessageHandler is a dbsync.MessageHandler that writes one human-readable line
// per message to W, for watching a slot by eye (the format may change; use
// JSONLinesWriter for machines):
//
//	BEGIN xid=735 commit_lsn=0/1A2B3C8 commit_time=2026-11-21T21:53:36.123456Z
//	RELATION public.items id=16385 replica_identity=d columns=id*,name,body
//	INSERT public.items id=1 name=a body=<unchanged>
//	UPDATE public.items id=2 name="a b" (old key: id=1)
//	UPDATE public.items id=2 name=b old: id=2 name=a
//	DELETE public.items id=2
//	TRUNCATE public.items,public.other cascade restart_identity
//	MESSAGE transactional prefix=app content="hello"
//	COMMIT commit_lsn=0/1A2B3C8 end_lsn=0/1A2B3F0
//
// Columns appear in table order as name=value: NULL for NULL, <unchanged> for an
// unchanged TOASTed value, a string as is unless it is empty or holds spaces, quotes,
// '=' or control characters (then Go-quoted), bytea as \x hex, booleans and integers
// as such, other values as JSONLinesWriter renders them (PGTableInfo.JSONRow):
// numeric, arrays and json documents as JSON text (numeric 1.50, [[1,null]],
// {"x":1}), other types in PostgreSQL's text form (timestamptz in RFC 3339 UTC, uuid,
// interval, ranges), formatted as strings are. A DELETE
// and the "old key" of a key-changing UPDATE show the key columns; "old:" shows a
// whole old row (REPLICA IDENTITY FULL). Lines are written as messages arrive, so a
// transaction delivered again (at-least-once) is printed again. Writes are not buffered; a failed Write is
// returned (the Syncer then does not forward past it). Safe for concurrent use.
type EchoMessageHandler struct {
	dbsync.DefaultMessageHandler
	// W receives the lines.
	W io.Writer
	// Relations adds a RELATION line for every RELATION message.
	Relations bool

	mu sync.Mutex
}

// NewEchoMessageHandler returns an EchoMessageHandler writing to w.
func NewEchoMessageHandler(w io.Writer) *EchoMessageHandler { return &EchoMessageHandler{W: w} }

func (e *EchoMessageHandler) println(s string) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if _, err := io.WriteString(e.W, s+"\n"); err != nil {
		return fmt.Errorf("handlers: EchoMessageHandler: write: %w", err)
	}
	return nil
}

// HandleBeginMessage writes a BEGIN line.
func (e *EchoMessageHandler) HandleBeginMessage(_ int, m *pglogrepl.BeginMessage) error {
	return e.println(fmt.Sprintf("BEGIN xid=%d commit_lsn=%s commit_time=%s", m.Xid, m.FinalLSN, m.CommitTime.UTC().Format(time.RFC3339Nano)))
}

// HandleCommitMessage writes a COMMIT line.
func (e *EchoMessageHandler) HandleCommitMessage(_ int, m *pglogrepl.CommitMessage) error {
	return e.println(fmt.Sprintf("COMMIT commit_lsn=%s end_lsn=%s", m.CommitLSN, m.TransactionEndLSN))
}

// HandleRelationMessage writes a RELATION line when Relations is set; key columns
// are marked with '*'.
func (e *EchoMessageHandler) HandleRelationMessage(_ int, m *pglogrepl.RelationMessage, info *dbsync.PGTableInfo) error {
	if !e.Relations {
		return nil
	}
	cols := make([]string, len(m.Columns))
	for i, c := range m.Columns {
		cols[i] = c.Name
		if info != nil && info.ColInfo[c.Name] != nil && info.ColInfo[c.Name].KeyPosition > 0 {
			cols[i] += "*"
		}
	}
	return e.println(fmt.Sprintf("RELATION %s.%s id=%d replica_identity=%c columns=%s", m.Namespace, m.RelationName, m.RelationID, m.ReplicaIdentity, strings.Join(cols, ",")))
}

// HandleInsertMessage writes an INSERT line with the new row.
func (e *EchoMessageHandler) HandleInsertMessage(_ int, m *pglogrepl.InsertMessage, reln *pglogrepl.RelationMessage, info *dbsync.PGTableInfo) error {
	c, err := dbsync.DecodeChange(m, reln, info)
	if err != nil {
		return err
	}
	return e.println("INSERT " + info.QualifiedName() + " " + formatRow(reln, info, c.New, c.Unchanged))
}

// HandleUpdateMessage writes an UPDATE line with the new row, and the old key or old row
// when PostgreSQL sent one.
func (e *EchoMessageHandler) HandleUpdateMessage(_ int, m *pglogrepl.UpdateMessage, reln *pglogrepl.RelationMessage, info *dbsync.PGTableInfo) error {
	c, err := dbsync.DecodeChange(m, reln, info)
	if err != nil {
		return err
	}
	s := "UPDATE " + info.QualifiedName() + " " + formatRow(reln, info, c.New, c.Unchanged)
	switch {
	case m.OldTupleType == pglogrepl.UpdateMessageTupleTypeOld:
		s += " old: " + formatRow(reln, info, c.Old, nil)
	case c.OldKey != "":
		s += " (old key: " + formatKey(info, c.Old) + ")"
	}
	return e.println(s)
}

// HandleDeleteMessage writes a DELETE line with the key (or the whole old row under
// REPLICA IDENTITY FULL).
func (e *EchoMessageHandler) HandleDeleteMessage(_ int, m *pglogrepl.DeleteMessage, reln *pglogrepl.RelationMessage, info *dbsync.PGTableInfo) error {
	c, err := dbsync.DecodeChange(m, reln, info)
	if err != nil {
		return err
	}
	if m.OldTupleType == pglogrepl.DeleteMessageTupleTypeOld {
		return e.println("DELETE " + info.QualifiedName() + " " + formatRow(reln, info, c.Old, nil))
	}
	return e.println("DELETE " + info.QualifiedName() + " " + formatKey(info, c.Old))
}

// HandleTruncateMessage writes a TRUNCATE line.
func (e *EchoMessageHandler) HandleTruncateMessage(_ int, m *pglogrepl.TruncateMessage, relns []*pglogrepl.RelationMessage, _ []*dbsync.PGTableInfo) error {
	names := make([]string, len(relns))
	for i, r := range relns {
		names[i] = r.Namespace + "." + r.RelationName
	}
	s := "TRUNCATE " + strings.Join(names, ",")
	if m.Option&pglogrepl.TruncateOptionCascade != 0 {
		s += " cascade"
	}
	if m.Option&pglogrepl.TruncateOptionRestartIdentity != 0 {
		s += " restart_identity"
	}
	return e.println(s)
}

// HandleLogicalMessage writes a MESSAGE line.
func (e *EchoMessageHandler) HandleLogicalMessage(_ int, m *pglogrepl.LogicalDecodingMessage) error {
	kind := "non-transactional"
	if m.Transactional {
		kind = "transactional"
	}
	return e.println(fmt.Sprintf("MESSAGE %s prefix=%s content=%s", kind, formatValue(m.Prefix), strconv.Quote(string(m.Content))))
}

// formatRow formats values in the relation's column order.
func formatRow(reln *pglogrepl.RelationMessage, info *dbsync.PGTableInfo, values dbsync.StringMap, unchanged []string) string {
	isUnchanged := map[string]bool{}
	for _, u := range unchanged {
		isUnchanged[u] = true
	}
	parts := make([]string, 0, len(reln.Columns))
	for _, c := range reln.Columns {
		if isUnchanged[c.Name] {
			parts = append(parts, c.Name+"=<unchanged>")
			continue
		}
		v, ok := values[c.Name]
		if !ok {
			continue
		}
		parts = append(parts, c.Name+"="+formatColumn(info, c.Name, v))
	}
	return strings.Join(parts, " ")
}

// formatKey formats the primary key columns of values in key order.
func formatKey(info *dbsync.PGTableInfo, values dbsync.StringMap) string {
	parts := make([]string, 0, len(info.PrimaryKey))
	for _, k := range info.PrimaryKey {
		parts = append(parts, k+"="+formatColumn(info, k, values[k]))
	}
	return strings.Join(parts, " ")
}

// formatColumn formats a value of column name of info: values fmt would print as Go
// structures (numeric, uuid, json, arrays, ranges, times, ...) as JSONLinesWriter
// renders them.
func formatColumn(info *dbsync.PGTableInfo, name string, v any) string {
	switch v.(type) {
	case nil, string, []byte, bool, int16, int32, int64, uint32:
		return formatValue(v)
	}
	var col *dbsync.PGColumnInfo
	if info != nil {
		col = info.ColInfo[name]
	}
	if col == nil {
		return formatValue(v)
	}
	j, err := col.JSONValue(v)
	if err != nil {
		return formatValue(v)
	}
	if s, ok := j.(string); ok {
		return formatValue(s)
	}
	b, err := json.Marshal(j)
	if err != nil {
		return formatValue(v)
	}
	return string(b)
}

func formatValue(v any) string {
	switch x := v.(type) {
	case nil:
		return "NULL"
	case string:
		if x == "" || x == "NULL" || strings.ContainsAny(x, " \"'=\t\n\r\\") || !strconv.CanBackquote(x) {
			return strconv.Quote(x)
		}
		return x
	case []byte:
		return fmt.Sprintf("\\x%x", x)
	default:
		return fmt.Sprintf("%v", x)
	}
}
