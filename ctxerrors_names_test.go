package dbsync

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestNamedErrorsListsEveryErr: withCtxErr decides whether an error has a cause of its
// own by namedErrors; an exported Err* variable missing from it would have its message
// led by "context canceled" again. Every package-level Err* of the library's files is
// listed, but ErrStopProcessingMessages, which a handler returns to stop Run and is
// not a failure.
func TestNamedErrorsListsEveryErr(t *testing.T) {
	files, err := filepath.Glob("*.go")
	require.NoError(t, err)
	var declared, listed []string
	fset := token.NewFileSet()
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		src, err := os.ReadFile(f)
		require.NoError(t, err)
		af, err := parser.ParseFile(fset, f, src, 0)
		require.NoError(t, err)
		for _, d := range af.Decls {
			gd, ok := d.(*ast.GenDecl)
			if !ok || gd.Tok != token.VAR {
				continue
			}
			for _, sp := range gd.Specs {
				vs := sp.(*ast.ValueSpec)
				for i, n := range vs.Names {
					if strings.HasPrefix(n.Name, "Err") && n.Name != "ErrStopProcessingMessages" {
						declared = append(declared, n.Name)
					}
					if n.Name == "namedErrors" {
						for _, e := range vs.Values[i].(*ast.CompositeLit).Elts {
							listed = append(listed, e.(*ast.Ident).Name)
						}
					}
				}
			}
		}
	}
	sort.Strings(declared)
	sort.Strings(listed)
	require.NotEmpty(t, declared)
	require.Equal(t, declared, listed, "namedErrors (ctxerrors.go) must list every Err* of the library")
	require.Len(t, namedErrors, len(listed))
}
