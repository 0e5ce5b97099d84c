// Command decide serves sallyport's real decision API handler for load runs
// (see hack/bench/run.sh and docs/benchmarks.md): the real DecisionServer
// handler, the real engine, a store compiled by the real policy compiler,
// the real CachingAuthenticator and the real decision log. Only the two
// things that would need an API server are fakes: the Verifier (which parses
// the token's claims with credential.ParseClaims and checks its times, but
// skips the RSA signature) and the TokenReviewer (which authenticates one
// known token). Both are reached only on a credential-cache miss: the first
// request and then once per cache TTL (10 s), as in production with a warm
// review cache; every other request is a cache hit.
//
// It prints the request body a load generator should send (or writes it to
// -body-file), serves plain HTTP on a loopback address until SIGINT or
// SIGTERM, and then prints the decision counters it served to stderr.
package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/pprof"
	"sort"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/go-logr/logr/funcr"
	authenticationv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/sallyport/sallyport/api/v1alpha1"
	"github.com/sallyport/sallyport/internal/credential"
	"github.com/sallyport/sallyport/internal/decision"
	"github.com/sallyport/sallyport/internal/decisionlog"
	"github.com/sallyport/sallyport/internal/policy"
	"github.com/sallyport/sallyport/internal/store"
	"github.com/sallyport/sallyport/webhook"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "decide:", err)
		os.Exit(1)
	}
}

type flags struct {
	addr, addrFile string
	policies       int
	decisionLog    string
	logMode        string
	bodyFile       string
	cpuProfile     string
}

func parseFlags() *flags {
	f := &flags{}
	flag.StringVar(&f.addr, "addr", "127.0.0.1:0", "loopback `host:port` to serve on (port 0 picks a free one)")
	flag.StringVar(&f.addrFile, "addr-file", "", "write the address actually listened on to this `file` once serving")
	flag.IntVar(&f.policies, "policies", 10, "number of ConnectionPolicies and of ResourcePolicies in the store")
	flag.StringVar(&f.decisionLog, "decision-log", "", "decision log `destination`: a file path, or \"discard\" for io.Discard; default a file in a new temporary directory, removed on exit")
	flag.StringVar(&f.logMode, "decision-log-mode", string(decisionlog.ModeBlock), "decision log mode: block or drop")
	flag.StringVar(&f.bodyFile, "body-file", "", "write the benchmark request body to this `file` instead of stdout")
	flag.StringVar(&f.cpuProfile, "cpuprofile", "", "write a CPU profile of the whole run to this `file` (stopped on SIGINT/SIGTERM)")
	flag.Parse()
	return f
}

func run() error {
	f := parseFlags()
	if f.policies < 1 {
		return errors.New("-policies must be at least 1")
	}
	mode, err := decisionlog.ParseMode(f.logMode)
	if err != nil {
		return err
	}
	logger := funcr.New(func(prefix, args string) {
		fmt.Fprintln(os.Stderr, prefix, args)
	}, funcr.Options{})

	fx, err := newFixture(f.policies, time.Now())
	if err != nil {
		return err
	}

	out, closeOut, err := openLog(f.decisionLog)
	if err != nil {
		return err
	}
	defer closeOut()
	dlog := decisionlog.New(out, decisionlog.Options{Mode: mode})

	verifier := &fakeVerifier{token: fx.token}
	reviewer := &fakeReviewer{token: fx.token, user: fx.user, credentialID: "JTI=" + fx.jti, pod: fx.pod}
	// The operator's options: only the cache TTL is configurable there, and
	// its default is what runs here.
	auth := credential.NewCachingAuthenticatorWith(verifier, reviewer, credential.Options{Log: logger.WithName("credential")})
	engine := decision.NewEngine(fx.store, auth, decision.Options{Logger: logger.WithName("decision")})

	// The benchmark request must be allowed by the rule with the CEL
	// condition; this first decision also fills the review cache.
	if d := engine.Decide(context.Background(), fx.request); !d.Allowed || d.Resource.Rule != "read" {
		return fmt.Errorf("the benchmark request is not allowed by rule \"read\": connection %s (%s), resource %s (%s)",
			d.Connection.Reason, d.Connection.Message, d.Resource.Reason, d.Resource.Message)
	}
	if err := writeBody(f.bodyFile, fx.body); err != nil {
		return err
	}

	ds := webhook.NewDecisionServer(webhook.DecisionServerOptions{BindAddress: f.addr, Insecure: true},
		engine, dlog, fx.store.Ready, logger.WithName("decision-api"))
	ln, err := listenLoopback(f.addr)
	if err != nil {
		return err
	}
	// The same server settings as DecisionServer.Start (without TLS: the
	// floor has none either).
	srv := newServer(ds.Handler())

	if f.cpuProfile != "" {
		pf, err := os.Create(f.cpuProfile)
		if err != nil {
			return fmt.Errorf("cpu profile: %w", err)
		}
		defer func() { _ = pf.Close() }()
		if err := pprof.StartCPUProfile(pf); err != nil {
			return fmt.Errorf("cpu profile: %w", err)
		}
		defer pprof.StopCPUProfile()
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	if err := writeAddr(f.addrFile, ln.Addr().String()); err != nil {
		_ = srv.Close()
		return err
	}
	fmt.Fprintf(os.Stderr, "decide: serving POST http://%s/v1/decide with %d ConnectionPolicies and %d ResourcePolicies; decision log %s (%s mode)\n",
		ln.Addr(), f.policies, f.policies, describeLog(f.decisionLog), mode)

	select {
	case err := <-errc:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	shutdown, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutdown); err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	if err := dlog.Close(); err != nil {
		return fmt.Errorf("close decision log: %w", err)
	}
	if err := dlog.Err(); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "decide: verifier calls %d, token reviews %d\n", verifier.calls.Load(), reviewer.calls.Load())
	printCounters(os.Stderr)
	return nil
}

// fixture is the store, the token and the request of a run.
type fixture struct {
	store   *store.Store
	token   string
	jti     string
	user    string
	pod     string
	request *decision.Request
	body    []byte
}

// newFixture compiles n ConnectionPolicies and n ResourcePolicies, one pair
// per namespace team-NNNNN, each ConnectionPolicy with its own (default)
// audience, and returns the token and the request for pair n/2.
//
// Each pair is what a typical policy looks like, and the same shape as the
// engine benchmark (internal/decision/bench_test.go): the ConnectionPolicy
// reaches class ledger with two scopes and has a CEL condition; the
// ResourcePolicy has a Deny rule that does not match the request, an Allow
// rule before the one that matches, and the matching rule has a CEL
// condition over the request's attributes.
func newFixture(n int, now time.Time) (*fixture, error) {
	b := store.NewBuilder(policy.NewCompiler(policy.CompilerOptions{}))
	created := metav1.NewTime(now.Add(-24 * time.Hour))
	for i := range n {
		ns := fmt.Sprintf("team-%05d", i)
		cp := &v1alpha1.ConnectionPolicy{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "client", UID: types.UID(ns + "/client"), Generation: 1, CreationTimestamp: created},
			Spec: v1alpha1.ConnectionPolicySpec{
				ServiceAccountName: "worker",
				MaxTokenLifetime:   metav1.Duration{Duration: time.Hour},
				Reach: []v1alpha1.Reach{{
					Class: "ledger", Scopes: []v1alpha1.Scope{"ledger.read", "ledger.write"},
					MaxClassification: v1alpha1.ClassificationConfidential,
				}},
				When: `connection.age < duration("1h")`,
			},
		}
		if err := b.UpsertConnection(cp); err != nil {
			return nil, fmt.Errorf("compile ConnectionPolicy %s/client: %w", ns, err)
		}
		client := []v1alpha1.ConnectionRef{{Namespace: ns, Name: "client"}}
		rp := &v1alpha1.ResourcePolicy{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "api", UID: types.UID(ns + "/api"), Generation: 1, CreationTimestamp: created},
			Spec: v1alpha1.ResourcePolicySpec{
				Service: "api", Class: "ledger", Classification: v1alpha1.ClassificationInternal,
				Rules: []v1alpha1.Rule{
					{Name: "no-archive-delete", Effect: v1alpha1.EffectDeny, Actions: []string{"DELETE"}, Resources: []string{"/archive/**"}},
					{Name: "write", Effect: v1alpha1.EffectAllow, Actions: []string{"PUT", "POST"}, Resources: []string{"/entries/*"},
						Scopes: []v1alpha1.Scope{"ledger.write"}, Connections: client},
					{Name: "read", Effect: v1alpha1.EffectAllow, Actions: []string{"GET"}, Resources: []string{"/entries/*", "/reports/**"},
						Scopes: []v1alpha1.Scope{"ledger.read"}, Connections: client,
						When: `request.attributes["sourceIP"].startsWith("10.")`},
				},
			},
		}
		if err := b.UpsertResource(rp); err != nil {
			return nil, fmt.Errorf("compile ResourcePolicy %s/api: %w", ns, err)
		}
	}
	st := store.New()
	st.Publish(b.Build(), true)

	target := fmt.Sprintf("team-%05d", n/2)
	aud := policy.DefaultAudience(target, "client")
	if _, ok := st.Snapshot().ConnectionByAudience(v1alpha1.EnforcementEnforce, aud); !ok {
		return nil, fmt.Errorf("no ConnectionPolicy holds audience %q", aud)
	}
	fx := &fixture{store: st, jti: "5f0c7a52-3b1e-4f5d-9a43-bench0000001", user: policy.Identity(target, "worker"), pod: "worker-7d9f8c6b5-x2x4q"}
	tok, err := serviceAccountToken(aud, target, "worker", fx.pod, fx.jti, now)
	if err != nil {
		return nil, err
	}
	fx.token = tok
	fx.request = &decision.Request{
		Token:      tok,
		Target:     decision.Target{Namespace: target, Service: "api", Name: "/reports/2026/q1"},
		Action:     "GET",
		Scopes:     []string{"ledger.read"},
		Attributes: map[string]string{"sourceIP": "10.1.2.3"},
	}
	type resource struct {
		Namespace string `json:"namespace"`
		Service   string `json:"service"`
		Name      string `json:"name"`
	}
	body, err := json.Marshal(struct {
		Credential struct {
			Token string `json:"token"`
		} `json:"credential"`
		Resource   resource          `json:"resource"`
		Action     string            `json:"action"`
		Scopes     []string          `json:"scopes"`
		Attributes map[string]string `json:"attributes"`
	}{
		Credential: struct {
			Token string `json:"token"`
		}{tok},
		Resource:   resource{Namespace: target, Service: "api", Name: fx.request.Target.Name},
		Action:     fx.request.Action,
		Scopes:     fx.request.Scopes,
		Attributes: fx.request.Attributes,
	})
	if err != nil {
		return nil, err
	}
	fx.body = body
	return fx, nil
}

// serviceAccountToken returns a token shaped like a projected
// service-account token of the API server (RS256 header with a key ID, the
// kubernetes.io claims, a 2048-bit-sized signature), about as large as a
// real one. The signature is random bytes: the fake verifier does not check
// it. Issued two minutes ago, valid for 45 more.
func serviceAccountToken(aud, ns, sa, pod, jti string, now time.Time) (string, error) {
	enc := base64.RawURLEncoding
	header, err := json.Marshal(map[string]string{"alg": "RS256", "kid": "q0bC2k8mH1x4rYtV3nLwS9fJdE6gP7aZ-uIoKcNsQeM"})
	if err != nil {
		return "", err
	}
	claims, err := json.Marshal(map[string]any{
		"aud": []string{aud},
		"exp": now.Add(45 * time.Minute).Unix(),
		"iat": now.Add(-2 * time.Minute).Unix(),
		"nbf": now.Add(-2 * time.Minute).Unix(),
		"iss": "https://kubernetes.default.svc.cluster.local",
		"jti": jti,
		"sub": policy.Identity(ns, sa),
		"kubernetes.io": map[string]any{
			"namespace":      ns,
			"node":           map[string]string{"name": "node-1", "uid": "6f1d2a9e-3c41-4b7a-8e0d-1f2a3b4c5d6e"},
			"pod":            map[string]string{"name": pod, "uid": "0b8f4c2e-7a6d-4e5f-9c1b-2d3e4f5a6b7c"},
			"serviceaccount": map[string]string{"name": sa, "uid": "9e8d7c6b-5a4f-4e3d-8c2b-1a0f9e8d7c6b"},
		},
	})
	if err != nil {
		return "", err
	}
	sig := make([]byte, 256)
	_, _ = rand.Read(sig)
	return enc.EncodeToString(header) + "." + enc.EncodeToString(claims) + "." + enc.EncodeToString(sig), nil
}

// fakeVerifier accepts one token: it parses the claims and checks the
// validity period like the real KeySet, without the signature.
type fakeVerifier struct {
	token string
	calls atomic.Int64
}

func (v *fakeVerifier) Verify(_ context.Context, token string) (*credential.Claims, error) {
	v.calls.Add(1)
	if token != v.token {
		return nil, fmt.Errorf("%w: not the benchmark token", credential.ErrInvalid)
	}
	c, err := credential.ParseClaims(token)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	if now.Before(c.NotBefore) || !now.Before(c.ExpiresAt) {
		return nil, fmt.Errorf("%w: outside its validity period", credential.ErrInvalid)
	}
	return c, nil
}

// fakeReviewer authenticates one token as the API server would: for the
// audience asked, as the ServiceAccount, with its credential ID and pod.
type fakeReviewer struct {
	token, user, credentialID, pod string
	calls                          atomic.Int64
}

func (r *fakeReviewer) Review(_ context.Context, token, audience string) (*authenticationv1.TokenReviewStatus, error) {
	r.calls.Add(1)
	if token != r.token {
		return &authenticationv1.TokenReviewStatus{Authenticated: false}, nil
	}
	return &authenticationv1.TokenReviewStatus{
		Authenticated: true,
		Audiences:     []string{audience},
		User: authenticationv1.UserInfo{
			Username: r.user,
			Extra: map[string]authenticationv1.ExtraValue{
				credential.ExtraCredentialID: {r.credentialID},
				credential.ExtraPodName:      {r.pod},
			},
		},
	}, nil
}

// openLog opens the decision log destination; the returned func closes it
// and removes the temporary directory it made.
func openLog(dst string) (io.Writer, func(), error) {
	switch dst {
	case "discard":
		return io.Discard, func() {}, nil
	case "":
		dir, err := os.MkdirTemp("", "sallyport-bench-")
		if err != nil {
			return nil, nil, err
		}
		f, err := os.OpenFile(filepath.Join(dir, "decisions.log"), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
		if err != nil {
			_ = os.RemoveAll(dir)
			return nil, nil, err
		}
		return f, func() { _ = f.Close(); _ = os.RemoveAll(dir) }, nil
	}
	f, err := os.OpenFile(dst, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return nil, nil, err
	}
	return f, func() { _ = f.Close() }, nil
}

func describeLog(dst string) string {
	switch dst {
	case "discard":
		return "io.Discard"
	case "":
		return "a file in a temporary directory"
	}
	return dst
}

func writeBody(path string, body []byte) error {
	if path == "" {
		_, err := os.Stdout.Write(append(body, '\n'))
		return err
	}
	return os.WriteFile(path, body, 0o600)
}

// listenLoopback listens on addr, which must be a loopback address: the
// token crosses in the clear.
func listenLoopback(addr string) (net.Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	if tcp, ok := ln.Addr().(*net.TCPAddr); !ok || !tcp.IP.IsLoopback() {
		_ = ln.Close()
		return nil, fmt.Errorf("%s is not a loopback address", ln.Addr())
	}
	return ln, nil
}

// newServer returns an http.Server with DecisionServer.Start's settings.
func newServer(h http.Handler) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      10 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    32 << 10,
	}
}

// writeAddr writes addr to path atomically, so a reader never sees half
// of it.
func writeAddr(path, addr string) error {
	if path == "" {
		return nil
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(addr+"\n"), 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// printCounters prints the sallyport counters of the metrics registry: the
// decisions served by outcome and reasons, and the credential cache's hits
// and misses, so a run shows that every decision was allowed and that the
// review cache was warm.
func printCounters(w io.Writer) {
	families, err := metrics.Registry.Gather()
	if err != nil {
		fmt.Fprintln(w, "decide: gather metrics:", err)
		return
	}
	var lines []string
	for _, mf := range families {
		name := mf.GetName()
		if !strings.HasPrefix(name, "sallyport_") {
			continue
		}
		for _, m := range mf.GetMetric() {
			c := m.GetCounter()
			if c == nil || c.GetValue() == 0 {
				continue
			}
			var labels []string
			for _, l := range m.GetLabel() {
				labels = append(labels, l.GetName()+"="+l.GetValue())
			}
			lines = append(lines, fmt.Sprintf("%s{%s} %.0f", name, strings.Join(labels, ","), c.GetValue()))
		}
	}
	sort.Strings(lines)
	for _, l := range lines {
		fmt.Fprintln(w, "decide:", l)
	}
}
