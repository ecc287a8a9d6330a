package dbsync

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"testing"

	"github.com/stretchr/testify/require"
)

// goProgram matches a fenced Go block that is a whole program.
var goProgram = regexp.MustCompile("(?s)```go\n(package main\n.*?)```")

// TestDocProgramsCompile: every whole Go program in README.md and docs/*.md (a
// ```go block starting with "package main") compiles against this module, so a
// renamed or changed API cannot leave the quick start behind. The fragments around
// them are covered by the runnable examples (example_*_test.go).
func TestDocProgramsCompile(t *testing.T) {
	goCmd, err := exec.LookPath("go")
	require.NoError(t, err, "the go command is needed to compile the documentation's programs")
	wd, err := os.Getwd()
	require.NoError(t, err)
	docs, err := filepath.Glob("docs/*.md")
	require.NoError(t, err)
	programs := 0
	for _, doc := range append([]string{"README.md"}, docs...) {
		text, err := os.ReadFile(doc)
		require.NoError(t, err)
		for i, m := range goProgram.FindAllSubmatch(text, -1) {
			programs++
			dir := t.TempDir()
			src := filepath.Join(dir, "main.go")
			require.NoError(t, os.WriteFile(src, m[1], 0o644))
			// The program is built as a package of this module that exists only in
			// the overlay, so it uses this checkout of dbsync and its go.sum.
			overlay, err := json.Marshal(map[string]map[string]string{"Replace": {
				filepath.Join(wd, "internal", "docprogram", "main.go"): src,
			}})
			require.NoError(t, err)
			overlayFile := filepath.Join(dir, "overlay.json")
			require.NoError(t, os.WriteFile(overlayFile, overlay, 0o644))
			cmd := exec.Command(goCmd, "build", "-overlay", overlayFile, "-o", os.DevNull, "./internal/docprogram")
			out, err := cmd.CombinedOutput()
			require.NoError(t, err, "program %d of %s does not compile:\n%s\n%s", i+1, doc, out, m[1])
		}
	}
	require.NotZero(t, programs, "README.md's quick start is a whole program; none was found")
}
