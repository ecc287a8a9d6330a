package dbsync

import (
	"context"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// lib/pq ends a statement whose context ended by sending a CancelRequest on a new
// connection and then waits for the statement's answer on its own, with no deadline
// on the socket; it reads a new connection's startup answers without one too. When
// the server cannot be reached (a network partition, a frozen server: the TCP
// connections stay open, nothing comes back) neither ever arrives, and Run, Close or
// a Refresh waited for good, their contexts ended or not
// (TestBlackholeCancelRunReturns/pq). The pool NewSyncer opens itself therefore dials
// through a socketTracker, which knows the pool's sockets and how long each has been
// waiting in a read: when Run has not returned stopBound after its context ended (or
// Close has not finished stopBound after it began), the sockets stuck in a read for
// longer than cleanupTimeout are closed, which ends their statements with an error
// (the connection is then discarded), if the server does not answer a probe on a new
// connection either (answersProbe): an answering server had the statements of ended
// contexts cancelled, so the sockets still waiting on it serve statements that are
// merely long, perhaps of other calls or the user's own through DB(), and are left
// alone (TestSocketSweepSparesHealthyStatement). pgx sets a deadline on its socket when the
// context ends and needs none of this; a lib/pq pool given with WithDB cannot be
// reached so (README, "Stopping").

// stopBound is how long after Run's context ended (or Close was called) the Syncer
// waits for statements to end before closing the sockets of its own pool that wait
// for the server: longer than stopGrace, the slot's forwarding after a stop, and
// cleanupTimeout, the slot lock's release, together.
const stopBound = stopGrace + 2*cleanupTimeout

// socketTracker is a lib/pq Dialer that keeps the sockets it dialed.
type socketTracker struct {
	d     net.Dialer
	mu    sync.Mutex
	conns map[*trackedConn]struct{}
	// silences counts the probes that went unanswered (closeStuck closed sockets after
	// each): a statement sent once it moved hangs the same way (silentSince).
	silences atomic.Int64
	// network and address are those of the last socket dialed: where answersProbe
	// knocks.
	network, address string
}

func newSocketTracker() *socketTracker {
	return &socketTracker{conns: map[*trackedConn]struct{}{}}
}

func (t *socketTracker) Dial(network, address string) (net.Conn, error) {
	return t.DialContext(context.Background(), network, address)
}

func (t *socketTracker) DialTimeout(network, address string, timeout time.Duration) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return t.DialContext(ctx, network, address)
}

func (t *socketTracker) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	c, err := t.d.DialContext(ctx, network, address)
	if err != nil {
		return nil, err
	}
	tc := &trackedConn{Conn: c, t: t}
	t.mu.Lock()
	t.conns[tc] = struct{}{}
	t.network, t.address = network, address
	t.mu.Unlock()
	return tc, nil
}

// closeStuck closes the sockets that have waited in one read for longer than d, unless
// the server answers a probe on a new connection (answersProbe): then they wait for
// statements that are merely long (a handler's write through DB(), a Snapshot chunk's
// SELECT waiting for a lock, a peek decoding a large transaction), whose contexts
// may well be live; a call whose context ended had its statement cancelled by lib/pq
// on that server, which answers (TestSocketSweepSparesHealthyStatement). It returns
// how many it closed.
func (t *socketTracker) closeStuck(d time.Duration) int {
	now := time.Now().UnixNano()
	var stuck []*trackedConn
	t.mu.Lock()
	for c := range t.conns {
		if since := c.readSince.Load(); since != 0 && now-since > int64(d) {
			stuck = append(stuck, c)
		}
	}
	network, address := t.network, t.address
	t.mu.Unlock()
	if len(stuck) == 0 || answersProbe(network, address, probeTimeout) {
		return 0
	}
	// Counted before the sockets close, so the calls their errors end see it.
	t.silences.Add(1)
	for _, c := range stuck {
		c.Close()
	}
	return len(stuck)
}

// probeTimeout bounds answersProbe: the connection and the server's one-byte answer.
const probeTimeout = 2 * time.Second

// answersProbe tells whether the server at address answers on a new connection
// within timeout: it sends PostgreSQL's SSLRequest, which the server (its postmaster,
// or a pooler before it) answers with one byte, 'S' or 'N', before any
// authentication (any byte is an answer).  A server cut off by a partition, or frozen, does not.
func answersProbe(network, address string, timeout time.Duration) bool {
	if address == "" {
		return false
	}
	c, err := net.DialTimeout(network, address, timeout)
	if err != nil {
		return false
	}
	defer c.Close()
	if err := c.SetDeadline(time.Now().Add(timeout)); err != nil {
		return false
	}
	// Length 8, then the SSLRequest code 80877103 (1234 << 16 | 5679).
	if _, err := c.Write([]byte{0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f}); err != nil {
		return false
	}
	var b [1]byte
	n, err := c.Read(b[:])
	return n == 1 // 'S' or 'N'; any byte is an answer

}

// trackedConn is a socket of a socketTracker; readSince is when the read under way
// began (0: none).
type trackedConn struct {
	net.Conn
	t         *socketTracker
	readSince atomic.Int64
	closeOnce sync.Once
}

func (c *trackedConn) Read(b []byte) (int, error) {
	c.readSince.Store(time.Now().UnixNano())
	n, err := c.Conn.Read(b)
	c.readSince.Store(0)
	return n, err
}

func (c *trackedConn) Close() error {
	err := c.Conn.Close()
	c.closeOnce.Do(func() {
		c.t.mu.Lock()
		delete(c.t.conns, c)
		c.t.mu.Unlock()
	})
	return err
}

// silenceMark is a mark for silentSince: the count of unanswered probes so far.
func (s *Syncer) silenceMark() int64 {
	if s.sockets == nil {
		return 0
	}
	return s.sockets.silences.Load()
}

// silentSince tells whether a probe of the server went unanswered (and the sockets
// stuck on it were closed) since mark was taken: a statement sent now would most
// likely hang until the next sweep, cleanupTimeout of reading and another probe later.
// Always false on a pool given with WithDB.
func (s *Syncer) silentSince(mark int64) bool {
	return s.sockets != nil && s.sockets.silences.Load() > mark
}

// unstickAfter closes the sockets of the Syncer's own pool stuck in a read (see
// above) from stopBound after ctx ended, every second, until the returned stop is
// called; it does nothing on a pool given with WithDB. Nothing runs before ctx ends.
func (s *Syncer) unstickAfter(ctx context.Context) (stop func()) {
	if s.sockets == nil {
		return func() {}
	}
	var mu sync.Mutex
	var t *time.Timer
	stopped := false
	var sweep func()
	sweep = func() {
		if n := s.sockets.closeStuck(cleanupTimeout); n > 0 {
			s.log.Warn("dbsync: the server did not answer after the stop; closed the connections waiting for it", "connections", n)
		}
		mu.Lock()
		if !stopped {
			t = time.AfterFunc(time.Second, sweep)
		}
		mu.Unlock()
	}
	unwatch := context.AfterFunc(ctx, func() {
		mu.Lock()
		if !stopped {
			t = time.AfterFunc(stopBound, sweep)
		}
		mu.Unlock()
	})
	return func() {
		unwatch()
		mu.Lock()
		stopped = true
		if t != nil {
			t.Stop()
		}
		mu.Unlock()
	}
}
