package controllers

import (
	"context"
	"math"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/workqueue"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	"github.com/sallyport/sallyport/api/v1alpha1"
	"github.com/sallyport/sallyport/internal/store"
	"github.com/sallyport/sallyport/internal/usage"
)

// UsageTracking is where the policy reconcilers find the usage merged over
// all replicas, and how they judge it.
type UsageTracking struct {
	// Merger merges the replicas' reports.
	Merger *usage.Merger
	// Window is how long a grant must go unused to be counted unused.
	Window time.Duration
	// Now is the clock; nil is time.Now.
	Now func() time.Time
}

func (u *UsageTracking) now() time.Time {
	if u.Now != nil {
		return u.Now()
	}
	return time.Now()
}

// Per-policy usage metrics, from the merged view, on the leader: the leader
// is the only replica that has it, so these series come from one pod.
var (
	unusedGrants = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "sallyport_policy_unused_grants",
		Help: "Grants of an enforced policy (ResourcePolicy rules, ConnectionPolicy reach entries) tracked for the usage window and not used in it, merged over all replicas. Exported by the leader.",
	}, []string{"kind", "namespace", "policy"})
	dryRunCounts = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "sallyport_policy_dryrun_decisions",
		Help: "Shadow decisions of a DryRun policy's current generation, merged over all replicas, by result: all, WouldDeny or WouldAllow. Exported by the leader.",
	}, []string{"kind", "namespace", "policy", "result"})
)

func init() {
	ctrlmetrics.Registry.MustRegister(unusedGrants, dryRunCounts)
}

// forgetUsageMetrics drops the series of a policy that is gone.
func forgetUsageMetrics(kind store.Kind, ns, name string) {
	unusedGrants.DeletePartialMatch(prometheus.Labels{"kind": string(kind), "namespace": ns, "policy": name})
	dryRunCounts.DeletePartialMatch(prometheus.Labels{"kind": string(kind), "namespace": ns, "policy": name})
}

// usageSource enqueues the policies of one kind whose merged usage changed.
func usageSource(m *usage.Merger, kind store.Kind) source.Source {
	return source.Func(func(_ context.Context, q workqueue.TypedRateLimitingInterface[reconcile.Request]) error {
		m.Subscribe(func(c usage.Changed) {
			if c.Kind == string(kind) {
				q.Add(reconcile.Request{NamespacedName: c.NamespacedName})
			}
		})
		return nil
	})
}

// grant is one grant as the status lists it: its key, its previous status
// and where to write the new one.
type grant struct {
	key  string
	prev *v1alpha1.GrantUsage
	out  *v1alpha1.GrantUsage
	// guard marks a Deny rule: its use is shown, but a guard that never
	// fired is no unused grant, so the summary does not count it.
	guard bool
}

// judge fills the grants' usage from the merged counts p and sums it up in
// sum. Times already in status are kept when the merge knows less (the
// archive was deleted): a last use never moves back, tracking never starts
// later. It returns when the next grant turns unused by the clock alone, 0
// when none will.
func (u *UsageTracking) judge(grants []grant, p *usage.Policy, sum *v1alpha1.UsageSummary, now time.Time) time.Duration {
	cutoff := now.Add(-u.Window)
	var next time.Duration
	soonest := func(at time.Time) {
		if d := at.Sub(now) + time.Second; d > 0 && (next == 0 || d < next) {
			next = d
		}
	}
	sum.Window = &metav1.Duration{Duration: u.Window}
	sum.Unused, sum.LastUsed = 0, nil
	for _, g := range grants {
		m := p.Grants[g.key]
		out := g.out
		out.Decisions = toInt64(m.Decisions)
		out.LastUsed = later(unixTime(m.Last), g.prev.LastUsed)
		out.TrackedSince = earlier(unixTime(m.Since), g.prev.TrackedSince)
		verdict := usage.Judge(out.LastUsed, out.TrackedSince, cutoff)
		out.Unused = verdict == usage.VerdictUnused
		if out.Unused {
			if !g.guard {
				sum.Unused++
			}
		} else if out.TrackedSince != nil {
			// It turns unused once tracked for the window and its last
			// use has left it, whichever is later; untracked, never.
			at := out.TrackedSince.Add(u.Window)
			if verdict == usage.VerdictUsed && out.LastUsed.Add(u.Window).After(at) {
				at = out.LastUsed.Add(u.Window)
			}
			soonest(at)
		}
		sum.LastUsed = later(out.LastUsed, sum.LastUsed)
	}
	return next
}

// dryRun is a DryRun policy's status from the merged shadow counts; served
// is the generation that serves when the replicas have reported none.
func dryRun(p *usage.Policy, served int64, prev *v1alpha1.DryRunStatus, at time.Time) *v1alpha1.DryRunStatus {
	out := &v1alpha1.DryRunStatus{Generation: served}
	if p != nil && p.Shadow != nil && p.Shadow.Generation >= served {
		s := p.Shadow
		out.Generation, out.Decisions, out.WouldDeny, out.WouldAllow = s.Generation, toInt64(s.Decisions), toInt64(s.WouldDeny), toInt64(s.WouldAllow)
		out.LastDisagreement = unixTime(s.LastDisagreement)
	}
	if prev != nil && sameDryRun(prev, out) {
		out.UpdatedAt = prev.UpdatedAt
	} else {
		t := metav1.NewTime(at)
		out.UpdatedAt = &t
	}
	return out
}

// toInt64 converts a count for status, where counts are int64, saturating.
func toInt64(n uint64) int64 {
	return int64(min(n, math.MaxInt64))
}

func sameDryRun(a, b *v1alpha1.DryRunStatus) bool {
	return a.Generation == b.Generation && a.Decisions == b.Decisions && a.WouldDeny == b.WouldDeny && a.WouldAllow == b.WouldAllow
}

// observeDryRun sets a policy's DryRun gauges (labels: kind, namespace,
// policy), or drops them when d is nil.
func observeDryRun(labels prometheus.Labels, d *v1alpha1.DryRunStatus) {
	if d == nil {
		dryRunCounts.DeletePartialMatch(labels)
		return
	}
	for result, n := range map[string]int64{"all": d.Decisions, "WouldDeny": d.WouldDeny, "WouldAllow": d.WouldAllow} {
		dryRunCounts.With(prometheus.Labels{"kind": labels["kind"], "namespace": labels["namespace"], "policy": labels["policy"], "result": result}).Set(float64(n))
	}
}

func unixTime(unix int64) *metav1.Time {
	if unix == 0 {
		return nil
	}
	t := metav1.NewTime(time.Unix(unix, 0).UTC())
	return &t
}

func later(a, b *metav1.Time) *metav1.Time {
	if a == nil || (b != nil && b.After(a.Time)) {
		return b
	}
	return a
}

func earlier(a, b *metav1.Time) *metav1.Time {
	if a == nil || (b != nil && b.Before(a)) {
		return b
	}
	return a
}

// resourceUsage sets a ResourcePolicy's status.usage or status.dryRun from
// the merged view and returns when to look again (0: on the next change).
func (u *UsageTracking) resourceUsage(rp *v1alpha1.ResourcePolicy, st store.Status, v *usage.View) time.Duration {
	dryRunMode := rp.Spec.Enforcement == v1alpha1.EnforcementDryRun
	return u.track(store.KindResource, rp, dryRunMode, &rp.Status.DryRun, st, v, func() { rp.Status.Usage = nil }, func(p *usage.Policy) (time.Duration, int32) {
		prev := rp.Status.Usage
		if prev == nil {
			prev = &v1alpha1.ResourceUsageStatus{}
		}
		next := &v1alpha1.ResourceUsageStatus{Rules: make([]v1alpha1.RuleUsage, len(rp.Spec.Rules))}
		for i, r := range rp.Spec.Rules {
			next.Rules[i] = v1alpha1.RuleUsage{Name: r.Name, Effect: r.Effect}
		}
		var again time.Duration
		next.UsageSummary, again = fillUsage(u, p, rp.Status.Usage != nil, prev.UsageSummary, prev.Rules, next.Rules,
			func(r *v1alpha1.RuleUsage) string { return r.Name },
			func(r *v1alpha1.RuleUsage) *v1alpha1.GrantUsage { return &r.GrantUsage },
			func(r *v1alpha1.RuleUsage) bool { return r.Effect == v1alpha1.EffectDeny }, v.At)
		rp.Status.Usage = next
		return again, next.Unused
	})
}

// connectionUsage is resourceUsage for ConnectionPolicies.
func (u *UsageTracking) connectionUsage(cp *v1alpha1.ConnectionPolicy, st store.Status, v *usage.View) time.Duration {
	dryRunMode := cp.Spec.Enforcement == v1alpha1.EnforcementDryRun
	return u.track(store.KindConnection, cp, dryRunMode, &cp.Status.DryRun, st, v, func() { cp.Status.Usage = nil }, func(p *usage.Policy) (time.Duration, int32) {
		prev := cp.Status.Usage
		if prev == nil {
			prev = &v1alpha1.ConnectionUsageStatus{}
		}
		next := &v1alpha1.ConnectionUsageStatus{Reach: make([]v1alpha1.ReachUsage, len(cp.Spec.Reach))}
		for i, r := range cp.Spec.Reach {
			next.Reach[i] = v1alpha1.ReachUsage{Class: string(r.Class)}
		}
		var again time.Duration
		next.UsageSummary, again = fillUsage(u, p, cp.Status.Usage != nil, prev.UsageSummary, prev.Reach, next.Reach,
			func(r *v1alpha1.ReachUsage) string { return r.Class },
			func(r *v1alpha1.ReachUsage) *v1alpha1.GrantUsage { return &r.GrantUsage },
			func(*v1alpha1.ReachUsage) bool { return false }, v.At)
		cp.Status.Usage = next
		return again, next.Unused
	})
}

// track is what both kinds share: a DryRun policy gets status.dryRun from
// the merged shadow counts and loses status.usage (clearUsage); an
// enforced one loses status.dryRun and gets status.usage from enforced,
// which returns when to look again and the unused count. The leader's
// per-policy metrics follow.
func (u *UsageTracking) track(kind store.Kind, obj metav1.Object, dryRunMode bool, dry **v1alpha1.DryRunStatus, st store.Status, v *usage.View,
	clearUsage func(), enforced func(*usage.Policy) (time.Duration, int32)) time.Duration {
	p := v.Policy(obj.GetUID())
	labels := prometheus.Labels{"kind": string(kind), "namespace": obj.GetNamespace(), "policy": obj.GetName()}
	if dryRunMode {
		*dry = dryRun(p, st.Served, *dry, v.At)
		observeDryRun(labels, *dry)
		unusedGrants.DeletePartialMatch(labels)
		clearUsage()
		return 0
	}
	*dry = nil
	observeDryRun(labels, nil)
	if p == nil {
		p = &usage.Policy{}
	}
	again, unused := enforced(p)
	unusedGrants.With(labels).Set(float64(unused))
	return again
}

// fillUsage judges next, the status entries of a policy's grants in spec
// order (their keys set), against the merged counts p and the entries and
// summary the status had (prev, prevSum; had says whether it had any), and
// returns the new summary and when to look again.
func fillUsage[E any](u *UsageTracking, p *usage.Policy, had bool, prevSum v1alpha1.UsageSummary, prev, next []E,
	key func(*E) string, use func(*E) *v1alpha1.GrantUsage, guard func(*E) bool, at time.Time) (v1alpha1.UsageSummary, time.Duration) {
	old := make(map[string]*v1alpha1.GrantUsage, len(prev))
	for i := range prev {
		old[key(&prev[i])] = use(&prev[i])
	}
	grants := make([]grant, len(next))
	for i := range next {
		g := old[key(&next[i])]
		if g == nil {
			g = &v1alpha1.GrantUsage{}
		}
		grants[i] = grant{key: key(&next[i]), prev: g, out: use(&next[i]), guard: guard(&next[i])}
	}
	sum := prevSum
	again := u.judge(grants, p, &sum, u.now())
	stamp(&sum, had && usageEqual(prev, next, prevSum, sum), at)
	return sum, again
}

// stamp sets updatedAt to the merge time when the usage changed: a merge
// that changes nothing writes nothing.
func stamp(sum *v1alpha1.UsageSummary, unchanged bool, at time.Time) {
	if unchanged {
		return
	}
	t := metav1.NewTime(at)
	sum.UpdatedAt = &t
}

// usageEqual compares two usages but for when they were written.
func usageEqual[T any](a, b []T, sa, sb v1alpha1.UsageSummary) bool {
	sa.UpdatedAt, sb.UpdatedAt = nil, nil
	return equality.Semantic.DeepEqual(a, b) && equality.Semantic.DeepEqual(sa, sb)
}
