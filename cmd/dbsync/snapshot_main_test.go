package main

// DELETE AT MERGE: cmd/dbsync/main_test.go (branch cli) declares the same TestMain.
// It is here only so this branch's snapshot command tests run without main_test.go.

import (
	"os"
	"testing"

	"github.com/dbsync/dbsync/internal/pgtest"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }
