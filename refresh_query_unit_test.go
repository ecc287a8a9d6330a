package dbsync

import "testing"

// TestParseColumnRefOfExplainOutput: column references as EXPLAIN (VERBOSE) prints
// them, through casts, and expressions that are not one column.
func TestParseColumnRefOfExplainOutput(t *testing.T) {
	for _, c := range []struct{ in, qual, name string }{
		{`id`, "", "id"},
		{`t.other`, "t", "other"},
		{`"Odd T"."Id"`, "Odd T", "Id"},
		{`"Big ""V"""`, "", `Big "V"`},
		{`(id)::text`, "", "id"},
		{`((x.v)::bigint)::integer`, "x", "v"},
		{`(("Big ""V"")")::bigint)::integer`, "", `Big "V")`},
		{`(t.v)::character varying(10)`, "t", "v"},
		{`a_1$.b2`, "a_1$", "b2"},
	} {
		q, n, ok := parseColumnRef(stripCasts(c.in))
		if !ok || q != c.qual || n != c.name {
			t.Errorf("%s: got %q %q %v, want %q %q", c.in, q, n, ok, c.qual, c.name)
		}
	}
	for _, in := range []string{`(other + 0)`, `upper(name)`, `(id + 1)::text`, `'1'::integer`, `1`, `"unterminated`, `""`,
		`a.b.c`, `(id)`, `CASE WHEN (id > 1) THEN id ELSE 0 END`, `(id)::text || 'x'`} {
		if q, n, ok := parseColumnRef(stripCasts(in)); ok {
			t.Errorf("%s: got column %q %q", in, q, n)
		}
	}
}
