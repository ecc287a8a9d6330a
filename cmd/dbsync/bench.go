package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime/pprof"
	"strings"
	"time"

	"github.com/dbsync/dbsync/internal/bench"
)

// runBench is `dbsync bench`: it starts a throwaway PostgreSQL cluster, runs the
// benchmark workloads (see docs/BENCHMARKS.md) and prints one table of figures and
// ratios to stdout; progress goes to stderr.
//
//	dbsync bench [-scale 1] [-workloads catchup,steady,bigtx,snapshot] [-naive-timeout 60s] [-repeat 2] [-q]
func runBench(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	scale := fs.Float64("scale", 1, "multiply every workload size and duration (0.1 for a quick run)")
	workloads := fs.String("workloads", strings.Join(bench.AllWorkloads, ","), "comma-separated workloads to run")
	naiveTimeout := fs.Duration("naive-timeout", 60*time.Second, "stop the naive contender after this long and report its rate so far")
	repeat := fs.Int("repeat", 2, "rounds of the limit and dbsync contenders per catch-up workload (the best is reported)")
	quiet := fs.Bool("q", false, "do not print progress to stderr")
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile of the whole run (this process) to this file")
	capture := fs.String("capture", "", "instead of benchmarking, capture pgoutput messages of every kind into this directory (testdata for the decode micro-benchmarks)")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: dbsync bench [flags]\n\nStarts its own PostgreSQL (initdb/pg_ctl from PATH or /usr/lib/postgresql/*/bin), builds each workload\nand prints one table comparing dbsync with the limit, the naive strategy and a streaming client.\n\nflags:")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return usageError{err.Error()}
	}
	if fs.NArg() > 0 {
		return usageError{fmt.Sprintf("bench takes no arguments, got %q", fs.Args())}
	}
	if *capture != "" {
		return bench.Capture(ctx, *capture)
	}
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	cfg := bench.Config{Scale: *scale, NaiveTimeout: *naiveTimeout, Repeat: *repeat}
	for _, w := range strings.Split(*workloads, ",") {
		if w = strings.TrimSpace(w); w != "" {
			cfg.Workloads = append(cfg.Workloads, w)
		}
	}
	if !*quiet {
		cfg.Log = stderr
	}
	return bench.Run(ctx, stdout, cfg)
}
