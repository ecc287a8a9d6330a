// Command dbsync. PLACEHOLDER from the bench branch: it only knows `dbsync bench`, so
// this package compiles on its own. The CLI branch owns main.go; when merging, keep
// that main.go and route the "bench" subcommand to runBench (cmd/dbsync/bench.go).
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if len(os.Args) < 2 || os.Args[1] != "bench" {
		fmt.Fprintln(os.Stderr, "usage: dbsync bench [flags]")
		os.Exit(2)
	}
	if err := runBench(ctx, os.Args[2:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "dbsync bench:", err)
		os.Exit(1)
	}
}
