package bench

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/dbsync/dbsync"
	"github.com/jackc/pglogrepl"
)

// steadyRate is the writer's rate in single-row transactions per second.
const steadyRate = 1000

// latencies collects commit-to-handler latencies of the rows with id >= from.
type latencies struct {
	mu      sync.Mutex
	from    int64
	samples []time.Duration
	bad     int
}

func (l *latencies) add(id int64, created any) {
	now := time.Now()
	var ts time.Time
	switch v := created.(type) {
	case time.Time:
		ts = v
	case string:
		t, err := time.Parse("2006-01-02 15:04:05.999999-07", v)
		if err != nil {
			l.mu.Lock()
			l.bad++
			l.mu.Unlock()
			return
		}
		ts = t
	default:
		l.mu.Lock()
		l.bad++
		l.mu.Unlock()
		return
	}
	l.mu.Lock()
	if id >= l.from {
		l.samples = append(l.samples, now.Sub(ts))
	}
	l.mu.Unlock()
}

func (l *latencies) count() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.samples)
}

func (l *latencies) summary() (p50, p99, max time.Duration, n int) {
	l.mu.Lock()
	s := append([]time.Duration(nil), l.samples...)
	l.mu.Unlock()
	sortDurations(s)
	if len(s) == 0 {
		return 0, 0, 0, 0
	}
	return percentile(s, 50), percentile(s, 99), s[len(s)-1], len(s)
}

func idOf(v any) int64 {
	switch x := v.(type) {
	case int64:
		return x
	case string:
		n, _ := strconv.ParseInt(x, 10, 64)
		return n
	}
	return -1
}

// writer inserts single-row transactions into orders at rate per second for d,
// starting at id first, and returns how many it wrote.
func writer(ctx context.Context, db *sql.DB, first int64, rate int, d time.Duration) (int64, error) {
	interval := time.Second / time.Duration(rate)
	start := time.Now()
	end := start.Add(d)
	var n int64
	for {
		next := start.Add(time.Duration(n) * interval)
		if next.After(end) {
			return n, nil
		}
		if w := time.Until(next); w > 0 {
			time.Sleep(w)
		}
		if _, err := db.ExecContext(ctx, `INSERT INTO orders VALUES ($1, 'steady', 1, 1.00, clock_timestamp(), '{"k": 1}')`, first+n); err != nil {
			return n, err
		}
		n++
	}
}

// steady is workload (b): a writer at 1,000 single-row transactions per second for
// 20 s (scaled), commit-to-handler latency for dbsync and for a streaming client, then
// the CPU the idle syncer and server spend, and the latency of the first change after
// the idle period.
func (r *runner) steady(ctx context.Context) error {
	sl, db, pgx, err := r.prepare(ctx, "steady", ordersDDL)
	if err != nil {
		return err
	}
	defer r.dropDatabase(sl.dbName, db)
	pgx.Close()
	dur := time.Duration(float64(20*time.Second) * r.cfg.Scale)
	if dur < 3*time.Second {
		dur = 3 * time.Second
	}
	wdb, err := sql.Open("postgres", sl.dsn)
	if err != nil {
		return err
	}
	defer wdb.Close()
	wdb.SetMaxOpenConns(1)
	wl := fmt.Sprintf("b steady %d tx/s, %.0fs", steadyRate, dur.Seconds())
	var nextID int64 = 1

	newSlot := func(who string) (string, error) {
		name := benchSlot + "_" + who
		_, err := db.ExecContext(ctx, `SELECT pg_create_logical_replication_slot($1, 'pgoutput')`, name)
		return name, err
	}
	pm, err := postmasterPID(r.srv.DataDir())
	if err != nil {
		return err
	}
	phase := func(contender string, lat *latencies, stop func() error, more func() string) error {
		time.Sleep(time.Second)
		lat.from = nextID
		r.logf("%s: %s: writing", wl, contender)
		// CPU while writing: every server process (the writer's backend included, the
		// same for each contender) and this process (the writer's client and the
		// contender).
		s0, g0 := serverCPU(pm), selfCPU()
		n, err := writer(ctx, wdb, nextID, steadyRate, dur)
		s1, g1 := serverCPU(pm), selfCPU()
		nextID += n
		if err != nil {
			stop()
			return err
		}
		deadline := time.Now().Add(30 * time.Second)
		for lat.count() < int(n) && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		if err := stop(); err != nil {
			return err
		}
		p50, p99, max, got := lat.summary()
		if got < int(n) {
			return fmt.Errorf("%s: saw %d of %d rows within 30 s of the last commit", contender, got, n)
		}
		ok := p50 <= 15*time.Millisecond && p99 <= 60*time.Millisecond
		target := ""
		if contender == "dbsync (lib/pq)" {
			target = "p50 <= 15 ms, p99 <= 60 ms: " + verdict(ok)
		}
		r.add(Result{Workload: wl, Contender: contender, Rows: n, Elapsed: dur, Rate: float64(n) / dur.Seconds(),
			Extra: fmt.Sprintf("p50 %s, p99 %s, max %s; CPU while writing: server %.0f%%, this process %.0f%% of a core",
				ms(p50), ms(p99), ms(max), pct(s1-s0, dur), pct(g1-g0, dur)) + more(), Target: target})
		return nil
	}

	// dbsync: the defaults, then polling back to back and every 25 ms (server CPU
	// against latency), then without logging running-transactions records (restart_lsn
	// moving only every ~15 s).
	variants := []struct {
		name string
		opts []dbsync.SyncerOpt
	}{
		{"dbsync (lib/pq)", nil},
		{"dbsync (lib/pq, MinPollInterval 0s)", []dbsync.SyncerOpt{dbsync.WithMinPollInterval(0)}},
		{"dbsync (lib/pq, MinPollInterval 25ms)", []dbsync.SyncerOpt{dbsync.WithMinPollInterval(25 * time.Millisecond)}},
		{"dbsync (lib/pq, MaxRestartLSNLag 0)", []dbsync.SyncerOpt{dbsync.WithMaxRestartLSNLag(0)}},
	}
	for _, v := range variants {
		slot, err := newSlot("dbsync")
		if err != nil {
			return err
		}
		lat := &latencies{}
		h := newHandler(0)
		h.onChange = func(c *dbsync.Change) { lat.add(idOf(c.New["id"]), c.New["created_at"]) }
		run, err := startSyncer(ctx, db, slot, sl.pub, h, v.opts...)
		if err != nil {
			return err
		}
		logs := func() string {
			return fmt.Sprintf("; %d running-xacts records logged", run.s.RestartLSNLogs())
		}
		if err := phase(v.name, lat, run.stop, logs); err != nil {
			return err
		}
		dropSlot(db, slot)
	}
	// streaming
	{
		slot, err := newSlot("stream")
		if err != nil {
			return err
		}
		lat := &latencies{}
		c := &streamClient{onInsert: func(m *pglogrepl.InsertMessage, reln *pglogrepl.RelationMessage) {
			lat.add(idOf(string(m.Tuple.Columns[0].Data)), string(m.Tuple.Columns[4].Data))
		}}
		sctx, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- c.run(sctx, sl.dsn, slot, sl.pub, nil) }()
		stop := func() error { cancel(); return <-done }
		if err := phase("streaming (pglogrepl)", lat, stop, func() string { return "" }); err != nil {
			return err
		}
		dropSlot(db, slot)
	}
	return r.idle(ctx, sl, db, wdb, &nextID)
}

// idle measures the CPU an idle Syncer and the server spend over a window, against
// the server alone over the same window, then the latency of one change after it.
func (r *runner) idle(ctx context.Context, sl *slots, db, wdb *sql.DB, nextID *int64) error {
	win := time.Duration(float64(10*time.Second) * r.cfg.Scale)
	if win < 3*time.Second {
		win = 3 * time.Second
	}
	wl := fmt.Sprintf("b idle %.0fs", win.Seconds())
	pm, err := postmasterPID(r.srv.DataDir())
	if err != nil {
		return err
	}
	// The steady phases left work for autovacuum (100,000 inserts at scale 1) and
	// dirty buffers for the background writer: do both now, as the catch-up workloads
	// do before their contenders, so that neither runs inside one of the windows below
	// and counts as the idle Syncer's CPU. The autovacuum runs in each window are
	// reported.
	for _, q := range []string{`VACUUM (ANALYZE)`, `CHECKPOINT`} {
		if _, err := db.ExecContext(ctx, q); err != nil {
			return fmt.Errorf("%s: %w", q, err)
		}
	}
	// window measures one idle window, a second after whatever came before it: the
	// CPU of the server and of this process, and the autovacuum runs inside it.
	window := func() (server, self time.Duration, autovacuum int64, err error) {
		time.Sleep(time.Second)
		a0, err := autovacuumRuns(ctx, db)
		if err != nil {
			return 0, 0, 0, err
		}
		s0, g0 := serverCPU(pm), selfCPU()
		time.Sleep(win)
		s1, g1 := serverCPU(pm), selfCPU()
		a1, err := autovacuumRuns(ctx, db)
		return s1 - s0, g1 - g0, a1 - a0, err
	}
	baseServer, baseSelf, baseAV, err := window()
	if err != nil {
		return err
	}
	r.add(Result{Workload: wl, Contender: "server alone", Elapsed: win,
		Extra: fmt.Sprintf("server %.2f%% of a core, this process %.2f%%; %d autovacuum runs", pct(baseServer, win), pct(baseSelf, win), baseAV)})

	_, err = db.ExecContext(ctx, `SELECT pg_create_logical_replication_slot($1, 'pgoutput')`, benchSlot+"_idle")
	if err != nil {
		return err
	}
	lat := &latencies{from: *nextID}
	h := newHandler(0)
	h.onChange = func(c *dbsync.Change) { lat.add(idOf(c.New["id"]), c.New["created_at"]) }
	run, err := startSyncer(ctx, db, benchSlot+"_idle", sl.pub, h)
	if err != nil {
		return err
	}
	server, self, av, err := window()
	if err != nil {
		run.stop()
		return err
	}
	extra := server - baseServer
	if extra < 0 {
		extra = 0
	}
	total := pct(extra+self, win)
	// first change after the idle period
	if _, err := writer(ctx, wdb, *nextID, 1, time.Millisecond); err != nil {
		run.stop()
		return err
	}
	*nextID++
	deadline := time.Now().Add(30 * time.Second)
	for lat.count() < 1 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if err := run.stop(); err != nil {
		return err
	}
	p50, _, _, n := lat.summary()
	wake := "not seen within 30 s"
	if n > 0 {
		wake = ms(p50)
	}
	r.add(Result{Workload: wl, Contender: "dbsync (lib/pq) idle", Elapsed: win,
		Extra:  fmt.Sprintf("syncer %.2f%% + server extra %.2f%% of a core; %d autovacuum runs; first change after idle: %s", pct(self, win), pct(extra, win), av, wake),
		Target: fmt.Sprintf("< 1%% of a core: %s (%.2f%%)", verdict(total < 1), total)})
	return nil
}

// autovacuumRuns is how many times autovacuum vacuumed or analyzed a table of db's
// database so far (pg_stat_all_tables).
func autovacuumRuns(ctx context.Context, db *sql.DB) (int64, error) {
	var n int64
	err := db.QueryRowContext(ctx, `SELECT coalesce(sum(autovacuum_count + autoanalyze_count), 0) FROM pg_stat_all_tables`).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("autovacuum runs: %w", err)
	}
	return n, nil
}

func pct(d, win time.Duration) float64 { return 100 * d.Seconds() / win.Seconds() }

// selfCPU is this process's user+system CPU time.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func postmasterPID(dataDir string) (int, error) {
	b, err := os.ReadFile(filepath.Join(dataDir, "postmaster.pid"))
	if err != nil {
		return 0, fmt.Errorf("read postmaster.pid: %w", err)
	}
	return strconv.Atoi(strings.TrimSpace(strings.SplitN(string(b), "\n", 2)[0]))
}

// serverCPU is the CPU time of the postmaster and its children so far: for each
// live process its scheduler run time (/proc/<pid>/schedstat, first field, in ns;
// user+system from /proc/<pid>/stat, in 10 ms ticks, where schedstat is missing),
// plus the children that ended (the postmaster's cutime and cstime, in ticks).
// /proc/<pid>/stat reports each process's time in whole ticks, so a sum over the ~10
// processes of a cluster was off by up to ~10 ticks between two readings: 100 ms, 1%
// of a core over the idle benchmark's 10 s windows.
//
// A child the postmaster reaps while /proc is being scanned is in neither part of the
// sum when its entry is read after it is gone and the postmaster's cutime before it
// grew (the postmaster's lower pid comes first): a backend's whole time, seconds for a
// catch-up's, lost from one reading. So the ended children's time is read before and
// after the scan, and the scan repeated until the two agree (at most 10 times: a
// cluster reaping a child during every scan would still give a short reading).
func serverCPU(pm int) time.Duration {
	var live time.Duration
	for attempt := 0; attempt < 10; attempt++ {
		before, ok := endedChildrenCPU(pm)
		if !ok {
			return 0
		}
		live = liveServerCPU(pm)
		if after, ok := endedChildrenCPU(pm); ok && after == before {
			return live + after
		}
	}
	ended, _ := endedChildrenCPU(pm)
	return live + ended
}

// endedChildrenCPU is the CPU time of the postmaster's children that ended and were
// reaped: its cutime and cstime (/proc/<pm>/stat fields 16 and 17, in ticks).
func endedChildrenCPU(pm int) (time.Duration, bool) {
	f, ok := procStatFields(strconv.Itoa(pm))
	if !ok || len(f) < 15 {
		return 0, false
	}
	cu, _ := strconv.ParseInt(f[13], 10, 64)
	cs, _ := strconv.ParseInt(f[14], 10, 64)
	return time.Duration(cu+cs) * 10 * time.Millisecond, true
}

// liveServerCPU is the CPU time of the postmaster and its children that are still in
// /proc (zombies included).
func liveServerCPU(pm int) time.Duration {
	ents, _ := os.ReadDir("/proc")
	var ticks int64
	var ns time.Duration
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		f, ok := procStatFields(e.Name())
		if !ok || len(f) < 13 {
			continue
		}
		ppid, _ := strconv.Atoi(f[1])
		if pid != pm && ppid != pm {
			continue
		}
		if run, ok := schedRunTime(e.Name()); ok {
			ns += run
		} else {
			u, _ := strconv.ParseInt(f[11], 10, 64)
			st, _ := strconv.ParseInt(f[12], 10, 64)
			ticks += u + st
		}
	}
	return ns + time.Duration(ticks)*10*time.Millisecond
}

// procStatFields returns the fields of /proc/<pid>/stat after the command name: f[0]
// is field 3 (state), f[1] the ppid, f[11] utime, f[12] stime, f[13] cutime, f[14]
// cstime.
func procStatFields(pid string) ([]string, bool) {
	b, err := os.ReadFile(filepath.Join("/proc", pid, "stat"))
	if err != nil {
		return nil, false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 || i+2 > len(s) {
		return nil, false
	}
	return strings.Fields(s[i+2:]), true
}

// schedRunTime is the time process pid has run on a CPU, from /proc/<pid>/schedstat.
func schedRunTime(pid string) (time.Duration, bool) {
	b, err := os.ReadFile(filepath.Join("/proc", pid, "schedstat"))
	if err != nil {
		return 0, false
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0, false
	}
	n, err := strconv.ParseInt(f[0], 10, 64)
	if err != nil {
		return 0, false
	}
	return time.Duration(n), true
}
