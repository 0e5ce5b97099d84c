package usage

import (
	"context"
	"fmt"
	"slices"
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
		if err := m.Merge(ctx); err != nil {
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

// Merge makes one merge: it folds the reports of gone replicas into the
// archive, publishes the merged view and tells subscribers what changed.
func (m *Merger) Merge(ctx context.Context) error {
	ns := m.opts.Namespace
	var list corev1.ConfigMapList
	if err := m.reader.List(ctx, &list, client.InNamespace(ns), client.MatchingLabels{LabelRole: RoleReplica}); err != nil {
		return fmt.Errorf("list usage reports in %s: %w", ns, err)
	}
	archiveCM := &corev1.ConfigMap{}
	archive := newReport()
	switch err := m.reader.Get(ctx, types.NamespacedName{Namespace: ns, Name: ArchiveName}, archiveCM); {
	case apierrors.IsNotFound(err):
		archiveCM = nil
	case err != nil:
		return fmt.Errorf("get usage archive %s/%s: %w", ns, ArchiveName, err)
	default:
		if archive, err = decode(archiveCM); err != nil {
			// Replacing it would lose every folded count: an operator
			// decides (deleting it starts the archive over).
			return fmt.Errorf("unreadable usage archive (delete it to start over, losing the counts of replicas that are gone): %w", err)
		}
	}

	known := map[types.UID]bool{}
	for _, st := range m.store.Snapshot().Statuses() {
		known[st.UID] = true
	}
	folded := map[types.UID]bool{}
	for _, uid := range archive.Folded {
		folded[uid] = true
	}
	listed := map[types.UID]bool{}
	total := newReport()
	var live int
	var fold []*corev1.ConfigMap
	var foldReports []*Report
	var leftovers []*corev1.ConfigMap
	for i := range list.Items {
		cm := &list.Items[i]
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
		gone, err := m.podGone(ctx, rep.Pod)
		if err != nil {
			return err
		}
		if gone {
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
		if err := m.writeArchive(ctx, archiveCM, next); err != nil {
			return err
		}
		for _, cm := range fold {
			m.log.Info("Folded the usage report of a replica that is gone into the archive", "configMap", cm.Name, "pod", podName(foldReports, cm))
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
	for uid := range total.Policies {
		if !known[uid] {
			delete(total.Policies, uid)
		}
	}
	mergedReports.Set(float64(live))
	m.publish(&View{At: time.Now().UTC(), Policies: total.Policies})
	return nil
}

func podName(reps []*Report, cm *corev1.ConfigMap) string {
	for _, r := range reps {
		if r.Pod != nil && ReportName(r.Replica) == cm.Name {
			return r.Pod.Name
		}
	}
	return ""
}

// podGone reports whether the pod a report came from no longer exists, so
// its process can no longer write it. A report from outside a cluster has
// no pod and is never folded: its replica adopts it when it comes back.
func (m *Merger) podGone(ctx context.Context, p *Pod) (bool, error) {
	if p == nil {
		return false, nil
	}
	pod := &metav1.PartialObjectMetadata{}
	pod.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("Pod"))
	err := m.reader.Get(ctx, types.NamespacedName{Namespace: m.opts.Namespace, Name: p.Name}, pod)
	switch {
	case apierrors.IsNotFound(err):
		return true, nil
	case err != nil:
		return false, fmt.Errorf("get pod %s of a usage report: %w", p.Name, err)
	}
	return pod.UID != p.UID, nil
}

// writeArchive creates or updates the archive; the resourceVersion read
// makes a concurrent writer (a leader that just lost its lease) fail.
func (m *Merger) writeArchive(ctx context.Context, cm *corev1.ConfigMap, r *Report) error {
	r.Written = time.Now().UTC()
	create := cm == nil
	if create {
		cm = &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{
			Namespace: m.opts.Namespace, Name: ArchiveName,
			Labels: map[string]string{LabelRole: RoleArchive, "app.kubernetes.io/name": "sallyport"},
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
		return fmt.Errorf("write usage archive %s/%s: %w", m.opts.Namespace, ArchiveName, err)
	}
	return nil
}

// publish swaps in v and tells subscribers which policies' usage changed.
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
}
