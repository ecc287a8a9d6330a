package dbsync

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestReadmeConfigurationMatchesCode: README's "Configuration" table names every
// exported option (a function returning SyncerOpt) and every environment variable
// NewSyncer reads (the Env* constants), and names no option or variable the code
// does not have.
func TestReadmeConfigurationMatchesCode(t *testing.T) {
	readme, err := os.ReadFile("README.md")
	require.NoError(t, err)
	text := string(readme)
	start := strings.Index(text, "\n## Configuration\n")
	require.NotEqual(t, -1, start)
	end := strings.Index(text[start+1:], "\n## ")
	require.NotEqual(t, -1, end)
	var table []string
	for _, line := range strings.Split(text[start:start+1+end], "\n") {
		if strings.HasPrefix(line, "|") {
			table = append(table, line)
		}
	}
	section := strings.Join(table, "\n")

	fset := token.NewFileSet()
	pkgs, err := parser.ParseDir(fset, ".", func(fi os.FileInfo) bool { return !strings.HasSuffix(fi.Name(), "_test.go") }, 0)
	require.NoError(t, err)
	var options, envs []string
	for _, f := range pkgs["dbsync"].Files {
		for _, decl := range f.Decls {
			switch d := decl.(type) {
			case *ast.FuncDecl:
				if d.Recv != nil || !d.Name.IsExported() || d.Type.Results == nil || len(d.Type.Results.List) != 1 {
					continue
				}
				if id, ok := d.Type.Results.List[0].Type.(*ast.Ident); ok && id.Name == "SyncerOpt" {
					options = append(options, d.Name.Name)
				}
			case *ast.GenDecl:
				for _, spec := range d.Specs {
					vs, ok := spec.(*ast.ValueSpec)
					if !ok {
						continue
					}
					for i, n := range vs.Names {
						if strings.HasPrefix(n.Name, "Env") && i < len(vs.Values) {
							if lit, ok := vs.Values[i].(*ast.BasicLit); ok && lit.Kind == token.STRING {
								v, err := strconv.Unquote(lit.Value)
								require.NoError(t, err)
								envs = append(envs, v)
							}
						}
					}
				}
			}
		}
	}
	sort.Strings(options)
	require.Contains(t, options, "WithPGConnStr", "the parse must find the options")
	require.Contains(t, envs, "POSTGRES_PASSWORD", "the parse must find the variables")
	for _, o := range options {
		require.Contains(t, section, "`"+o+"(", "README's Configuration table lacks option %s", o)
	}
	for _, e := range envs {
		require.Contains(t, section, "`"+e+"`", "README's Configuration table lacks variable %s", e)
	}
	for _, m := range regexp.MustCompile("`((?:With|For)[A-Za-z]+)\\(").FindAllStringSubmatch(section, -1) {
		require.Contains(t, options, m[1], "README's Configuration table names an option the code lacks")
	}
	for _, m := range regexp.MustCompile("`((?:POSTGRES|DBSYNC)_[A-Z_]+)`").FindAllStringSubmatch(section, -1) {
		require.Contains(t, envs, m[1], "README's Configuration table names a variable the code lacks")
	}
}
