// Package tlspolicy is the TLS policy of every listener the operator opens:
// the admission webhooks, the decision API, ext_authz and metrics. One
// place, so no listener is weaker than the others.
package tlspolicy

import "crypto/tls"

// CipherSuites are the TLS 1.2 suites accepted: forward-secret key exchange
// (ECDHE) with an AEAD (AES-GCM, ChaCha20-Poly1305) only; no CBC, no RSA key
// exchange, no SHA-1 MACs. TLS 1.3 suites are not configurable in Go and are
// all modern.
var CipherSuites = []uint16{
	tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
	tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
	tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
	tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
	tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
	tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
}

// Apply sets the minimum version (TLS 1.2) and the TLS 1.2 cipher suites on
// c.
func Apply(c *tls.Config) {
	c.MinVersion = tls.VersionTLS12
	c.CipherSuites = CipherSuites
}
