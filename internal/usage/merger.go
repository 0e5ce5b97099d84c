package usage

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/sallyport/sallyport/internal/store"
)

// View is the usage of every policy, merged over all replicas at one time.
type View struct {
	// At is when the merge was made.
	At time.Time
	// Policies are keyed by policy UID.
	Policies map[types.UID]*Policy
}

// Policy returns the merged usage of the policy with uid, nil when no
// replica has reported it.
func (v *View) Policy(uid types.UID) *Policy {
	if v == nil {
		return nil
	}
	return v.Policies[uid]
}

// Changed names a policy whose merged usage changed.
type Changed struct {
	Kind string
	types.NamespacedName
}

// MergerOptions configure a Merger.
type MergerOptions struct {
	// Namespace holds the reports and the archive.
	Namespace string
	// Interval is how often the reports are merged.
	Interval time.Duration
}

// Merger merges the replicas' reports and the archive into a View at an
// interval, folding the reports of replicas whose pods are gone into the
// archive. It runs on the leader only.
type Merger struct {
	client client.Client
	reader client.Reader
	store  *store.Store
	opts   MergerOptions
	log    logr.Logger

	view atomic.Pointer[View]

	mu          sync.Mutex
	subscribers []func(Changed)
}

// NewMerger returns a Merger. c writes, r reads (uncached); st tells which
// policies exist, so the archive forgets deleted ones.
func NewMerger(c client.Client, r client.Reader, st *store.Store, o MergerOptions, log logr.Logger) *Merger {
	return &Merger{client: c, reader: r, store: st, opts: o, log: log}
}

// NeedLeaderElection implements manager.LeaderElectionRunnable: only the
// leader merges.
func (*Merger) NeedLeaderElection() bool { return true }

// View returns the latest merged view, nil before the first merge.
func (m *Merger) View() *View { return m.view.Load() }

// Subscribe registers fn to be called with every policy whose merged usage
// changed in a merge. fn must not block.
func (m *Merger) Subscribe(fn func(Changed)) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.subscribers = append(m.subscribers, fn)
}

// Start merges at the interval until ctx ends.
func (m *Merger) Start(ctx context.Context) error {
	// The archive forgets policies the store does not know: wait until it
	// knows them all.
	if err := wait.PollUntilContextCancel(ctx, 100*time.Millisecond, true, func(context.Context) (bool, error) {
		return m.store.Ready(), nil
	}); err != nil {
		return nil //nolint:nilerr // stopped before the first snapshot.
	}
	wait.UntilWithContext(ctx, func(ctx context.Context) {
		if err := m.safeMerge(ctx); err != nil {
			merges.WithLabelValues("error").Inc()
			if ctx.Err() == nil {
				m.log.Error(err, "Could not merge the usage reports; retrying at the next interval")
			}
			return
		}
		merges.WithLabelValues("success").Inc()
	}, m.opts.Interval)
	return nil
}

// safeMerge is Merge, with a panic turned into an error: the reports come
// from ConfigMaps, and no content of one may stop the operator.
func (m *Merger) safeMerge(ctx context.Context) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("internal error while merging usage reports: %v", r)
		}
	}()
	return m.Merge(ctx)
}

// Merge makes one merge: it folds the reports of gone replicas into the
// archive, publishes the merged view and tells subscribers what changed.
// Each shard is merged on its own: a policy's counts are all in one shard,
// in the reports and in the archive.
func (m *Merger) Merge(ctx context.Context) error {
	ns := m.opts.Namespace
	// One list for the reports and the archive.
	var list corev1.ConfigMapList
	if err := m.reader.List(ctx, &list, client.InNamespace(ns), client.HasLabels{LabelRole}); err != nil {
		return fmt.Errorf("list usage reports in %s: %w", ns, err)
	}
	var byShard [Shards][]*corev1.ConfigMap
	var archives [Shards]*corev1.ConfigMap
	for i := range list.Items {
		cm := &list.Items[i]
		k, ok := shardLabel(cm)
		if !ok {
			m.log.Error(nil, "Skipping a usage ConfigMap without a valid shard label", "configMap", cm.Name, "label", LabelShard)
			continue
		}
		switch {
		case cm.Labels[LabelRole] == RoleReplica:
			byShard[k] = append(byShard[k], cm)
		case cm.Labels[LabelRole] == RoleArchive && cm.Name == ArchiveName(k):
			archives[k] = cm
		}
	}
	known := map[types.UID]bool{}
	for _, st := range m.store.Snapshot().Statuses() {
		known[st.UID] = true
	}
	total := newReport()
	gone := map[string]bool{}
	live := 0
	for k := range Shards {
		n, err := m.mergeShard(ctx, k, archives[k], byShard[k], known, gone, total)
		if err != nil {
			return err
		}
		live += n
	}
	for uid := range total.Policies {
		if !known[uid] {
			delete(total.Policies, uid)
		}
	}
	mergedReports.Set(float64(live))
	m.publish(&View{At: time.Now().UTC(), Policies: total.Policies})
	return nil
}

// mergeShard adds to total the archive of shard k (archiveCM, nil when
// there is none yet) and the live reports of that shard, first folding
// those whose pod is gone into the archive. It returns how many live
// reports it merged; gone caches pod checks.
func (m *Merger) mergeShard(ctx context.Context, k int, archiveCM *corev1.ConfigMap, reports []*corev1.ConfigMap,
	known map[types.UID]bool, gone map[string]bool, total *Report) (int, error) {
	archive := newReport()
	if archiveCM != nil {
		var err error
		if archive, err = decode(archiveCM); err != nil {
			// Replacing it would lose every folded count: an operator
			// decides (deleting it starts the archive over).
			return 0, fmt.Errorf("unreadable usage archive (delete it to start over, losing the counts of replicas that are gone): %w", err)
		}
	}

	folded := map[types.UID]bool{}
	for _, uid := range archive.Folded {
		folded[uid] = true
	}
	listed := map[types.UID]bool{}
	live := 0
	var fold, leftovers []*corev1.ConfigMap
	var foldReports []*Report
	for _, cm := range reports {
		listed[cm.UID] = true
		if folded[cm.UID] {
			// A fold that stopped between writing the archive and deleting
			// the report: the archive has its counts.
			leftovers = append(leftovers, cm)
			continue
		}
		rep, err := decode(cm)
		if err != nil {
			m.log.Error(err, "Skipping an unreadable usage report", "configMap", cm.Name)
			continue
		}
		isGone, err := m.podGone(ctx, rep.Pod, gone)
		if err != nil {
			return 0, err
		}
		if isGone {
			fold, foldReports = append(fold, cm), append(foldReports, rep)
			continue
		}
		live++
		total.Add(rep)
	}

	// The archive keeps the folded UIDs still listed (their deletion may be
	// pending) and the policies that still exist.
	next := newReport()
	next.Add(archive)
	for _, rep := range foldReports {
		next.Add(rep)
	}
	for _, cm := range fold {
		next.Folded = append(next.Folded, cm.UID)
	}
	for _, uid := range archive.Folded {
		if listed[uid] {
			next.Folded = append(next.Folded, uid)
		}
	}
	for uid := range next.Policies {
		if !known[uid] {
			delete(next.Policies, uid)
		}
	}
	if len(fold) > 0 || len(next.Policies) != len(archive.Policies) || !slices.Equal(next.Folded, archive.Folded) {
		if err := m.writeArchive(ctx, k, archiveCM, next); err != nil {
			return 0, err
		}
		for i, cm := range fold {
			m.log.Info("Folded the usage report of a replica that is gone into the archive", "configMap", cm.Name, "replica", foldReports[i].Replica)
		}
	}
	for _, cm := range append(leftovers, fold...) {
		rv, uid := cm.ResourceVersion, cm.UID
		err := m.client.Delete(ctx, cm, client.Preconditions{UID: &uid, ResourceVersion: &rv})
		if err != nil && !apierrors.IsNotFound(err) {
			m.log.Error(err, "Could not delete a folded usage report; the archive has its counts, the next merge deletes it", "configMap", cm.Name)
		}
	}
	total.Add(next)
	return live, nil
}

// podGone reports whether the pod a report came from no longer exists, so
// its process can no longer write it. A report from outside a cluster has
// no pod and is never folded: its replica adopts it when it comes back.
func (m *Merger) podGone(ctx context.Context, p *Pod, cache map[string]bool) (bool, error) {
	if p == nil {
		return false, nil
	}
	key := p.Name + "/" + string(p.UID)
	if g, ok := cache[key]; ok {
		return g, nil
	}
	pod := &metav1.PartialObjectMetadata{}
	pod.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("Pod"))
	err := m.reader.Get(ctx, types.NamespacedName{Namespace: m.opts.Namespace, Name: p.Name}, pod)
	switch {
	case apierrors.IsNotFound(err):
		cache[key] = true
	case err != nil:
		return false, fmt.Errorf("get pod %s of a usage report: %w", p.Name, err)
	default:
		cache[key] = pod.UID != p.UID
	}
	return cache[key], nil
}

// writeArchive creates or updates the archive; the resourceVersion read
// makes a concurrent writer (a leader that just lost its lease) fail.
func (m *Merger) writeArchive(ctx context.Context, k int, cm *corev1.ConfigMap, r *Report) error {
	r.Written = time.Now().UTC()
	create := cm == nil
	if create {
		cm = &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{
			Namespace: m.opts.Namespace, Name: ArchiveName(k),
			Labels: map[string]string{LabelRole: RoleArchive, LabelShard: strconv.Itoa(k), "app.kubernetes.io/name": "sallyport"},
		}}
	}
	if err := encode(cm, r); err != nil {
		return err
	}
	var err error
	if create {
		err = m.client.Create(ctx, cm)
	} else {
		err = m.client.Update(ctx, cm)
	}
	if err != nil {
		return fmt.Errorf("write usage archive %s/%s: %w", m.opts.Namespace, cm.Name, err)
	}
	return nil
}

// publish swaps in v and tells subscribers which policies' usage changed,
// appeared or disappeared.
func (m *Merger) publish(v *View) {
	prev := m.view.Swap(v)
	m.mu.Lock()
	subs := m.subscribers
	m.mu.Unlock()
	notify := func(p *Policy) {
		c := Changed{Kind: p.Kind, NamespacedName: types.NamespacedName{Namespace: p.Namespace, Name: p.Name}}
		for _, fn := range subs {
			fn(c)
		}
	}
	for uid, p := range v.Policies {
		if prev == nil || !p.equal(prev.Policies[uid]) {
			notify(p)
		}
	}
	if prev == nil {
		return
	}
	// A policy no report holds any more (its only report was deleted by
	// hand) changed too: its status then counts no decisions, and keeps
	// its last use and tracking start.
	for uid, p := range prev.Policies {
		if _, ok := v.Policies[uid]; !ok {
			notify(p)
		}
	}
}
