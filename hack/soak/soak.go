// Package main is the soak run of issue #8: the operator, in-process on a
// real API server (envtest), serves a realistic mix of decisions — allowed,
// denied at each gate, cached and never-seen tokens — at a fraction of its
// measured capacity for minutes, and the run checks that nothing failed,
// that heap and goroutines stayed flat, and that the decision log holds one
// line per decision. docs/reliability.md has the results.
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/sallyport/sallyport/api/v1alpha1"
	"github.com/sallyport/sallyport/internal/controlplane"
	"github.com/sallyport/sallyport/internal/manager"
	"github.com/sallyport/sallyport/internal/policy"
	"github.com/sallyport/sallyport/internal/testenv"
)

// Config is one soak run.
type Config struct {
	// Probe is how long capacity is measured (closed loop, Workers
	// concurrent requests); Duration how long the soak runs at Fraction of
	// it.
	Probe    time.Duration
	Duration time.Duration
	Fraction float64
	Workers  int
	// NewTokensPerSecond is how many never-seen tokens the mix uses at
	// most: each costs a TokenRequest to mint and a TokenReview to decide.
	NewTokensPerSecond float64
	// Sample is how often heap and goroutines are read.
	Sample time.Duration
	// Dir receives the decision log.
	Dir string
	// Log receives progress lines.
	Log io.Writer
}

// Result is what a run measured.
type Result struct {
	CapacityPerSecond float64            `json:"capacityPerSecond"`
	RatePerSecond     float64            `json:"ratePerSecond"`
	Duration          string             `json:"duration"`
	Requests          int64              `json:"requests"`
	Errors            int64              `json:"errors"`
	FirstErrors       []string           `json:"firstErrors,omitempty"`
	ByKind            map[string]int64   `json:"byKind"`
	LatencyP50        string             `json:"latencyP50"`
	LatencyP99        string             `json:"latencyP99"`
	LatencyMax        string             `json:"latencyMax"`
	Late              int64              `json:"late"`
	HeapMiB           []float64          `json:"heapInUseMiB"`
	Goroutines        []int              `json:"goroutines"`
	Decisions         int64              `json:"decisions"`
	LogLines          int64              `json:"logLines"`
	Problems          []string           `json:"problems,omitempty"`
	Reasons           map[string]int64   `json:"reasons"`
	Extra             map[string]float64 `json:"extra,omitempty"`
}

// kind is one part of the mix: the request and the answer it must get.
type kind struct {
	name     string
	weight   int
	allowed  bool
	conn     string // connection reason
	resource string // resource reason
	request  func(s *scenario) map[string]any
}

// scenario is the cluster the mix runs against.
type scenario struct {
	callerNS, serviceNS string
	cached              []string // tokens of worker for to-ledger, reviewed early
	auditToken          string   // worker's token for to-audit
	intruderToken       string   // intruder's token for to-ledger's audience
	fresh               chan string
	freshUsed           atomic.Int64
	freshMissed         atomic.Int64
}

func (s *scenario) target(name string) map[string]any {
	return map[string]any{"namespace": s.serviceNS, "service": "ledger-api", "name": name}
}

func (s *scenario) cachedToken() string { return s.cached[rand.IntN(len(s.cached))] }

var mix = []kind{
	{name: "allowed", weight: 50, allowed: true, conn: "Matched", resource: "Matched", request: func(s *scenario) map[string]any {
		return map[string]any{"credential": map[string]any{"token": s.cachedToken()}, "resource": s.target(fmt.Sprintf("/entries/%d", rand.IntN(1000))), "action": "GET", "scopes": []string{"ledger.read"}}
	}},
	{name: "allowed-new-token", weight: 8, allowed: true, conn: "Matched", resource: "Matched", request: func(s *scenario) map[string]any {
		tok := ""
		select {
		case tok = <-s.fresh:
			s.freshUsed.Add(1)
		default:
			tok = s.cachedToken()
			s.freshMissed.Add(1)
		}
		return map[string]any{"credential": map[string]any{"token": tok}, "resource": s.target("/entries/1"), "action": "GET", "scopes": []string{"ledger.read"}}
	}},
	{name: "denied-by-rule", weight: 10, conn: "Matched", resource: "DeniedByRule", request: func(s *scenario) map[string]any {
		return map[string]any{"credential": map[string]any{"token": s.cachedToken()}, "resource": s.target("/entries/7"), "action": "DELETE", "scopes": []string{"ledger.read"}}
	}},
	{name: "no-rule-matched", weight: 8, conn: "Matched", resource: "NoRuleMatched", request: func(s *scenario) map[string]any {
		return map[string]any{"credential": map[string]any{"token": s.cachedToken()}, "resource": s.target("/admin"), "action": "GET", "scopes": []string{"ledger.read"}}
	}},
	{name: "scope-not-reachable", weight: 6, conn: "ScopeNotReachable", resource: "NotEvaluated", request: func(s *scenario) map[string]any {
		return map[string]any{"credential": map[string]any{"token": s.cachedToken()}, "resource": s.target("/entries/1"), "action": "GET", "scopes": []string{"ledger.write"}}
	}},
	{name: "class-not-reachable", weight: 6, conn: "ClassNotReachable", resource: "NotEvaluated", request: func(s *scenario) map[string]any {
		return map[string]any{"credential": map[string]any{"token": s.auditToken}, "resource": s.target("/entries/1"), "action": "GET"}
	}},
	{name: "invalid-credential", weight: 6, conn: "InvalidCredential", resource: "NotEvaluated", request: func(s *scenario) map[string]any {
		return map[string]any{"credential": map[string]any{"token": s.intruderToken}, "resource": s.target("/entries/1"), "action": "GET", "scopes": []string{"ledger.read"}}
	}},
	{name: "missing-credential", weight: 6, conn: "MissingCredential", resource: "NotEvaluated", request: func(s *scenario) map[string]any {
		return map[string]any{"resource": s.target("/entries/1"), "action": "GET"}
	}},
}

func pick() *kind {
	total := 0
	for i := range mix {
		total += mix[i].weight
	}
	n := rand.IntN(total)
	for i := range mix {
		if n < mix[i].weight {
			return &mix[i]
		}
		n -= mix[i].weight
	}
	return &mix[len(mix)-1]
}

// Run runs a soak and returns what it measured; Problems lists every
// criterion it failed.
func Run(ctx context.Context, c Config) (*Result, error) {
	logf := func(format string, args ...any) { fmt.Fprintf(c.Log, "soak: "+format+"\n", args...) }
	env, err := testenv.Start(controlplane.Options{})
	if err != nil {
		return nil, err
	}
	defer func() { _ = env.Stop() }()
	cs := env.Clientset
	addr, err := testenv.FreeLoopbackAddr()
	if err != nil {
		return nil, err
	}
	logPath := filepath.Join(c.Dir, "decisions.log")
	op, stop, err := env.StartOperator(manager.Options{
		DecisionBindAddress: addr, GRPCBindAddress: "0", DecisionInsecure: true, DecisionLog: logPath,
	})
	if err != nil {
		return nil, err
	}
	stopped := false
	defer func() {
		if !stopped {
			stop()
		}
	}()
	s, err := setUp(ctx, env, cs, op)
	if err != nil {
		return nil, err
	}
	minterCtx, stopMinter := context.WithCancel(ctx)
	defer stopMinter()
	go mint(minterCtx, cs, s, c.NewTokensPerSecond)

	url := "http://" + addr + "/v1/decide"
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: c.Workers, MaxConnsPerHost: c.Workers}}
	res := &Result{ByKind: map[string]int64{}, Reasons: map[string]int64{}, Extra: map[string]float64{}}
	var mu sync.Mutex
	// A fixed histogram, not a slice of samples: the soak's own memory
	// must not grow with the number of requests, or it would hide (or
	// fake) a leak of the operator's.
	var latencies histogram
	record := func(k *kind, ans answer, err error, lat time.Duration, measured bool) {
		mu.Lock()
		defer mu.Unlock()
		res.Requests++
		res.ByKind[k.name]++
		if err == nil {
			res.Decisions++
			res.Reasons[ans.Connection.Reason+"/"+ans.Resource.Reason]++
			if ans.Allowed != k.allowed || ans.Connection.Reason != k.conn || ans.Resource.Reason != k.resource {
				err = fmt.Errorf("%s: answer allowed=%t %s/%s, want allowed=%t %s/%s (%s)", k.name, ans.Allowed,
					ans.Connection.Reason, ans.Resource.Reason, k.allowed, k.conn, k.resource, ans.Connection.Message)
			}
		}
		if err != nil {
			res.Errors++
			if len(res.FirstErrors) < 10 {
				res.FirstErrors = append(res.FirstErrors, err.Error())
			}
		}
		if measured {
			latencies.add(lat)
		}
	}

	// Capacity: closed loop, Workers at a time, the same mix.
	logf("Measuring capacity for %s with %d workers", c.Probe, c.Workers)
	var probed atomic.Int64
	probeEnd := time.Now().Add(c.Probe)
	var wg sync.WaitGroup
	for range c.Workers {
		wg.Go(func() {
			for time.Now().Before(probeEnd) {
				k := pick()
				ans, err := decide(hc, url, k.request(s))
				record(k, ans, err, 0, false)
				probed.Add(1)
			}
		})
	}
	wg.Wait()
	res.CapacityPerSecond = float64(probed.Load()) / c.Probe.Seconds()
	res.RatePerSecond = c.Fraction * res.CapacityPerSecond
	logf("Capacity %.0f decisions/s; soaking at %.0f/s for %s", res.CapacityPerSecond, res.RatePerSecond, c.Duration)

	// Soak: open loop at the rate, sampling heap and goroutines.
	sample := func() {
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		mu.Lock()
		res.HeapMiB = append(res.HeapMiB, float64(m.HeapInuse)/(1<<20))
		res.Goroutines = append(res.Goroutines, runtime.NumGoroutine())
		mu.Unlock()
	}
	sample()
	interval := time.Duration(float64(time.Second) / res.RatePerSecond)
	start := time.Now()
	end := start.Add(c.Duration)
	nextSample := start.Add(c.Sample)
	jobs := make(chan time.Time, c.Workers*4)
	var late atomic.Int64
	for range c.Workers {
		wg.Go(func() {
			for due := range jobs {
				k := pick()
				ans, err := decide(hc, url, k.request(s))
				record(k, ans, err, time.Since(due), true)
			}
		})
	}
	for i := 0; ; i++ {
		due := start.Add(time.Duration(i) * interval)
		if !due.Before(end) {
			break
		}
		if d := time.Until(due); d > 0 {
			time.Sleep(d)
		}
		select {
		case jobs <- due:
		default:
			// Every worker busy and the queue full: counted, and sent
			// late rather than dropped.
			late.Add(1)
			jobs <- due
		}
		if now := time.Now(); now.After(nextSample) {
			sample()
			nextSample = now.Add(c.Sample)
		}
	}
	close(jobs)
	wg.Wait()
	sample()
	res.Duration = time.Since(start).Round(time.Second).String()
	res.Late = late.Load()
	res.Extra["freshTokensUsed"] = float64(s.freshUsed.Load())
	res.Extra["freshTokensMissed"] = float64(s.freshMissed.Load())
	stopMinter()

	res.LatencyP50 = latencies.quantile(0.50).String()
	res.LatencyP99 = latencies.quantile(0.99).String()
	res.LatencyMax = latencies.max.String()

	// Stopping the operator flushes the decision log.
	stop()
	stopped = true
	if res.LogLines, err = countLines(logPath); err != nil {
		return nil, err
	}
	res.Problems = judge(res)
	return res, nil
}

// judge lists the criteria the run failed.
func judge(r *Result) []string {
	var p []string
	if r.Errors > 0 {
		p = append(p, fmt.Sprintf("%d of %d requests failed or got an unexpected answer", r.Errors, r.Requests))
	}
	if r.LogLines != r.Decisions {
		p = append(p, fmt.Sprintf("the decision log has %d lines for %d decisions", r.LogLines, r.Decisions))
	}
	if n := len(r.HeapMiB); n >= 2 {
		// After a GC, heap in use at the end within 25% (and 8 MiB) of the
		// start of the soak: no growth with the number of requests.
		if first, last := r.HeapMiB[0], r.HeapMiB[n-1]; last > first*1.25+8 {
			p = append(p, fmt.Sprintf("heap in use grew from %.1f MiB to %.1f MiB", first, last))
		}
	}
	if n := len(r.Goroutines); n >= 2 && r.Goroutines[n-1] > r.Goroutines[0]+20 {
		p = append(p, fmt.Sprintf("goroutines grew from %d to %d", r.Goroutines[0], r.Goroutines[n-1]))
	}
	return p
}

type answer struct {
	Allowed    bool `json:"allowed"`
	Connection struct {
		Reason  string `json:"reason"`
		Message string `json:"message"`
	} `json:"connection"`
	Resource struct {
		Reason string `json:"reason"`
	} `json:"resource"`
}

func decide(hc *http.Client, url string, body map[string]any) (answer, error) {
	raw, err := json.Marshal(body)
	if err != nil {
		return answer{}, err
	}
	resp, err := hc.Post(url, "application/json", bytes.NewReader(raw))
	if err != nil {
		return answer{}, err
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	if err != nil {
		return answer{}, err
	}
	if resp.StatusCode != http.StatusOK {
		return answer{}, fmt.Errorf("status %s: %s", resp.Status, out)
	}
	var a answer
	if err := json.Unmarshal(out, &a); err != nil {
		return answer{}, fmt.Errorf("answer %q: %w", out, err)
	}
	return a, nil
}

func countLines(path string) (int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, fmt.Errorf("open the decision log: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	var n int64
	for sc.Scan() {
		n++
	}
	return n, sc.Err()
}

// setUp creates the scenario's namespaces, ServiceAccounts and policies,
// waits until they serve, and mints the long-lived tokens of the mix.
func setUp(ctx context.Context, env *testenv.Env, cs *kubernetes.Clientset, op *manager.Operator) (*scenario, error) {
	s := &scenario{callerNS: "soak-billing", serviceNS: "soak-ledger", fresh: make(chan string, 256)}
	for _, ns := range []string{s.callerNS, s.serviceNS} {
		if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
			return nil, err
		}
	}
	for _, sa := range []string{"worker", "intruder"} {
		if _, err := cs.CoreV1().ServiceAccounts(s.callerNS).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: sa}}, metav1.CreateOptions{}); err != nil {
			return nil, err
		}
	}
	objs := []client.Object{
		&v1alpha1.ConnectionPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: s.callerNS, Name: "to-ledger"}, Spec: v1alpha1.ConnectionPolicySpec{
			ServiceAccountName: "worker",
			Reach:              []v1alpha1.Reach{{Class: "ledger", Scopes: []v1alpha1.Scope{"ledger.read"}, MaxClassification: v1alpha1.ClassificationConfidential}},
			When:               `connection.age < duration("30m")`,
		}},
		&v1alpha1.ConnectionPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: s.callerNS, Name: "to-audit"}, Spec: v1alpha1.ConnectionPolicySpec{
			ServiceAccountName: "worker",
			Reach:              []v1alpha1.Reach{{Class: "audit", Scopes: []v1alpha1.Scope{"audit.read"}}},
		}},
		&v1alpha1.ResourcePolicy{ObjectMeta: metav1.ObjectMeta{Namespace: s.serviceNS, Name: "ledger-api"}, Spec: v1alpha1.ResourcePolicySpec{
			Service: "ledger-api", Class: "ledger", Classification: v1alpha1.ClassificationConfidential,
			Rules: []v1alpha1.Rule{
				{Name: "no-deletes", Effect: v1alpha1.EffectDeny, Actions: []string{"DELETE"}, Resources: []string{"/**"}},
				{Name: "read-entries", Effect: v1alpha1.EffectAllow, Actions: []string{"GET"}, Resources: []string{"/entries/*"},
					Scopes: []v1alpha1.Scope{"ledger.read"}, Connections: []v1alpha1.ConnectionRef{{Namespace: s.callerNS, Name: "to-ledger"}},
					When: `request.action == "GET" && resource.name.startsWith("/entries/")`},
			},
		}},
	}
	for _, o := range objs {
		if err := env.Client.Create(ctx, o); err != nil {
			return nil, fmt.Errorf("create %s: %w", o.GetName(), err)
		}
	}
	deadline := time.Now().Add(time.Minute)
	for {
		snap := op.Store.Snapshot()
		_, a := snap.ConnectionByAudience(v1alpha1.EnforcementEnforce, policy.DefaultAudience(s.callerNS, "to-ledger"))
		_, b := snap.ConnectionByAudience(v1alpha1.EnforcementEnforce, policy.DefaultAudience(s.callerNS, "to-audit"))
		_, c := snap.ResourceByService(v1alpha1.EnforcementEnforce, s.serviceNS, "ledger-api")
		if a && b && c {
			break
		}
		if time.Now().After(deadline) {
			return nil, errors.New("the scenario's policies are not served within a minute")
		}
		time.Sleep(100 * time.Millisecond)
	}
	ledgerAud := policy.DefaultAudience(s.callerNS, "to-ledger")
	var err error
	for range 16 {
		tok, err := mintOne(ctx, cs, s.callerNS, "worker", ledgerAud)
		if err != nil {
			return nil, err
		}
		s.cached = append(s.cached, tok)
	}
	if s.auditToken, err = mintOne(ctx, cs, s.callerNS, "worker", policy.DefaultAudience(s.callerNS, "to-audit")); err != nil {
		return nil, err
	}
	if s.intruderToken, err = mintOne(ctx, cs, s.callerNS, "intruder", ledgerAud); err != nil {
		return nil, err
	}
	return s, nil
}

func mintOne(ctx context.Context, cs *kubernetes.Clientset, ns, sa, aud string) (string, error) {
	seconds := int64(900)
	tr, err := cs.CoreV1().ServiceAccounts(ns).CreateToken(ctx, sa, &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{Audiences: []string{aud}, ExpirationSeconds: &seconds},
	}, metav1.CreateOptions{})
	if err != nil {
		return "", fmt.Errorf("mint a token of %s/%s: %w", ns, sa, err)
	}
	return tr.Status.Token, nil
}

// mint keeps s.fresh stocked with never-used tokens, at most perSecond a
// second.
func mint(ctx context.Context, cs *kubernetes.Clientset, s *scenario, perSecond float64) {
	if perSecond <= 0 {
		return
	}
	tick := time.NewTicker(time.Duration(float64(time.Second) / perSecond))
	defer tick.Stop()
	aud := policy.DefaultAudience(s.callerNS, "to-ledger")
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		tok, err := mintOne(ctx, cs, s.callerNS, "worker", aud)
		if err != nil {
			continue
		}
		select {
		case s.fresh <- tok:
		default:
		}
	}
}

// histogram counts durations in buckets 2% apart (from 1 µs), so a quantile
// is within 2% of the exact value, in fixed memory.
type histogram struct {
	counts [1200]int64
	n      int64
	max    time.Duration
}

const histogramGrowth = 1.02

func (h *histogram) add(d time.Duration) {
	i := 0
	if us := float64(d) / float64(time.Microsecond); us > 1 {
		i = min(int(math.Log(us)/math.Log(histogramGrowth))+1, len(h.counts)-1)
	}
	h.counts[i]++
	h.n++
	h.max = max(h.max, d)
}

// quantile returns the upper bound of the bucket holding the q-quantile.
func (h *histogram) quantile(q float64) time.Duration {
	if h.n == 0 {
		return 0
	}
	rank := int64(math.Ceil(q * float64(h.n)))
	var seen int64
	for i, c := range h.counts {
		if seen += c; seen >= rank {
			return min(time.Duration(math.Pow(histogramGrowth, float64(i))*float64(time.Microsecond)), h.max)
		}
	}
	return h.max
}
