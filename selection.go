package dbsync

// InMemSelection holds the rows of one Refresh selection or snapshot chunk in memory,
// keyed by record ID (DBItem.Key: the table's primary key), in the order the SELECT
// returned them. The watermark window removes every key a change inside the window
// touched; what is left at the high watermark becomes refresh rows.
// It is not safe for concurrent use.
type InMemSelection struct {
	// rows are every row added since the last Clear, in the order added; a removed
	// row stays (removed) so its key text remains known.
	rows []selRow
	// index maps each key added since the last Clear to its row's place in rows. It is
	// built when first needed (nil until then): a snapshot chunk's rows, added with
	// appendUnique, are usually only filtered by the keys a window touched
	// (removeKeys), which needs no index.
	index map[string]int
	live  int // rows not removed
}

type selRow struct {
	item DBItem
	// keyText holds the row's key columns in text form (what a follow-up query needs
	// to read the row again); nil when added without it.
	keyText []string
	removed bool
}

// NewInMemSelection returns an empty selection.
func NewInMemSelection() *InMemSelection {
	return &InMemSelection{}
}

// indexed returns the index, building it first if needed. rows never hold two rows
// with the same key (add replaces, appendUnique's callers guarantee it).
func (s *InMemSelection) indexed() map[string]int {
	if s.index == nil {
		s.index = make(map[string]int, len(s.rows))
		for i, r := range s.rows {
			s.index[r.item.Key] = i
		}
	}
	return s.index
}

// Add adds a row, replacing an earlier row with the same key, removed or not (keeping
// its position).
func (s *InMemSelection) Add(item DBItem) { s.add(item, nil) }

// add adds a row with the text form of its key columns.
func (s *InMemSelection) add(item DBItem, keyText []string) {
	index := s.indexed()
	if i, ok := index[item.Key]; ok {
		r := &s.rows[i]
		r.item = item
		if keyText != nil {
			r.keyText = keyText
		}
		if r.removed {
			r.removed = false
			s.live++
		}
		return
	}
	index[item.Key] = len(s.rows)
	s.rows = append(s.rows, selRow{item: item, keyText: keyText})
	s.live++
}

// appendUnique adds a row whose key no row added since the last Clear has (the
// caller's guarantee: rows of one SELECT of the table itself), without indexing it.
func (s *InMemSelection) appendUnique(item DBItem, keyText []string) {
	if s.index != nil {
		s.index[item.Key] = len(s.rows)
	}
	s.rows = append(s.rows, selRow{item: item, keyText: keyText})
	s.live++
}

// Remove drops the row with this key; it reports whether there was one.
func (s *InMemSelection) Remove(key string) bool {
	i, ok := s.indexed()[key]
	if !ok || s.rows[i].removed {
		return false
	}
	s.rows[i].removed = true
	s.live--
	return true
}

// Clear drops every row (a TRUNCATE inside the window).
func (s *InMemSelection) Clear() {
	s.rows = nil
	s.index = nil
	s.live = 0
}

// removeKeys drops the rows whose keys are in keys. Without an index it checks every
// row against keys (a window touches few keys of a chunk; indexing a chunk's 10,000
// rows would cost more).
func (s *InMemSelection) removeKeys(keys map[string]bool) {
	if len(keys) == 0 {
		return
	}
	if s.index != nil {
		for k := range keys {
			s.Remove(k)
		}
		return
	}
	for i := range s.rows {
		r := &s.rows[i]
		if _, ok := keys[r.item.Key]; ok && !r.removed {
			r.removed = true
			s.live--
		}
	}
}

// keyTextsOf returns, for each key, the text form of its key columns (nil: unknown),
// whether its row was removed or not.
func (s *InMemSelection) keyTextsOf(keys []string) [][]string {
	out := make([][]string, len(keys))
	for i, k := range keys {
		if j, ok := s.indexed()[k]; ok {
			out[i] = s.rows[j].keyText
		}
	}
	return out
}

// selectedKeys returns the keys of every row added since the last Clear, removed or
// not, in the order they were first added.
func (s *InMemSelection) selectedKeys() []string {
	out := make([]string, len(s.rows))
	for i, r := range s.rows {
		out[i] = r.item.Key
	}
	return out
}

// Len returns the number of rows left.
func (s *InMemSelection) Len() int { return s.live }

// Get returns the row with this key.
func (s *InMemSelection) Get(key string) (DBItem, bool) {
	i, ok := s.indexed()[key]
	if !ok || s.rows[i].removed {
		return DBItem{}, false
	}
	return s.rows[i].item, true
}

// Items returns the rows left, in the order they were added.
func (s *InMemSelection) Items() []DBItem {
	out := make([]DBItem, 0, s.live)
	for _, r := range s.rows {
		if !r.removed {
			out = append(out, r.item)
		}
	}
	return out
}
