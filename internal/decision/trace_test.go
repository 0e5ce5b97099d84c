package decision

import (
	"context"
	"reflect"
	"strings"
	"testing"

	"github.com/sallyport/sallyport/api/v1alpha1"
)

// traceFixture is one connection to one service with a Deny rule, an Allow
// rule with a condition and a plain Allow rule.
func traceFixture(t *testing.T) (*Engine, string) {
	t.Helper()
	reach := []v1alpha1.Reach{{Class: "ledger", Scopes: scopes("ledger.read", "ledger.write"), MaxClassification: v1alpha1.ClassificationConfidential}}
	conns := []*v1alpha1.ConnectionPolicy{connPolicy("billing", "to-ledger", "worker", nil, reach, nil)}
	res := []*v1alpha1.ResourcePolicy{resPolicy("ledger", "ledger-api", "ledger", v1alpha1.ClassificationInternal, nil,
		v1alpha1.Rule{Name: "no-deletes", Effect: v1alpha1.EffectDeny, Actions: []string{"DELETE"}, Resources: []string{"/**"}},
		v1alpha1.Rule{Name: "office-hours", Effect: v1alpha1.EffectAllow, Actions: []string{"PUT"}, Resources: []string{"/entries/*"},
			Scopes: scopes("ledger.write"), Connections: []v1alpha1.ConnectionRef{{Namespace: "billing", Name: "to-ledger"}},
			When: `request.attributes["office"] == "open"`},
		v1alpha1.Rule{Name: "read", Effect: v1alpha1.EffectAllow, Actions: []string{"GET"}, Resources: []string{"/entries/*"},
			Scopes: scopes("ledger.read"), Connections: []v1alpha1.ConnectionRef{{Namespace: "billing", Name: "to-ledger"}}},
	)}
	st := newStore(t, nil, conns, res)
	auth := newFakeAuth()
	aud := "sallyport.dev/billing/to-ledger"
	tok := tokenFor(aud, "t1")
	auth.set(tok, fakeAnswer{rev: review("billing", "worker", aud, "t1")})
	return NewEngine(st, auth, Options{Clock: fixedClock, NewID: func() string { return "id" }}), tok
}

func TestDecideTraceAgreesWithDecide(t *testing.T) {
	e, tok := traceFixture(t)
	reqs := []*Request{
		{Token: tok, Target: Target{Namespace: "ledger", Service: "ledger-api", Name: "/entries/1"}, Action: "GET", Scopes: []string{"ledger.read"}},
		{Token: tok, Target: Target{Namespace: "ledger", Service: "ledger-api", Name: "/entries/1"}, Action: "DELETE"},
		{Token: tok, Target: Target{Namespace: "ledger", Service: "ledger-api", Name: "/entries/1"}, Action: "PUT", Scopes: []string{"ledger.write"}},
		{Token: tok, Target: Target{Namespace: "ledger", Service: "ledger-api", Name: "/entries/1"}, Action: "GET", Scopes: []string{"admin"}},
		{Token: tok, Target: Target{Namespace: "ledger", Service: "nope", Name: "/"}, Action: "GET"},
		{Target: Target{Namespace: "ledger", Service: "ledger-api", Name: "/"}, Action: "GET"},
		{Token: tokenFor("other", "x"), Target: Target{Namespace: "ledger", Service: "ledger-api"}, Action: "GET"},
		{Token: tok, Target: Target{Namespace: "ledger", Service: "ledger-api", Name: "/a/../b"}, Action: "GET"},
	}
	for _, req := range reqs {
		want := e.Decide(context.Background(), req)
		got, tr := e.DecideTrace(context.Background(), req)
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s %s: DecideTrace\n got %+v\nwant %+v", req.Action, req.Target.Name, got, want)
		}
		if tr == nil || len(tr.Connection.Checks) == 0 {
			t.Errorf("%s %s: trace without connection checks: %+v", req.Action, req.Target.Name, tr)
			continue
		}
		// The last check is the failing one exactly when the connection
		// was denied.
		last := tr.Connection.Checks[len(tr.Connection.Checks)-1]
		if last.Passed != got.Connection.Allowed {
			t.Errorf("%s %s: last check %+v, connection %+v", req.Action, req.Target.Name, last, got.Connection)
		}
	}
}

func TestTraceRules(t *testing.T) {
	e, tok := traceFixture(t)
	target := Target{Namespace: "ledger", Service: "ledger-api", Name: "/entries/1"}
	tests := []struct {
		name string
		req  Request
		want []RuleTrace
	}{{
		name: "allowed by the last rule",
		req:  Request{Token: tok, Target: target, Action: "GET", Scopes: []string{"ledger.read"}},
		want: []RuleTrace{
			{Name: "no-deletes", Effect: "Deny", Failed: RuleAction, Detail: `action "GET" is not among ["DELETE"]`},
			{Name: "office-hours", Effect: "Allow", Failed: RuleAction, Detail: `action "GET" is not among ["PUT"]`},
			{Name: "read", Effect: "Allow", Matched: true},
		},
	}, {
		name: "denied by rule",
		req:  Request{Token: tok, Target: target, Action: "DELETE"},
		want: []RuleTrace{{Name: "no-deletes", Effect: "Deny", Matched: true}},
	}, {
		name: "condition false",
		req:  Request{Token: tok, Target: target, Action: "PUT", Scopes: []string{"ledger.write"}, Attributes: map[string]string{"office": "closed"}},
		want: []RuleTrace{
			{Name: "no-deletes", Effect: "Deny", Failed: RuleAction, Detail: `action "PUT" is not among ["DELETE"]`},
			{Name: "office-hours", Effect: "Allow", Failed: RuleCondition, Detail: `condition is false: request.attributes["office"] == "open"`},
			{Name: "read", Effect: "Allow", Failed: RuleAction, Detail: `action "PUT" is not among ["GET"]`},
		},
	}, {
		name: "scopes and resources",
		req:  Request{Token: tok, Target: Target{Namespace: "ledger", Service: "ledger-api", Name: "/admin"}, Action: "GET", Scopes: []string{"ledger.read"}},
		want: []RuleTrace{
			{Name: "no-deletes", Effect: "Deny", Failed: RuleAction, Detail: `action "GET" is not among ["DELETE"]`},
			{Name: "office-hours", Effect: "Allow", Failed: RuleAction, Detail: `action "GET" is not among ["PUT"]`},
			{Name: "read", Effect: "Allow", Failed: RuleResources, Detail: `path "/admin" matches none of ["/entries/*"]`},
		},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, tr := e.DecideTrace(context.Background(), &tt.req)
			if !tr.Resource.Evaluated {
				t.Fatalf("resource gate not evaluated: %+v", tr)
			}
			if !reflect.DeepEqual(tr.Resource.Rules, tt.want) {
				t.Errorf("rules\n got %+v\nwant %+v", tr.Resource.Rules, tt.want)
			}
		})
	}
}

func TestTraceConnection(t *testing.T) {
	e, tok := traceFixture(t)
	target := Target{Namespace: "ledger", Service: "ledger-api", Name: "/entries/1"}
	names := func(tr *Trace) string {
		var b []string
		for _, c := range tr.Connection.Checks {
			m := "+"
			if !c.Passed {
				m = "-"
			}
			b = append(b, m+c.Name)
		}
		return strings.Join(b, " ")
	}
	tests := []struct {
		name string
		req  Request
		want string
	}{
		{"allowed", Request{Token: tok, Target: target, Action: "GET", Scopes: []string{"ledger.read"}}, "+policy +credential +lifetime +class +scopes +classification"},
		{"scope beyond the reach", Request{Token: tok, Target: target, Action: "GET", Scopes: []string{"admin"}}, "+policy +credential +lifetime +class -scopes"},
		{"no token", Request{Target: target, Action: "GET"}, "-credential"},
		{"unknown audience", Request{Token: tokenFor("elsewhere", "x"), Target: target, Action: "GET"}, "+credential -policy"},
		{"rejected token", Request{Token: tokenFor("sallyport.dev/billing/to-ledger", "forged"), Target: target, Action: "GET"}, "+policy -credential"},
		{"no target", Request{Token: tok, Target: Target{Namespace: "ledger", Service: "nope"}, Action: "GET"}, "+policy +credential +lifetime"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, tr := e.DecideTrace(context.Background(), &tt.req)
			if got := names(tr); got != tt.want {
				t.Errorf("checks %q, want %q (decision %+v)", got, tt.want, d)
			}
			if tr.Connection.Audience == "" && tt.req.Token != "" {
				t.Errorf("audience not traced")
			}
			if s := tr.String(); !strings.Contains(s, "connection:") {
				t.Errorf("String() = %q", s)
			}
		})
	}
}

func TestTraceFormat(t *testing.T) {
	e, tok := traceFixture(t)
	_, tr := e.DecideTrace(context.Background(), &Request{Token: tok,
		Target: Target{Namespace: "ledger", Service: "ledger-api", Name: "/entries/1"}, Action: "DELETE"})
	want := `> target: by service ledger/ledger-api: ResourcePolicy ledger/ledger-api, path /entries/1
> connection: audience "sallyport.dev/billing/to-ledger": ConnectionPolicy billing/to-ledger
>   ✓ policy: audience "sallyport.dev/billing/to-ledger" picks billing/to-ledger
>   ✓ credential: reviewed as system:serviceaccount:billing:worker, the policy's ServiceAccount
>   ✓ lifetime: within maxTokenLifetime 1h0m0s
>   ✓ class: class "ledger" is in the reach
>   ✓ scopes: requested scopes [] are within ["ledger.read", "ledger.write"]
>   ✓ classification: internal is within maxClassification confidential
> resource:
>   ✓ Deny rule "no-deletes": matched
`
	if got := tr.Format("> "); got != want {
		t.Errorf("Format\n got:\n%s\nwant:\n%s", got, want)
	}
}

// TestDecideTraceNilIsFree guards the serving path: Decide allocates what it
// did before tracing existed (see BenchmarkDecide for the numbers).
func TestDecideTraceNilIsFree(t *testing.T) {
	e, tok := traceFixture(t)
	req := &Request{Token: tok, Target: Target{Namespace: "ledger", Service: "ledger-api", Name: "/entries/1"}, Action: "GET", Scopes: []string{"ledger.read"}}
	ctx := context.Background()
	e.Decide(ctx, req)
	plain := testing.AllocsPerRun(100, func() { e.Decide(ctx, req) })
	traced := testing.AllocsPerRun(100, func() { e.DecideTrace(ctx, req) })
	if traced <= plain {
		t.Errorf("DecideTrace allocates %v, Decide %v: the trace should cost allocations only when asked for", traced, plain)
	}
}
