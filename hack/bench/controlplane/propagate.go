package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/sallyport/sallyport/api/v1alpha1"
	"github.com/sallyport/sallyport/internal/policy"
	"github.com/sallyport/sallyport/internal/testenv"
)

const (
	// propCallerNS holds the caller's ServiceAccount and ConnectionPolicy;
	// propServiceNS the ResourcePolicy whose rule flips.
	propCallerNS  = "bench-caller"
	propServiceNS = "bench-service"
	propSA        = "worker"
	propConn      = "to-flip"
	propService   = "flip-api"
	// flipRule is the rule whose effect each change flips.
	flipRule = "entries"
	// fieldManager is the field manager `kubectl apply --server-side` uses.
	fieldManager = "kubectl"
)

// propResult is what the propagation run measured.
type propResult struct {
	Samples []propSample
	// Polls is how many /v1/decide answers the poller read; Unexpected
	// how many of them were neither the allowed nor the denied answer.
	Polls, Unexpected int64
	// Calls are the operator's API calls during the run; CPU the CPU used;
	// Snapshots the snapshots the operator built and published.
	Calls     []callCount
	CPU       cpuUse
	Snapshots uint64
	// Etcd is etcd's disk activity during the run; Slow the requests the
	// API server took over a second to serve.
	Etcd etcdDisk
	Slow []callCount
}

// propSample is one change: when the apply returned, when /v1/decide first
// answered with the new effect, and when the status first reported the new
// generation observed and Ready; all from just before the apply was sent.
type propSample struct {
	Generation int64
	Allow      bool
	Apply      time.Duration
	Decide     time.Duration
	Status     time.Duration
}

// flipPolicy is the ResourcePolicy of the propagation run, as the
// unstructured manifest a user would apply, with flipRule's effect allow or
// deny.
func flipPolicy(allow bool) (*unstructured.Unstructured, error) {
	effect := v1alpha1.EffectDeny
	if allow {
		effect = v1alpha1.EffectAllow
	}
	rp := &v1alpha1.ResourcePolicy{
		TypeMeta:   metav1.TypeMeta{APIVersion: v1alpha1.GroupVersion.String(), Kind: "ResourcePolicy"},
		ObjectMeta: metav1.ObjectMeta{Namespace: propServiceNS, Name: propService},
		Spec: v1alpha1.ResourcePolicySpec{
			Service: propService, Class: "flip", Classification: v1alpha1.ClassificationInternal,
			Rules: []v1alpha1.Rule{
				{Name: "no-deletes", Effect: v1alpha1.EffectDeny, Actions: []string{"DELETE"}, Resources: []string{"/**"}},
				{Name: flipRule, Effect: effect, Actions: []string{"GET"}, Resources: []string{"/entries", "/entries/*"},
					Scopes: []v1alpha1.Scope{"flip.read"}, Connections: []v1alpha1.ConnectionRef{{Namespace: propCallerNS, Name: propConn}}},
			},
		},
	}
	m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(rp)
	if err != nil {
		return nil, fmt.Errorf("convert the ResourcePolicy: %w", err)
	}
	u := &unstructured.Unstructured{Object: m}
	// What a manifest holds: no status, no creationTimestamp.
	unstructured.RemoveNestedField(u.Object, "status")
	unstructured.RemoveNestedField(u.Object, "metadata", "creationTimestamp")
	return u, nil
}

// apply server-side applies u as kubectl does.
func (b *bench) apply(ctx context.Context, u *unstructured.Unstructured) error {
	if err := b.client.Apply(ctx, client.ApplyConfigurationFromUnstructured(u), client.FieldOwner(fieldManager), client.ForceOwnership); err != nil {
		return fmt.Errorf("apply %s %s/%s: %w", u.GetKind(), u.GetNamespace(), u.GetName(), err)
	}
	return nil
}

// answerState classifies a /v1/decide answer of the flip request: allowed
// by flipRule, denied by flipRule, or neither.
type answerState int

const (
	answerOther answerState = iota
	answerAllowed
	answerDenied
)

func stateOf(a *testenv.Answer) answerState {
	switch {
	case a.Resource.Rule != flipRule:
		return answerOther
	case a.Allowed && a.Resource.Reason == "Matched":
		return answerAllowed
	case !a.Allowed && a.Resource.Reason == "DeniedByRule":
		return answerDenied
	}
	return answerOther
}

// waiter is a change the poller watches for: the first answer in state
// want after the apply started closes done, recording when.
type waiter struct {
	want answerState
	at   time.Time
	done chan struct{}
	once sync.Once
}

// poller asks /v1/decide the flip request in a tight loop.
type poller struct {
	url        string
	body       []byte
	interval   time.Duration
	current    atomic.Pointer[waiter]
	polls      atomic.Int64
	unexpected atomic.Int64
	lastErr    atomic.Pointer[error]
}

func (p *poller) run(ctx context.Context) {
	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1}, Timeout: 5 * time.Second}
	for ctx.Err() == nil {
		st, err := p.ask(ctx, hc)
		now := time.Now()
		if err != nil {
			p.lastErr.Store(&err)
			p.unexpected.Add(1)
		} else {
			p.polls.Add(1)
			if st == answerOther {
				p.unexpected.Add(1)
			}
			if w := p.current.Load(); w != nil && st == w.want {
				w.once.Do(func() { w.at = now; close(w.done) })
			}
		}
		if p.interval > 0 {
			time.Sleep(p.interval)
		}
	}
}

func (p *poller) ask(ctx context.Context, hc *http.Client) (answerState, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, p.url+"/v1/decide", bytes.NewReader(p.body))
	if err != nil {
		return answerOther, fmt.Errorf("build request: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := hc.Do(req)
	if err != nil {
		return answerOther, fmt.Errorf("/v1/decide: %w", err)
	}
	defer func() { _ = resp.Body.Close() }()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return answerOther, fmt.Errorf("/v1/decide: read answer: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return answerOther, fmt.Errorf("/v1/decide: status %d: %s", resp.StatusCode, raw)
	}
	var a testenv.Answer
	if err := json.Unmarshal(raw, &a); err != nil {
		return answerOther, fmt.Errorf("/v1/decide: decode answer: %w", err)
	}
	return stateOf(&a), nil
}

// statusWatch signals when the flip policy's status reports a generation
// observed and Ready.
type statusWatch struct {
	mu      sync.Mutex
	target  int64
	at      time.Time
	reached chan struct{}
}

func (s *statusWatch) expect(generation int64) chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.target, s.reached = generation, make(chan struct{})
	return s.reached
}

func (s *statusWatch) observe(obj any) {
	rp, ok := obj.(*v1alpha1.ResourcePolicy)
	if !ok || rp.Namespace != propServiceNS || rp.Name != propService {
		return
	}
	now := time.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.reached == nil || s.target == 0 || rp.Generation < s.target ||
		!ready(rp.Generation, rp.Status.ObservedGeneration, rp.Status.Conditions) {
		return
	}
	s.at = now
	close(s.reached)
	s.reached, s.target = nil, 0
}

// propagation sets up a caller and the flip policy, then applies changes
// one at a time, each timed to the decision and to the status.
func (b *bench) propagation(ctx context.Context) (*propResult, error) {
	res := &propResult{}
	for _, ns := range []string{propCallerNS, propServiceNS} {
		if err := b.client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
			return nil, fmt.Errorf("create namespace %s: %w", ns, err)
		}
	}
	if err := b.client.Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: propCallerNS, Name: propSA}}); err != nil {
		return nil, fmt.Errorf("create ServiceAccount: %w", err)
	}
	conn := &v1alpha1.ConnectionPolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: propCallerNS, Name: propConn},
		Spec: v1alpha1.ConnectionPolicySpec{
			ServiceAccountName: propSA,
			Reach:              []v1alpha1.Reach{{Class: "flip", Scopes: []v1alpha1.Scope{"flip.read"}}},
		},
	}
	if err := b.client.Create(ctx, conn); err != nil {
		return nil, fmt.Errorf("create ConnectionPolicy: %w", err)
	}

	sw := &statusWatch{}
	inf, err := b.cache.GetInformer(ctx, &v1alpha1.ResourcePolicy{})
	if err != nil {
		return nil, fmt.Errorf("watch ResourcePolicies: %w", err)
	}
	if _, err := inf.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
		AddFunc:    sw.observe,
		UpdateFunc: func(_, obj any) { sw.observe(obj) },
	}); err != nil {
		return nil, fmt.Errorf("watch ResourcePolicies: %w", err)
	}

	// Start allowed; the first change denies.
	allow := true
	first := sw.expect(1)
	u, err := flipPolicy(allow)
	if err != nil {
		return nil, err
	}
	if err := b.apply(ctx, u); err != nil {
		return nil, err
	}
	select {
	case <-first:
	case <-time.After(b.o.ChangeTimeout):
		return nil, errors.New("the flip policy did not become Ready")
	}

	// A real token for the connection's audience, as a workload would
	// hold.
	aud := policy.DefaultAudience(propCallerNS, propConn)
	seconds := int64(3600)
	tr, err := b.clientset.CoreV1().ServiceAccounts(propCallerNS).CreateToken(ctx, propSA,
		&authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{Audiences: []string{aud}, ExpirationSeconds: &seconds}},
		metav1.CreateOptions{})
	if err != nil {
		return nil, fmt.Errorf("TokenRequest for %s/%s: %w", propCallerNS, propSA, err)
	}
	body, err := json.Marshal(map[string]any{
		"credential": map[string]any{"token": tr.Status.Token},
		"resource":   map[string]any{"namespace": propServiceNS, "service": propService, "name": "/entries/42"},
		"action":     "GET",
		"scopes":     []string{"flip.read"},
	})
	if err != nil {
		return nil, fmt.Errorf("encode the decision request: %w", err)
	}
	p := &poller{url: b.decideURL, body: body, interval: b.o.PollInterval}
	pollCtx, stopPoll := context.WithCancel(ctx)
	defer stopPoll()
	// The connection may still be compiling: wait for the allowed answer
	// before the first change.
	w := &waiter{want: answerAllowed, done: make(chan struct{})}
	p.current.Store(w)
	go p.run(pollCtx)
	select {
	case <-w.done:
	case <-time.After(b.o.ChangeTimeout):
		return nil, fmt.Errorf("/v1/decide never allowed the flip request: %w", b.pollErr(p))
	}
	pollsBefore, unexpectedBefore := p.polls.Load(), p.unexpected.Load()

	b.log.Info("Propagation run", "changes", b.o.Changes, "pollInterval", b.o.PollInterval.String(), "gap", b.o.Gap.String())
	before, cpu0, runStart, version0, etcd0, slow0 := b.calls.snapshot(), sampleCPU(), time.Now(), b.op.Store.Snapshot().Version, b.etcdDisk(ctx), b.slowRequests(ctx)
	for i := range b.o.Changes {
		allow = !allow
		generation := int64(i + 2)
		u, err := flipPolicy(allow)
		if err != nil {
			return nil, err
		}
		want := answerDenied
		if allow {
			want = answerAllowed
		}
		reached := sw.expect(generation)
		w := &waiter{want: want, done: make(chan struct{})}
		start := time.Now()
		p.current.Store(w)
		if err := b.apply(ctx, u); err != nil {
			return nil, err
		}
		s := propSample{Generation: generation, Allow: allow, Apply: time.Since(start)}
		timeout := time.After(b.o.ChangeTimeout)
		decided := w.done
		for decided != nil || reached != nil {
			select {
			case <-decided:
				s.Decide, decided = w.at.Sub(start), nil
			case <-reached:
				sw.mu.Lock()
				s.Status = sw.at.Sub(start)
				sw.mu.Unlock()
				reached = nil
			case <-timeout:
				return nil, fmt.Errorf("change %d (generation %d, allow=%v) not propagated within %s (decision seen: %v, status seen: %v): %w",
					i+1, generation, allow, b.o.ChangeTimeout, decided == nil, reached == nil, b.pollErr(p))
			case <-ctx.Done():
				return nil, fmt.Errorf("change %d: %w", i+1, ctx.Err())
			}
		}
		res.Samples = append(res.Samples, s)
		if (i+1)%50 == 0 {
			b.log.Info("Changes propagated", "done", i+1, "of", b.o.Changes)
		}
		select {
		case <-time.After(b.o.Gap):
		case <-ctx.Done():
			return nil, fmt.Errorf("gap: %w", ctx.Err())
		}
	}
	res.Calls = diffCalls(before, b.calls.snapshot())
	res.CPU = cpuSince(cpu0, time.Since(runStart))
	res.Snapshots = b.op.Store.Snapshot().Version - version0
	res.Etcd = b.etcdDisk(ctx).since(etcd0)
	res.Slow = b.slowRequests(ctx).since(slow0)
	stopPoll()
	res.Polls, res.Unexpected = p.polls.Load()-pollsBefore, p.unexpected.Load()-unexpectedBefore

	// Every apply must have made exactly one new generation.
	var rp v1alpha1.ResourcePolicy
	if err := b.client.Get(ctx, client.ObjectKey{Namespace: propServiceNS, Name: propService}, &rp); err != nil {
		return nil, fmt.Errorf("read the flip policy: %w", err)
	}
	if want := int64(b.o.Changes + 1); rp.Generation != want {
		return nil, fmt.Errorf("the flip policy is at generation %d after %d changes, want %d", rp.Generation, b.o.Changes, want)
	}
	return res, nil
}

func (b *bench) pollErr(p *poller) error {
	if e := p.lastErr.Load(); e != nil {
		return *e
	}
	return errors.New("no poll error")
}
