package decision

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/sallyport/sallyport/api/v1alpha1"
	"github.com/sallyport/sallyport/internal/credential"
)

const (
	audB2L    = "sallyport.dev/billing/b2l"
	audSilver = "sallyport.dev/billing/silver"
	audCond   = "sallyport.dev/billing/cond"
	audOther  = "sallyport.dev/other/gold"
	audStrict = "sallyport.dev/billing/strict"
	audNobody = "sallyport.dev/nowhere/none"
)

// fixture is a small cluster:
//
//   - namespaces billing (team=payments), other (team=payments-dev) and
//     ledger; unknown has no recorded labels;
//   - ConnectionPolicies billing/b2l (gold), billing/silver, billing/cond
//     (with a condition on request attributes), other/gold (gold, in a
//     namespace the selectors do not pick), unknown/ghost and billing/strict
//     (no scopes in reach);
//   - ResourcePolicies ledger/ledger-api (confidential, host
//     ledger.example), ledger/vault (restricted), hr/people (class hr) and
//     audit/trail (host audit.example).
type fixture struct {
	auth   *fakeAuth
	engine *Engine
	tokens map[string]string
}

func newFixture(t testing.TB) *fixture {
	t.Helper()
	ledgerReach := v1alpha1.Reach{Class: "ledger", Scopes: scopes("ledger.read", "ledger.write", "ledger.admin"), MaxClassification: v1alpha1.ClassificationConfidential}
	auditReach := v1alpha1.Reach{Class: "audit", Scopes: scopes("*")}
	gold := map[string]string{"tier": "gold"}
	conns := []*v1alpha1.ConnectionPolicy{
		connPolicy("billing", "b2l", "worker", gold, []v1alpha1.Reach{ledgerReach, auditReach}, nil),
		connPolicy("billing", "silver", "silver", map[string]string{"tier": "silver"}, []v1alpha1.Reach{ledgerReach}, nil),
		connPolicy("billing", "cond", "cond", gold, []v1alpha1.Reach{ledgerReach}, func(s *v1alpha1.ConnectionPolicySpec) {
			s.When = `request.attributes["sourceIP"] == "10.0.0.1" && connection.age < duration("10m") && connection.pod == "cond-7d9f"`
		}),
		connPolicy("other", "gold", "worker", gold, []v1alpha1.Reach{ledgerReach}, nil),
		connPolicy("unknown", "ghost", "worker", gold, []v1alpha1.Reach{ledgerReach}, nil),
		connPolicy("billing", "strict", "strict", gold, []v1alpha1.Reach{{Class: "ledger", MaxClassification: v1alpha1.ClassificationConfidential}}, func(s *v1alpha1.ConnectionPolicySpec) {
			s.MaxTokenLifetime = metav1.Duration{Duration: 10 * time.Minute}
		}),
	}
	b2l := []v1alpha1.ConnectionRef{{Namespace: "billing", Name: "b2l"}}
	res := []*v1alpha1.ResourcePolicy{
		resPolicy("ledger", "ledger-api", "ledger", v1alpha1.ClassificationConfidential, []string{"ledger.example", "ledger.example:8443"},
			v1alpha1.Rule{Name: "allow-health", Effect: v1alpha1.EffectAllow, Actions: []string{"GET"}, Resources: []string{"/health"}, Connections: everyone},
			v1alpha1.Rule{Name: "read-entries", Effect: v1alpha1.EffectAllow, Actions: []string{"GET", "HEAD"}, Resources: []string{"/entries/*"},
				Scopes: scopes("ledger.read"), Connections: b2l},
			v1alpha1.Rule{Name: "write-entries", Effect: v1alpha1.EffectAllow, Actions: []string{"PUT", "POST"}, Resources: []string{"/entries/*"},
				Scopes:      scopes("ledger.read", "ledger.write"),
				Connections: []v1alpha1.ConnectionRef{{NamespaceSelector: selector("team", "payments"), PolicySelector: selector("tier", "gold")}}},
			v1alpha1.Rule{Name: "read-reports", Effect: v1alpha1.EffectAllow, Actions: []string{"GET"}, Resources: []string{"/reports/**"},
				Scopes: scopes("ledger.read"), Connections: b2l},
			v1alpha1.Rule{Name: "same-namespace", Effect: v1alpha1.EffectAllow, Actions: []string{"GET"}, Resources: []string{"/local/*"},
				Connections: []v1alpha1.ConnectionRef{{PolicySelector: selector("tier", "gold")}}},
			v1alpha1.Rule{Name: "business-hours", Effect: v1alpha1.EffectAllow, Actions: []string{"GET"}, Resources: []string{"/timed/*"},
				Connections: b2l, When: `request.time.getHours() >= 9 && request.time.getHours() < 17 && resource.classification == "confidential" && resource.name.startsWith("/timed/")`},
			v1alpha1.Rule{Name: "flaky", Effect: v1alpha1.EffectAllow, Actions: []string{"GET"}, Resources: []string{"/flaky/*"},
				Connections: everyone, When: `int(request.attributes["n"]) / int(request.attributes["d"]) > 0`},
			v1alpha1.Rule{Name: "flaky-fallback", Effect: v1alpha1.EffectAllow, Actions: []string{"GET"}, Resources: []string{"/flaky/ok"}, Connections: everyone},
			v1alpha1.Rule{Name: "any-action", Effect: v1alpha1.EffectAllow, Actions: []string{"*"}, Resources: []string{"/any/**"}, Connections: b2l},
			v1alpha1.Rule{Name: "no-entry-13", Effect: v1alpha1.EffectDeny, Actions: []string{"GET"}, Resources: []string{"/entries/13"}},
			v1alpha1.Rule{Name: "no-admin", Effect: v1alpha1.EffectDeny, Actions: []string{"*"}, Resources: []string{"/**"}, Scopes: scopes("ledger.admin")},
			v1alpha1.Rule{Name: "fragile-deny", Effect: v1alpha1.EffectDeny, Actions: []string{"*"}, Resources: []string{"/fragile/**"},
				When: `request.attributes["mode"] == "locked"`},
			v1alpha1.Rule{Name: "no-silver-reports", Effect: v1alpha1.EffectDeny, Actions: []string{"*"}, Resources: []string{"/reports/**"},
				Connections: []v1alpha1.ConnectionRef{{Namespace: "billing", Name: "silver"}}},
		),
		resPolicy("ledger", "vault", "ledger", v1alpha1.ClassificationRestricted, nil,
			v1alpha1.Rule{Name: "all", Effect: v1alpha1.EffectAllow, Actions: []string{"*"}, Resources: []string{"/**"}, Connections: everyone}),
		resPolicy("hr", "people", "hr", v1alpha1.ClassificationInternal, nil,
			v1alpha1.Rule{Name: "all", Effect: v1alpha1.EffectAllow, Actions: []string{"*"}, Resources: []string{"/**"}, Connections: everyone}),
		resPolicy("audit", "trail", "audit", v1alpha1.ClassificationInternal, []string{"audit.example"},
			v1alpha1.Rule{Name: "read", Effect: v1alpha1.EffectAllow, Actions: []string{"GET"}, Resources: []string{"/**"}, Connections: everyone}),
	}
	ns := map[string]map[string]string{
		"billing": {"team": "payments"},
		"other":   {"team": "payments-dev"},
		"ledger":  {"team": "ledger"},
	}
	st := newStore(t, ns, conns, res)

	f := &fixture{auth: newFakeAuth(), tokens: map[string]string{}}
	add := func(key, aud string, a fakeAnswer) {
		tok := tokenFor(aud, key)
		f.tokens[key] = tok
		f.auth.set(tok, a)
	}
	add("b2l", audB2L, fakeAnswer{rev: review("billing", "worker", audB2L, "b2l")})
	add("silver", audSilver, fakeAnswer{rev: review("billing", "silver", audSilver, "silver")})
	add("cond", audCond, fakeAnswer{rev: review("billing", "cond", audCond, "cond")})
	add("other", audOther, fakeAnswer{rev: review("other", "worker", audOther, "other")})
	add("ghost", "sallyport.dev/unknown/ghost", fakeAnswer{rev: review("unknown", "worker", "sallyport.dev/unknown/ghost", "ghost")})
	add("strict", audStrict, fakeAnswer{rev: func() *credential.Review {
		r := review("billing", "strict", audStrict, "strict")
		r.ExpiresAt = now.Add(5 * time.Minute)
		return r
	}()})
	add("nobody", audNobody, fakeAnswer{rev: review("nowhere", "none", audNobody, "nobody")})
	add("rejected", audB2L, fakeAnswer{err: fmt.Errorf("%w: signature does not verify", credential.ErrInvalid)})
	add("outage", audB2L, fakeAnswer{err: fmt.Errorf("%w: TokenReview: connection refused", credential.ErrReviewFailed)})
	add("weird", audB2L, fakeAnswer{err: errors.New("unclassified failure")})
	add("boom", audB2L, fakeAnswer{panic: true})
	add("nil-review", audB2L, fakeAnswer{rev: nil})
	add("wrong-sa", audB2L, fakeAnswer{rev: review("billing", "intruder", audB2L, "wrong-sa")})
	add("wrong-aud", audB2L, fakeAnswer{rev: review("billing", "worker", audB2L, "wrong-aud")})
	add("expired", audB2L, fakeAnswer{rev: func() *credential.Review {
		r := review("billing", "worker", audB2L, "expired")
		r.IssuedAt, r.ExpiresAt = now.Add(-20*time.Minute), now
		return r
	}()})
	add("long", audB2L, fakeAnswer{rev: func() *credential.Review {
		r := review("billing", "worker", audB2L, "long")
		r.IssuedAt, r.ExpiresAt = now.Add(-time.Minute), now.Add(2*time.Hour)
		return r
	}()})
	add("legacy", audB2L, fakeAnswer{rev: func() *credential.Review {
		r := review("billing", "worker", audB2L, "legacy")
		r.IssuedAt, r.ExpiresAt = time.Time{}, time.Time{}
		return r
	}()})
	add("at-max", audB2L, fakeAnswer{rev: func() *credential.Review {
		r := review("billing", "worker", audB2L, "at-max")
		r.IssuedAt, r.ExpiresAt = now.Add(-time.Minute), now.Add(59*time.Minute)
		return r
	}()})
	add("strict-long", audStrict, fakeAnswer{rev: func() *credential.Review {
		r := review("billing", "strict", audStrict, "strict-long")
		r.IssuedAt, r.ExpiresAt = now.Add(-time.Minute), now.Add(10*time.Minute)
		return r
	}()})
	f.engine = NewEngine(st, &audienceLiar{f.auth, f.tokens["wrong-aud"]}, Options{Clock: fixedClock, NewID: sequentialIDs()})
	return f
}

// audienceLiar returns a review for another audience for one token, as a
// buggy authenticator might.
type audienceLiar struct {
	*fakeAuth
	token string
}

func (a *audienceLiar) Authenticate(ctx context.Context, token, audience string) (*credential.Review, error) {
	rev, err := a.fakeAuth.Authenticate(ctx, token, audience)
	if token == a.token && rev != nil {
		c := *rev
		c.Audience = "sallyport.dev/billing/other-connection"
		return &c, err
	}
	return rev, err
}

// ledger returns a request for ledger/ledger-api.
func (f *fixture) ledger(tokenKey, action, name string, sc ...string) Request {
	return Request{
		Token:  f.tokens[tokenKey],
		Target: Target{Namespace: "ledger", Service: "ledger-api", Name: name},
		Action: action, Scopes: sc,
	}
}

func with(r Request, edit func(*Request)) Request {
	edit(&r)
	return r
}

type want struct {
	allowed    bool
	conn       string
	res        string
	rule       string
	connPolicy string
	resPolicy  string
	identity   string
	// msg must appear in the connection or resource message.
	msg string
	// noAuth says the authenticator must not be called.
	noAuth bool
}

func TestDecide(t *testing.T) {
	f := newFixture(t)
	const ledgerAPI = "ledger/ledger-api"
	const b2l = "billing/b2l"
	worker := "system:serviceaccount:billing:worker"
	tests := []struct {
		name string
		req  Request
		want want
	}{
		// Allowed.
		{"read entry", f.ledger("b2l", "GET", "/entries/42", "ledger.read"),
			want{allowed: true, conn: ReasonMatched, res: ReasonMatched, rule: "read-entries", connPolicy: b2l, resPolicy: ledgerAPI, identity: worker}},
		{"read entry, query stripped", f.ledger("b2l", "HEAD", "/entries/42?x=1", "ledger.read"),
			want{allowed: true, conn: ReasonMatched, res: ReasonMatched, rule: "read-entries"}},
		{"token lifetime exactly at the maximum", f.ledger("at-max", "GET", "/entries/42", "ledger.read"),
			want{allowed: true, conn: ReasonMatched, res: ReasonMatched, rule: "read-entries"}},
		{"target by host", with(f.ledger("b2l", "GET", "/entries/42", "ledger.read"), func(r *Request) { r.Target = Target{Host: "ledger.example", Name: "/entries/42"} }),
			want{allowed: true, conn: ReasonMatched, res: ReasonMatched, rule: "read-entries", resPolicy: ledgerAPI}},
		{"target by host, case and trailing dot", with(f.ledger("b2l", "GET", "/entries/42", "ledger.read"), func(r *Request) { r.Target = Target{Host: "Ledger.Example.", Name: "/entries/42"} }),
			want{allowed: true, conn: ReasonMatched, res: ReasonMatched, resPolicy: ledgerAPI}},
		{"target by host and port held by the policy", with(f.ledger("b2l", "GET", "/entries/42", "ledger.read"), func(r *Request) { r.Target = Target{Host: "ledger.example:8443", Name: "/entries/42"} }),
			want{allowed: true, conn: ReasonMatched, res: ReasonMatched, resPolicy: ledgerAPI}},
		{"target by host, other port falls back to the host", with(f.ledger("b2l", "GET", "/entries/42", "ledger.read"), func(r *Request) { r.Target = Target{Host: "ledger.example:9000", Name: "/entries/42"} }),
			want{allowed: true, conn: ReasonMatched, res: ReasonMatched, resPolicy: ledgerAPI}},
		{"audit by host, any scope in reach", Request{Token: f.tokens["b2l"], Target: Target{Host: "audit.example", Name: "/log/1"}, Action: "GET"},
			want{allowed: true, conn: ReasonMatched, res: ReasonMatched, rule: "read", resPolicy: "audit/trail"}},
		{"write by namespace and policy labels", f.ledger("b2l", "PUT", "/entries/42", "ledger.write"),
			want{allowed: true, conn: ReasonMatched, res: ReasonMatched, rule: "write-entries"}},
		{"glob ** over many segments", f.ledger("b2l", "GET", "/reports/2026/03/q1.pdf", "ledger.read"),
			want{allowed: true, res: ReasonMatched, rule: "read-reports"}},
		{"glob ** over zero segments", f.ledger("b2l", "GET", "/reports", "ledger.read"),
			want{allowed: true, res: ReasonMatched, rule: "read-reports"}},
		{"glob ** after merged slashes and decoding", f.ledger("b2l", "GET", "//reports//2026/%71%31", "ledger.read"),
			want{allowed: true, res: ReasonMatched, rule: "read-reports"}},
		{"action *", f.ledger("b2l", "PATCH", "/any/thing"),
			want{allowed: true, res: ReasonMatched, rule: "any-action"}},
		{"Allow without scopes matches a request without scopes", f.ledger("silver", "GET", "/health"),
			want{allowed: true, res: ReasonMatched, rule: "allow-health", connPolicy: "billing/silver"}},
		{"policySelector without namespaceSelector: own namespace only", f.ledger("b2l", "GET", "/local/x"),
			want{allowed: false, res: ReasonNoRuleMatched}},
		{"condition over request.time and resource", f.ledger("b2l", "GET", "/timed/x"),
			want{allowed: true, res: ReasonMatched, rule: "business-hours"}},
		{"connection condition true", with(f.ledger("cond", "GET", "/health"), func(r *Request) { r.Attributes = map[string]string{"sourceIP": "10.0.0.1"} }),
			want{allowed: true, conn: ReasonMatched, res: ReasonMatched, rule: "allow-health", connPolicy: "billing/cond"}},
		{"erroring Allow does not stop a later Allow", f.ledger("b2l", "GET", "/flaky/ok"),
			want{allowed: true, res: ReasonMatched, rule: "flaky-fallback"}},
		{"erroring Allow that would match", with(f.ledger("b2l", "GET", "/flaky/x"), func(r *Request) { r.Attributes = map[string]string{"n": "4", "d": "2"} }),
			want{allowed: true, res: ReasonMatched, rule: "flaky"}},

		// Connection gate.
		{"missing credential", f.ledger("", "GET", "/entries/42", "ledger.read"),
			want{conn: ReasonMissingCredential, res: ReasonNotEvaluated, resPolicy: ledgerAPI, noAuth: true}},
		{"not a JWT", with(f.ledger("b2l", "GET", "/entries/42"), func(r *Request) { r.Token = "opaque-token" }),
			want{conn: ReasonInvalidCredential, res: ReasonNotEvaluated, msg: "three non-empty dot-separated segments", noAuth: true}},
		{"two audiences", with(f.ledger("b2l", "GET", "/entries/42"), func(r *Request) { r.Token = jwt(map[string]any{"aud": []string{audB2L, audSilver}}) }),
			want{conn: ReasonInvalidCredential, res: ReasonNotEvaluated, msg: "2 audiences", noAuth: true}},
		{"no audience", with(f.ledger("b2l", "GET", "/entries/42"), func(r *Request) { r.Token = jwt(map[string]any{"sub": "x"}) }),
			want{conn: ReasonInvalidCredential, msg: "no audience", noAuth: true}},
		{"no policy holds the audience: no review", f.ledger("nobody", "GET", "/entries/42"),
			want{conn: ReasonNoConnectionPolicy, res: ReasonNotEvaluated, msg: audNobody, noAuth: true}},
		{"credential rejected", f.ledger("rejected", "GET", "/entries/42", "ledger.read"),
			want{conn: ReasonInvalidCredential, res: ReasonNotEvaluated, connPolicy: b2l, msg: "signature does not verify"}},
		{"unclassified authenticator error rejects", f.ledger("weird", "GET", "/entries/42", "ledger.read"),
			want{conn: ReasonInvalidCredential, msg: "unclassified failure"}},
		{"review failed", f.ledger("outage", "GET", "/entries/42", "ledger.read"),
			want{conn: ReasonCredentialReviewFailed, res: ReasonNotEvaluated, connPolicy: b2l, msg: "connection refused"}},
		{"authenticator returns no review", f.ledger("nil-review", "GET", "/entries/42", "ledger.read"),
			want{conn: ReasonCredentialReviewFailed, msg: "no review"}},
		{"authenticator panics", f.ledger("boom", "GET", "/entries/42", "ledger.read"),
			want{conn: ReasonEvaluationError, res: ReasonNotEvaluated, msg: "internal error"}},
		{"review for another audience", f.ledger("wrong-aud", "GET", "/entries/42", "ledger.read"),
			want{conn: ReasonInvalidCredential, msg: "reviewed for audience"}},
		{"identity is not the policy's ServiceAccount", f.ledger("wrong-sa", "GET", "/entries/42", "ledger.read"),
			want{conn: ReasonInvalidCredential, identity: "system:serviceaccount:billing:intruder", msg: `not the policy's ServiceAccount "system:serviceaccount:billing:worker"`}},
		{"expired", f.ledger("expired", "GET", "/entries/42", "ledger.read"),
			want{conn: ReasonInvalidCredential, msg: "expired"}},
		{"lifetime over the default maximum", f.ledger("long", "GET", "/entries/42", "ledger.read"),
			want{conn: ReasonTokenLifetimeExceeded, res: ReasonNotEvaluated, msg: "2h1m0s exceeds maxTokenLifetime 1h0m0s"}},
		{"lifetime over a policy's maximum", f.ledger("strict-long", "GET", "/health"),
			want{conn: ReasonTokenLifetimeExceeded, msg: "11m0s exceeds maxTokenLifetime 10m0s"}},
		{"no iat or exp", f.ledger("legacy", "GET", "/entries/42", "ledger.read"),
			want{conn: ReasonTokenLifetimeExceeded, msg: "unbounded"}},
		{"class not reachable", Request{Token: f.tokens["b2l"], Target: Target{Namespace: "hr", Service: "people", Name: "/x"}, Action: "GET"},
			want{conn: ReasonClassNotReachable, res: ReasonNotEvaluated, resPolicy: "hr/people", msg: `class "hr"`}},
		{"scope not reachable", f.ledger("b2l", "GET", "/entries/42", "ledger.read", "ledger.delete"),
			want{conn: ReasonScopeNotReachable, msg: `"ledger.delete"`}},
		{"reach without scopes refuses any scope", f.ledger("strict", "GET", "/health", "ledger.read"),
			want{conn: ReasonScopeNotReachable}},
		{"reach without scopes allows none", f.ledger("strict", "GET", "/health"),
			want{allowed: true, conn: ReasonMatched, res: ReasonMatched}},
		{"classification above the ceiling", Request{Token: f.tokens["b2l"], Target: Target{Namespace: "ledger", Service: "vault", Name: "/x"}, Action: "GET"},
			want{conn: ReasonClassificationNotReachable, resPolicy: "ledger/vault", msg: "restricted, above the reach's maxClassification confidential"}},
		{"classification below the default ceiling (internal)", Request{Token: f.tokens["b2l"], Target: Target{Host: "audit.example", Name: "/x"}, Action: "GET", Scopes: []string{"anything"}},
			want{conn: ReasonMatched, res: ReasonNoRuleMatched}},
		{"connection condition false", with(f.ledger("cond", "GET", "/health"), func(r *Request) { r.Attributes = map[string]string{"sourceIP": "10.9.9.9"} }),
			want{conn: ReasonConditionFalse, res: ReasonNotEvaluated, msg: "condition is false"}},
		{"connection condition errors", f.ledger("cond", "GET", "/health"),
			want{conn: ReasonEvaluationError, res: ReasonNotEvaluated, msg: "sourceIP"}},

		// No target.
		{"no ResourcePolicy for the service", Request{Token: f.tokens["b2l"], Target: Target{Namespace: "ledger", Service: "nope", Name: "/x"}, Action: "GET", Scopes: []string{"not-in-any-reach"}},
			want{conn: ReasonMatched, res: ReasonNoResourcePolicy, connPolicy: b2l, msg: `service "nope"`}},
		{"no ResourcePolicy for the host", Request{Token: f.tokens["b2l"], Target: Target{Host: "nowhere.example", Name: "/x"}, Action: "GET"},
			want{conn: ReasonMatched, res: ReasonNoResourcePolicy, msg: `host "nowhere.example"`}},
		{"a named service is never judged by a host's policy", Request{Token: f.tokens["b2l"], Target: Target{Namespace: "ledger", Service: "nope", Host: "ledger.example", Name: "/entries/42"}, Action: "GET", Scopes: []string{"ledger.read"}},
			want{conn: ReasonMatched, res: ReasonNoResourcePolicy}},
		{"no target: condition still checked", Request{Token: f.tokens["cond"], Target: Target{Host: "nowhere.example"}, Action: "GET", Attributes: map[string]string{"sourceIP": "10.9.9.9"}},
			want{conn: ReasonConditionFalse, res: ReasonNotEvaluated}},
		{"no target: identity still checked", Request{Token: f.tokens["wrong-sa"], Target: Target{Host: "nowhere.example"}, Action: "GET"},
			want{conn: ReasonInvalidCredential, res: ReasonNotEvaluated}},
		{"no target: lifetime still checked", Request{Token: f.tokens["long"], Target: Target{Host: "nowhere.example"}, Action: "GET"},
			want{conn: ReasonTokenLifetimeExceeded, res: ReasonNotEvaluated}},

		// Resource gate.
		{"Deny wins over Allow", f.ledger("b2l", "GET", "/entries/13", "ledger.read"),
			want{conn: ReasonMatched, res: ReasonDeniedByRule, rule: "no-entry-13", resPolicy: ledgerAPI, msg: `"no-entry-13" matches GET /entries/13`}},
		{"Deny matches after decoding", f.ledger("b2l", "GET", "/entries/%31%33", "ledger.read"),
			want{res: ReasonDeniedByRule, rule: "no-entry-13"}},
		{"Deny on any of its scopes", f.ledger("b2l", "GET", "/entries/42", "ledger.read", "ledger.admin"),
			want{conn: ReasonMatched, res: ReasonDeniedByRule, rule: "no-admin"}},
		{"Deny naming a connection by name", f.ledger("silver", "GET", "/reports/x", "ledger.read"),
			want{res: ReasonDeniedByRule, rule: "no-silver-reports"}},
		{"erroring Deny denies", f.ledger("b2l", "GET", "/fragile/x", "ledger.read"),
			want{conn: ReasonMatched, res: ReasonEvaluationError, rule: "fragile-deny", msg: `Deny rule "fragile-deny" could not be evaluated`}},
		{"Deny condition false", with(f.ledger("b2l", "GET", "/fragile/x"), func(r *Request) { r.Attributes = map[string]string{"mode": "open"} }),
			want{conn: ReasonMatched, res: ReasonNoRuleMatched}},
		{"Deny condition true", with(f.ledger("b2l", "GET", "/fragile/x"), func(r *Request) { r.Attributes = map[string]string{"mode": "locked"} }),
			want{res: ReasonDeniedByRule, rule: "fragile-deny"}},
		{"erroring Allow does not match, and is named", f.ledger("b2l", "GET", "/flaky/x"),
			want{res: ReasonNoRuleMatched, rule: "", msg: `Allow rule "flaky" could not be evaluated`}},
		{"Allow dividing by zero does not match", with(f.ledger("b2l", "GET", "/flaky/x"), func(r *Request) { r.Attributes = map[string]string{"n": "1", "d": "0"} }),
			want{res: ReasonNoRuleMatched, msg: "division by zero"}},
		{"Allow scopes: every requested scope must be among them", f.ledger("b2l", "GET", "/entries/42", "ledger.read", "ledger.write"),
			want{conn: ReasonMatched, res: ReasonNoRuleMatched, msg: "no Allow rule matches GET /entries/42 for connection billing/b2l"}},
		{"Allow scopes: a rule with scopes matches no scopes too", f.ledger("b2l", "GET", "/entries/42"),
			want{allowed: true, res: ReasonMatched, rule: "read-entries"}},
		{"Allow without scopes refuses a request with scopes", f.ledger("silver", "GET", "/health", "ledger.read"),
			want{conn: ReasonMatched, res: ReasonNoRuleMatched}},
		{"action is exact and case-sensitive", f.ledger("b2l", "get", "/entries/42", "ledger.read"),
			want{res: ReasonNoRuleMatched}},
		{"glob * is one segment", f.ledger("b2l", "GET", "/entries/42/lines", "ledger.read"),
			want{res: ReasonNoRuleMatched}},
		{"glob * is not an empty segment", f.ledger("b2l", "GET", "/entries/", "ledger.read"),
			want{res: ReasonNoRuleMatched}},
		{"connection by name: another policy is not named", f.ledger("silver", "GET", "/entries/42", "ledger.read"),
			want{conn: ReasonMatched, res: ReasonNoRuleMatched}},
		{"selector: policy labels must match", f.ledger("silver", "PUT", "/entries/42", "ledger.write"),
			want{res: ReasonNoRuleMatched}},
		{"selector: namespace labels must match", f.ledger("other", "PUT", "/entries/42", "ledger.write"),
			want{conn: ReasonMatched, res: ReasonNoRuleMatched, connPolicy: "other/gold"}},
		{"selector: unknown namespace matches no namespaceSelector", f.ledger("ghost", "PUT", "/entries/42", "ledger.write"),
			want{conn: ReasonMatched, res: ReasonNoRuleMatched}},
		{"selector {namespaceSelector: {}} matches every namespace, known or not", f.ledger("ghost", "GET", "/health"),
			want{allowed: true, res: ReasonMatched, rule: "allow-health"}},

		// Malformed.
		{"malformed path is not evaluated", f.ledger("b2l", "GET", "/entries/../admin", "ledger.read"),
			want{conn: ReasonEvaluationError, res: ReasonNotEvaluated, msg: "resource.name", noAuth: true}},
		{"too many scopes is not evaluated", f.ledger("b2l", "GET", "/entries/1", make([]string, 65)...),
			want{conn: ReasonEvaluationError, res: ReasonNotEvaluated, msg: "scopes", noAuth: true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := f.auth.calls.Load()
			req := tt.req
			d := f.engine.Decide(context.Background(), &req)
			w := tt.want
			if d.Allowed != w.allowed {
				t.Errorf("Allowed = %v, want %v", d.Allowed, w.allowed)
			}
			if d.Allowed != (d.Connection.Allowed && d.Resource.Allowed) {
				t.Errorf("Allowed = %v with connection %v and resource %v", d.Allowed, d.Connection.Allowed, d.Resource.Allowed)
			}
			if d.Connection.Allowed != (d.Connection.Reason == ReasonMatched) || d.Resource.Allowed != (d.Resource.Reason == ReasonMatched) {
				t.Errorf("a gate is allowed exactly when its reason is Matched: %+v %+v", d.Connection, d.Resource)
			}
			check := func(what, got, want string) {
				if want != "" && got != want {
					t.Errorf("%s = %q, want %q", what, got, want)
				}
			}
			check("connection reason", d.Connection.Reason, w.conn)
			check("resource reason", d.Resource.Reason, w.res)
			check("connection policy", d.Connection.Policy, w.connPolicy)
			check("resource policy", d.Resource.Policy, w.resPolicy)
			check("identity", d.Connection.Identity, w.identity)
			if w.rule != "" || w.res == ReasonNoRuleMatched {
				check("rule", d.Resource.Rule, w.rule)
				if w.rule == "" && d.Resource.Rule != "" {
					t.Errorf("rule = %q, want none", d.Resource.Rule)
				}
			}
			if w.msg != "" && !strings.Contains(d.Connection.Message+" | "+d.Resource.Message, w.msg) {
				t.Errorf("messages %q | %q do not contain %q", d.Connection.Message, d.Resource.Message, w.msg)
			}
			if d.Connection.Reason == "" || d.Resource.Reason == "" || d.Connection.Message == "" || d.Resource.Message == "" {
				t.Errorf("every gate has a reason and a message: %+v %+v", d.Connection, d.Resource)
			}
			if req.Token != "" && (strings.Contains(d.Connection.Message, req.Token) || strings.Contains(d.Resource.Message, req.Token)) {
				t.Errorf("a message contains the token")
			}
			if calls := f.auth.calls.Load() - before; w.noAuth && calls != 0 {
				t.Errorf("authenticator called %d times, want none", calls)
			}
			if !d.Time.Equal(now) || d.ID == "" {
				t.Errorf("Time = %v, ID = %q", d.Time, d.ID)
			}
		})
	}
}

// Every reason code of both gates is reached by TestDecide's table; this
// keeps the table honest when reasons are added.
func TestDecideReachesEveryReason(t *testing.T) {
	f := newFixture(t)
	seenConn, seenRes := map[string]bool{}, map[string]bool{}
	reqs := []Request{
		f.ledger("b2l", "GET", "/entries/42", "ledger.read"),
		f.ledger("", "GET", "/x"),
		f.ledger("rejected", "GET", "/x"),
		f.ledger("outage", "GET", "/x"),
		f.ledger("nobody", "GET", "/x"),
		f.ledger("long", "GET", "/x"),
		{Token: f.tokens["b2l"], Target: Target{Namespace: "hr", Service: "people"}, Action: "GET"},
		f.ledger("b2l", "GET", "/x", "nope"),
		{Token: f.tokens["b2l"], Target: Target{Namespace: "ledger", Service: "vault"}, Action: "GET"},
		with(f.ledger("cond", "GET", "/x"), func(r *Request) { r.Attributes = map[string]string{"sourceIP": "1"} }),
		f.ledger("cond", "GET", "/x"),
		{Token: f.tokens["b2l"], Target: Target{Host: "nowhere.example"}, Action: "GET"},
		f.ledger("b2l", "GET", "/nothing"),
		f.ledger("b2l", "GET", "/entries/13"),
		f.ledger("b2l", "GET", "/fragile/x"),
	}
	for i := range reqs {
		d := f.engine.Decide(context.Background(), &reqs[i])
		seenConn[d.Connection.Reason], seenRes[d.Resource.Reason] = true, true
	}
	for _, r := range []string{ReasonMatched, ReasonMissingCredential, ReasonInvalidCredential, ReasonCredentialReviewFailed,
		ReasonNoConnectionPolicy, ReasonTokenLifetimeExceeded, ReasonClassNotReachable, ReasonScopeNotReachable,
		ReasonClassificationNotReachable, ReasonConditionFalse, ReasonEvaluationError} {
		if !seenConn[r] {
			t.Errorf("connection reason %s not reached", r)
		}
	}
	for _, r := range []string{ReasonMatched, ReasonNotEvaluated, ReasonNoResourcePolicy, ReasonNoRuleMatched, ReasonDeniedByRule, ReasonEvaluationError} {
		if !seenRes[r] {
			t.Errorf("resource reason %s not reached", r)
		}
	}
}

func TestDecideFillsDecision(t *testing.T) {
	f := newFixture(t)
	req := f.ledger("b2l", "GET", "//entries///42?limit=1", "ledger.read")
	d := f.engine.Decide(context.Background(), &req)
	if !d.Allowed {
		t.Fatalf("denied: %+v", d)
	}
	wantConn := Connection{Allowed: true, Policy: "billing/b2l", Generation: 3, Identity: "system:serviceaccount:billing:worker",
		CredentialID: "JTI=b2l", Reason: ReasonMatched, Message: msgConnMatched}
	if d.Connection != wantConn {
		t.Errorf("connection = %+v\nwant %+v", d.Connection, wantConn)
	}
	wantRes := Resource{Allowed: true, Policy: "ledger/ledger-api", Generation: 7, Rule: "read-entries", Reason: ReasonMatched, Message: msgRuleMatched}
	if d.Resource != wantRes {
		t.Errorf("resource = %+v\nwant %+v", d.Resource, wantRes)
	}
	if d.Path != "/entries/42" || !d.Time.Equal(now) || d.ID != "d-1" {
		t.Errorf("path %q, time %v, ID %q", d.Path, d.Time, d.ID)
	}
	if req.Target.Name != "//entries///42?limit=1" {
		t.Errorf("Decide modified the request: %q", req.Target.Name)
	}
	if d2 := f.engine.Decide(context.Background(), &req); d2.ID != "d-2" {
		t.Errorf("second ID = %q", d2.ID)
	}
}

func TestDecideCanceledContextIsReviewFailure(t *testing.T) {
	f := newFixture(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	req := f.ledger("b2l", "GET", "/entries/42", "ledger.read")
	if d := f.engine.Decide(ctx, &req); d.Connection.Reason != ReasonCredentialReviewFailed || d.Allowed {
		t.Errorf("decision = %+v", d)
	}
	// An authenticator that returns the bare context error is read the same.
	e := NewEngine(f.engine.store, authFunc(func(context.Context, string, string) (*credential.Review, error) {
		return nil, context.DeadlineExceeded
	}), Options{Clock: fixedClock})
	if d := e.Decide(context.Background(), &req); d.Connection.Reason != ReasonCredentialReviewFailed {
		t.Errorf("deadline: %+v", d.Connection)
	}
}

type authFunc func(ctx context.Context, token, audience string) (*credential.Review, error)

func (f authFunc) Authenticate(ctx context.Context, token, audience string) (*credential.Review, error) {
	return f(ctx, token, audience)
}

func TestDecideNilRequest(t *testing.T) {
	f := newFixture(t)
	d := f.engine.Decide(context.Background(), nil)
	if d.Allowed || d.Connection.Reason != ReasonEvaluationError || d.Resource.Reason != ReasonNotEvaluated {
		t.Errorf("decision = %+v", d)
	}
}

func TestDecideDefaults(t *testing.T) {
	f := newFixture(t)
	e := NewEngine(f.engine.store, f.auth, Options{})
	req := f.ledger("b2l", "GET", "/entries/42", "ledger.read")
	d1, d2 := e.Decide(context.Background(), &req), e.Decide(context.Background(), &req)
	if len(d1.ID) != 32 || d1.ID == d2.ID {
		t.Errorf("IDs %q and %q", d1.ID, d2.ID)
	}
	if time.Since(d1.Time) > time.Minute {
		t.Errorf("time %v is not the wall clock", d1.Time)
	}
	// The review expires 10 minutes after the fixture's clock; the real
	// clock may be far past it, so only the shape is checked here.
	if d1.Connection.Policy != "billing/b2l" {
		t.Errorf("connection = %+v", d1.Connection)
	}
}

func TestNewEngineRequiresStoreAndAuthenticator(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Error("no panic")
		}
	}()
	NewEngine(nil, nil, Options{})
}

// Decisions are made concurrently from one snapshot without locks; the race
// detector checks that nothing is shared that should not be.
func TestDecideConcurrent(t *testing.T) {
	f := newFixture(t)
	reqs := []Request{
		f.ledger("b2l", "GET", "/entries/42", "ledger.read"),
		f.ledger("b2l", "GET", "/entries/13", "ledger.read"),
		with(f.ledger("cond", "GET", "/health"), func(r *Request) { r.Attributes = map[string]string{"sourceIP": "10.0.0.1"} }),
		f.ledger("b2l", "GET", "/flaky/x"),
	}
	want := make([]*Decision, len(reqs))
	for i := range reqs {
		want[i] = f.engine.Decide(context.Background(), &reqs[i])
	}
	done := make(chan error)
	for g := range 8 {
		go func() {
			for n := range 200 {
				i := (g + n) % len(reqs)
				d := f.engine.Decide(context.Background(), &reqs[i])
				if d.Allowed != want[i].Allowed || d.Connection.Reason != want[i].Connection.Reason || d.Resource.Reason != want[i].Resource.Reason || d.Resource.Rule != want[i].Resource.Rule {
					done <- fmt.Errorf("request %d: %+v, want %+v", i, d, want[i])
					return
				}
			}
			done <- nil
		}()
	}
	for range 8 {
		if err := <-done; err != nil {
			t.Error(err)
		}
	}
}

func TestValidate(t *testing.T) {
	ok := Request{Target: Target{Namespace: "ledger", Service: "api", Name: "/x"}, Action: "GET"}
	long := strings.Repeat("a", 129)
	tests := []struct {
		name  string
		edit  func(*Request)
		field string
	}{
		{"valid", func(*Request) {}, ""},
		{"valid by host", func(r *Request) { r.Target = Target{Host: "ledger.example:8443"} }, ""},
		{"valid without name", func(r *Request) { r.Target.Name = "" }, ""},
		{"valid with bounds", func(r *Request) {
			r.Scopes = make([]string, 64)
			for i := range r.Scopes {
				r.Scopes[i] = strings.Repeat("s", 128)
			}
			r.Attributes = map[string]string{strings.Repeat("k", 128): strings.Repeat("v", 4096)}
			r.Action = strings.Repeat("A", 64)
		}, ""},
		{"no target", func(r *Request) { r.Target = Target{Name: "/x"} }, FieldResource},
		{"namespace without service", func(r *Request) { r.Target.Service = "" }, FieldResourceService},
		{"service without namespace", func(r *Request) { r.Target.Namespace = "" }, FieldResourceNamespace},
		{"namespace too long", func(r *Request) { r.Target.Namespace = strings.Repeat("n", 64) }, FieldResourceNamespace},
		{"service with a space", func(r *Request) { r.Target.Service = "a b" }, FieldResourceService},
		{"host with a control character", func(r *Request) { r.Target.Host = "a\x00b" }, FieldResourceHost},
		{"malformed path", func(r *Request) { r.Target.Name = "/a/%2F" }, FieldResourceName},
		{"no action", func(r *Request) { r.Action = "" }, FieldAction},
		{"action too long", func(r *Request) { r.Action = strings.Repeat("A", 65) }, FieldAction},
		{"action not UTF-8", func(r *Request) { r.Action = "G\xffT" }, FieldAction},
		{"too many scopes", func(r *Request) { r.Scopes = make([]string, 65) }, FieldScopes},
		{"empty scope", func(r *Request) { r.Scopes = []string{"a", ""} }, "scopes[1]"},
		{"scope *", func(r *Request) { r.Scopes = []string{"*"} }, "scopes[0]"},
		{"scope too long", func(r *Request) { r.Scopes = []string{long} }, "scopes[0]"},
		{"scope with a space", func(r *Request) { r.Scopes = []string{"a b"} }, "scopes[0]"},
		{"too many attributes", func(r *Request) {
			r.Attributes = map[string]string{}
			for i := range 65 {
				r.Attributes[fmt.Sprint(i)] = ""
			}
		}, FieldAttributes},
		{"attribute name too long", func(r *Request) { r.Attributes = map[string]string{long: ""} }, FieldAttributes},
		{"empty attribute name", func(r *Request) { r.Attributes = map[string]string{"": "x"} }, FieldAttributes},
		{"attribute value too long", func(r *Request) { r.Attributes = map[string]string{"k": strings.Repeat("v", 4097)} }, `attributes["k"]`},
		{"attribute value not UTF-8", func(r *Request) { r.Attributes = map[string]string{"k": "\xff"} }, `attributes["k"]`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := ok
			tt.edit(&req)
			err := Validate(&req)
			if tt.field == "" {
				if err != nil {
					t.Fatalf("Validate = %v", err)
				}
				return
			}
			var fe *FieldError
			if !errors.As(err, &fe) {
				t.Fatalf("Validate = %v, want a *FieldError", err)
			}
			if fe.Field != tt.field || !strings.HasPrefix(fe.Error(), tt.field+": ") || fe.Detail == "" {
				t.Errorf("field %q, error %q; want field %q", fe.Field, fe.Error(), tt.field)
			}
		})
	}
	if err := Validate(nil); err == nil {
		t.Error("Validate(nil) = nil")
	}
	req := ok
	req.Target.Name = "/a/../b"
	if err := Validate(&req); !errors.Is(err, ErrMalformedPath) {
		t.Errorf("path error %v does not wrap ErrMalformedPath", err)
	}
}

func TestCanonicalPath(t *testing.T) {
	accepted := []struct{ in, want string }{
		{"", "/"},
		{"/", "/"},
		{"/entries/42", "/entries/42"},
		{"/entries/42/", "/entries/42/"},
		{"/entries/42?x=1&y=/../", "/entries/42"},
		{"/?", "/"},
		{"//", "/"},
		{"///a////b//", "/a/b/"},
		{"/a%20b", "/a b"},
		{"/%41%62", "/Ab"},
		{"/a%3Fb", "/a?b"},
		{"/a%25", "/a%"},
		{"/a%252e%252e", "/a%2e%2e"},
		{"/%252e%252e/x", "/%2e%2e/x"},
		{"/a#b", "/a#b"},
		{"/...", "/..."},
		{"/.well-known/x", "/.well-known/x"},
		{"/a..b/c.", "/a..b/c."},
		{"/a\\b", "/a\\b"},
		{"/a;b", "/a;b"},
		{"/caf%C3%A9", "/café"},
		{"/café", "/café"},
		{"/a%2A", "/a*"},
	}
	for _, tt := range accepted {
		got, err := CanonicalPath(tt.in)
		if err != nil || got != tt.want {
			t.Errorf("CanonicalPath(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
		}
	}
	malformed := []struct{ in, why string }{
		{"entries/42", `start with "/"`},
		{"*", `start with "/"`},
		{"http://host/x", `start with "/"`},
		{"?x", `start with "/"`},
		{"/.", `"." segment`},
		{"/..", `".." segment`},
		{"/a/./b", `"." segment`},
		{"/a/../b", `".." segment`},
		{"/a/..", `".." segment`},
		{"/a//../b", `".." segment`},
		{"/a/%2e%2e/b", `".." segment`},
		{"/a/%2E/b", `"." segment`},
		{"/a/.%2e", `".." segment`},
		{"/a/..;x=1/b", `segment`},
		{"/a/..\\b", `segment`},
		{"/a/b\\..", `segment`},
		{"/a/%5C..%5Cb", `segment`},
		{"/a%2Fb", "encoded"},
		{"/a%2fb", "encoded"},
		{"/%2F%2F", "encoded"},
		{"/a%", "incomplete"},
		{"/a%4", "incomplete"},
		{"/a%zz", "invalid percent-encoding"},
		{"/a%4g/b", "invalid percent-encoding"},
		{"/a%00", "control character"},
		{"/a\x00", "control character"},
		{"/a\nb", "control character"},
		{"/a%0D%0A", "control character"},
		{"/a%7F", "control character"},
		{"/a%FF", "UTF-8"},
		{"/a\xc3", "UTF-8"},
		{"/" + strings.Repeat("a", 4096), "after decoding"},
		{"/" + strings.Repeat("%41", 4096), "before decoding"},
	}
	for _, tt := range malformed {
		got, err := CanonicalPath(tt.in)
		if err == nil || !errors.Is(err, ErrMalformedPath) || !strings.Contains(err.Error(), tt.why) {
			t.Errorf("CanonicalPath(%.40q) = %q, %v; want an error about %q", tt.in, got, err, tt.why)
		}
	}
	if got, err := CanonicalPath("/" + strings.Repeat("a", 4095)); err != nil || len(got) != 4096 {
		t.Errorf("a path of exactly the maximum length: %v", err)
	}
}

func TestCanonicalPathDoesNotAllocateWhenCanonical(t *testing.T) {
	if n := testing.AllocsPerRun(100, func() { _, _ = CanonicalPath("/entries/42/lines?x=1") }); n != 0 {
		t.Errorf("%v allocations", n)
	}
}

func TestPeekAudience(t *testing.T) {
	enc := func(payload string) string {
		return "eyJhbGciOiJSUzI1NiJ9." + base64URL(payload) + ".c2ln"
	}
	accepted := []struct{ token, want string }{
		{enc(`{"aud":"a"}`), "a"},
		{enc(`{"aud":["a"]}`), "a"},
		{enc(` { "iss" : "x" , "aud" : [ "a" ] , "exp" : 1 } `), "a"},
		{enc(`{"kubernetes.io":{"aud":["x","y"],"n":[1,{"aud":"z"}]},"aud":"a","s":"\"aud\":\"q\""}`), "a"},
		{enc(`{"\u0061ud":"a"}`), "a"},
		{enc(`{"aud":"\u0061\/b"}`), "a/b"},
		{enc(`{"aud":["sallyport.dev/ns/name"],"x":null,"y":true,"z":-1.5e3}`), "sallyport.dev/ns/name"},
	}
	for _, tt := range accepted {
		got, err := peekAudience(tt.token)
		if err != nil || got != tt.want {
			t.Errorf("peekAudience(%q) = %q, %v; want %q", tt.token, got, err, tt.want)
		}
	}
	refused := []struct{ token, why string }{
		{"", "segments"},
		{"a.b", "segments"},
		{"a.b.c.d", "segments"},
		{"." + base64URL(`{"aud":"a"}`) + ".s", "segments"},
		{"h." + base64URL(`{"aud":"a"}`) + ".", "segments"},
		{"h.!!!.s", "base64url"},
		{"h." + base64URL(`{"aud":"a"}`) + "=.s", "base64url"},
		{enc(`{"aud":"a"`), "not JSON"},
		{enc(`["aud","a"]`), "not a JSON object"},
		{enc(`"aud"`), "not a JSON object"},
		{enc(`{}`), "no audience"},
		{enc(`{"aud":null}`), "no audience"},
		{enc(`{"aud":[]}`), "no audience"},
		{enc(`{"aud":""}`), "empty audience"},
		{enc(`{"aud":[""]}`), "empty audience"},
		{enc(`{"AUD":"a"}`), "no audience"},
		{enc(`{"aud":["a","b"]}`), "2 audiences"},
		{enc(`{"aud":["a","a"]}`), "2 audiences"},
		{enc(`{"aud":"a","aud":"b"}`), "twice"},
		{enc(`{"aud":"a","\u0061ud":"a"}`), "twice"},
		{enc(`{"aud":1}`), "neither"},
		{enc(`{"aud":{"a":1}}`), "neither"},
		{enc(`{"aud":[1]}`), "not a string"},
		{enc(`{"aud":"` + strings.Repeat("a", 513) + `"}`), "513 bytes"},
		{"h." + strings.Repeat("A", 16<<10) + ".s", "bytes long"},
	}
	for _, tt := range refused {
		got, err := peekAudience(tt.token)
		if err == nil || !errors.Is(err, errNotJWT) || !strings.Contains(err.Error(), tt.why) {
			t.Errorf("peekAudience(%.60q) = %q, %v; want an error about %q", tt.token, got, err, tt.why)
		}
	}
}

func base64URL(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }

// A panic after the connection gate decided denies on the resource gate.
func TestRecoverPanicInResourceGate(t *testing.T) {
	e := NewEngine(newFixture(t).engine.store, newFakeAuth(), Options{})
	d := &Decision{Allowed: true, Connection: Connection{Allowed: true, Reason: ReasonMatched}, Resource: Resource{Allowed: true, Policy: "ledger/api"}}
	func() {
		defer e.recoverPanic(d)
		panic("in a rule")
	}()
	if d.Allowed || !d.Connection.Allowed || d.Resource.Allowed || d.Resource.Reason != ReasonEvaluationError || d.Resource.Policy != "ledger/api" {
		t.Errorf("decision = %+v", d)
	}
}

func TestEvalWhenRecoversPanics(t *testing.T) {
	ok, err := evalWhen(nil, nil) // a nil program panics inside Eval
	if ok || err == nil || !strings.Contains(err.Error(), "panicked") {
		t.Errorf("evalWhen = %v, %v", ok, err)
	}
}

func TestNormalizeHost(t *testing.T) {
	for in, want := range map[string]string{
		"":                     "",
		"ledger.example":       "ledger.example",
		"Ledger.EXAMPLE":       "ledger.example",
		"ledger.example.":      "ledger.example",
		"Ledger.Example.:8443": "ledger.example:8443",
		"ledger.example:8443":  "ledger.example:8443",
		"[::1]:8443":           "[::1]:8443",
		"::1":                  "::1",
	} {
		if got := normalizeHost(in); got != want {
			t.Errorf("normalizeHost(%q) = %q, want %q", in, got, want)
		}
	}
	for in, want := range map[string]string{"a:1": "a", "a:65535": "a", "a.b:80": "a.b"} {
		if h, _, ok := splitPort(in); !ok || h != want {
			t.Errorf("splitPort(%q) = %q, %v", in, h, ok)
		}
	}
	for _, in := range []string{"a", "a:", "a:123456", "a:8x", ":80", "::1", "[::1]:80"} {
		if _, _, ok := splitPort(in); ok {
			t.Errorf("splitPort(%q) splits", in)
		}
	}
}

func TestTruncate(t *testing.T) {
	if got := truncate("short", 10); got != "short" {
		t.Errorf("got %q", got)
	}
	if got := truncate("abcdef", 3); got != "abc…" {
		t.Errorf("got %q", got)
	}
	// "é" is two bytes: a cut inside it moves before it.
	if got := truncate("aé", 2); got != "a…" {
		t.Errorf("got %q", got)
	}
}

func TestNewDecisionID(t *testing.T) {
	seen := map[string]bool{}
	for range 1000 {
		id := NewDecisionID()
		if len(id) != 32 || strings.Trim(id, "0123456789abcdef") != "" || seen[id] {
			t.Fatalf("ID %q (seen before: %v)", id, seen[id])
		}
		seen[id] = true
	}
}
