package credential

import (
	"context"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
)

// keySetFixture is a KeySet over a fakeSource holding the given signers'
// keys, on a fixed clock.
func keySetFixture(t *testing.T, opts KeySetOptions, signers ...*signer) (*KeySet, *fakeSource, *clock) {
	t.Helper()
	clk := newClock()
	src := &fakeSource{issuer: testIssuer, doc: jwks(t, signers...)}
	opts.Now = clk.Now
	return NewKeySet(src, opts), src, clk
}

func TestVerifyAlgorithms(t *testing.T) {
	signers := []*signer{
		newRSASigner(t, 0, "rs256", "RS256"),
		newRSASigner(t, 0, "rs384", "RS384"),
		newRSASigner(t, 0, "rs512", "RS512"),
		newECSigner(t, "es256", "ES256"),
		newECSigner(t, "es384", "ES384"),
		newECSigner(t, "es512", "ES512"),
	}
	ks, src, _ := keySetFixture(t, KeySetOptions{}, signers...)
	for _, s := range signers {
		t.Run(s.alg, func(t *testing.T) {
			tok := s.sign(t, claims("aud-1", nil))
			c, err := ks.Verify(context.Background(), tok)
			if err != nil {
				t.Fatal(err)
			}
			if c.Algorithm != s.alg || c.KeyID != s.kid || c.Subject != "system:serviceaccount:billing:worker" ||
				!c.ExpiresAt.Equal(t0.Add(10*time.Minute)) || !c.IssuedAt.Equal(t0) {
				t.Fatalf("claims = %+v", *c)
			}
		})
	}
	if n := src.fetches.Load(); n != 1 {
		t.Fatalf("key set fetched %d times, want 1", n)
	}
}

func TestVerifyWithoutKeyID(t *testing.T) {
	rs := newRSASigner(t, 0, "", "RS256")
	es := newECSigner(t, "", "ES256")
	ks, _, _ := keySetFixture(t, KeySetOptions{}, rs, es)
	for _, s := range []*signer{rs, es} {
		tok := signWith(t, map[string]any{"alg": s.alg}, claims("a", nil), s.alg, s.key)
		if _, err := ks.Verify(context.Background(), tok); err != nil {
			t.Fatalf("%s without kid: %v", s.alg, err)
		}
	}
}

func TestVerifyRejects(t *testing.T) {
	rs := newRSASigner(t, 0, "rsa-key", "RS256")
	es := newECSigner(t, "ec-key", "ES256")
	ks, src, _ := keySetFixture(t, KeySetOptions{Leeway: 30 * time.Second}, rs, es)

	otherRSA := testRSAKey(t, 1)
	otherEC := newECSigner(t, "ec-key", "ES256").key
	rsaDER, err := x509.MarshalPKIXPublicKey(rs.key.Public())
	if err != nil {
		t.Fatal(err)
	}
	good := es.sign(t, claims("a", nil))
	parts := strings.Split(good, ".")
	enc := base64.RawURLEncoding.EncodeToString

	cases := map[string]string{
		"RSA: signed by another key under the known kid": signWith(t,
			map[string]any{"alg": "RS256", "kid": "rsa-key"}, claims("a", nil), "RS256", otherRSA),
		"EC: signed by another key under the known kid": signWith(t,
			map[string]any{"alg": "ES256", "kid": "ec-key"}, claims("a", nil), "ES256", otherEC),
		"EC: without kid, signed by another key": signWith(t,
			map[string]any{"alg": "ES256"}, claims("a", nil), "ES256", otherEC),
		"tampered payload": parts[0] + "." +
			b64json(t, claims("a", map[string]any{"sub": "system:serviceaccount:kube-system:admin"})) + "." + parts[2],
		"tampered header (kid)": b64json(t, map[string]any{"alg": "ES256", "kid": "rsa-key"}) + "." + parts[1] + "." + parts[2],
		"truncated signature":   parts[0] + "." + parts[1] + "." + enc(must(base64.RawURLEncoding.DecodeString(parts[2]))[:63]),
		"alg none, empty signature": b64json(t, map[string]any{"alg": "none", "kid": "ec-key"}) + "." +
			b64json(t, claims("a", nil)) + ".",
		"alg none, with signature": b64json(t, map[string]any{"alg": "none", "kid": "ec-key"}) + "." +
			b64json(t, claims("a", nil)) + "." + parts[2],
		"HS256 keyed with the RSA public key": hmacToken(t,
			map[string]any{"alg": "HS256", "kid": "rsa-key"}, claims("a", nil), rsaDER),
		"PS256": b64json(t, map[string]any{"alg": "PS256", "kid": "rsa-key"}) + "." + parts[1] + "." + parts[2],
		"ES256 header on the RSA key": signWith(t,
			map[string]any{"alg": "ES256", "kid": "rsa-key"}, claims("a", nil), "ES256", es.key),
		"RS384 signature, key restricted to RS256": signWith(t,
			map[string]any{"alg": "RS384", "kid": "rsa-key"}, claims("a", nil), "RS384", rs.key),
		"ES384 header on a P-256 key": signWith(t,
			map[string]any{"alg": "ES384", "kid": "ec-key"}, claims("a", nil), "ES256", es.key),
		"wrong issuer":            es.sign(t, claims("a", map[string]any{"iss": "https://evil.test"})),
		"issuer with a slash":     es.sign(t, claims("a", map[string]any{"iss": testIssuer + "/"})),
		"expired":                 es.sign(t, claims("a", map[string]any{"iat": t0.Add(-time.Hour).Unix(), "nbf": nil, "exp": t0.Add(-time.Second).Unix()})),
		"expires now":             es.sign(t, claims("a", map[string]any{"iat": t0.Add(-time.Hour).Unix(), "exp": t0.Unix()})),
		"no exp":                  es.sign(t, claims("a", map[string]any{"exp": nil})),
		"no iat":                  es.sign(t, claims("a", map[string]any{"iat": nil})),
		"iat beyond leeway":       es.sign(t, claims("a", map[string]any{"iat": t0.Add(31 * time.Second).Unix(), "nbf": nil})),
		"nbf beyond leeway":       es.sign(t, claims("a", map[string]any{"nbf": t0.Add(31 * time.Second).Unix()})),
		"exp before iat":          es.sign(t, claims("a", map[string]any{"iat": t0.Add(20 * time.Second).Unix(), "exp": t0.Add(10 * time.Second).Unix()})),
		"unknown kid":             signWith(t, map[string]any{"alg": "ES256", "kid": "made-up"}, claims("a", nil), "ES256", otherEC),
		"legacy token (no times)": es.sign(t, map[string]any{"iss": "kubernetes/serviceaccount", "sub": "system:serviceaccount:a:b"}),
	}
	for name, tok := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := ks.Verify(context.Background(), tok)
			expectErr(t, err, ErrInvalid, tok)
			t.Log(err)
		})
	}
	// Within the leeway, nbf and iat in the future are accepted.
	tok := es.sign(t, claims("a", map[string]any{"iat": t0.Add(29 * time.Second).Unix(), "nbf": t0.Add(29 * time.Second).Unix()}))
	if _, err := ks.Verify(context.Background(), tok); err != nil {
		t.Fatalf("iat and nbf within the leeway: %v", err)
	}
	// One fetch: the unknown kid came less than MinRefreshInterval after
	// it, so it did not refresh the keys.
	if n := src.fetches.Load(); n != 1 {
		t.Fatalf("key set fetched %d times, want 1", n)
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

func TestVerifyUnknownKeyIDsRefreshAtMostOncePerInterval(t *testing.T) {
	es := newECSigner(t, "real", "ES256")
	ks, src, clk := keySetFixture(t, KeySetOptions{MinRefreshInterval: 10 * time.Second}, es)
	forger := newECSigner(t, "", "ES256")
	forged := func(i int) string {
		return signWith(t, map[string]any{"alg": "ES256", "kid": fmt.Sprintf("forged-%d", i)}, claims("a", nil), "ES256", forger.key)
	}

	// A burst of forged key IDs, concurrently: the first fetch, and no
	// refresh, as the keys are fresh.
	var wg sync.WaitGroup
	for i := range 50 {
		wg.Go(func() {
			tok := forged(i)
			_, err := ks.Verify(context.Background(), tok)
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("forged kid %d: %v", i, err)
			}
		})
	}
	wg.Wait()
	if n := src.fetches.Load(); n != 1 {
		t.Fatalf("key set fetched %d times for 50 forged key IDs, want 1", n)
	}
	before := src.fetches.Load()
	for i := range 50 {
		if _, err := ks.Verify(context.Background(), forged(100+i)); !errors.Is(err, ErrInvalid) {
			t.Fatalf("forged kid: %v", err)
		}
	}
	if n := src.fetches.Load(); n != before {
		t.Fatalf("forged key IDs within MinRefreshInterval fetched the keys %d more times", n-before)
	}
	// After the interval, one more refresh for the next unknown kid, and
	// none for the ones after it.
	clk.Add(10 * time.Second)
	for i := range 5 {
		if _, err := ks.Verify(context.Background(), forged(200+i)); !errors.Is(err, ErrInvalid) {
			t.Fatalf("forged kid: %v", err)
		}
	}
	if n := src.fetches.Load(); n != before+1 {
		t.Fatalf("after MinRefreshInterval: %d more fetches, want 1", n-before)
	}
}

func TestVerifyPicksUpRotatedKey(t *testing.T) {
	old := newECSigner(t, "old", "ES256")
	ks, src, clk := keySetFixture(t, KeySetOptions{MinRefreshInterval: 5 * time.Second}, old)
	if _, err := ks.Verify(context.Background(), old.sign(t, claims("a", nil))); err != nil {
		t.Fatal(err)
	}
	// The issuer rotates in a new key; a token signed with it names a kid
	// the set does not hold, which refreshes the set.
	rotated := newRSASigner(t, 0, "new", "RS256")
	src.set(jwks(t, old, rotated), nil)
	clk.Add(5 * time.Second)
	if _, err := ks.Verify(context.Background(), rotated.sign(t, claims("a", nil))); err != nil {
		t.Fatalf("token signed with the rotated-in key: %v", err)
	}
	if n := src.fetches.Load(); n != 2 {
		t.Fatalf("fetches = %d, want 2", n)
	}
}

func TestVerifyPeriodicRefresh(t *testing.T) {
	es := newECSigner(t, "k1", "ES256")
	ks, src, clk := keySetFixture(t, KeySetOptions{RefreshInterval: time.Minute}, es)
	tok := es.sign(t, claims("a", nil))
	if _, err := ks.Verify(context.Background(), tok); err != nil {
		t.Fatal(err)
	}
	// The key is removed from the issuer, the keys age past the refresh
	// interval: the next verification still uses the keys at hand and
	// refreshes in the background; once that lands, the key is gone.
	src.set(jwks(t, newECSigner(t, "k2", "ES256")), nil)
	clk.Add(time.Minute)
	if _, err := ks.Verify(context.Background(), tok); err != nil {
		t.Fatalf("verification during the background refresh: %v", err)
	}
	waitFor(t, func() bool { return src.fetches.Load() == 2 && ks.keys.Load().byID["k1"] == nil })
	if _, err := ks.Verify(context.Background(), tok); !errors.Is(err, ErrInvalid) {
		t.Fatalf("token of a removed key: %v", err)
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met in 10s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestVerifyKeysUnavailable(t *testing.T) {
	es := newECSigner(t, "k", "ES256")
	clk := newClock()
	src := &fakeSource{issuer: testIssuer, err: errors.New("connection refused")}
	jwksErrors := counterValue(t, MetricJWKSRefresh, "error")
	ks := NewKeySet(src, KeySetOptions{MinRefreshInterval: 5 * time.Second, Now: clk.Now})
	tok := es.sign(t, claims("a", nil))

	for range 3 {
		_, err := ks.Verify(context.Background(), tok)
		expectErr(t, err, ErrReviewFailed, tok)
	}
	if n := src.fetches.Load(); n != 1 {
		t.Fatalf("fetches = %d, want 1 (failures are rate-limited too)", n)
	}
	if d := counterValue(t, MetricJWKSRefresh, "error") - jwksErrors; d != 1 {
		t.Fatalf("%s{result=error} grew by %v, want 1", MetricJWKSRefresh, d)
	}
	// Garbage is still rejected as invalid, without a fetch.
	if _, err := ks.Verify(context.Background(), "garbage"); !errors.Is(err, ErrInvalid) {
		t.Fatalf("garbage: %v", err)
	}

	// The API server comes back.
	src.set(jwks(t, es), nil)
	clk.Add(5 * time.Second)
	if _, err := ks.Verify(context.Background(), tok); err != nil {
		t.Fatal(err)
	}
	// It goes away again: the keys at hand keep working, and an unknown
	// kid is a failed review, not a rejection, while they cannot be
	// refreshed.
	src.set(nil, errors.New("connection refused"))
	clk.Add(5 * time.Second)
	other := newECSigner(t, "other", "ES256")
	otherTok := other.sign(t, claims("a", nil))
	_, err := ks.Verify(context.Background(), otherTok)
	expectErr(t, err, ErrReviewFailed, otherTok)
	if _, err := ks.Verify(context.Background(), tok); err != nil {
		t.Fatalf("known key while the issuer is unreachable: %v", err)
	}
}

func TestVerifyWaitingCallerGivesUp(t *testing.T) {
	es := newECSigner(t, "k", "ES256")
	release := make(chan struct{})
	src := &blockingSource{release: release, issuer: testIssuer, doc: jwks(t, es)}
	ks := NewKeySet(src, KeySetOptions{Now: newClock().Now})
	tok := es.sign(t, claims("a", nil))

	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_, err := ks.Verify(ctx, tok)
	expectErr(t, err, ErrReviewFailed, tok)
	close(release)
	// The fetch the caller started was not cancelled with it.
	waitFor(t, func() bool { return ks.keys.Load() != nil })
	if _, err := ks.Verify(context.Background(), tok); err != nil {
		t.Fatal(err)
	}
}

type blockingSource struct {
	release <-chan struct{}
	issuer  string
	doc     []byte
}

func (b *blockingSource) FetchKeys(ctx context.Context) (string, []byte, error) {
	select {
	case <-b.release:
		return b.issuer, b.doc, nil
	case <-ctx.Done():
		return "", nil, ctx.Err()
	}
}

func TestVerifyExtraIssuers(t *testing.T) {
	es := newECSigner(t, "k", "ES256")
	ks, _, _ := keySetFixture(t, KeySetOptions{ExtraIssuers: []string{"https://old-issuer.test"}}, es)
	if _, err := ks.Verify(context.Background(), es.sign(t, claims("a", map[string]any{"iss": "https://old-issuer.test"}))); err != nil {
		t.Fatal(err)
	}
}

func TestParseJWKS(t *testing.T) {
	rs := newRSASigner(t, 0, "r", "RS256").jwk()
	es := newECSigner(t, "e", "ES256").jwk()
	with := func(k map[string]any, kv ...any) map[string]any {
		c := map[string]any{}
		for key, v := range k {
			c[key] = v
		}
		for i := 0; i < len(kv); i += 2 {
			c[kv[i].(string)] = kv[i+1]
		}
		return c
	}
	doc := func(keys ...map[string]any) []byte {
		b, err := json.Marshal(map[string]any{"keys": keys})
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	small := newRSASigner(t, 0, "s", "RS256").jwk()
	small["n"] = base64.RawURLEncoding.EncodeToString(make([]byte, 128))

	keys, err := parseJWKS(doc(rs, es,
		with(es, "kid", "enc", "use", "enc"),
		with(es, "kid", "okp", "kty", "OKP"),
		with(es, "kid", "hs", "alg", "HS256"),
		with(es, "kid", "bad-point", "x", es["y"]),
		with(es, "kid", "wrong-curve", "alg", "ES384"),
		with(rs, "kid", "rsa-as-ec", "alg", "ES256"),
		with(small, "kid", "small"),
		with(rs, "kid", "even-e", "e", "AAI"),
	))
	if err != nil {
		t.Fatal(err)
	}
	var kids []string
	for _, k := range keys {
		kids = append(kids, k.kid)
	}
	if strings.Join(kids, ",") != "r,e" {
		t.Fatalf("usable keys = %v, want [r e]", kids)
	}

	for name, d := range map[string][]byte{
		"not JSON":       []byte("<html>"),
		"no keys":        []byte(`{"keys":[]}`),
		"no usable keys": doc(with(es, "use", "enc")),
	} {
		if _, err := parseJWKS(d); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}
