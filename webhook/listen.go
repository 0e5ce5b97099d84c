package webhook

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"path/filepath"

	"github.com/go-logr/logr"
	"sigs.k8s.io/controller-runtime/pkg/certwatcher"

	"github.com/sallyport/sallyport/internal/tlspolicy"
)

// listen opens a decision listener on addr: TLS with the certificate in
// certDir, reloaded when it changes, or plain TCP when insecure, which is
// refused off loopback because tokens must not cross a network in the clear.
// nextProtos are the ALPN protocols offered.
func listen(ctx context.Context, what, addr, certDir string, insecure bool, nextProtos []string, log logr.Logger) (net.Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("%s: listen on %s: %w", what, addr, err)
	}
	if insecure {
		if tcp, ok := ln.Addr().(*net.TCPAddr); !ok || !tcp.IP.IsLoopback() {
			_ = ln.Close()
			return nil, fmt.Errorf("%s: serving without TLS is only allowed on loopback, not on %s", what, ln.Addr())
		}
		return ln, nil
	}
	cw, err := certwatcher.New(filepath.Join(certDir, "tls.crt"), filepath.Join(certDir, "tls.key"))
	if err != nil {
		_ = ln.Close()
		return nil, fmt.Errorf("%s: certificate in %q: %w", what, certDir, err)
	}
	go func() {
		if err := cw.Start(ctx); err != nil {
			log.Error(err, "Certificate watcher stopped", "server", what)
		}
	}()
	cfg := &tls.Config{GetCertificate: cw.GetCertificate, NextProtos: nextProtos}
	tlspolicy.Apply(cfg)
	return tls.NewListener(ln, cfg), nil
}
