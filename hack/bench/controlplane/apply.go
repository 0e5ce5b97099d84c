package main

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/sallyport/sallyport/api/v1alpha1"
	"github.com/sallyport/sallyport/internal/store"
)

// setLabel marks the bulk apply's policies, so the readiness watch ignores
// the propagation run's.
const setLabel = "bench.sallyport.dev/set"

// applyResult is what the bulk apply measured.
type applyResult struct {
	Connections, Resources int
	// Created is from the first create sent to the last one answered;
	// Served to the operator's snapshot serving every policy at its
	// generation; Ready to the last policy's status reporting Ready=True at
	// its generation, as the benchmark's watch saw it.
	Created, Served, Ready time.Duration
	// Calls are the operator's API calls from the first create to the
	// moment every policy was Ready; Settled adds those of the next
	// settle period (late events, requeues).
	Calls, Settled []callCount
	Settle         time.Duration
	// CPU is the CPU used from the first create to all Ready; Snapshots
	// the snapshots the operator built and published meanwhile.
	CPU       cpuUse
	Snapshots uint64
	// Etcd is etcd's disk activity meanwhile.
	Etcd etcdDisk
	// Stall is the longest time no create was answered (from the first
	// sent), and StallAt when it began: the API server is shared by the
	// benchmark's creates and the operator's status patches, and on a
	// shared machine it sometimes pauses for seconds.
	Stall, StallAt time.Duration
	// Slow are the requests the API server took over a second to serve,
	// by anyone, from the first create to all Ready.
	Slow []callCount
	// Samples are per policy: when its create was answered and when it was
	// seen Ready, from the first create.
	Samples []applySample
}

// applySample is one policy's timeline in the bulk apply.
type applySample struct {
	Kind    store.Kind
	Name    types.NamespacedName
	Created time.Duration
	Ready   time.Duration
}

// policyNamespace names the i-th namespace of the bulk apply.
func policyNamespace(i int) string { return fmt.Sprintf("bench-%02d", i) }

// connectionPolicy is the i-th ConnectionPolicy: like config/samples, a
// ServiceAccount reaching one class with two scopes up to a
// classification, plus an audit class; every third has a CEL `when`.
func connectionPolicy(ns string, i int) *v1alpha1.ConnectionPolicy {
	cls := v1alpha1.ResourceClass(fmt.Sprintf("ledger-%d", i%10))
	cp := &v1alpha1.ConnectionPolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: fmt.Sprintf("conn-%04d", i), Labels: map[string]string{setLabel: "apply"}},
		Spec: v1alpha1.ConnectionPolicySpec{
			ServiceAccountName: fmt.Sprintf("worker-%d", i%5),
			MaxTokenLifetime:   metav1.Duration{Duration: 15 * time.Minute},
			Reach: []v1alpha1.Reach{
				{Class: cls, Scopes: []v1alpha1.Scope{"ledger.read", "ledger.write"}, MaxClassification: v1alpha1.ClassificationConfidential},
				{Class: "audit", Scopes: []v1alpha1.Scope{"audit.read"}},
			},
		},
	}
	if i%3 == 0 {
		cp.Spec.When = `connection.age < duration("10m")`
	}
	return cp
}

// resourcePolicy is the i-th ResourcePolicy: like config/samples, a Deny
// rule, two Allow rules naming the i-th ConnectionPolicy (the second with a
// CEL `when` on every other policy) and a health rule open to every
// namespace.
func resourcePolicy(ns string, i int) *v1alpha1.ResourcePolicy {
	name := fmt.Sprintf("api-%04d", i)
	conn := []v1alpha1.ConnectionRef{{Namespace: ns, Name: fmt.Sprintf("conn-%04d", i)}}
	post := v1alpha1.Rule{Name: "post-entries", Effect: v1alpha1.EffectAllow, Actions: []string{"POST"},
		Resources: []string{"/entries"}, Scopes: []v1alpha1.Scope{"ledger.write"}, Connections: conn}
	if i%2 == 0 {
		post.When = `request.time.getHours() >= 8 && request.time.getHours() < 18`
	}
	return &v1alpha1.ResourcePolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{setLabel: "apply"}},
		Spec: v1alpha1.ResourcePolicySpec{
			Service:        name,
			Hosts:          []string{name + "." + ns + ".example.com"},
			Class:          v1alpha1.ResourceClass(fmt.Sprintf("ledger-%d", i%10)),
			Classification: v1alpha1.ClassificationConfidential,
			Rules: []v1alpha1.Rule{
				{Name: "no-deletes", Effect: v1alpha1.EffectDeny, Actions: []string{"DELETE"}, Resources: []string{"/**"}},
				{Name: "read-entries", Effect: v1alpha1.EffectAllow, Actions: []string{"GET"},
					Resources: []string{"/entries", "/entries/*"}, Scopes: []v1alpha1.Scope{"ledger.read"}, Connections: conn},
				post,
				{Name: "health", Effect: v1alpha1.EffectAllow, Actions: []string{"GET"}, Resources: []string{"/healthz"},
					Connections: []v1alpha1.ConnectionRef{{NamespaceSelector: &v1alpha1.LabelSelector{}}}},
			},
		},
	}
}

// ready reports whether a policy's status says Ready=True for its current
// generation.
func ready(generation, observed int64, conds []metav1.Condition) bool {
	c := meta.FindStatusCondition(conds, v1alpha1.ConditionReady)
	return observed == generation && c != nil && c.Status == metav1.ConditionTrue && c.ObservedGeneration == generation
}

// readyOf reads ready from either kind; ok is false for other objects.
func readyOf(obj any) (kind store.Kind, key types.NamespacedName, isReady, ok bool) {
	if t, isTomb := obj.(toolscache.DeletedFinalStateUnknown); isTomb {
		obj = t.Obj
	}
	switch o := obj.(type) {
	case *v1alpha1.ConnectionPolicy:
		return store.KindConnection, client.ObjectKeyFromObject(o), ready(o.Generation, o.Status.ObservedGeneration, o.Status.Conditions), true
	case *v1alpha1.ResourcePolicy:
		return store.KindResource, client.ObjectKeyFromObject(o), ready(o.Generation, o.Status.ObservedGeneration, o.Status.Conditions), true
	}
	return "", types.NamespacedName{}, false, false
}

// bulkApply creates the policies concurrently and waits for all to be Ready.
func (b *bench) bulkApply(ctx context.Context) (*applyResult, error) {
	pairs := b.o.Policies / 2
	res := &applyResult{Connections: pairs, Resources: pairs, Settle: 2 * time.Second}
	for n := range b.o.Namespaces {
		ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: policyNamespace(n)}}
		if err := b.client.Create(ctx, ns); err != nil {
			return nil, fmt.Errorf("create namespace %s: %w", ns.Name, err)
		}
	}
	var objs []client.Object
	var refs []store.Ref
	for i := range pairs {
		ns := policyNamespace(i % b.o.Namespaces)
		cp, rp := connectionPolicy(ns, i), resourcePolicy(ns, i)
		objs = append(objs, cp, rp)
		refs = append(refs,
			store.Ref{Kind: store.KindConnection, NamespacedName: client.ObjectKeyFromObject(cp)},
			store.Ref{Kind: store.KindResource, NamespacedName: client.ObjectKeyFromObject(rp)})
	}

	// The readiness watch: the benchmark's own informers, started (and
	// synced, empty) before the first create.
	var mu sync.Mutex
	var start time.Time
	readyAt := map[store.Ref]time.Duration{}
	allReady := make(chan struct{})
	onEvent := func(obj any) {
		kind, key, isReady, ok := readyOf(obj)
		if !ok || !isReady {
			return
		}
		o, _ := obj.(client.Object)
		if o == nil || o.GetLabels()[setLabel] != "apply" {
			return
		}
		now := time.Now()
		mu.Lock()
		defer mu.Unlock()
		ref := store.Ref{Kind: kind, NamespacedName: key}
		if _, seen := readyAt[ref]; seen {
			return
		}
		readyAt[ref] = now.Sub(start)
		if len(readyAt) == len(objs) {
			close(allReady)
		}
	}
	for _, obj := range []client.Object{&v1alpha1.ConnectionPolicy{}, &v1alpha1.ResourcePolicy{}} {
		inf, err := b.cache.GetInformer(ctx, obj)
		if err != nil {
			return nil, fmt.Errorf("watch %T: %w", obj, err)
		}
		if _, err := inf.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
			AddFunc:    onEvent,
			UpdateFunc: func(_, obj any) { onEvent(obj) },
		}); err != nil {
			return nil, fmt.Errorf("watch %T: %w", obj, err)
		}
	}

	b.log.Info("Creating policies", "connectionPolicies", pairs, "resourcePolicies", pairs,
		"namespaces", b.o.Namespaces, "workers", b.o.Workers)
	createdAt := make([]time.Duration, len(objs))
	before, cpu0, version0, etcd0, slow0 := b.calls.snapshot(), sampleCPU(), b.op.Store.Snapshot().Version, b.etcdDisk(ctx), b.slowRequests(ctx)
	mu.Lock()
	start = time.Now()
	mu.Unlock()

	// Served: the operator's snapshot holds every policy at its
	// generation, compiled and without conflict.
	servedCh := make(chan time.Duration, 1)
	watchCtx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	// refs, not objs: a create decodes its answer into its object.
	go b.waitServed(watchCtx, start, refs, servedCh)

	work := make(chan int)
	errs := make(chan error, b.o.Workers)
	var wg sync.WaitGroup
	for range b.o.Workers {
		wg.Go(func() {
			for i := range work {
				if err := b.client.Create(ctx, objs[i]); err != nil {
					errs <- fmt.Errorf("create %T %s: %w", objs[i], client.ObjectKeyFromObject(objs[i]), err)
					return
				}
				createdAt[i] = time.Since(start)
			}
		})
	}
	var sendErr error
send:
	for i := range objs {
		select {
		case work <- i:
		case sendErr = <-errs:
			break send
		}
	}
	close(work)
	wg.Wait()
	close(errs)
	if sendErr == nil {
		sendErr = <-errs
	}
	if sendErr != nil {
		return nil, sendErr
	}
	res.Created = time.Since(start)
	res.Stall, res.StallAt = longestGap(createdAt)
	b.log.Info("Created policies", "count", len(objs), "seconds", res.Created.Seconds())

	select {
	case <-allReady:
	case <-time.After(b.o.ReadyTimeout):
		mu.Lock()
		n := len(readyAt)
		mu.Unlock()
		return nil, fmt.Errorf("%d of %d policies Ready after %s", n, len(objs), b.o.ReadyTimeout)
	case <-ctx.Done():
		return nil, fmt.Errorf("wait for Ready: %w", ctx.Err())
	}
	atReady := b.calls.snapshot()
	mu.Lock()
	for _, d := range readyAt {
		res.Ready = max(res.Ready, d)
	}
	mu.Unlock()
	res.CPU = cpuSince(cpu0, time.Since(start))
	res.Snapshots = b.op.Store.Snapshot().Version - version0
	res.Etcd = b.etcdDisk(ctx).since(etcd0)
	res.Slow = b.slowRequests(ctx).since(slow0)
	select {
	case res.Served = <-servedCh:
	case <-time.After(10 * time.Second):
		return nil, errors.New("policies Ready but not all served by the operator's snapshot")
	}
	b.log.Info("All policies Ready", "seconds", res.Ready.Seconds(), "servedSeconds", res.Served.Seconds())

	select {
	case <-time.After(res.Settle):
	case <-ctx.Done():
		return nil, fmt.Errorf("settle: %w", ctx.Err())
	}
	res.Calls = diffCalls(before, atReady)
	res.Settled = diffCalls(before, b.calls.snapshot())

	mu.Lock()
	for i, ref := range refs {
		res.Samples = append(res.Samples, applySample{Kind: ref.Kind, Name: ref.NamespacedName, Created: createdAt[i], Ready: readyAt[ref]})
	}
	mu.Unlock()
	return res, nil
}

// waitServed polls the operator's store until its snapshot serves every
// policy of refs at generation 1, and sends the time since start.
func (b *bench) waitServed(ctx context.Context, start time.Time, refs []store.Ref, out chan<- time.Duration) {
	next := 0
	for {
		snap := b.op.Store.Snapshot()
		for next < len(refs) {
			st, ok := snap.Status(refs[next])
			if !ok || st.Served != 1 || st.Err != nil || st.Conflict != nil {
				break
			}
			next++
		}
		if next == len(refs) {
			out <- time.Since(start)
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// longestGap returns the longest interval between consecutive times of ts
// (and 0, the start), and where it began.
func longestGap(ts []time.Duration) (gap, at time.Duration) {
	s := append([]time.Duration{0}, ts...)
	slices.Sort(s)
	for i := 1; i < len(s); i++ {
		if d := s[i] - s[i-1]; d > gap {
			gap, at = d, s[i-1]
		}
	}
	return gap, at
}
