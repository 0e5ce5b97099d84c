package credential_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"

	"github.com/sallyport/sallyport/internal/controlplane"
	"github.com/sallyport/sallyport/internal/credential"
	"github.com/sallyport/sallyport/internal/testenv"
)

// These tests run against a real kube-apiserver: its TokenRequest API
// mints the tokens, its JWKS and TokenReview check them.
var (
	env       *testenv.Env
	clientset *kubernetes.Clientset
)

func TestMain(m *testing.M) {
	testenv.Main(m, controlplane.Options{}, func(e *testenv.Env) (func(), error) {
		env = e
		clientset = e.Clientset
		return nil, nil
	})
}

// requestCounter counts the HTTP requests a client makes, by path.
type requestCounter struct {
	mu    sync.Mutex
	paths map[string]int
}

func (c *requestCounter) wrap(rt http.RoundTripper) http.RoundTripper {
	return roundTripper(func(r *http.Request) (*http.Response, error) {
		c.mu.Lock()
		if c.paths == nil {
			c.paths = map[string]int{}
		}
		c.paths[r.URL.Path]++
		c.mu.Unlock()
		return rt.RoundTrip(r)
	})
}

type roundTripper func(*http.Request) (*http.Response, error)

func (f roundTripper) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

const tokenReviewsPath = "/apis/authentication.k8s.io/v1/tokenreviews"

func (c *requestCounter) count(path string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.paths[path]
}

func (c *requestCounter) total() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, v := range c.paths {
		n += v
	}
	return n
}

func (c *requestCounter) reset() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.paths = nil
}

// countedConfig returns the control plane's admin config, counting its
// requests.
func countedConfig() (*rest.Config, *requestCounter) {
	c := &requestCounter{}
	cfg := rest.CopyConfig(env.Config)
	cfg.WrapTransport = c.wrap
	return cfg, c
}

func newAuthenticator(t *testing.T, opts credential.Options) (*credential.CachingAuthenticator, *requestCounter) {
	t.Helper()
	cfg, c := countedConfig()
	a, err := credential.NewCachingAuthenticator(cfg, opts)
	if err != nil {
		t.Fatal(err)
	}
	return a, c
}

// serviceAccount creates a namespace and a ServiceAccount "worker" in it.
func serviceAccount(t *testing.T) string {
	t.Helper()
	ns := env.Namespace(t, nil)
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "worker", Namespace: ns}}
	if _, err := clientset.CoreV1().ServiceAccounts(ns).Create(context.Background(), sa, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	return ns
}

// mint requests a 600s token for ns/worker with audiences, bound to the
// Secret bound when it is not nil.
func mint(t *testing.T, ns string, audiences []string, bound *corev1.Secret) (string, authenticationv1.TokenRequestStatus) {
	t.Helper()
	tr := &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{
		Audiences:         audiences,
		ExpirationSeconds: ptr.To[int64](600),
	}}
	if bound != nil {
		tr.Spec.BoundObjectRef = &authenticationv1.BoundObjectReference{
			Kind: "Secret", APIVersion: "v1", Name: bound.Name, UID: bound.UID,
		}
	}
	out, err := clientset.CoreV1().ServiceAccounts(ns).CreateToken(context.Background(), "worker", tr, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return out.Status.Token, out.Status
}

func audienceFor(ns string) string { return "sallyport.dev/" + ns + "/conn" }

// noToken fails when err's message quotes the token.
func noToken(t *testing.T, err error, token string) {
	t.Helper()
	if err == nil {
		return
	}
	for _, part := range append([]string{token}, strings.Split(token, ".")...) {
		if len(part) >= 8 && strings.Contains(err.Error(), part) {
			t.Fatalf("error %q quotes the token", err)
		}
	}
}

func TestAPIServerKeys(t *testing.T) {
	ns := serviceAccount(t)
	tok, _ := mint(t, ns, []string{audienceFor(ns)}, nil)

	src, err := credential.NewAPIServerKeySource(env.Config)
	if err != nil {
		t.Fatal(err)
	}
	issuer, doc, err := src.FetchKeys(context.Background())
	if err != nil {
		t.Fatalf("fetch the issuer keys: %v", err)
	}
	var set struct {
		Keys []map[string]string `json:"keys"`
	}
	if err := json.Unmarshal(doc, &set); err != nil {
		t.Fatal(err)
	}
	t.Logf("issuer %q, JWKS %s", issuer, doc)

	ks := credential.NewKeySet(src, credential.KeySetOptions{})
	c, err := ks.Verify(context.Background(), tok)
	if err != nil {
		t.Fatalf("verify a token of the API server: %v", err)
	}
	if c.Issuer != issuer {
		t.Fatalf("token issuer %q, discovered %q", c.Issuer, issuer)
	}

	// The key the token names is envtest's signing key, sa-signer.crt in
	// the API server's cert directory; Kubernetes names a key by the
	// SHA-256 of its DER public key.
	raw, err := os.ReadFile(filepath.Join(env.ControlPlane.APIServer.CertDir, "sa-signer.crt"))
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(raw)
	if block == nil {
		t.Fatal("sa-signer.crt is not PEM")
	}
	var pub any
	if block.Type == "CERTIFICATE" {
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		pub = cert.PublicKey
	} else if pub, err = x509.ParsePKIXPublicKey(block.Bytes); err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(der)
	kid := base64.RawURLEncoding.EncodeToString(sum[:])
	if c.KeyID != kid {
		t.Fatalf("token kid %q, sa-signer.crt's key is %q", c.KeyID, kid)
	}
	found := false
	for _, k := range set.Keys {
		found = found || k["kid"] == kid
	}
	if !found {
		t.Fatalf("JWKS does not hold sa-signer.crt's key %q", kid)
	}
	t.Logf("signing algorithm %s, key %T", c.Algorithm, pub)
}

func TestAPIServerAuthenticates(t *testing.T) {
	ns := serviceAccount(t)
	audience := audienceFor(ns)
	tok, status := mint(t, ns, []string{audience}, nil)
	a, calls := newAuthenticator(t, credential.Options{})

	r, err := a.Authenticate(context.Background(), tok, audience)
	if err != nil {
		t.Fatal(err)
	}
	c, err := credential.ParseClaims(tok)
	if err != nil {
		t.Fatal(err)
	}
	if r.Identity != "system:serviceaccount:"+ns+":worker" || r.Namespace != ns || r.ServiceAccount != "worker" ||
		r.Audience != audience || r.Pod != "" {
		t.Fatalf("review = %+v", *r)
	}
	if r.CredentialID != "JTI="+c.ID || c.ID == "" {
		t.Fatalf("credential ID %q, token jti %q", r.CredentialID, c.ID)
	}
	if !r.IssuedAt.Equal(c.IssuedAt) || !r.ExpiresAt.Equal(c.ExpiresAt) ||
		!r.ExpiresAt.Equal(status.ExpirationTimestamp.Time) || r.ExpiresAt.Sub(r.IssuedAt) != 600*time.Second {
		t.Fatalf("issued %v, expires %v; TokenRequest said it expires %v", r.IssuedAt, r.ExpiresAt, status.ExpirationTimestamp)
	}
	if n := calls.count(tokenReviewsPath); n != 1 {
		t.Fatalf("TokenReviews = %d, want 1", n)
	}

	// Again: from the cache.
	if _, err := a.Authenticate(context.Background(), tok, audience); err != nil {
		t.Fatal(err)
	}
	if n := calls.count(tokenReviewsPath); n != 1 {
		t.Fatalf("TokenReviews after a cache hit = %d, want 1", n)
	}
}

func TestAPIServerConcurrentIdenticalReviewsCollapse(t *testing.T) {
	ns := serviceAccount(t)
	audience := audienceFor(ns)
	tok, _ := mint(t, ns, []string{audience}, nil)
	a, calls := newAuthenticator(t, credential.Options{})
	var wg sync.WaitGroup
	var failed atomic.Int32
	for range 32 {
		wg.Go(func() {
			if _, err := a.Authenticate(context.Background(), tok, audience); err != nil {
				failed.Add(1)
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if n := calls.count(tokenReviewsPath); n != 1 {
		t.Fatalf("TokenReviews for 32 concurrent identical requests = %d, want 1", n)
	}
	if n := calls.count(credential.JWKSPath); n != 1 {
		t.Fatalf("JWKS fetches = %d, want 1", n)
	}
}

func TestAPIServerAudiences(t *testing.T) {
	ns := serviceAccount(t)
	audience := audienceFor(ns)
	other := "sallyport.dev/" + ns + "/other"
	tokForOther, _ := mint(t, ns, []string{other}, nil)
	tokDefault, _ := mint(t, ns, nil, nil) // the API server's own audience
	tokBoth, _ := mint(t, ns, []string{audience, other}, nil)
	a, calls := newAuthenticator(t, credential.Options{})

	for name, tok := range map[string]string{
		"token for another audience":          tokForOther,
		"token for the API server":            tokDefault,
		"token for this and another audience": tokBoth,
	} {
		t.Run(name, func(t *testing.T) {
			_, err := a.Authenticate(context.Background(), tok, audience)
			if !errors.Is(err, credential.ErrInvalid) {
				t.Fatalf("error = %v, want ErrInvalid", err)
			}
			noToken(t, err, tok)
		})
	}
	if n := calls.count(tokenReviewsPath); n != 0 {
		t.Fatalf("TokenReviews = %d, want 0: these are refused locally", n)
	}

	// The API server agrees: a TokenReview for an audience the token does
	// not carry does not authenticate it. Past a verifier that (wrongly)
	// let it through, the review still refuses it.
	cfg, reviews := countedConfig()
	reviewer, err := credential.NewTokenReviewer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	st, err := reviewer.Review(context.Background(), tokForOther, audience)
	if err != nil {
		t.Fatal(err)
	}
	if st.Authenticated {
		t.Fatalf("the API server authenticated a token for %q as one for %q: %+v", other, audience, st)
	}
	t.Logf("TokenReview for the wrong audience: authenticated=%v audiences=%v error=%q", st.Authenticated, st.Audiences, st.Error)

	src, err := credential.NewAPIServerKeySource(env.Config)
	if err != nil {
		t.Fatal(err)
	}
	lying := credential.NewCachingAuthenticatorWith(audienceLiar{credential.NewKeySet(src, credential.KeySetOptions{}), audience}, reviewer, credential.Options{})
	_, err = lying.Authenticate(context.Background(), tokForOther, audience)
	if !errors.Is(err, credential.ErrInvalid) {
		t.Fatalf("error = %v, want ErrInvalid", err)
	}
	noToken(t, err, tokForOther)
	if n := reviews.count(tokenReviewsPath); n != 2 {
		t.Fatalf("TokenReviews = %d, want 2", n)
	}
}

// audienceLiar verifies tokens, then claims they are for audience.
type audienceLiar struct {
	credential.Verifier
	audience string
}

func (l audienceLiar) Verify(ctx context.Context, token string) (*credential.Claims, error) {
	c, err := l.Verifier.Verify(ctx, token)
	if err != nil {
		return nil, err
	}
	c.Audiences = []string{l.audience}
	return c, nil
}

func TestAPIServerForgedTokensCostNoAPICall(t *testing.T) {
	ns := serviceAccount(t)
	audience := audienceFor(ns)
	tok, _ := mint(t, ns, []string{audience}, nil)
	a, calls := newAuthenticator(t, credential.Options{
		KeySet: credential.KeySetOptions{MinRefreshInterval: time.Hour},
	})
	if _, err := a.Authenticate(context.Background(), tok, audience); err != nil {
		t.Fatal(err)
	}
	calls.reset()

	parts := strings.Split(tok, ".")
	var header, payload map[string]any
	for i, v := range []*map[string]any{&header, &payload} {
		raw, err := base64.RawURLEncoding.DecodeString(parts[i])
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(raw, v); err != nil {
			t.Fatal(err)
		}
	}
	forger, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	enc := func(v any) string {
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		return base64.RawURLEncoding.EncodeToString(b)
	}
	with := func(m map[string]any, kv ...any) map[string]any {
		c := map[string]any{}
		for k, v := range m {
			c[k] = v
		}
		for i := 0; i < len(kv); i += 2 {
			c[kv[i].(string)] = kv[i+1]
		}
		return c
	}
	sign := func(h, p map[string]any) string {
		input := enc(h) + "." + enc(p)
		sum := sha256.Sum256([]byte(input))
		r, s, err := ecdsa.Sign(rand.Reader, forger, sum[:])
		if err != nil {
			t.Fatal(err)
		}
		sig := make([]byte, 64)
		r.FillBytes(sig[:32])
		s.FillBytes(sig[32:])
		return input + "." + base64.RawURLEncoding.EncodeToString(sig)
	}
	kube := payload["kubernetes.io"].(map[string]any)
	otherSA := with(kube, "serviceaccount", map[string]any{"name": "admin", "uid": "0000"})

	forged := map[string]string{
		"re-signed with another key under the API server's kid": sign(header, payload),
		"re-signed with another key under a made-up kid":        sign(with(header, "kid", "made-up"), payload),
		"re-signed with another key, no kid":                    sign(with(header, "kid", nil), payload),
		"tampered payload (another service account)": parts[0] + "." +
			enc(with(payload, "sub", "system:serviceaccount:"+ns+":admin", "kubernetes.io", otherSA)) + "." + parts[2],
		"tampered payload (later expiry)": parts[0] + "." +
			enc(with(payload, "exp", payload["exp"].(float64)+3600)) + "." + parts[2],
		"alg none":  enc(with(header, "alg", "none")) + "." + parts[1] + "." + parts[2],
		"HS256":     enc(with(header, "alg", "HS256")) + "." + parts[1] + "." + parts[2],
		"truncated": tok[:len(tok)-10],
		"garbage":   "Bearer " + tok,
		"empty sig": parts[0] + "." + parts[1] + ".",
	}
	for name, f := range forged {
		t.Run(name, func(t *testing.T) {
			_, err := a.Authenticate(context.Background(), f, audience)
			if !errors.Is(err, credential.ErrInvalid) {
				t.Fatalf("error = %v, want ErrInvalid", err)
			}
			noToken(t, err, f)
			noToken(t, err, tok)
		})
	}
	if n := calls.total(); n != 0 {
		t.Fatalf("forged tokens cost %d API calls (%v), want 0", n, calls.paths)
	}

	// The API server refuses the forgery too: the local check is not
	// stricter than the real one here, only cheaper.
	reviewer, err := credential.NewTokenReviewer(env.Config)
	if err != nil {
		t.Fatal(err)
	}
	st, err := reviewer.Review(context.Background(), forged["re-signed with another key under the API server's kid"], audience)
	if err != nil {
		t.Fatal(err)
	}
	if st.Authenticated {
		t.Fatal("the API server authenticated a forged token")
	}
}

func TestAPIServerRevokedToken(t *testing.T) {
	ns := serviceAccount(t)
	audience := audienceFor(ns)
	anchor, err := clientset.CoreV1().Secrets(ns).Create(context.Background(),
		&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "anchor", Namespace: ns}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	tok, _ := mint(t, ns, []string{audience}, anchor)
	a, calls := newAuthenticator(t, credential.Options{CacheTTL: 2 * time.Second})
	if _, err := a.Authenticate(context.Background(), tok, audience); err != nil {
		t.Fatal(err)
	}

	if err := clientset.CoreV1().Secrets(ns).Delete(context.Background(), "anchor", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	deleted := time.Now()
	var unexpected error
	testenv.Eventually(t, time.Minute, func() error {
		_, err := a.Authenticate(context.Background(), tok, audience)
		switch {
		case err == nil:
			return errors.New("the token of a deleted Secret still authenticates")
		case errors.Is(err, credential.ErrInvalid):
			noToken(t, err, tok)
			return nil
		default:
			if unexpected == nil {
				unexpected = err
			}
			return err
		}
	})
	if unexpected != nil {
		t.Fatalf("while waiting for the revocation: %v", unexpected)
	}
	t.Logf("revocation seen %s after the delete, after %d TokenReviews", time.Since(deleted).Round(time.Second), calls.count(tokenReviewsPath))

	// The rejection is cached: asking again costs no review.
	before := calls.count(tokenReviewsPath)
	if _, err := a.Authenticate(context.Background(), tok, audience); !errors.Is(err, credential.ErrInvalid) {
		t.Fatalf("error = %v, want ErrInvalid", err)
	}
	if n := calls.count(tokenReviewsPath); n != before {
		t.Fatalf("a cached rejection cost %d TokenReviews", n-before)
	}
}

// closedAddress returns a loopback address nothing listens on.
func closedAddress(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	return addr
}

// hangingAddress returns a loopback address that accepts connections and
// never answers, like an API server that has stopped responding.
func hangingAddress(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		_ = l.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			_ = c.Close()
		}
	})
	return l.Addr().String()
}

func configAt(addr string) *rest.Config {
	cfg := rest.CopyConfig(env.Config)
	cfg.Host = "https://" + addr
	return cfg
}

func TestAPIServerUnreachable(t *testing.T) {
	ns := serviceAccount(t)
	audience := audienceFor(ns)
	tok, _ := mint(t, ns, []string{audience}, nil)

	t.Run("keys unavailable", func(t *testing.T) {
		for name, addr := range map[string]string{"closed port": closedAddress(t), "hanging server": hangingAddress(t)} {
			t.Run(name, func(t *testing.T) {
				a, err := credential.NewCachingAuthenticator(configAt(addr), credential.Options{})
				if err != nil {
					t.Fatal(err)
				}
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
				defer cancel()
				_, err = a.Authenticate(ctx, tok, audience)
				if !errors.Is(err, credential.ErrReviewFailed) || errors.Is(err, credential.ErrInvalid) {
					t.Fatalf("error = %v, want ErrReviewFailed", err)
				}
				if !strings.Contains(err.Error(), "review failed") {
					t.Fatalf("error %q does not say the review failed", err)
				}
				noToken(t, err, tok)
			})
		}
	})

	t.Run("token review unavailable", func(t *testing.T) {
		for name, addr := range map[string]string{"closed port": closedAddress(t), "hanging server": hangingAddress(t)} {
			t.Run(name, func(t *testing.T) {
				src, err := credential.NewAPIServerKeySource(env.Config)
				if err != nil {
					t.Fatal(err)
				}
				down, err := credential.NewTokenReviewer(configAt(addr))
				if err != nil {
					t.Fatal(err)
				}
				up, err := credential.NewTokenReviewer(env.Config)
				if err != nil {
					t.Fatal(err)
				}
				sw := &switchReviewer{}
				sw.current.Store(&down)
				a := credential.NewCachingAuthenticatorWith(credential.NewKeySet(src, credential.KeySetOptions{}), sw,
					credential.Options{ReviewTimeout: 2 * time.Second})
				for range 2 {
					_, err = a.Authenticate(context.Background(), tok, audience)
					if !errors.Is(err, credential.ErrReviewFailed) || errors.Is(err, credential.ErrInvalid) {
						t.Fatalf("error = %v, want ErrReviewFailed", err)
					}
					if !strings.Contains(err.Error(), "review failed") {
						t.Fatalf("error %q does not say the review failed", err)
					}
					noToken(t, err, tok)
				}
				// The failure was not cached: once the API server answers,
				// the token authenticates.
				sw.current.Store(&up)
				if _, err := a.Authenticate(context.Background(), tok, audience); err != nil {
					t.Fatalf("after the API server came back: %v", err)
				}
			})
		}
	})
}

// switchReviewer sends reviews to the current reviewer.
type switchReviewer struct {
	current atomic.Pointer[credential.TokenReviewer]
}

func (s *switchReviewer) Review(ctx context.Context, token, audience string) (*authenticationv1.TokenReviewStatus, error) {
	return (*s.current.Load()).Review(ctx, token, audience)
}

func TestAPIServerRejectsOversizedAndMissingTokensLocally(t *testing.T) {
	a, calls := newAuthenticator(t, credential.Options{})
	for name, tok := range map[string]string{
		"empty":     "",
		"oversized": strings.Repeat("a", credential.MaxTokenSize+1),
	} {
		_, err := a.Authenticate(context.Background(), tok, "sallyport.dev/x/y")
		if !errors.Is(err, credential.ErrInvalid) {
			t.Fatalf("%s: error = %v, want ErrInvalid", name, err)
		}
	}
	if n := calls.total(); n != 0 {
		t.Fatalf("API calls = %d, want 0", n)
	}
}
