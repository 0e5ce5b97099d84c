package store

import (
	"context"
	"fmt"
	"maps"
	"sync"
	"time"

	"github.com/go-logr/logr"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/sallyport/sallyport/api/v1alpha1"
)

// Loader keeps a Store current from the API server. It watches both policy
// kinds and the namespaces' labels through the manager's cache, and compiles
// and publishes on every replica: it does not need leader election, so any
// replica can decide.
type Loader struct {
	cache   cache.Informers
	store   *Store
	builder *Builder
	log     logr.Logger

	mu      sync.Mutex
	pending map[pendingKey]client.Object
	signal  chan struct{}
}

// kindNamespace is the pending key kind of a namespace's labels.
const kindNamespace Kind = "Namespace"

type pendingKey struct {
	kind Kind
	key  types.NamespacedName
}

// NewLoader returns a loader that feeds b from c and publishes to s.
func NewLoader(c cache.Informers, s *Store, b *Builder, log logr.Logger) *Loader {
	return &Loader{
		cache:   c,
		store:   s,
		builder: b,
		log:     log,
		pending: map[pendingKey]client.Object{},
		signal:  make(chan struct{}, 1),
	}
}

// NeedLeaderElection implements manager.LeaderElectionRunnable: every
// replica builds its own snapshot.
func (l *Loader) NeedLeaderElection() bool { return false }

// Start watches, and builds a snapshot after every batch of changes until ctx
// ends. The first snapshot is published, and the store marked ready, once
// the initial list of every watched kind is in.
func (l *Loader) Start(ctx context.Context) error {
	watched := []struct {
		obj  client.Object
		kind Kind
	}{
		{&v1alpha1.ConnectionPolicy{}, KindConnection},
		{&v1alpha1.ResourcePolicy{}, KindResource},
		{namespaceMetadata(), kindNamespace},
	}
	var synced []toolscache.InformerSynced
	for _, w := range watched {
		inf, err := l.cache.GetInformer(ctx, w.obj)
		if err != nil {
			return fmt.Errorf("get informer for %s: %w", w.kind, err)
		}
		reg, err := inf.AddEventHandler(l.handler(w.kind))
		if err != nil {
			return fmt.Errorf("watch %s: %w", w.kind, err)
		}
		synced = append(synced, reg.HasSynced)
	}
	if !toolscache.WaitForCacheSync(ctx.Done(), synced...) {
		return nil
	}
	l.publish(true)
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-l.signal:
			l.publish(false)
		}
	}
}

func namespaceMetadata() *metav1.PartialObjectMetadata {
	m := &metav1.PartialObjectMetadata{}
	m.SetGroupVersionKind(metav1.SchemeGroupVersion.WithKind("Namespace"))
	m.APIVersion = "v1"
	return m
}

// publish applies every pending change to the builder and publishes one
// snapshot for the batch.
func (l *Loader) publish(initial bool) {
	l.mu.Lock()
	batch := l.pending
	l.pending = make(map[pendingKey]client.Object, len(batch))
	l.mu.Unlock()

	start := time.Now()
	for k, obj := range batch {
		l.apply(k, obj)
	}
	snap := l.builder.Build()
	l.store.Publish(snap, initial)
	buildDuration.Observe(time.Since(start).Seconds())
	snapshotVersion.Set(float64(snap.Version))
	observeSnapshot(snap)
	l.log.V(1).Info("Published policy snapshot", "version", snap.Version, "changes", len(batch), "policies", snap.Len(), "initial", initial)
}

func (l *Loader) apply(k pendingKey, obj client.Object) {
	switch o := obj.(type) {
	case nil:
		if k.kind == kindNamespace {
			l.builder.SetNamespace(k.key.Name, nil, true)
		} else {
			l.builder.Delete(Ref{Kind: k.kind, NamespacedName: k.key})
		}
	case *v1alpha1.ConnectionPolicy:
		l.logFailure(KindConnection, o, l.builder.UpsertConnection(o))
	case *v1alpha1.ResourcePolicy:
		l.logFailure(KindResource, o, l.builder.UpsertResource(o))
	default:
		l.builder.SetNamespace(k.key.Name, obj.GetLabels(), false)
	}
}

func (l *Loader) logFailure(kind Kind, obj client.Object, err error) {
	if err != nil {
		l.log.Info("Policy does not compile; its last good generation keeps serving",
			"kind", kind, "policy", client.ObjectKeyFromObject(obj).String(), "generation", obj.GetGeneration(), "error", err.Error())
	}
}

func (l *Loader) handler(kind Kind) toolscache.ResourceEventHandler {
	enqueue := func(obj any, deleted bool) {
		if t, ok := obj.(toolscache.DeletedFinalStateUnknown); ok {
			obj, deleted = t.Obj, true
		}
		o, ok := obj.(client.Object)
		if !ok {
			return
		}
		k := pendingKey{kind: kind, key: types.NamespacedName{Namespace: o.GetNamespace(), Name: o.GetName()}}
		l.mu.Lock()
		if deleted {
			l.pending[k] = nil
		} else {
			l.pending[k] = o
		}
		l.mu.Unlock()
		select {
		case l.signal <- struct{}{}:
		default:
		}
	}
	return toolscache.ResourceEventHandlerFuncs{
		AddFunc: func(obj any) { enqueue(obj, false) },
		UpdateFunc: func(old, obj any) {
			if unchanged(kind, old, obj) {
				return
			}
			enqueue(obj, false)
		},
		DeleteFunc: func(obj any) { enqueue(obj, true) },
	}
}

// unchanged reports whether an update changes nothing the builder reads: the
// same UID, generation and labels of a policy (a status write, an annotation),
// or the same labels of a namespace. Skipping it spares every replica a
// rebuild of the whole snapshot for each status patch the leader makes.
func unchanged(kind Kind, oldObj, newObj any) bool {
	o, ok1 := oldObj.(client.Object)
	n, ok2 := newObj.(client.Object)
	if !ok1 || !ok2 {
		return false
	}
	if !maps.Equal(o.GetLabels(), n.GetLabels()) {
		return false
	}
	return kind == kindNamespace || (o.GetUID() == n.GetUID() && o.GetGeneration() == n.GetGeneration())
}
