package decision

import (
	"context"
	"strings"
	"testing"

	"github.com/sallyport/sallyport/api/v1alpha1"
	"github.com/sallyport/sallyport/internal/expr"
	"github.com/sallyport/sallyport/internal/policy"
	"github.com/sallyport/sallyport/internal/store"
)

// A pathological condition is refused at admission by its estimated cost
// (test/admission). Should one be compiled anyway — here with a budget
// raised so far that it is — the runtime cost limit stops its evaluation:
// as a Deny rule it denies (fail closed), as an Allow rule it does not
// match, and decisions on other services in the same snapshot are
// unaffected.
func TestRuntimeCostLimitStopsPathologicalConditions(t *testing.T) {
	// Nested comprehensions over every pair of attributes, each
	// concatenating two values of 4,000 bytes: 64 × 64 times, never
	// short-circuited (every pair is true).
	const pathological = `request.attributes.all(a, request.attributes.all(b, (request.attributes[a] + request.attributes[b]).size() > 0))`
	limits := expr.Limits{ExpressionBudget: 1 << 62, RuntimeCostLimit: expr.DefaultLimits.RuntimeCostLimit}
	b := store.NewBuilder(policy.NewCompiler(policy.CompilerOptions{Limits: limits}))
	reach := []v1alpha1.Reach{
		{Class: "ledger", Scopes: scopes("ledger.read"), MaxClassification: v1alpha1.ClassificationConfidential},
		{Class: "audit", Scopes: scopes("audit.read"), MaxClassification: v1alpha1.ClassificationConfidential},
	}
	conn := connPolicy("billing", "to-ledger", "worker", nil, reach, nil)
	deny := resPolicy("ledger", "ledger-api", "ledger", v1alpha1.ClassificationInternal, nil,
		v1alpha1.Rule{Name: "costly-deny", Effect: v1alpha1.EffectDeny, Actions: []string{"GET"}, Resources: []string{"/**"}, When: pathological},
		v1alpha1.Rule{Name: "read", Effect: v1alpha1.EffectAllow, Actions: []string{"GET"}, Resources: []string{"/**"}, Connections: everyone},
	)
	allow := resPolicy("audit", "audit-api", "audit", v1alpha1.ClassificationInternal, nil,
		v1alpha1.Rule{Name: "costly-allow", Effect: v1alpha1.EffectAllow, Actions: []string{"GET"}, Resources: []string{"/costly/**"}, Connections: everyone, When: pathological},
		v1alpha1.Rule{Name: "plain", Effect: v1alpha1.EffectAllow, Actions: []string{"GET"}, Resources: []string{"/plain/**"}, Connections: everyone},
	)
	if err := b.UpsertConnection(conn); err != nil {
		t.Fatal(err)
	}
	for _, rp := range []*v1alpha1.ResourcePolicy{deny, allow} {
		if err := b.UpsertResource(rp); err != nil {
			t.Fatalf("with the budget raised, %s should compile: %v", rp.Name, err)
		}
	}
	st := store.New()
	st.Publish(b.Build(), true)

	aud := policy.DefaultAudience("billing", "to-ledger")
	tok := tokenFor(aud, "j1")
	auth := newFakeAuth()
	auth.set(tok, fakeAnswer{rev: review("billing", "worker", aud, "j1")})
	e := NewEngine(st, auth, Options{Clock: fixedClock})

	// Attributes that make the comprehension expensive.
	attrs := map[string]string{}
	for i := range 64 {
		attrs[string(rune('a'+i%26))+strings.Repeat("x", i)] = strings.Repeat("v", 4000)
	}
	ask := func(ns, svc, path string) *Decision {
		return e.Decide(context.Background(), &Request{
			Token: tok, Action: "GET", Attributes: attrs,
			Target: Target{Namespace: ns, Service: svc, Name: path},
		})
	}

	d := ask("ledger", "ledger-api", "/entries/1")
	if d.Allowed || d.Resource.Reason != ReasonEvaluationError || d.Resource.Rule != "costly-deny" ||
		!strings.Contains(d.Resource.Message, "cost limit") {
		t.Errorf("costly Deny rule: %+v, want denied with EvaluationError naming the rule and the cost limit", d.Resource)
	}
	d = ask("audit", "audit-api", "/costly/1")
	if d.Allowed || d.Resource.Reason != ReasonNoRuleMatched || !strings.Contains(d.Resource.Message, `"costly-allow" could not be evaluated`) {
		t.Errorf("costly Allow rule: %+v, want no match, naming the rule that could not be evaluated", d.Resource)
	}
	d = ask("audit", "audit-api", "/plain/1")
	if !d.Allowed || d.Resource.Rule != "plain" {
		t.Errorf("a plain rule beside a costly one: %+v, want allowed", d.Resource)
	}
}
