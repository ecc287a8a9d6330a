package dbsync

import (
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"

	"github.com/dbsync/dbsync/internal/pgtest"
)

// netProxy is a TCP proxy between dbsync and a test cluster, for network failures:
// blackhole stops forwarding in both directions while keeping every connection open
// (a partition, or a frozen server, as the client sees it; new connections are
// accepted and held, not forwarded), reset closes every connection abruptly, heal
// forwards again (held and new connections).
type netProxy struct {
	ln     net.Listener
	target string

	mu      sync.Mutex
	cond    *sync.Cond
	blocked bool
	// partitioned: while blackholed, a side's close is not passed on either (a real
	// partition: the server does not learn that the client closed its socket).
	partitioned bool
	held        int // chunks read while blackholed, waiting for heal
	// waiting counts the connections accepted while blackholed, held before the
	// proxy dials the server (their client waits for the server's first answer).
	waiting int
	// trigger, when set, blackholes the proxy as a chunk from a client holding it
	// arrives (that chunk is held).
	trigger string
	conns   map[net.Conn]struct{}
	wg      sync.WaitGroup
}

// newNetProxy starts a proxy to d's server; it stops when the test ends.
func newNetProxy(t *testing.T, d *pgtest.Database) *netProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &netProxy{ln: ln, target: net.JoinHostPort(d.Server.Host, fmt.Sprint(d.Server.Port)), conns: map[net.Conn]struct{}{}}
	p.cond = sync.NewCond(&p.mu)
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(p.close)
	return p
}

// DSN is d's connection string pointed at the proxy.
func (p *netProxy) DSN(d *pgtest.Database) string {
	addr := p.ln.Addr().(*net.TCPAddr)
	return d.DSN() + fmt.Sprintf(" host=127.0.0.1 port=%d", addr.Port)
}

func (p *netProxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.wg.Add(1)
		go p.serve(c)
	}
}

func (p *netProxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.conns == nil {
		c.Close()
		return false
	}
	p.conns[c] = struct{}{}
	return true
}

func (p *netProxy) serve(client net.Conn) {
	defer p.wg.Done()
	if !p.track(client) {
		return
	}
	p.mu.Lock()
	held := p.blocked
	if held {
		p.waiting++
	}
	p.mu.Unlock()
	p.waitOpen()
	if held {
		p.mu.Lock()
		p.waiting--
		p.mu.Unlock()
	}
	server, err := net.Dial("tcp", p.target)
	if err != nil {
		client.Close()
		return
	}
	if !p.track(server) {
		client.Close()
		return
	}
	p.wg.Add(2)
	go p.pipe(server, client, true)
	go p.pipe(client, server, false)
}

// blackholeOn blackholes the proxy when a client next sends a chunk holding s.
func (p *netProxy) blackholeOn(s string) {
	p.mu.Lock()
	p.trigger = s
	p.mu.Unlock()
}

// waitOpen waits while the proxy is blackholed.
func (p *netProxy) waitOpen() {
	p.mu.Lock()
	for p.blocked {
		p.cond.Wait()
	}
	p.mu.Unlock()
}

// pipe copies src to dst; a chunk read while blackholed is held until heal (or
// dropped with the connection on reset).
func (p *netProxy) pipe(dst, src net.Conn, fromClient bool) {
	defer p.wg.Done()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			p.mu.Lock()
			if fromClient && p.trigger != "" && strings.Contains(string(buf[:n]), p.trigger) {
				p.blocked, p.trigger = true, ""
			}
			if p.blocked {
				p.held++
			}
			p.mu.Unlock()
			p.waitOpen()
			if _, werr := dst.Write(buf[:n]); werr != nil {
				src.Close()
				return
			}
		}
		if err != nil {
			p.mu.Lock()
			hold := p.partitioned
			p.mu.Unlock()
			if hold {
				p.waitOpen()
			}
			if err == io.EOF || strings.Contains(err.Error(), "use of closed") {
				dst.Close()
			}
			src.Close()
			dst.Close()
			return
		}
	}
}

// blackhole stops forwarding; connections stay open.
func (p *netProxy) blackhole() {
	p.mu.Lock()
	p.blocked = true
	p.mu.Unlock()
}

// partition is blackhole, and a connection's close while it lasts is passed on only
// at heal.
func (p *netProxy) partition() {
	p.mu.Lock()
	p.blocked, p.partitioned = true, true
	p.mu.Unlock()
}

// heal forwards again.
func (p *netProxy) heal() {
	p.mu.Lock()
	p.blocked, p.partitioned = false, false
	p.cond.Broadcast()
	p.mu.Unlock()
}

// reset closes every connection abruptly (RST: linger 0).
func (p *netProxy) reset() {
	p.mu.Lock()
	conns := p.conns
	p.conns = map[net.Conn]struct{}{}
	p.mu.Unlock()
	for c := range conns {
		if tc, ok := c.(*net.TCPConn); ok {
			tc.SetLinger(0)
		}
		c.Close()
	}
}

// heldChunks is how many chunks were read while blackholed (each a message, or
// part of one, that did not get through).
func (p *netProxy) heldChunks() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.held
}

// stuck is how many exchanges with the server the blackhole holds: chunks read
// while blackholed (heldChunks) and connections accepted while blackholed that
// wait for it to heal (a pool that opens a connection meanwhile).
func (p *netProxy) stuck() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.held + p.waiting
}

// open is how many connections (both sides) the proxy holds.
func (p *netProxy) open() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.conns)
}

func (p *netProxy) close() {
	p.ln.Close()
	p.heal()
	p.reset()
	p.mu.Lock()
	conns := p.conns
	p.conns = nil
	p.mu.Unlock()
	for c := range conns {
		c.Close()
	}
	p.wg.Wait()
}
