package deploy_test

import (
	"io"
	"net"
	"sync"
	"testing"
	"time"
)

// serviceProxy stands in for a Service in front of the replicas: it accepts
// TCP connections on a loopback address and passes each, bytes unchanged
// (TLS included), to the first backend that accepts a connection, as
// kube-proxy sends around endpoints that are gone.
type serviceProxy struct {
	ln       net.Listener
	backends []string
	wg       sync.WaitGroup
}

func startProxy(t *testing.T, backends ...string) *serviceProxy {
	t.Helper()
	ln, err := net.Listen("tcp", freeAddr(t))
	if err != nil {
		t.Fatal(err)
	}
	p := &serviceProxy{ln: ln, backends: backends}
	p.wg.Add(1)
	go p.serve()
	t.Cleanup(func() {
		_ = ln.Close()
		p.wg.Wait()
	})
	return p
}

func (p *serviceProxy) addr() string { return p.ln.Addr().String() }

func (p *serviceProxy) serve() {
	defer p.wg.Done()
	for {
		in, err := p.ln.Accept()
		if err != nil {
			return
		}
		go p.pass(in)
	}
}

func (p *serviceProxy) pass(in net.Conn) {
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
	done := make(chan struct{}, 2)
	go func() { _, _ = io.Copy(out, in); done <- struct{}{} }()
	go func() { _, _ = io.Copy(in, out); done <- struct{}{} }()
	<-done
}
