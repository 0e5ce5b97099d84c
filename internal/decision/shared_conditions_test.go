package decision

import (
	"context"
	"testing"

	"github.com/sallyport/sallyport/api/v1alpha1"
	"github.com/sallyport/sallyport/internal/policy"
)

// Policies stamped from one template share their compiled conditions (see
// internal/expr), and still decide and count on their own: the condition
// is evaluated over each request, and each rule and reach entry keeps its
// own usage.
func TestTemplatedPoliciesDecideOnTheirOwn(t *testing.T) {
	const when = `request.attributes["tier"] == "gold"`
	var conns []*v1alpha1.ConnectionPolicy
	var res []*v1alpha1.ResourcePolicy
	for _, ns := range []string{"team-a", "team-b"} {
		reach := []v1alpha1.Reach{{Class: "ledger", Scopes: scopes("ledger.read"), MaxClassification: v1alpha1.ClassificationConfidential}}
		conns = append(conns, connPolicy(ns, "client", "worker", nil, reach, func(s *v1alpha1.ConnectionPolicySpec) {
			s.When = `connection.age < duration("1h")`
		}))
		res = append(res, resPolicy(ns, "api", "ledger", v1alpha1.ClassificationInternal, nil, v1alpha1.Rule{
			Name: "read", Effect: v1alpha1.EffectAllow, Actions: []string{"GET"}, Resources: []string{"/entries/*"},
			Scopes: scopes("ledger.read"), Connections: []v1alpha1.ConnectionRef{{Namespace: ns, Name: "client"}},
			When: when,
		}))
	}
	st := newStore(t, nil, conns, res)
	auth := newFakeAuth()
	tokens := map[string]string{}
	for _, ns := range []string{"team-a", "team-b"} {
		aud := "sallyport.dev/" + ns + "/client"
		tokens[ns] = tokenFor(aud, ns)
		auth.set(tokens[ns], fakeAnswer{rev: review(ns, "worker", aud, ns)})
	}
	e := NewEngine(st, auth, Options{Clock: fixedClock})
	ask := func(ns, tier string) *Decision {
		return e.Decide(context.Background(), &Request{
			Token: tokens[ns], Action: "GET", Scopes: []string{"ledger.read"},
			Target:     Target{Namespace: ns, Service: "api", Name: "/entries/1"},
			Attributes: map[string]string{"tier": tier},
		})
	}

	if d := ask("team-a", "gold"); !d.Allowed || d.Resource.Rule != "read" {
		t.Errorf("team-a, gold: allowed %v by %q (%s), want allowed by read", d.Allowed, d.Resource.Rule, d.Resource.Reason)
	}
	for range 2 {
		if d := ask("team-b", "silver"); d.Allowed {
			t.Errorf("team-b, silver: allowed by %q, want denied: the condition is false for this request", d.Resource.Rule)
		}
	}
	if d := ask("team-b", "gold"); !d.Allowed || d.Resource.Rule != "read" {
		t.Errorf("team-b, gold: allowed %v by %q (%s), want allowed by read", d.Allowed, d.Resource.Rule, d.Resource.Reason)
	}

	snap := st.Snapshot()
	for ns, want := range map[string]uint64{"team-a": 1, "team-b": 1} {
		rp, ok := snap.ResourceByService(v1alpha1.EnforcementEnforce, ns, "api")
		if !ok {
			t.Fatalf("no ResourcePolicy for %s", ns)
		}
		var read *policy.Rule
		for r := range rp.Rules() {
			read = r
		}
		if n, _ := read.Usage.Load(); n != want {
			t.Errorf("%s's read rule counted %d uses, want %d", ns, n, want)
		}
	}
}
