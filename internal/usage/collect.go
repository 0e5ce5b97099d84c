package usage

import (
	"time"

	"k8s.io/apimachinery/pkg/types"

	"github.com/sallyport/sallyport/api/v1alpha1"
	"github.com/sallyport/sallyport/internal/policy"
	"github.com/sallyport/sallyport/internal/store"
)

// collect reads the usage counters of every policy snap serves into a
// report, on top of baseline (what a predecessor process counted). Baseline
// policies the snapshot no longer knows are dropped: they were deleted.
func collect(snap *store.Snapshot, baseline *Report, now time.Time) *Report {
	r := newReport()
	r.Written = now.UTC()
	known := make(map[types.UID]bool, snap.Len())
	for _, st := range snap.Statuses() {
		known[st.UID] = true
	}
	if baseline != nil {
		for uid, p := range baseline.Policies {
			if known[uid] {
				r.Policies[uid] = &Policy{Kind: p.Kind, Namespace: p.Namespace, Name: p.Name}
				r.Policies[uid].add(p)
			}
		}
	}
	live := newReport()
	conns, res := snap.Serving(v1alpha1.EnforcementEnforce)
	for _, c := range conns {
		p := live.policy(KindConnection, &c.Meta)
		p.Grants = make(map[string]Grant, len(c.Reach))
		for class, reach := range c.Reach {
			p.Grants[class] = grantOf(reach.Usage)
		}
	}
	for _, rp := range res {
		p := live.policy(KindResource, &rp.Meta)
		p.Grants = make(map[string]Grant, len(rp.Deny)+len(rp.Allow))
		for rule := range rp.Rules() {
			p.Grants[rule.Name] = grantOf(rule.Usage)
		}
	}
	conns, res = snap.Serving(v1alpha1.EnforcementDryRun)
	for _, c := range conns {
		live.policy(KindConnection, &c.Meta).Shadow = shadowOf(&c.Meta)
	}
	for _, rp := range res {
		live.policy(KindResource, &rp.Meta).Shadow = shadowOf(&rp.Meta)
	}
	r.Add(live)
	return r
}

func (r *Report) policy(kind string, m *policy.Meta) *Policy {
	p := &Policy{Kind: kind, Namespace: m.Ref.Namespace, Name: m.Ref.Name}
	r.Policies[m.UID] = p
	return p
}

func grantOf(u *policy.Usage) Grant {
	n, last := u.Load()
	return Grant{Decisions: n, Last: unix(last), Since: unix(u.Since())}
}

func shadowOf(m *policy.Meta) *Shadow {
	c := m.Shadowed.Load()
	return &Shadow{Generation: m.Generation, Decisions: c.Decisions, WouldDeny: c.WouldDeny, WouldAllow: c.WouldAllow,
		LastDisagreement: unix(c.LastDisagreement)}
}
