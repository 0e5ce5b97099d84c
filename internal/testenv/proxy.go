package testenv

import (
	"io"
	"net"
	"sync"
	"time"
)

// Proxy passes TCP connections, bytes unchanged (TLS included), to the
// first of its backends that accepts one, as a Service sends around
// endpoints that are gone. Tests put it in front of replicas, or between the
// operator and the API server to cut that link on purpose.
type Proxy struct {
	ln       net.Listener
	backends []string

	mu    sync.Mutex
	down  bool
	conns map[net.Conn]struct{}
	wg    sync.WaitGroup
}

// StartProxy listens on a free loopback address and serves until Close.
func StartProxy(backends ...string) (*Proxy, error) {
	addr, err := FreeLoopbackAddr()
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	p := &Proxy{ln: ln, backends: backends, conns: map[net.Conn]struct{}{}}
	p.wg.Add(1)
	go p.serve()
	return p, nil
}

// Addr is the address the proxy listens on.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// SetDown makes the link fail (true): every open connection is cut and new
// ones are closed at once, as when the far end is unreachable. false
// restores it.
func (p *Proxy) SetDown(down bool) {
	p.mu.Lock()
	p.down = down
	p.mu.Unlock()
	if down {
		p.Cut()
	}
}

// Cut closes every open connection, as a network blip or a restarted load
// balancer does; new connections are passed again at once.
func (p *Proxy) Cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for c := range p.conns {
		_ = c.Close()
	}
}

// Close stops listening and cuts every connection.
func (p *Proxy) Close() {
	_ = p.ln.Close()
	p.Cut()
	p.wg.Wait()
}

func (p *Proxy) serve() {
	defer p.wg.Done()
	for {
		in, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.wg.Add(1)
		go p.pass(in)
	}
}

// track registers c as open, or reports false when the link is down.
func (p *Proxy) track(c ...net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.down {
		return false
	}
	for _, x := range c {
		p.conns[x] = struct{}{}
	}
	return true
}

func (p *Proxy) untrack(c ...net.Conn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, x := range c {
		delete(p.conns, x)
	}
}

func (p *Proxy) pass(in net.Conn) {
	defer p.wg.Done()
	defer in.Close()
	var out net.Conn
	for _, b := range p.backends {
		c, err := net.DialTimeout("tcp", b, time.Second)
		if err == nil {
			out = c
			break
		}
	}
	if out == nil {
		return
	}
	defer out.Close()
	if !p.track(in, out) {
		return
	}
	defer p.untrack(in, out)
	done := make(chan struct{}, 2)
	go func() { _, _ = io.Copy(out, in); _ = out.Close(); done <- struct{}{} }()
	go func() { _, _ = io.Copy(in, out); _ = in.Close(); done <- struct{}{} }()
	<-done
	<-done
}
