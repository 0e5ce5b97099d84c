package webhook

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// writeCert writes a self-signed serving certificate for 127.0.0.1 with the
// given serial into dir, replacing the files in one rename each.
func writeCert(t *testing.T, dir string, serial int64) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial),
		Subject:      pkix.Name{CommonName: "sallyport-test"},
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
		NotBefore:    time.Now().Add(-time.Minute),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	for name, block := range map[string]*pem.Block{
		"tls.key": {Type: "EC PRIVATE KEY", Bytes: keyDER},
		"tls.crt": {Type: "CERTIFICATE", Bytes: der},
	} {
		tmp := filepath.Join(dir, "."+name)
		if err := os.WriteFile(tmp, pem.EncodeToMemory(block), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
}

func servedSerial(addr string) (int64, error) {
	conn, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		return 0, err
	}
	defer func() { _ = conn.Close() }()
	state := conn.ConnectionState()
	if state.Version < tls.VersionTLS12 {
		return 0, fmt.Errorf("TLS version %x", state.Version)
	}
	return state.PeerCertificates[0].SerialNumber.Int64(), nil
}

// The decision API serves the certificate in its directory and picks up a
// new one without a restart; it refuses TLS older than 1.2.
func TestDecisionServerReloadsCertificates(t *testing.T) {
	dir := t.TempDir()
	writeCert(t, dir, 1)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	_ = l.Close()

	s, _, _ := newTestServer(t, allowed, true)
	s.opts.BindAddress, s.opts.CertDir = addr, dir
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Start(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Start: %v", err)
		}
	}()

	waitSerial := func(want int64) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for {
			got, err := servedSerial(addr)
			if err == nil && got == want {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("served serial %d (%v), want %d", got, err, want)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	waitSerial(1)
	writeCert(t, dir, 2)
	waitSerial(2)

	old := &tls.Config{InsecureSkipVerify: true, MaxVersion: tls.VersionTLS11}
	if conn, err := tls.Dial("tcp", addr, old); err == nil {
		_ = conn.Close()
		t.Error("a TLS 1.1 handshake succeeded")
	}
}
