package credential

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
)

const aud = "sallyport.dev/billing/billing-to-ledger"

// authFixture is a CachingAuthenticator over a KeySet with one EC key and a
// fakeReviewer, on a fixed clock.
type authFixture struct {
	a        *CachingAuthenticator
	signer   *signer
	src      *fakeSource
	reviewer *fakeReviewer
	clk      *clock
}

func newAuthFixture(t *testing.T, opts Options) *authFixture {
	t.Helper()
	f := &authFixture{signer: newECSigner(t, "k", "ES256"), reviewer: &fakeReviewer{}, clk: newClock()}
	f.src = &fakeSource{issuer: testIssuer, doc: jwks(t, f.signer)}
	opts.Now = f.clk.Now
	ks := NewKeySet(f.src, KeySetOptions{Now: f.clk.Now})
	f.a = NewCachingAuthenticatorWith(ks, f.reviewer, opts)
	return f
}

func (f *authFixture) token(t *testing.T, extra map[string]any) string {
	t.Helper()
	return f.signer.sign(t, claims(aud, extra))
}

func TestAuthenticateReview(t *testing.T) {
	f := newAuthFixture(t, Options{})
	tok := f.token(t, nil)
	r, err := f.a.Authenticate(context.Background(), tok, aud)
	if err != nil {
		t.Fatal(err)
	}
	want := Review{
		Identity: "system:serviceaccount:billing:worker", Namespace: "billing", ServiceAccount: "worker",
		Audience: aud, CredentialID: "JTI=4f5e6d", Pod: "worker-7d9f",
		IssuedAt: t0, ExpiresAt: t0.Add(10 * time.Minute),
	}
	if *r != want {
		t.Fatalf("review = %+v, want %+v", *r, want)
	}
	// The caller's copy is its own.
	r.Identity = "mutated"
	r2, err := f.a.Authenticate(context.Background(), tok, aud)
	if err != nil {
		t.Fatal(err)
	}
	if *r2 != want {
		t.Fatalf("cached review = %+v, want %+v", *r2, want)
	}
	if n := f.reviewer.calls.Load(); n != 1 {
		t.Fatalf("TokenReviews = %d, want 1", n)
	}
}

func TestReviewFromStatusIdentity(t *testing.T) {
	c := &Claims{Subject: "system:serviceaccount:ns:sa", IssuedAt: t0, ExpiresAt: t0.Add(time.Hour)}
	for name, tc := range map[string]struct {
		user       string
		extra      map[string]authenticationv1.ExtraValue
		ns, sa     string
		cred, pod  string
		wantReject bool
	}{
		"service account":       {user: "system:serviceaccount:ns:sa", ns: "ns", sa: "sa"},
		"extras":                {user: "system:serviceaccount:ns:sa", ns: "ns", sa: "sa", extra: map[string]authenticationv1.ExtraValue{ExtraCredentialID: {"JTI=x"}, ExtraPodName: {"p"}}, cred: "JTI=x", pod: "p"},
		"not the subject":       {user: "system:serviceaccount:ns:other", wantReject: true},
		"empty user":            {user: "", wantReject: true},
		"not a service account": {user: "alice"},
	} {
		t.Run(name, func(t *testing.T) {
			cc := *c
			if name == "not a service account" {
				cc.Subject = "alice"
			}
			r, err := reviewFromStatus(&authenticationv1.TokenReviewStatus{
				Authenticated: true, Audiences: []string{aud},
				User: authenticationv1.UserInfo{Username: tc.user, Extra: tc.extra},
			}, aud, &cc)
			if tc.wantReject {
				expectErr(t, err, ErrInvalid, "")
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if r.Identity != tc.user || r.Namespace != tc.ns || r.ServiceAccount != tc.sa || r.CredentialID != tc.cred || r.Pod != tc.pod {
				t.Fatalf("review = %+v", *r)
			}
		})
	}
}

func TestAuthenticateAudience(t *testing.T) {
	f := newAuthFixture(t, Options{})
	for name, tok := range map[string]string{
		"token for another audience":    f.signer.sign(t, claims("sallyport.dev/other/conn", nil)),
		"token for two audiences":       f.signer.sign(t, claims([]string{aud, "other"}, nil)),
		"token for no audience":         f.signer.sign(t, claims([]string{}, nil)),
		"token for the API server only": f.signer.sign(t, claims(testIssuer, nil)),
	} {
		t.Run(name, func(t *testing.T) {
			_, err := f.a.Authenticate(context.Background(), tok, aud)
			expectErr(t, err, ErrInvalid, tok)
		})
	}
	if n := f.reviewer.calls.Load(); n != 0 {
		t.Fatalf("TokenReviews = %d, want 0: a token not for the audience is refused locally", n)
	}
	_, err := f.a.Authenticate(context.Background(), f.token(t, nil), "")
	expectErr(t, err, ErrInvalid, "")
	_, err = f.a.Authenticate(context.Background(), "", aud)
	expectErr(t, err, ErrInvalid, "")
}

func TestAuthenticateReviewRejections(t *testing.T) {
	for name, status := range map[string]func(token, audience string) *authenticationv1.TokenReviewStatus{
		"not authenticated": func(string, string) *authenticationv1.TokenReviewStatus {
			return &authenticationv1.TokenReviewStatus{Error: "service account token has been invalidated"}
		},
		"authenticated without audiences": func(token, audience string) *authenticationv1.TokenReviewStatus {
			s := authenticated(token, audience)
			s.Audiences = nil
			return s
		},
		"authenticated for another audience": func(token, audience string) *authenticationv1.TokenReviewStatus {
			s := authenticated(token, audience)
			s.Audiences = []string{"https://kubernetes.default.svc"}
			return s
		},
		"authenticated as someone else": func(token, audience string) *authenticationv1.TokenReviewStatus {
			s := authenticated(token, audience)
			s.User.Username = "system:serviceaccount:kube-system:admin"
			return s
		},
	} {
		t.Run(name, func(t *testing.T) {
			f := newAuthFixture(t, Options{})
			f.reviewer.fn = func(_ context.Context, token, audience string) (*authenticationv1.TokenReviewStatus, error) {
				return status(token, audience), nil
			}
			tok := f.token(t, nil)
			_, err := f.a.Authenticate(context.Background(), tok, aud)
			expectErr(t, err, ErrInvalid, tok)
			if strings.Contains(err.Error(), "invalidated") {
				t.Fatalf("error %q passes on the API server's reason", err)
			}
		})
	}
}

func TestAuthenticateCacheTTL(t *testing.T) {
	f := newAuthFixture(t, Options{CacheTTL: 10 * time.Second})
	tok := f.token(t, nil)
	hits, misses := counterValue(t, MetricCredentialCache, "hit"), counterValue(t, MetricCredentialCache, "miss")
	for range 3 {
		if _, err := f.a.Authenticate(context.Background(), tok, aud); err != nil {
			t.Fatal(err)
		}
		f.clk.Add(4 * time.Second) // t0, +4s, +8s: one review, two hits
	}
	if n := f.reviewer.calls.Load(); n != 1 {
		t.Fatalf("TokenReviews within the TTL = %d, want 1", n)
	}
	if d := counterValue(t, MetricCredentialCache, "hit") - hits; d != 2 {
		t.Fatalf("cache hits grew by %v, want 2", d)
	}
	if d := counterValue(t, MetricCredentialCache, "miss") - misses; d != 1 {
		t.Fatalf("cache misses grew by %v, want 1", d)
	}
	// +12s: past the TTL, reviewed again.
	if _, err := f.a.Authenticate(context.Background(), tok, aud); err != nil {
		t.Fatal(err)
	}
	if n := f.reviewer.calls.Load(); n != 2 {
		t.Fatalf("TokenReviews after the TTL = %d, want 2", n)
	}
	// The cache is per audience: the same token for another audience is
	// its own entry (and refused, as the token is not for it).
	if _, err := f.a.Authenticate(context.Background(), tok, aud+"x"); !errors.Is(err, ErrInvalid) {
		t.Fatalf("other audience: %v", err)
	}
}

func TestAuthenticateCacheNeverPastExpiry(t *testing.T) {
	f := newAuthFixture(t, Options{CacheTTL: time.Minute})
	exp := t0.Add(3 * time.Second)
	tok := f.token(t, map[string]any{"exp": exp.Unix()})
	if _, err := f.a.Authenticate(context.Background(), tok, aud); err != nil {
		t.Fatal(err)
	}
	f.clk.Add(3*time.Second - time.Millisecond)
	if _, err := f.a.Authenticate(context.Background(), tok, aud); err != nil {
		t.Fatalf("just before exp: %v", err)
	}
	f.clk.Add(time.Millisecond)
	_, err := f.a.Authenticate(context.Background(), tok, aud)
	expectErr(t, err, ErrInvalid, tok)
	if n := f.reviewer.calls.Load(); n != 1 {
		t.Fatalf("TokenReviews = %d, want 1: an expired token is refused locally", n)
	}

	// exp is checked on the hit itself, not only folded into the entry's
	// expiry when it was stored.
	f2 := newAuthFixture(t, Options{CacheTTL: time.Minute})
	tok2 := f2.token(t, nil)
	if _, err := f2.a.Authenticate(context.Background(), tok2, aud); err != nil {
		t.Fatal(err)
	}
	key := keyFor(tok2, aud)
	e, _ := f2.a.pos.get(&key)
	e.expires = t0.Add(time.Hour)
	short := *e.review
	short.ExpiresAt = t0.Add(time.Second)
	e.review = &short
	f2.a.pos.put(&key, e, t0)
	f2.clk.Add(time.Second)
	if r, ok, err := f2.a.lookup(&key); ok {
		t.Fatalf("lookup past exp = %v, %v; want a miss", r, err)
	}
}

func TestAuthenticateNegativeCache(t *testing.T) {
	f := newAuthFixture(t, Options{NegativeCacheTTL: 2 * time.Second})
	f.reviewer.fn = func(context.Context, string, string) (*authenticationv1.TokenReviewStatus, error) {
		return &authenticationv1.TokenReviewStatus{}, nil
	}
	tok := f.token(t, nil)
	negHits := counterValue(t, MetricCredentialCache, "negative_hit")
	rejected := counterValue(t, MetricTokenReviews, "rejected")
	for range 3 {
		_, err := f.a.Authenticate(context.Background(), tok, aud)
		expectErr(t, err, ErrInvalid, tok)
		f.clk.Add(900 * time.Millisecond) // t0, +0.9s, +1.8s
	}
	if n := f.reviewer.calls.Load(); n != 1 {
		t.Fatalf("TokenReviews = %d, want 1", n)
	}
	if d := counterValue(t, MetricCredentialCache, "negative_hit") - negHits; d != 2 {
		t.Fatalf("negative hits grew by %v, want 2", d)
	}
	if d := counterValue(t, MetricTokenReviews, "rejected") - rejected; d != 1 {
		t.Fatalf("rejected reviews grew by %v, want 1", d)
	}
	// +2.7s: past the negative TTL.
	if _, err := f.a.Authenticate(context.Background(), tok, aud); !errors.Is(err, ErrInvalid) {
		t.Fatal(err)
	}
	if n := f.reviewer.calls.Load(); n != 2 {
		t.Fatalf("TokenReviews after the negative TTL = %d, want 2", n)
	}

	// Local rejections are cached too: a forged token repeated is not
	// verified again within the TTL.
	v := &parseOnlyVerifier{now: f.clk.Now}
	a := NewCachingAuthenticatorWith(v, f.reviewer, Options{Now: f.clk.Now})
	bad := unsigned(t, claims(aud, map[string]any{"iss": "https://evil.test"}))
	for range 3 {
		_, err := a.Authenticate(context.Background(), bad, aud)
		expectErr(t, err, ErrInvalid, bad)
	}
	if n := v.calls.Load(); n != 1 {
		t.Fatalf("verifications of a repeated bad token = %d, want 1", n)
	}
}

func TestAuthenticateReviewFailedNotCached(t *testing.T) {
	f := newAuthFixture(t, Options{})
	fail := true
	f.reviewer.fn = func(_ context.Context, token, audience string) (*authenticationv1.TokenReviewStatus, error) {
		if fail {
			// A lower layer that quotes the token must not leak it.
			return nil, fmt.Errorf("Post \"https://10.0.0.1/apis/authentication.k8s.io/v1/tokenreviews\" body %s: connection refused", token)
		}
		return authenticated(token, audience), nil
	}
	tok := f.token(t, nil)
	errorsBefore := counterValue(t, MetricTokenReviews, "error")
	for range 2 {
		_, err := f.a.Authenticate(context.Background(), tok, aud)
		expectErr(t, err, ErrReviewFailed, tok)
		if errors.Is(err, ErrInvalid) {
			t.Fatalf("a failed review is also a rejection: %v", err)
		}
	}
	if d := counterValue(t, MetricTokenReviews, "error") - errorsBefore; d != 2 {
		t.Fatalf("review errors grew by %v, want 2", d)
	}
	fail = false
	if _, err := f.a.Authenticate(context.Background(), tok, aud); err != nil {
		t.Fatalf("after the API server recovered: %v", err)
	}
	if n := f.reviewer.calls.Load(); n != 3 {
		t.Fatalf("TokenReviews = %d, want 3: failures are not cached", n)
	}
}

func TestAuthenticateKeysUnavailable(t *testing.T) {
	f := newAuthFixture(t, Options{})
	f.src.set(nil, errors.New("dial tcp 10.0.0.1:443: connect: connection refused"))
	tok := f.token(t, nil)
	_, err := f.a.Authenticate(context.Background(), tok, aud)
	expectErr(t, err, ErrReviewFailed, tok)
	if n := f.reviewer.calls.Load(); n != 0 {
		t.Fatalf("TokenReviews = %d, want 0", n)
	}
}

func TestAuthenticateForgedTokensCostNoReview(t *testing.T) {
	f := newAuthFixture(t, Options{})
	forger := newECSigner(t, "k", "ES256")
	good := f.token(t, nil)
	parts := strings.Split(good, ".")
	for name, tok := range map[string]string{
		"re-signed with another key": forger.sign(t, claims(aud, nil)),
		"tampered payload":           parts[0] + "." + b64json(t, claims(aud, map[string]any{"jti": "other"})) + "." + parts[2],
		"garbage":                    "not-a-token",
		"unsigned":                   unsigned(t, claims(aud, nil)),
	} {
		t.Run(name, func(t *testing.T) {
			_, err := f.a.Authenticate(context.Background(), tok, aud)
			expectErr(t, err, ErrInvalid, tok)
		})
	}
	if n := f.reviewer.calls.Load(); n != 0 {
		t.Fatalf("TokenReviews = %d, want 0", n)
	}
}

func TestAuthenticateOversized(t *testing.T) {
	f := newAuthFixture(t, Options{})
	tok := f.token(t, map[string]any{"pad": strings.Repeat("x", MaxTokenSize)})
	_, err := f.a.Authenticate(context.Background(), tok, aud)
	expectErr(t, err, ErrInvalid, tok)
	if n := f.a.neg.len(); n != 0 {
		t.Fatalf("an oversized token was cached (%d entries)", n)
	}
}

func TestAuthenticateConcurrentReviewsCollapse(t *testing.T) {
	f := newAuthFixture(t, Options{})
	entered := make(chan struct{})
	release := make(chan struct{})
	var once sync.Once
	f.reviewer.fn = func(_ context.Context, token, audience string) (*authenticationv1.TokenReviewStatus, error) {
		once.Do(func() { close(entered) })
		<-release
		return authenticated(token, audience), nil
	}
	tok := f.token(t, nil)
	const n = 64
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for range n {
		wg.Go(func() {
			r, err := f.a.Authenticate(context.Background(), tok, aud)
			if err == nil && r.Identity != "system:serviceaccount:billing:worker" {
				err = fmt.Errorf("identity %q", r.Identity)
			}
			errs <- err
		})
	}
	// A caller that gives up stops waiting; the review goes on for the
	// others.
	<-entered
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := f.a.Authenticate(ctx, tok, aud); !errors.Is(err, ErrReviewFailed) {
		t.Fatalf("cancelled caller: %v", err)
	}
	close(release)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	// Callers that came after the review ended found it in the cache;
	// those that came during it shared it.
	if c := f.reviewer.calls.Load(); c != 1 {
		t.Fatalf("TokenReviews for %d concurrent identical requests = %d, want 1", n, c)
	}
}

func TestAuthenticateRateLimit(t *testing.T) {
	f := newAuthFixture(t, Options{ReviewQPS: 0.001, ReviewBurst: 1, ReviewTimeout: time.Hour})
	throttled := counterValue(t, MetricTokenReviews, "throttled")
	first := f.token(t, map[string]any{"jti": "1"})
	if _, err := f.a.Authenticate(context.Background(), first, aud); err != nil {
		t.Fatal(err)
	}
	// The bucket is empty and refills in 1000s: a review within the
	// caller's deadline cannot be admitted, and fails at once.
	tok := f.token(t, map[string]any{"jti": "2"})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, err := f.a.Authenticate(ctx, tok, aud)
	expectErr(t, err, ErrReviewFailed, tok)
	// Nor within ReviewTimeout, for a caller without a deadline.
	f.a.opts.ReviewTimeout = time.Minute
	_, err = f.a.Authenticate(context.Background(), tok, aud)
	expectErr(t, err, ErrReviewFailed, tok)
	if n := f.reviewer.calls.Load(); n != 1 {
		t.Fatalf("TokenReviews = %d, want 1", n)
	}
	if d := counterValue(t, MetricTokenReviews, "throttled") - throttled; d != 2 {
		t.Fatalf("throttled reviews grew by %v, want 2", d)
	}
	// Cache hits and local rejections draw nothing from the bucket.
	if _, err := f.a.Authenticate(context.Background(), first, aud); err != nil {
		t.Fatalf("cache hit while throttled: %v", err)
	}
	if _, err := f.a.Authenticate(context.Background(), "garbage", aud); !errors.Is(err, ErrInvalid) {
		t.Fatalf("garbage while throttled: %v", err)
	}
}

func TestAuthenticateRateLimitWaits(t *testing.T) {
	// A bucket that refills within the deadline admits the review after a
	// wait instead of failing it.
	f := newAuthFixture(t, Options{ReviewQPS: 1000, ReviewBurst: 1})
	for i := range 3 {
		if _, err := f.a.Authenticate(context.Background(), f.token(t, map[string]any{"jti": fmt.Sprint(i)}), aud); err != nil {
			t.Fatalf("review %d: %v", i, err)
		}
	}
}

func TestAuthenticateBoundedCache(t *testing.T) {
	clk := newClock()
	v := &parseOnlyVerifier{now: clk.Now}
	a := NewCachingAuthenticatorWith(v, &fakeReviewer{}, Options{
		Now: clk.Now, MaxCacheEntries: 100, MaxNegativeCacheEntries: 20, ReviewQPS: -1,
	})
	for i := range 1000 {
		tok := unsigned(t, claims(aud, map[string]any{"jti": fmt.Sprint(i)}))
		if _, err := a.Authenticate(context.Background(), tok, aud); err != nil {
			t.Fatal(err)
		}
		bad := unsigned(t, claims(aud, map[string]any{"jti": fmt.Sprint(i), "iss": "x"}))
		if _, err := a.Authenticate(context.Background(), bad, aud); !errors.Is(err, ErrInvalid) {
			t.Fatal(err)
		}
		if n := a.pos.len(); n > 100 {
			t.Fatalf("cache holds %d entries, bound 100", n)
		}
		if n := a.neg.len(); n > 20 {
			t.Fatalf("negative cache holds %d entries, bound 20", n)
		}
	}
	// The most recent entry is always kept.
	last := unsigned(t, claims(aud, map[string]any{"jti": "999"}))
	key := keyFor(last, aud)
	if _, ok, _ := a.lookup(&key); !ok {
		t.Fatal("the entry just stored was evicted")
	}
}

func TestCacheEvictsExpiredFirst(t *testing.T) {
	c := newCache(16)
	now := t0
	live := make([]cacheKey, 0, 8)
	for i := range 16 {
		k := cacheKey(sha256.Sum256([]byte(fmt.Sprint(i))))
		expires := now.Add(time.Second)
		if i%2 == 0 {
			expires = now.Add(time.Hour)
			live = append(live, k)
		}
		c.put(&k, entry{expires: expires}, now)
	}
	now = now.Add(2 * time.Second)
	k := cacheKey(sha256.Sum256([]byte("new")))
	c.put(&k, entry{expires: now.Add(time.Hour)}, now)
	if n := c.len(); n != 9 {
		t.Fatalf("entries = %d, want 9: the expired ones dropped, the live ones kept", n)
	}
	for _, k := range live {
		if _, ok := c.get(&k); !ok {
			t.Fatal("a live entry was evicted while expired ones were there")
		}
	}
}

func TestCacheHoldsNoToken(t *testing.T) {
	f := newAuthFixture(t, Options{})
	f.reviewer.fn = func(_ context.Context, token, audience string) (*authenticationv1.TokenReviewStatus, error) {
		if c, _ := ParseClaims(token); c.ID == "reject" {
			return &authenticationv1.TokenReviewStatus{Error: "rejected"}, nil
		}
		return authenticated(token, audience), nil
	}
	good := f.token(t, nil)
	bad := f.token(t, map[string]any{"jti": "reject"})
	if _, err := f.a.Authenticate(context.Background(), good, aud); err != nil {
		t.Fatal(err)
	}
	if _, err := f.a.Authenticate(context.Background(), bad, aud); !errors.Is(err, ErrInvalid) {
		t.Fatal(err)
	}
	for _, c := range []*cache{f.a.pos, f.a.neg} {
		for i := range c.shards {
			for k, e := range c.shards[i].m {
				dump := fmt.Sprintf("%x %+v %v %+v", k, e, e.err, e.review)
				for _, tok := range []string{good, bad} {
					noToken(t, dump, tok)
					if bytes.Contains(k[:], []byte(tok)[:16]) {
						t.Fatal("a cache key holds token bytes")
					}
				}
			}
		}
	}
	// The key is the SHA-256 of token, a zero byte and audience.
	k := cacheKey(sha256.Sum256([]byte(good + "\x00" + aud)))
	if keyFor(good, aud) != k {
		t.Fatal("cache key is not SHA-256(token \\x00 audience)")
	}
	if _, ok := f.a.pos.get(&k); !ok {
		t.Fatal("review not cached under SHA-256(token \\x00 audience)")
	}
	// Token and audience are separated: moving bytes between them changes
	// the key.
	if keyFor("ab", "c") == keyFor("a", "bc") {
		t.Fatal("cache keys of different token/audience splits collide")
	}
}

func TestAuthenticateHitAllocations(t *testing.T) {
	f := newAuthFixture(t, Options{})
	tok := f.token(t, nil)
	if _, err := f.a.Authenticate(context.Background(), tok, aud); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	allocs := testing.AllocsPerRun(1000, func() {
		if _, err := f.a.Authenticate(ctx, tok, aud); err != nil {
			t.Fatal(err)
		}
	})
	if allocs > 1 {
		t.Fatalf("a cache hit allocates %v times, want at most 1 (the caller's copy)", allocs)
	}
}

func BenchmarkAuthenticateHit(b *testing.B) {
	clk := newClock()
	v := &parseOnlyVerifier{now: clk.Now}
	a := NewCachingAuthenticatorWith(v, &fakeReviewer{}, Options{Now: clk.Now, ReviewQPS: -1})
	toks := make([]string, 1024)
	for i := range toks {
		toks[i] = unsigned(b, claims(aud, map[string]any{"jti": fmt.Sprint(i)}))
		if _, err := a.Authenticate(context.Background(), toks[i], aud); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			if _, err := a.Authenticate(context.Background(), toks[i%len(toks)], aud); err != nil {
				b.Fatal(err)
			}
			i++
		}
	})
}
