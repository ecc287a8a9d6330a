package dbsync

import (
	"bytes"
	"encoding/binary"
	"fmt"
)

// checkBounds rejects pgoutput messages (protocol version 1) whose declared sizes
// exceed the message before pglogrepl decodes them: pglogrepl allocates a tuple
// column's buffer (up to 4 GB) and a TRUNCATE's relation list (up to 16 GB) from the
// declared size before it reads the bytes, so a corrupt length would exhaust memory
// instead of failing; and it slices a logical decoding message's content by its
// declared length up to the input's capacity, not its length, so a length past the
// end would take in whatever follows the message in memory. Only INSERT, UPDATE,
// DELETE, TRUNCATE and MESSAGE carry such sizes.
// Layouts: "Logical Replication Message Formats" in the PostgreSQL documentation.
func checkBounds(data []byte) error {
	switch data[0] {
	case 'I':
		return checkTuples(data, 5, "N")
	case 'U':
		if len(data) > 5 && (data[5] == 'K' || data[5] == 'O') {
			return checkTuples(data, 5, string(data[5])+"N")
		}
		return checkTuples(data, 5, "N")
	case 'D':
		if len(data) > 5 {
			return checkTuples(data, 5, string(data[5]))
		}
		return fmt.Errorf("DELETE of %d bytes", len(data))
	case 'M':
		// 'M', flags (1 byte), LSN (8 bytes), prefix (NUL-terminated), content length
		// (4 bytes), content.
		off := 10
		if off > len(data) {
			return fmt.Errorf("MESSAGE of %d bytes", len(data))
		}
		nul := bytes.IndexByte(data[off:], 0)
		if nul < 0 {
			return fmt.Errorf("MESSAGE prefix without its terminating NUL")
		}
		off += nul + 1
		if off+4 > len(data) {
			return fmt.Errorf("MESSAGE content length past the end")
		}
		if n := uint64(binary.BigEndian.Uint32(data[off:])); n > uint64(len(data)-off-4) {
			return fmt.Errorf("MESSAGE content declares %d bytes, %d left", n, len(data)-off-4)
		}
	case 'T':
		// 'T', relation count (4 bytes), options (1 byte), relation OIDs (4 bytes each).
		if len(data) < 6 {
			return fmt.Errorf("TRUNCATE of %d bytes", len(data))
		}
		if n := uint64(binary.BigEndian.Uint32(data[1:5])); n*4 > uint64(len(data)-6) {
			return fmt.Errorf("TRUNCATE lists %d relations in %d bytes", n, len(data))
		}
	}
	return nil
}

// checkTuples walks the tuples that follow off, each introduced by the next byte of
// markers, checking every column length against the bytes left.
func checkTuples(data []byte, off int, markers string) error {
	for i := 0; i < len(markers); i++ {
		if off >= len(data) || data[off] != markers[i] {
			return fmt.Errorf("expected tuple %q at offset %d", markers[i], off)
		}
		off++
		if off+2 > len(data) {
			return fmt.Errorf("tuple header past the end at offset %d", off)
		}
		ncols := int(binary.BigEndian.Uint16(data[off:]))
		off += 2
		for c := 0; c < ncols; c++ {
			if off >= len(data) {
				return fmt.Errorf("column %d past the end", c)
			}
			kind := data[off]
			off++
			if kind != 't' && kind != 'b' {
				continue
			}
			if off+4 > len(data) {
				return fmt.Errorf("column %d length past the end", c)
			}
			n := uint64(binary.BigEndian.Uint32(data[off:]))
			off += 4
			if n > uint64(len(data)-off) {
				return fmt.Errorf("column %d declares %d bytes, %d left", c, n, len(data)-off)
			}
			off += int(n)
		}
	}
	return nil
}
