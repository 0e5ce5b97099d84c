package decision

import (
	"context"
	"fmt"
	"testing"

	"github.com/sallyport/sallyport/api/v1alpha1"
)

// conditionsIn says which pairs of a benchmark store carry CEL conditions.
type conditionsIn int

const (
	noConditions conditionsIn = iota
	// firstPair: only the pair the request targets, so that a large store
	// compiles quickly.
	firstPair
	// everyPair: every pair, as a store of real policies would.
	everyPair
)

// benchFixture loads n ConnectionPolicies and n ResourcePolicies, each pair
// in its own namespace with its own audience and service, and returns an
// engine with a fake authenticator that answers like a warm review cache,
// and an allowed request for pair 0. Every pair carries what a typical
// policy has: a Deny rule that does not match, an Allow rule before the one
// that matches, and, as cond says, conditions on both gates.
func benchFixture(b *testing.B, n int, cond conditionsIn) (*Engine, *Request) {
	b.Helper()
	conns := make([]*v1alpha1.ConnectionPolicy, 0, n)
	res := make([]*v1alpha1.ResourcePolicy, 0, n)
	for i := range n {
		ns := fmt.Sprintf("team-%05d", i)
		reach := []v1alpha1.Reach{{Class: "ledger", Scopes: scopes("ledger.read", "ledger.write"), MaxClassification: v1alpha1.ClassificationConfidential}}
		rules := []v1alpha1.Rule{
			{Name: "no-archive-delete", Effect: v1alpha1.EffectDeny, Actions: []string{"DELETE"}, Resources: []string{"/archive/**"}},
			{Name: "write", Effect: v1alpha1.EffectAllow, Actions: []string{"PUT", "POST"}, Resources: []string{"/entries/*"},
				Scopes: scopes("ledger.write"), Connections: []v1alpha1.ConnectionRef{{Namespace: ns, Name: "client"}}},
			{Name: "read", Effect: v1alpha1.EffectAllow, Actions: []string{"GET"}, Resources: []string{"/entries/*", "/reports/**"},
				Scopes: scopes("ledger.read"), Connections: []v1alpha1.ConnectionRef{{Namespace: ns, Name: "client"}}},
		}
		var connWhen v1alpha1.Expression
		if cond == everyPair || (cond == firstPair && i == 0) {
			// Each pair's conditions differ (in a literal), so that n pairs
			// hold n compiled programs of each, not one shared by all
			// (identical conditions compile once); pair 0's allow the
			// benchmark request.
			connWhen = v1alpha1.Expression(fmt.Sprintf(`connection.age < duration("%ds")`, 3600+i))
			rules[2].When = `request.attributes["sourceIP"].startsWith("10.")`
			if i > 0 {
				rules[2].When = v1alpha1.Expression(fmt.Sprintf(`request.attributes["sourceIP"].startsWith("10.%d.")`, i))
			}
		}
		conns = append(conns, connPolicy(ns, "client", "worker", map[string]string{"tier": "gold"}, reach, func(s *v1alpha1.ConnectionPolicySpec) { s.When = connWhen }))
		res = append(res, resPolicy(ns, "api", "ledger", v1alpha1.ClassificationInternal, nil, rules...))
	}
	st := newStore(b, nil, conns, res)

	auth := newFakeAuth()
	aud := "sallyport.dev/team-00000/client"
	tok := tokenFor(aud, "bench")
	auth.set(tok, fakeAnswer{rev: review("team-00000", "worker", aud, "bench")})
	e := NewEngine(st, auth, Options{Clock: fixedClock})
	req := &Request{
		Token:      tok,
		Target:     Target{Namespace: "team-00000", Service: "api", Name: "/reports/2026/q1"},
		Action:     "GET",
		Scopes:     []string{"ledger.read"},
		Attributes: map[string]string{"sourceIP": "10.1.2.3"},
	}
	if d := e.Decide(context.Background(), req); !d.Allowed || d.Resource.Rule != "read" {
		b.Fatalf("benchmark request is not allowed: %+v", d)
	}
	return e, req
}

func BenchmarkDecide(b *testing.B) {
	for _, n := range []int{10, 100, 1_000, 10_000} {
		b.Run(fmt.Sprintf("policies=%d", n), func(b *testing.B) {
			e, req := benchFixture(b, n, firstPair)
			ctx := context.Background()
			b.ReportAllocs()
			for b.Loop() {
				if d := e.Decide(ctx, req); !d.Allowed {
					b.Fatal("denied")
				}
			}
		})
	}
}

// BenchmarkDecideWithoutConditions is the engine's own cost: the same
// request against policies without CEL conditions.
func BenchmarkDecideWithoutConditions(b *testing.B) {
	e, req := benchFixture(b, 10, noConditions)
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if d := e.Decide(ctx, req); !d.Allowed {
			b.Fatal("denied")
		}
	}
}

func BenchmarkDecideParallel(b *testing.B) {
	e, req := benchFixture(b, 1_000, firstPair)
	ctx := context.Background()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if d := e.Decide(ctx, req); !d.Allowed {
				b.Error("denied")
				return
			}
		}
	})
}

// BenchmarkDecideScale is the scale run's decision latency (docs/benchmarks.md,
// "Scale"): like BenchmarkDecide, but every pair of the store carries its
// CEL conditions, so the store holds n compiled ConnectionPolicies and n
// ResourcePolicies with their programs, and the collector has all of them
// to scan. Loading 10,000 pairs takes several seconds.
func BenchmarkDecideScale(b *testing.B) {
	for _, n := range []int{10, 100, 1_000, 10_000} {
		b.Run(fmt.Sprintf("policies=%d", n), func(b *testing.B) {
			e, req := benchFixture(b, n, everyPair)
			ctx := context.Background()
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				if d := e.Decide(ctx, req); !d.Allowed {
					b.Fatal("denied")
				}
			}
		})
	}
}

func BenchmarkCanonicalPath(b *testing.B) {
	for _, p := range []string{"/entries/42?limit=10", "//entries/%34%32/caf%C3%A9"} {
		b.Run(p, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := CanonicalPath(p); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkPeekAudience(b *testing.B) {
	tok := tokenFor("sallyport.dev/team-00000/client", "bench")
	b.ReportAllocs()
	for b.Loop() {
		if _, err := peekAudience(tok); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkNewDecisionID(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		_ = NewDecisionID()
	}
}
