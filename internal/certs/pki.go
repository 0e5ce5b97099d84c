// Package certs manages sallyport's own serving certificates when it runs
// with --cert-management=self: a self-signed CA and one serving certificate
// for the admission webhook server and the decision servers, kept in a
// Secret in the operator's namespace (the source of truth every replica
// serves from), renewed by the leader before they expire, with the CA bundle
// injected into the webhook configurations and published in the ConfigMap
// sallyport-ca for gateways.
//
// Rotation is time based (see Policy.Plan): the serving certificate is
// renewed after two thirds of its life; a new CA is made after two thirds of
// the CA's life and published next to the current one, and it starts signing
// after five sixths, so that gateways have a sixth of the CA's life to pick
// up the new bundle; the old CA stays in the bundle until it expires.
package certs

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"time"
)

// Keys of the certificate Secret.
const (
	KeyCert           = "tls.crt"
	KeyKey            = "tls.key"
	KeyCACert         = "ca.crt"
	KeyCAKey          = "ca.key"
	KeyNextCACert     = "next-ca.crt"
	KeyNextCAKey      = "next-ca.key"
	KeyPreviousCACert = "previous-ca.crt"
)

// Default lifetimes.
const (
	DefaultCADuration   = 365 * 24 * time.Hour
	DefaultLeafDuration = 90 * 24 * time.Hour
)

// backdate is how far before their making certificates become valid, for
// clocks that lag.
const backdate = time.Hour

// State is the content of the certificate Secret, PEM encoded.
type State struct {
	CACert, CAKey         []byte
	NextCACert, NextCAKey []byte
	PreviousCACert        []byte
	Cert, Key             []byte
}

// StateFromData reads a State from a Secret's data.
func StateFromData(d map[string][]byte) State {
	return State{
		CACert: d[KeyCACert], CAKey: d[KeyCAKey],
		NextCACert: d[KeyNextCACert], NextCAKey: d[KeyNextCAKey],
		PreviousCACert: d[KeyPreviousCACert],
		Cert:           d[KeyCert], Key: d[KeyKey],
	}
}

// Data returns s as a Secret's data, leaving out what is empty.
func (s State) Data() map[string][]byte {
	d := map[string][]byte{}
	for k, v := range map[string][]byte{
		KeyCACert: s.CACert, KeyCAKey: s.CAKey,
		KeyNextCACert: s.NextCACert, KeyNextCAKey: s.NextCAKey,
		KeyPreviousCACert: s.PreviousCACert,
		KeyCert:           s.Cert, KeyKey: s.Key,
	} {
		if len(v) > 0 {
			d[k] = v
		}
	}
	return d
}

// Equal reports whether s and o hold the same certificates and keys.
func (s State) Equal(o State) bool {
	return bytes.Equal(s.CACert, o.CACert) && bytes.Equal(s.CAKey, o.CAKey) &&
		bytes.Equal(s.NextCACert, o.NextCACert) && bytes.Equal(s.NextCAKey, o.NextCAKey) &&
		bytes.Equal(s.PreviousCACert, o.PreviousCACert) &&
		bytes.Equal(s.Cert, o.Cert) && bytes.Equal(s.Key, o.Key)
}

// Bundle returns the CAs clients must trust at now: the signing CA, the next
// one once made, and the previous one until it expires.
func (s State) Bundle(now time.Time) []byte {
	var b []byte
	for _, c := range [][]byte{s.CACert, s.NextCACert, s.PreviousCACert} {
		if cert, err := parseCert(c); err == nil && now.Before(cert.NotAfter) {
			b = append(b, c...)
		}
	}
	return b
}

// Policy says what certificates to make.
type Policy struct {
	CADuration   time.Duration
	LeafDuration time.Duration
	// DNSNames and IPs are the serving certificate's subject alternative
	// names; the first DNS name is also its common name.
	DNSNames []string
	IPs      []net.IP
}

// Plan returns the state to store at now, and why it differs from s (no
// reasons: keep s). With rotate unset it only repairs what cannot serve (a
// missing, invalid or expired CA or serving certificate, or one that does
// not cover the names); with rotate set it also renews on schedule.
func (p Policy) Plan(now time.Time, s State, rotate bool) (State, []string, error) {
	if p.CADuration <= 0 || p.LeafDuration <= 0 {
		return s, nil, errors.New("certificate durations must be positive")
	}
	var reasons []string
	newLeaf := false

	ca, caErr := parseCA(s.CACert, s.CAKey, now)
	if caErr != nil {
		reasons = append(reasons, "CA: "+caErr.Error())
		cert, key, err := p.newCA(now)
		if err != nil {
			return s, nil, err
		}
		s = State{CACert: cert, CAKey: key}
		newLeaf = true
	} else if rotate {
		life := ca.NotAfter.Sub(ca.NotBefore)
		next, nextErr := parseCA(s.NextCACert, s.NextCAKey, now)
		switch {
		case len(s.NextCACert) > 0 && nextErr != nil:
			reasons = append(reasons, "next CA dropped: "+nextErr.Error())
			s.NextCACert, s.NextCAKey = nil, nil
		case nextErr == nil && !now.Before(ca.NotBefore.Add(life*5/6)):
			reasons = append(reasons, "next CA promoted")
			s.PreviousCACert = s.CACert
			s.CACert, s.CAKey = s.NextCACert, s.NextCAKey
			s.NextCACert, s.NextCAKey = nil, nil
			ca = next
			newLeaf = true
		}
		if len(s.NextCACert) == 0 && !now.Before(ca.NotBefore.Add(ca.NotAfter.Sub(ca.NotBefore)*2/3)) {
			reasons = append(reasons, "next CA made")
			cert, key, err := p.newCA(now)
			if err != nil {
				return s, nil, err
			}
			s.NextCACert, s.NextCAKey = cert, key
		}
		if len(s.PreviousCACert) > 0 {
			if prev, err := parseCert(s.PreviousCACert); err != nil || !now.Before(prev.NotAfter) {
				reasons = append(reasons, "previous CA dropped")
				s.PreviousCACert = nil
			}
		}
	}

	if !newLeaf {
		leaf, err := p.checkLeaf(s, now)
		switch {
		case err != nil:
			reasons = append(reasons, "serving certificate: "+err.Error())
			newLeaf = true
		case rotate && !now.Before(leaf.NotBefore.Add(leaf.NotAfter.Sub(leaf.NotBefore)*2/3)):
			reasons = append(reasons, "serving certificate due for renewal")
			newLeaf = true
		}
	}
	if newLeaf {
		cert, key, err := p.newLeaf(now, s.CACert, s.CAKey)
		if err != nil {
			return s, nil, err
		}
		s.Cert, s.Key = cert, key
	}
	return s, reasons, nil
}

// Usable reports whether s can serve at now: its serving certificate chains
// to its CA and covers the names.
func (p Policy) Usable(now time.Time, s State) error {
	if _, err := parseCA(s.CACert, s.CAKey, now); err != nil {
		return fmt.Errorf("CA: %w", err)
	}
	_, err := p.checkLeaf(s, now)
	return err
}

func (p Policy) checkLeaf(s State, now time.Time) (*x509.Certificate, error) {
	if len(s.Cert) == 0 || len(s.Key) == 0 {
		return nil, errors.New("missing")
	}
	if _, err := tls.X509KeyPair(s.Cert, s.Key); err != nil {
		return nil, fmt.Errorf("key pair: %w", err)
	}
	leaf, err := parseCert(s.Cert)
	if err != nil {
		return nil, err
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(s.CACert) {
		return nil, errors.New("no CA")
	}
	opts := x509.VerifyOptions{Roots: roots, CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	if _, err := leaf.Verify(opts); err != nil {
		return nil, err
	}
	for _, n := range p.DNSNames {
		if err := leaf.VerifyHostname(n); err != nil {
			return nil, err
		}
	}
	for _, ip := range p.IPs {
		if err := leaf.VerifyHostname(ip.String()); err != nil {
			return nil, err
		}
	}
	return leaf, nil
}

func (p Policy) newCA(now time.Time) (cert, key []byte, err error) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: "sallyport-ca", Organization: []string{"sallyport"}},
		NotBefore:             now.Add(-backdate),
		NotAfter:              now.Add(p.CADuration),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, k.Public(), k)
	if err != nil {
		return nil, nil, fmt.Errorf("make CA: %w", err)
	}
	return encode(der, k)
}

func (p Policy) newLeaf(now time.Time, caCert, caKey []byte) (cert, key []byte, err error) {
	ca, err := parseCA(caCert, caKey, now)
	if err != nil {
		return nil, nil, err
	}
	signer, err := parseKey(caKey)
	if err != nil {
		return nil, nil, err
	}
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	notAfter := now.Add(p.LeafDuration)
	if notAfter.After(ca.NotAfter) {
		notAfter = ca.NotAfter
	}
	cn := "sallyport"
	if len(p.DNSNames) > 0 {
		cn = p.DNSNames[0]
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: cn, Organization: []string{"sallyport"}},
		DNSNames:     p.DNSNames,
		IPAddresses:  p.IPs,
		NotBefore:    now.Add(-backdate),
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, k.Public(), signer)
	if err != nil {
		return nil, nil, fmt.Errorf("make serving certificate: %w", err)
	}
	return encode(der, k)
}

// parseCA parses a CA and its key, valid at now.
func parseCA(certPEM, keyPEM []byte, now time.Time) (*x509.Certificate, error) {
	if len(certPEM) == 0 || len(keyPEM) == 0 {
		return nil, errors.New("missing")
	}
	if _, err := tls.X509KeyPair(certPEM, keyPEM); err != nil {
		return nil, fmt.Errorf("key pair: %w", err)
	}
	c, err := parseCert(certPEM)
	if err != nil {
		return nil, err
	}
	if !c.IsCA {
		return nil, errors.New("not a CA")
	}
	if now.Before(c.NotBefore) || !now.Before(c.NotAfter) {
		return nil, fmt.Errorf("not valid at %s (valid %s to %s)", now.UTC().Format(time.RFC3339), c.NotBefore.UTC().Format(time.RFC3339), c.NotAfter.UTC().Format(time.RFC3339))
	}
	return c, nil
}

func parseCert(p []byte) (*x509.Certificate, error) {
	b, _ := pem.Decode(p)
	if b == nil || b.Type != "CERTIFICATE" {
		return nil, errors.New("no PEM certificate")
	}
	return x509.ParseCertificate(b.Bytes)
}

func parseKey(p []byte) (crypto.Signer, error) {
	b, _ := pem.Decode(p)
	if b == nil {
		return nil, errors.New("no PEM key")
	}
	k, err := x509.ParsePKCS8PrivateKey(b.Bytes)
	if err != nil {
		return nil, err
	}
	s, ok := k.(crypto.Signer)
	if !ok {
		return nil, errors.New("key cannot sign")
	}
	return s, nil
}

func encode(der []byte, k *ecdsa.PrivateKey) (cert, key []byte, err error) {
	kd, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kd}), nil
}

func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		panic(err)
	}
	return n.Add(n, big.NewInt(1))
}

// ServiceNames returns the DNS names a Service is reached by in-cluster.
func ServiceNames(name, namespace string) []string {
	return []string{
		name,
		name + "." + namespace,
		name + "." + namespace + ".svc",
		name + "." + namespace + ".svc.cluster.local",
	}
}
