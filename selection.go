package dbsync

// InMemSelection holds the rows of one Refresh selection or snapshot chunk in memory,
// keyed by record ID (DBItem.Key: the table's primary key), in the order the SELECT
// returned them. The watermark window removes every key a change inside the window
// touched; what is left at the high watermark becomes refresh rows.
// It is not safe for concurrent use.
type InMemSelection struct {
	order []string
	items map[string]DBItem
	// keyText holds each added row's key columns in text form (what a follow-up
	// query needs to read the row again), also after Remove.
	keyText map[string][]string
}

// NewInMemSelection returns an empty selection.
func NewInMemSelection() *InMemSelection {
	return &InMemSelection{items: map[string]DBItem{}, keyText: map[string][]string{}}
}

// Add adds a row, replacing an earlier row with the same key (keeping its position).
func (s *InMemSelection) Add(item DBItem) {
	if _, ok := s.items[item.Key]; !ok {
		s.order = append(s.order, item.Key)
	}
	s.items[item.Key] = item
}

// Remove drops the row with this key; it reports whether there was one.
func (s *InMemSelection) Remove(key string) bool {
	if _, ok := s.items[key]; !ok {
		return false
	}
	delete(s.items, key)
	return true
}

// Clear drops every row (a TRUNCATE inside the window).
func (s *InMemSelection) Clear() {
	s.items = map[string]DBItem{}
	s.order = nil
	s.keyText = map[string][]string{}
}

// addKeyText records the text form of a row's key columns.
func (s *InMemSelection) addKeyText(key string, text []string) { s.keyText[key] = text }

// selectedKeys returns the keys of every row added since the last Clear, removed or
// not, in the order they were added.
func (s *InMemSelection) selectedKeys() []string {
	out := make([]string, 0, len(s.order))
	seen := make(map[string]bool, len(s.order))
	for _, k := range s.order {
		if !seen[k] {
			seen[k] = true
			out = append(out, k)
		}
	}
	return out
}

// Len returns the number of rows left.
func (s *InMemSelection) Len() int { return len(s.items) }

// Get returns the row with this key.
func (s *InMemSelection) Get(key string) (DBItem, bool) {
	it, ok := s.items[key]
	return it, ok
}

// Items returns the rows left, in the order they were added.
func (s *InMemSelection) Items() []DBItem {
	out := make([]DBItem, 0, len(s.items))
	seen := make(map[string]bool, len(s.items))
	for _, k := range s.order {
		if it, ok := s.items[k]; ok && !seen[k] {
			seen[k] = true
			out = append(out, it)
		}
	}
	return out
}
