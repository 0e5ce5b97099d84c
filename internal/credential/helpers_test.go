package credential

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
)

const testIssuer = "https://issuer.test"

// t0 is the fixed "now" of the unit tests.
var t0 = time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)

// clock is a settable clock.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func newClock() *clock { return &clock{now: t0} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// signer is a test signing key with the kid the JWKS gives it.
type signer struct {
	kid string
	alg string
	key crypto.Signer
}

var (
	rsaKeyOnce sync.Once
	rsaKeys    [2]*rsa.PrivateKey
)

// testRSAKey returns one of two RSA keys shared by the tests (generating
// RSA keys is slow under the race detector).
func testRSAKey(t testing.TB, i int) *rsa.PrivateKey {
	t.Helper()
	rsaKeyOnce.Do(func() {
		for j := range rsaKeys {
			k, err := rsa.GenerateKey(rand.Reader, 2048)
			if err != nil {
				panic(err)
			}
			rsaKeys[j] = k
		}
	})
	return rsaKeys[i]
}

func newECSigner(t testing.TB, kid, alg string) *signer {
	t.Helper()
	curve := map[string]elliptic.Curve{"ES256": elliptic.P256(), "ES384": elliptic.P384(), "ES512": elliptic.P521()}[alg]
	k, err := ecdsa.GenerateKey(curve, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return &signer{kid: kid, alg: alg, key: k}
}

func newRSASigner(t testing.TB, i int, kid, alg string) *signer {
	return &signer{kid: kid, alg: alg, key: testRSAKey(t, i)}
}

func b64json(t testing.TB, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

// sign returns a compact JWS of claims with header {alg, kid}, signed by s
// with s.alg.
func (s *signer) sign(t testing.TB, claims map[string]any) string {
	t.Helper()
	return signWith(t, map[string]any{"alg": s.alg, "kid": s.kid, "typ": "JWT"}, claims, s.alg, s.key)
}

// signWith signs header.claims with key under alg, whatever the header
// says.
func signWith(t testing.TB, header, claims map[string]any, alg string, key crypto.Signer) string {
	t.Helper()
	input := b64json(t, header) + "." + b64json(t, claims)
	a := signingAlgs[alg]
	h := a.new()
	h.Write([]byte(input))
	digest := h.Sum(nil)
	var sig []byte
	switch k := key.(type) {
	case *rsa.PrivateKey:
		var err error
		if sig, err = rsa.SignPKCS1v15(rand.Reader, k, a.hash, digest); err != nil {
			t.Fatal(err)
		}
	case *ecdsa.PrivateKey:
		r, s, err := ecdsa.Sign(rand.Reader, k, digest)
		if err != nil {
			t.Fatal(err)
		}
		size := (k.Curve.Params().BitSize + 7) / 8
		sig = make([]byte, 2*size)
		r.FillBytes(sig[:size])
		s.FillBytes(sig[size:])
	default:
		t.Fatalf("unsupported key %T", key)
	}
	return input + "." + base64.RawURLEncoding.EncodeToString(sig)
}

// hmacToken returns an HS256 token keyed with secret.
func hmacToken(t testing.TB, header, claims map[string]any, secret []byte) string {
	t.Helper()
	input := b64json(t, header) + "." + b64json(t, claims)
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(input))
	return input + "." + base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// jwk returns the JSON Web Key of s's public key.
func (s *signer) jwk() map[string]any {
	k := map[string]any{"kid": s.kid, "use": "sig", "alg": s.alg}
	enc := base64.RawURLEncoding.EncodeToString
	switch pub := s.key.Public().(type) {
	case *rsa.PublicKey:
		k["kty"] = "RSA"
		k["n"] = enc(pub.N.Bytes())
		k["e"] = "AQAB"
	case *ecdsa.PublicKey:
		k["kty"] = "EC"
		k["crv"] = pub.Curve.Params().Name
		b, err := pub.Bytes()
		if err != nil {
			panic(err)
		}
		size := (len(b) - 1) / 2
		k["x"] = enc(b[1 : 1+size])
		k["y"] = enc(b[1+size:])
	}
	return k
}

func jwks(t testing.TB, signers ...*signer) []byte {
	t.Helper()
	keys := make([]map[string]any, 0, len(signers))
	for _, s := range signers {
		keys = append(keys, s.jwk())
	}
	b, err := json.Marshal(map[string]any{"keys": keys})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// claims returns valid claims at t0 for subject, audience aud, lifetime
// 10 minutes, with extra overriding or adding claims (a nil value deletes
// one).
func claims(aud any, extra map[string]any) map[string]any {
	c := map[string]any{
		"iss": testIssuer,
		"sub": "system:serviceaccount:billing:worker",
		"aud": aud,
		"jti": "4f5e6d",
		"iat": t0.Unix(),
		"nbf": t0.Unix(),
		"exp": t0.Add(10 * time.Minute).Unix(),
	}
	for k, v := range extra {
		if v == nil {
			delete(c, k)
		} else {
			c[k] = v
		}
	}
	return c
}

// fakeSource is a KeySource serving a settable JWKS and counting fetches.
type fakeSource struct {
	mu      sync.Mutex
	issuer  string
	doc     []byte
	err     error
	fetches atomic.Int32
}

func (f *fakeSource) FetchKeys(context.Context) (string, []byte, error) {
	f.fetches.Add(1)
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.issuer, f.doc, f.err
}

func (f *fakeSource) set(doc []byte, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.doc, f.err = doc, err
}

// fakeReviewer answers TokenReviews like the API server would for tokens
// it considers valid: authenticated, for the requested audience, as the
// token's subject, unless fn says otherwise.
type fakeReviewer struct {
	calls atomic.Int32
	// fn, when set, answers instead.
	fn func(ctx context.Context, token, audience string) (*authenticationv1.TokenReviewStatus, error)
}

func (f *fakeReviewer) Review(ctx context.Context, token, audience string) (*authenticationv1.TokenReviewStatus, error) {
	f.calls.Add(1)
	if f.fn != nil {
		return f.fn(ctx, token, audience)
	}
	return authenticated(token, audience), nil
}

func authenticated(token, audience string) *authenticationv1.TokenReviewStatus {
	c, err := ParseClaims(token)
	if err != nil {
		panic(err)
	}
	return &authenticationv1.TokenReviewStatus{
		Authenticated: true,
		Audiences:     []string{audience},
		User: authenticationv1.UserInfo{
			Username: c.Subject,
			Extra: map[string]authenticationv1.ExtraValue{
				ExtraCredentialID: {"JTI=" + c.ID},
				ExtraPodName:      {"worker-7d9f"},
			},
		},
	}
}

// parseOnlyVerifier checks claims without signatures, for cache tests that
// need many distinct tokens.
type parseOnlyVerifier struct {
	now   func() time.Time
	calls atomic.Int32
}

func (v *parseOnlyVerifier) Verify(_ context.Context, token string) (*Claims, error) {
	v.calls.Add(1)
	c, err := ParseClaims(token)
	if err != nil {
		return nil, err
	}
	if c.Issuer != testIssuer {
		return nil, invalid("wrong issuer")
	}
	if err := checkTimes(c, v.now(), 0); err != nil {
		return nil, err
	}
	return c, nil
}

// unsigned returns a token with the given claims and a dummy signature.
func unsigned(t testing.TB, claims map[string]any) string {
	t.Helper()
	return b64json(t, map[string]any{"alg": "ES256", "kid": "k"}) + "." + b64json(t, claims) + ".c2ln"
}

// counterValue reads the counter metric{result} from the registry the
// metrics are registered on.
func counterValue(t testing.TB, metric, result string) float64 {
	t.Helper()
	families, err := metrics.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != metric {
			continue
		}
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "result" && l.GetValue() == result {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	t.Fatalf("no %s{result=%q} registered", metric, result)
	return 0
}

// expectErr checks that err wraps want and does not quote token or any of
// its segments.
func expectErr(t testing.TB, err, want error, token string) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Fatalf("error = %v, want one wrapping %q", err, want)
	}
	noToken(t, err.Error(), token)
}

// noToken fails when s contains token or a segment of it.
func noToken(t testing.TB, s, token string) {
	t.Helper()
	if token == "" {
		return
	}
	if strings.Contains(s, token) {
		t.Fatalf("%q contains the token", s)
	}
	for _, seg := range strings.Split(token, ".") {
		if len(seg) >= 8 && strings.Contains(s, seg) {
			t.Fatalf("%q contains a token segment", s)
		}
	}
}
