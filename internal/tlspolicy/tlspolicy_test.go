package tlspolicy

import (
	"crypto/tls"
	"slices"
	"strings"
	"testing"
)

func TestApply(t *testing.T) {
	c := &tls.Config{}
	Apply(c)
	if c.MinVersion != tls.VersionTLS12 {
		t.Errorf("MinVersion = %x, want TLS 1.2", c.MinVersion)
	}
	secure := map[uint16]bool{}
	for _, s := range tls.CipherSuites() {
		secure[s.ID] = true
	}
	for _, id := range c.CipherSuites {
		name := tls.CipherSuiteName(id)
		aead := strings.Contains(name, "_GCM_") || strings.Contains(name, "CHACHA20")
		if !secure[id] || !strings.HasPrefix(name, "TLS_ECDHE_") || !aead {
			t.Errorf("suite %s is not ECDHE with an AEAD", name)
		}
	}
	if !slices.Contains(c.CipherSuites, tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256) {
		t.Error("the suite the operator's ECDSA certificate needs is missing")
	}
}
