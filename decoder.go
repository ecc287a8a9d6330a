package dbsync

import (
	"bytes"
	"context"
	"fmt"

	"github.com/jackc/pglogrepl"
)

// decoder turns raw pgoutput rows into pglogrepl messages and keeps the relation cache
// that changes are decoded against. pgoutput re-sends RELATION before the first change
// of each table in every peek call and after any ALTER, so the cache is always current
// for the changes that follow.
type decoder struct {
	tables    *tableCache
	relations map[uint32]*pglogrepl.RelationMessage
}

func newDecoder(tables *tableCache) *decoder {
	return &decoder{tables: tables, relations: map[uint32]*pglogrepl.RelationMessage{}}
}

// Parse decodes one pgoutput message (protocol version 1). Malformed input gives an
// error wrapping ErrMalformedMessage, never a panic: pglogrepl's decoders index their
// input without bounds checks, so panics are recovered here, and sizes it would
// allocate or slice by are checked first (checkBounds): a message whose declared
// sizes run past its end is malformed, never read past it. The column values of a row change
// are copied out of data (one copy per message), as is a logical decoding message's
// content, so data may be reused afterwards; PGMSG.Parse skips that copy for rows
// GetMessages returned.
func Parse(data []byte) (pglogrepl.Message, error) { return parse(data, false, nil) }

// Parse decodes the row's pgoutput message as the package-level Parse does, without
// copying Data first: the column values of a row change (TupleDataColumn.Data) are
// sub-slices of m.Data. GetMessages hands out each row's Data as the caller's own
// copy, which nothing else writes to, so this is safe for its rows as long as the
// caller does not modify Data while it uses the message. It is how the Syncer's own
// poller parses: one allocation and one copy of the message fewer per row change than
// Parse. Errors: as Parse.
func (m PGMSG) Parse() (pglogrepl.Message, error) { return parse(m.Data, true, nil) }

// Parser parses rows as PGMSG.Parse does (no copy of Data: the same rules apply), but
// takes the structures of row changes (the message, its TupleData and columns) from
// slabs it allocates a few dozen changes at a time, instead of three allocations per
// change. It is what the Syncer's poller uses; use one to parse many rows that
// GetMessages returned. Every message stays valid and unchanged for as long as it is
// referenced (slabs are never reused). A message kept keeps its slabs (up to 64
// messages and 512 columns, ~25 KiB) from being collected, and through their columns
// the Data of the rows parsed next to it (about 100 rows of a narrow table); a row
// of more than arenaRowBytes (4 KiB) gets structures of its own, so what a slab keeps
// alive stays under about 1 MiB of row data whatever the rows' size; copy what you
// keep for long. The zero value is ready to use; a Parser is not safe for
// concurrent use. Errors: as Parse.
type Parser struct{ a changeArena }

// Parse decodes m's pgoutput message (see the type's documentation).
func (p *Parser) Parse(m PGMSG) (pglogrepl.Message, error) { return parse(m.Data, true, &p.a) }

// parse is Parse; owned says the caller hands data over, a is the arena row changes
// are taken from (nil: none) (parseChange).
func parse(data []byte, owned bool, a *changeArena) (msg pglogrepl.Message, err error) {
	if len(data) == 0 {
		return nil, fmt.Errorf("%w: empty message", ErrMalformedMessage)
	}
	switch data[0] {
	case 'I', 'U', 'D':
		// Row changes, the bulk of every stream, with fewer allocations (parse_change.go).
		return parseChange(data, owned, a)
	}
	defer func() {
		if r := recover(); r != nil {
			msg, err = nil, fmt.Errorf("%w: type %q, %d bytes: %v", ErrMalformedMessage, data[0], len(data), r)
		}
	}()
	if err := checkBounds(data); err != nil {
		return nil, fmt.Errorf("%w: type %q, %d bytes: %v", ErrMalformedMessage, data[0], len(data), err)
	}
	if data[0] == 'M' && !owned {
		// pglogrepl's LogicalDecodingMessage.Content is a view of its input (the other
		// kinds copy what they keep, into strings), and Parse promises a message that
		// does not share data.
		data = bytes.Clone(data)
	}
	msg, err = pglogrepl.Parse(data)
	if err != nil {
		return nil, fmt.Errorf("%w: type %q, %d bytes: %v", ErrMalformedMessage, data[0], len(data), err)
	}
	return msg, nil
}

// relation returns the RELATION message in force for relID and its table info.
func (d *decoder) relation(relID uint32) (*pglogrepl.RelationMessage, *PGTableInfo, error) {
	reln := d.relations[relID]
	if reln == nil {
		return nil, nil, fmt.Errorf("%w: relation ID %d (no RELATION message before the change)", ErrUnknownRelation, relID)
	}
	return reln, d.tables.get(relID), nil
}

// forget drops the RELATION messages of relations the table cache evicted
// (tableCache.evictIdle), at the start of a poll.
func (d *decoder) forget(relIDs []uint32) {
	for _, id := range relIDs {
		delete(d.relations, id)
	}
}

// setRelation records a RELATION message and returns the table info for it.
func (d *decoder) setRelation(ctx context.Context, reln *pglogrepl.RelationMessage) (*PGTableInfo, error) {
	info, err := d.tables.forRelation(ctx, reln)
	if err != nil {
		return nil, err
	}
	d.relations[reln.RelationID] = reln
	return info, nil
}
