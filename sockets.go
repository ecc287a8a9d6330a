package dbsync

import (
	"context"
	"errors"
	"fmt"
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
// (the connection is then discarded). pgx sets a deadline on its socket when the
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
	t.mu.Unlock()
	return tc, nil
}

// closeStuck closes the sockets that have waited in one read for longer than d and
// returns how many.
func (t *socketTracker) closeStuck(d time.Duration) int {
	now := time.Now().UnixNano()
	var stuck []*trackedConn
	t.mu.Lock()
	for c := range t.conns {
		if since := c.readSince.Load(); since != 0 && now-since > int64(d) {
			stuck = append(stuck, c)
		}
	}
	t.mu.Unlock()
	for _, c := range stuck {
		c.Close()
	}
	return len(stuck)
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

// withCtxErr is err, wrapping ctx's error too when ctx ended (and err does not already):
// a statement that ctx ended fails with what the driver saw (lib/pq: the server's
// 57014 "canceling statement due to user request", or a socket closed above), which
// does not say the caller's context ended it.
func withCtxErr(ctx context.Context, err error) error {
	if err == nil || ctx.Err() == nil || errors.Is(err, ctx.Err()) {
		return err
	}
	return fmt.Errorf("%w: %w", ctx.Err(), err)
}
