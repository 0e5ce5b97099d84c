// Command decide serves sallyport's real decision API handler for load runs
// (see hack/bench/run.sh and docs/benchmarks.md): the real DecisionServer
// handler and, with -grpc-addr, the real Envoy ext_authz server on the same
// DecisionServer, with the real engine, a store compiled by the real policy
// compiler, the real CachingAuthenticator, the real KeySet verifying the
// token's RS256 signature, and the real decision log. Only the
// TokenReviewer, which would need an API server, is a fake (it
// authenticates one known token), and the KeySet reads its key from memory
// instead of the API server's discovery endpoint. Both are reached only on
// a credential-cache miss: the first request and then once per cache TTL
// (10 s), as in production with a warm review cache; every other request
// is a cache hit.
//
// The token is signed with an RSA key made at start. With -opa-dir the
// command also writes what OPA needs to decide the same request against
// the same policies (see hack/bench/opa): the policies as data, the public
// key, and the request as OPA input.
//
// It prints the request body a load generator should send (or writes it to
// -body-file), serves plain HTTP (and gRPC) on loopback addresses until
// SIGINT or SIGTERM, and then prints the decision counters it served to
// stderr.
package main

import (
	"context"
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

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/go-logr/logr/funcr"
	"google.golang.org/grpc"
	"google.golang.org/grpc/keepalive"
	authenticationv1 "k8s.io/api/authentication/v1"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/sallyport/sallyport/hack/bench/internal/floorapi"
	"github.com/sallyport/sallyport/hack/bench/internal/liveheap"
	"github.com/sallyport/sallyport/hack/bench/internal/recording"
	"github.com/sallyport/sallyport/internal/credential"
	"github.com/sallyport/sallyport/internal/decision"
	"github.com/sallyport/sallyport/internal/decisionlog"
	"github.com/sallyport/sallyport/internal/gctune"
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
	grpcAddr       string
	grpcAddrFile   string
	opaDir         string
	allocProfile   string
	traceFile      string
	handler        string
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
	flag.StringVar(&f.allocProfile, "allocprofile", "", "write an allocation profile (pprof allocs) to this `file` on SIGINT/SIGTERM")
	flag.StringVar(&f.traceFile, "trace", "", "write an execution trace (runtime/trace) of the whole run to this `file`, for stalls: go tool trace -pprof=sched")
	flag.StringVar(&f.grpcAddr, "grpc-addr", "", "also serve Envoy ext_authz (gRPC, plain HTTP/2) on this loopback `host:port`; empty: no gRPC")
	flag.StringVar(&f.grpcAddrFile, "grpc-addr-file", "", "write the gRPC address actually listened on to this `file` once serving")
	flag.StringVar(&f.opaDir, "opa-dir", "", "write OPA's data, key and input for the same policies and request into this `directory` (see hack/bench/opa)")
	flag.StringVar(&f.handler, "handler", "decide", "what POST /v1/decide runs: \"decide\", sallyport's decision API, or \"floor\", the floor's handler (hack/bench/internal/floorapi) in this process, which holds everything sallyport's does: a control for how much of the latency comes from the process's live heap rather than from deciding")
	flag.Parse()
	// The collector as the operator sets it (GOGC=400 unless GOGC is set),
	// for the floor as for sallyport: any Go decision service can.
	gctune.Apply()
	return f
}

// check refuses flag values the run cannot use, naming the flag.
func (f *flags) check() error {
	if f.policies < 1 {
		return fmt.Errorf("-policies must be at least 1, not %d", f.policies)
	}
	if f.handler != "decide" && f.handler != "floor" {
		return fmt.Errorf("-handler must be \"decide\" or \"floor\", not %q", f.handler)
	}
	return nil
}

func run() error {
	f := parseFlags()
	if err := f.check(); err != nil {
		return err
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

	verifier := &countingVerifier{v: credential.NewKeySet(fx.keys, credential.KeySetOptions{Log: logger.WithName("keys")})}
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
	if f.opaDir != "" {
		if err := writeOPA(f.opaDir, fx); err != nil {
			return err
		}
	}

	ds := webhook.NewDecisionServer(webhook.DecisionServerOptions{BindAddress: f.addr, Insecure: true},
		engine, dlog, fx.store.Ready, logger.WithName("decision-api"))
	ln, err := listenLoopback(f.addr)
	if err != nil {
		return err
	}
	// The same server settings as DecisionServer.Start (without TLS: the
	// floor has none either).
	handler := ds.Handler()
	if f.handler == "floor" {
		handler = floorapi.Handler()
	}
	srv := newServer(handler)

	stopRecording, err := recording.Start(f.cpuProfile, f.traceFile)
	if err != nil {
		return err
	}
	defer func() {
		if err := stopRecording(); err != nil {
			fmt.Fprintln(os.Stderr, "decide:", err)
		}
	}()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	errc := make(chan error, 2)
	var grpcSrv *grpc.Server
	if f.grpcAddr != "" {
		gln, err := listenLoopback(f.grpcAddr)
		if err != nil {
			return fmt.Errorf("gRPC: %w", err)
		}
		grpcSrv = newGRPCServer(webhook.NewExtAuthzServer(webhook.ExtAuthzOptions{BindAddress: f.grpcAddr, Insecure: true},
			ds, logger.WithName("ext-authz")))
		go func() { errc <- grpcSrv.Serve(gln) }()
		defer grpcSrv.Stop()
		if err := writeAddr(f.grpcAddrFile, gln.Addr().String()); err != nil {
			return err
		}
		fmt.Fprintf(os.Stderr, "decide: serving Envoy ext_authz (gRPC) on %s\n", gln.Addr())
	}
	go func() { errc <- srv.Serve(ln) }()
	if err := writeAddr(f.addrFile, ln.Addr().String()); err != nil {
		_ = srv.Close()
		return err
	}
	fmt.Fprintf(os.Stderr, "decide: serving POST http://%s/v1/decide (%s handler) with %d ConnectionPolicies and %d ResourcePolicies; decision log %s (%s mode)\n",
		ln.Addr(), f.handler, f.policies, f.policies, describeLog(f.decisionLog), mode)
	fmt.Fprintf(os.Stderr, "decide: live heap %d bytes\n", liveheap.Measure())

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
	if grpcSrv != nil {
		grpcSrv.GracefulStop()
	}
	if f.allocProfile != "" {
		if err := writeAllocProfile(f.allocProfile); err != nil {
			return err
		}
	}
	if err := dlog.Close(); err != nil {
		return fmt.Errorf("close decision log: %w", err)
	}
	if err := dlog.Err(); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "decide: signature verifications %d, token reviews %d\n", verifier.calls.Load(), reviewer.calls.Load())
	printCounters(os.Stderr)
	return nil
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

// writeAllocProfile writes the allocations made since the start (sampled,
// as runtime.MemProfileRate says) to path.
func writeAllocProfile(path string) error {
	pf, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("allocation profile: %w", err)
	}
	if err := pprof.Lookup("allocs").WriteTo(pf, 0); err != nil {
		_ = pf.Close()
		return fmt.Errorf("allocation profile: %w", err)
	}
	if err := pf.Close(); err != nil {
		return fmt.Errorf("allocation profile: %w", err)
	}
	return nil
}

// newGRPCServer returns a gRPC server with ExtAuthzServer.Start's settings
// serving ext. ExtAuthzServer.Start is not used because it listens itself
// and does not say on which port.
func newGRPCServer(ext *webhook.ExtAuthzServer) *grpc.Server {
	srv := grpc.NewServer(
		grpc.MaxRecvMsgSize(webhook.DefaultMaxBodyBytes),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}),
	)
	authv3.RegisterAuthorizationServer(srv, ext)
	return srv
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
