package usage

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
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

// Every replica writes its report; the leader folds and deletes those of
// replicas that are gone, which needs their pods.
// +kubebuilder:rbac:groups="",namespace=system,resources=configmaps,verbs=get;list;create;update;delete
// +kubebuilder:rbac:groups="",namespace=system,resources=pods,verbs=get

// ReporterOptions configure a Reporter.
type ReporterOptions struct {
	// Namespace holds the report.
	Namespace string
	// Replica names this process: its pod's name in a cluster, the host's
	// outside one. Two processes running at once must not share it.
	Replica string
	// Pod is the pod this process runs in; nil outside a cluster.
	Pod *Pod
	// Interval is how often the report is written.
	Interval time.Duration
}

// Reporter writes this replica's usage counters into its report ConfigMaps
// (one per shard) at an interval, and once more (Flush) after the decision
// servers have stopped. It runs on every replica.
type Reporter struct {
	// mu serialises writes: the interval's and the final one.
	mu     sync.Mutex
	client client.Client
	reader client.Reader
	store  *store.Store
	opts   ReporterOptions
	log    logr.Logger
	// baseline is what the predecessor process reported.
	baseline *Report
	// current is each shard's report object as last written or read; nil
	// when there is none.
	current [Shards]*corev1.ConfigMap
	// written is each shard's counts as this process last wrote them (nil:
	// not yet), so that an unchanged shard is not written again.
	written [Shards]map[types.UID]*Policy
	// adopted is set once the predecessor's report was read: only then may
	// this process write, or it would overwrite counts it never read.
	adopted bool
}

// NewReporter returns a Reporter of the counters of st. c writes, r reads
// (uncached: the operator does not watch ConfigMaps).
func NewReporter(c client.Client, r client.Reader, st *store.Store, o ReporterOptions, log logr.Logger) *Reporter {
	return &Reporter{client: c, reader: r, store: st, opts: o, log: log, baseline: newReport()}
}

// NeedLeaderElection implements manager.LeaderElectionRunnable: every
// replica reports.
func (*Reporter) NeedLeaderElection() bool { return false }

// Start writes the report at the interval until ctx ends. The last write
// is Flush's, once the decision servers have stopped.
func (r *Reporter) Start(ctx context.Context) error {
	// Adopt the predecessor's counts before counting on top of them; until
	// that read succeeds nothing is written, so nothing is overwritten.
	if err := wait.PollUntilContextCancel(ctx, r.opts.Interval, true, func(ctx context.Context) (bool, error) {
		if err := r.adopt(ctx); err != nil {
			r.log.Error(err, "Could not read this replica's previous usage report; retrying")
			return false, nil
		}
		return true, nil
	}); err != nil {
		return nil // ctx ended before the first read: nothing was counted on top of it.
	}
	// The first snapshot must be complete, or the baseline of policies it
	// does not know yet would be dropped.
	if err := wait.PollUntilContextCancel(ctx, 100*time.Millisecond, true, func(context.Context) (bool, error) {
		return r.store.Ready(), nil
	}); err != nil {
		return nil // stopped before any decision: nothing to report.
	}
	t := time.NewTicker(r.opts.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			if err := r.Write(ctx); err != nil && ctx.Err() == nil {
				reportErrors.Inc()
				r.log.Error(err, "Could not write the usage report; retrying at the next interval")
			}
		}
	}
}

// Flush writes the report a last time: the manager calls it after the
// decision servers have stopped, so it holds every decision this process
// made. It writes nothing when the process never got to read its
// predecessor's report or to build a complete snapshot.
func (r *Reporter) Flush(ctx context.Context) error {
	r.mu.Lock()
	ready := r.adopted && r.store.Ready()
	r.mu.Unlock()
	if !ready {
		return nil
	}
	return r.Write(ctx)
}

// adopt reads the report a predecessor process of this replica left, every
// shard of it.
func (r *Reporter) adopt(ctx context.Context) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	for k := range Shards {
		if err := r.adoptShard(ctx, k); err != nil {
			return err
		}
	}
	r.adopted = true
	return nil
}

// adoptShard reads one shard of this replica's report, in place of what
// the baseline held for that shard. mu must be held.
func (r *Reporter) adoptShard(ctx context.Context, k int) error {
	key := types.NamespacedName{Namespace: r.opts.Namespace, Name: ReportName(r.opts.Replica, k)}
	cm := &corev1.ConfigMap{}
	if err := r.reader.Get(ctx, key, cm); err != nil {
		if !apierrors.IsNotFound(err) {
			return fmt.Errorf("get usage report %s: %w", key, err)
		}
		cm = nil
	}
	for uid := range r.baseline.Policies {
		if shardOf(uid) == k {
			delete(r.baseline.Policies, uid)
		}
	}
	r.current[k], r.written[k] = cm, nil
	if cm == nil {
		return nil
	}
	rep, err := decode(cm)
	if err != nil {
		// An unreadable report cannot be added to; it is replaced, and its
		// counts are lost, which the log says.
		r.log.Error(err, "Replacing an unreadable usage report", "configMap", key.String())
		return nil
	}
	for uid, p := range rep.Policies {
		if shardOf(uid) == k {
			r.baseline.Policies[uid] = p
		}
	}
	if len(rep.Policies) > 0 {
		r.log.Info("Counting on from this replica's previous usage report", "configMap", key.String(), "policies", len(rep.Policies), "written", rep.Written)
	}
	return nil
}

// Write writes the current counts, each shard that changed.
func (r *Reporter) Write(ctx context.Context) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	rep := collect(r.store.Snapshot(), r.baseline, time.Now())
	rep.Replica, rep.Pod = r.opts.Replica, r.opts.Pod
	var errs []error
	for k, part := range rep.split() {
		if r.current[k] == nil && len(part.Policies) == 0 {
			continue
		}
		// An idle replica writes nothing. (written is reset with current
		// whenever the shard is read again.)
		if r.written[k] != nil && samePolicies(r.written[k], part.Policies) {
			continue
		}
		if err := r.writeShard(ctx, k, part); err != nil {
			errs = append(errs, err)
			continue
		}
		r.written[k] = part.Policies
	}
	return errors.Join(errs...)
}

// writeShard creates or updates one shard of the report.
func (r *Reporter) writeShard(ctx context.Context, k int, part *Report) error {
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{
		Namespace: r.opts.Namespace,
		Name:      ReportName(r.opts.Replica, k),
	}}
	if r.current[k] != nil {
		cm = r.current[k].DeepCopy()
	}
	if cm.Labels == nil {
		cm.Labels = map[string]string{}
	}
	cm.Labels[LabelRole], cm.Labels[LabelShard], cm.Labels["app.kubernetes.io/name"] = RoleReplica, strconv.Itoa(k), "sallyport"
	if err := encode(cm, part); err != nil {
		return fmt.Errorf("shard %d: %w", k, err)
	}
	var err error
	if r.current[k] == nil {
		err = r.client.Create(ctx, cm)
	} else {
		// The resourceVersion of the last write makes this fail if anyone
		// else changed the report.
		err = r.client.Update(ctx, cm)
	}
	switch {
	case err == nil:
		r.current[k] = cm
		return nil
	case apierrors.IsConflict(err) || apierrors.IsAlreadyExists(err) || apierrors.IsNotFound(err):
		// Another writer (a second process under this replica name, or an
		// operator that deleted it): start over from what is there now.
		if aerr := r.adoptShard(ctx, k); aerr != nil {
			return errors.Join(err, aerr)
		}
		return fmt.Errorf("usage report %s changed under this replica; it now counts on from what is there (is a second process running as replica %q?): %w",
			client.ObjectKeyFromObject(cm), r.opts.Replica, err)
	}
	return fmt.Errorf("write usage report %s: %w", client.ObjectKeyFromObject(cm), err)
}
