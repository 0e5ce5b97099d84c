package decision

import (
	"context"
	"math/rand/v2"
	"testing"

	"github.com/sallyport/sallyport/api/v1alpha1"
	"github.com/sallyport/sallyport/internal/policy"
)

// dryRunFixture is an enforced policy set and DryRun policies beside it:
// a tightened connection (same audience, no write scope, another name), a
// stricter ResourcePolicy for the ledger (no POST), a DryRun policy for a
// service no enforced policy serves, and a DryRun connection for an
// audience no enforced policy holds.
type dryRunFixture struct {
	base, withDryRun *Engine
	auth             *fakeAuth
	tokens           []string
}

func newDryRunFixture(t *testing.T) *dryRunFixture {
	t.Helper()
	reach := []v1alpha1.Reach{{Class: "ledger", Scopes: scopes("ledger.read", "ledger.write"), MaxClassification: v1alpha1.ClassificationConfidential}}
	// An explicit audience: a DryRun copy can claim it too (the default
	// audiences under sallyport.dev/ belong to one policy name each).
	const ledgerAud = "ledger-api.example.com"
	enforcedConns := []*v1alpha1.ConnectionPolicy{
		connPolicy("billing", "to-ledger", "worker", nil, reach, func(s *v1alpha1.ConnectionPolicySpec) { s.Audience = ledgerAud }),
	}
	ledgerRules := []v1alpha1.Rule{
		{Name: "no-deletes", Effect: v1alpha1.EffectDeny, Actions: []string{"DELETE"}, Resources: []string{"/**"}},
		{Name: "read", Effect: v1alpha1.EffectAllow, Actions: []string{"GET"}, Resources: []string{"/entries/*"},
			Scopes: scopes("ledger.read"), Connections: []v1alpha1.ConnectionRef{{Namespace: "billing", Name: "to-ledger"}}},
		{Name: "write", Effect: v1alpha1.EffectAllow, Actions: []string{"POST"}, Resources: []string{"/entries"},
			Scopes: scopes("ledger.write"), Connections: []v1alpha1.ConnectionRef{{Namespace: "billing", Name: "to-ledger"}}},
	}
	enforcedRes := []*v1alpha1.ResourcePolicy{
		resPolicy("ledger", "ledger-api", "ledger", v1alpha1.ClassificationInternal, []string{"ledger.example.com"}, ledgerRules...),
	}

	dryRun := func(e *v1alpha1.ConnectionPolicySpec) { e.Enforcement = v1alpha1.EnforcementDryRun }
	tightened := connPolicy("billing", "to-ledger-readonly", "worker", nil,
		[]v1alpha1.Reach{{Class: "ledger", Scopes: scopes("ledger.read"), MaxClassification: v1alpha1.ClassificationConfidential}},
		func(s *v1alpha1.ConnectionPolicySpec) {
			dryRun(s)
			s.Audience = ledgerAud
		})
	newAudience := connPolicy("billing", "to-audit", "worker", nil,
		[]v1alpha1.Reach{{Class: "audit", Scopes: scopes("audit.read")}}, dryRun)
	stricter := resPolicy("ledger", "ledger-api-v2", "ledger", v1alpha1.ClassificationInternal, nil, ledgerRules[:2]...)
	stricter.Spec.Service = "ledger-api"
	stricter.Spec.Enforcement = v1alpha1.EnforcementDryRun
	audit := resPolicy("audit", "audit-api", "audit", v1alpha1.ClassificationInternal, nil,
		v1alpha1.Rule{Name: "read", Effect: v1alpha1.EffectAllow, Actions: []string{"GET"}, Resources: []string{"/**"}, Scopes: scopes("audit.read"), Connections: everyone})
	audit.Spec.Enforcement = v1alpha1.EnforcementDryRun

	f := &dryRunFixture{auth: newFakeAuth()}
	for i, aud := range []string{ledgerAud, policy.DefaultAudience("billing", "to-audit")} {
		jti := string(rune('a' + i))
		tok := tokenFor(aud, jti)
		f.auth.set(tok, fakeAnswer{rev: review("billing", "worker", aud, jti)})
		f.tokens = append(f.tokens, tok)
	}
	intruder := tokenFor(ledgerAud, "x")
	f.auth.set(intruder, fakeAnswer{rev: review("billing", "intruder", ledgerAud, "x")})
	f.tokens = append(f.tokens, intruder, "", "not-a-token", tokenFor("sallyport.dev/nobody/none", "n"))

	opts := func() Options { return Options{Clock: fixedClock, NewID: sequentialIDs()} }
	namespaces := map[string]map[string]string{"billing": {"kubernetes.io/metadata.name": "billing"}}
	f.base = NewEngine(newStore(t, namespaces, enforcedConns, enforcedRes), f.auth, opts())
	f.withDryRun = NewEngine(newStore(t, namespaces,
		append(enforcedConns[:1:1], tightened, newAudience),
		append(enforcedRes[:1:1], stricter, audit)), f.auth, opts())
	return f
}

// randomRequest draws a request from small sets, so that matches, near
// misses and every gate's denials all occur.
func (f *dryRunFixture) randomRequest(r *rand.Rand) *Request {
	pick := func(xs ...string) string { return xs[r.IntN(len(xs))] }
	req := &Request{
		Token:  f.tokens[r.IntN(len(f.tokens))],
		Action: pick("GET", "POST", "DELETE", "PUT"),
		Target: Target{Name: pick("/entries", "/entries/1", "/admin", "/", "/entries/1/x")},
	}
	switch r.IntN(4) {
	case 0:
		req.Target.Namespace, req.Target.Service = "ledger", "ledger-api"
	case 1:
		req.Target.Host = pick("ledger.example.com", "LEDGER.example.com:443", "other.example.com")
	case 2:
		req.Target.Namespace, req.Target.Service = "audit", "audit-api"
	default:
		req.Target.Namespace, req.Target.Service = "ledger", "missing"
	}
	for _, s := range []string{"ledger.read", "ledger.write", "audit.read"} {
		if r.IntN(3) == 0 {
			req.Scopes = append(req.Scopes, s)
		}
	}
	return req
}

// TestDryRunNeverChangesTheAnswer: over thousands of generated requests,
// adding DryRun policies leaves every enforced answer exactly as it was —
// both gates, reasons, policies, rules and messages.
func TestDryRunNeverChangesTheAnswer(t *testing.T) {
	f := newDryRunFixture(t)
	r := rand.New(rand.NewPCG(1, 2))
	shadows, disagreements := 0, 0
	for i := range 5000 {
		req := f.randomRequest(r)
		base := f.base.Decide(context.Background(), req)
		with := f.withDryRun.Decide(context.Background(), req)
		if base.Allowed != with.Allowed || base.Connection != with.Connection || base.Resource != with.Resource {
			t.Fatalf("request %d %+v: without DryRun policies %+v / %+v; with them %+v / %+v",
				i, req, base.Connection, base.Resource, with.Connection, with.Resource)
		}
		if base.DryRun != nil {
			t.Fatalf("a shadow decision without DryRun policies: %+v", base.DryRun)
		}
		if with.DryRun != nil {
			shadows++
			if with.Disagreement() != "" {
				disagreements++
			}
		}
	}
	// The generated requests must exercise the shadow path, or the
	// property says nothing.
	if shadows < 1000 || disagreements == 0 {
		t.Errorf("%d shadow decisions, %d disagreements in 5000 requests; the generator misses the DryRun policies", shadows, disagreements)
	}
}

func TestDryRunShadowDecisions(t *testing.T) {
	f := newDryRunFixture(t)
	ledgerTok, auditTok := f.tokens[0], f.tokens[1]
	for _, tc := range []struct {
		name string
		req  Request
		// want is the shadow's answer; nil means no shadow.
		want         *Shadow
		disagreement string
	}{
		{
			name: "a read is allowed either way: the tightened connection keeps ledger.read, and the ledger rule names the enforced connection it stands in for",
			req:  Request{Token: ledgerTok, Action: "GET", Scopes: []string{"ledger.read"}, Target: Target{Namespace: "ledger", Service: "ledger-api", Name: "/entries/1"}},
			want: &Shadow{Allowed: true,
				Connection: Connection{Allowed: true, Policy: "billing/to-ledger-readonly", Reason: ReasonMatched},
				Resource:   Resource{Allowed: true, Policy: "ledger/ledger-api-v2", Rule: "read", Reason: ReasonMatched}},
		},
		{
			name:         "a write would be denied: the tightened connection has no ledger.write",
			req:          Request{Token: ledgerTok, Action: "POST", Scopes: []string{"ledger.write"}, Target: Target{Namespace: "ledger", Service: "ledger-api", Name: "/entries"}},
			want:         &Shadow{Connection: Connection{Policy: "billing/to-ledger-readonly", Reason: ReasonScopeNotReachable}, Resource: Resource{Policy: "ledger/ledger-api-v2", Reason: ReasonNotEvaluated}},
			disagreement: DisagreementWouldDeny,
		},
		{
			name:         "a new service's DryRun policy would allow what no enforced policy serves",
			req:          Request{Token: auditTok, Action: "GET", Scopes: []string{"audit.read"}, Target: Target{Namespace: "audit", Service: "audit-api", Name: "/x"}},
			want:         &Shadow{Allowed: true, Connection: Connection{Allowed: true, Policy: "billing/to-audit", Reason: ReasonMatched}, Resource: Resource{Allowed: true, Policy: "audit/audit-api", Rule: "read", Reason: ReasonMatched}},
			disagreement: DisagreementWouldAllow,
		},
		{
			name: "no DryRun policy for this audience or target: no shadow",
			req:  Request{Token: f.tokens[5], Action: "GET", Target: Target{Namespace: "ledger", Service: "missing", Name: "/"}},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := f.withDryRun.Decide(context.Background(), &tc.req)
			if tc.want == nil {
				if d.DryRun != nil {
					t.Fatalf("shadow %+v, want none", d.DryRun)
				}
				return
			}
			if d.DryRun == nil {
				t.Fatalf("no shadow decision; enforced %+v / %+v", d.Connection, d.Resource)
			}
			got := *d.DryRun
			got.Connection.Message, got.Connection.Identity, got.Connection.CredentialID, got.Connection.Generation = "", "", "", 0
			got.Resource.Message, got.Resource.Generation = "", 0
			if got != *tc.want {
				t.Errorf("shadow\n got %+v\nwant %+v", got, *tc.want)
			}
			if d.Disagreement() != tc.disagreement {
				t.Errorf("disagreement %q, want %q", d.Disagreement(), tc.disagreement)
			}
		})
	}
}
