package store

import (
	"fmt"
	"runtime"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/sallyport/sallyport/api/v1alpha1"
	"github.com/sallyport/sallyport/internal/policy"
)

// scaleSizes are the store sizes of the scale runs (docs/benchmarks.md,
// "Scale").
var scaleSizes = []int{10, 100, 1_000, 10_000}

// benchCreated is the creation time of every benchmark policy, fixed so
// that Build's age order does not depend on the clock.
var benchCreated = metav1.NewTime(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))

// conditions says how the CEL conditions of the benchmark policies relate.
type conditions int

const (
	// templated policies all have the same conditions, as when one
	// template makes a policy per namespace: they compile once.
	templated conditions = iota
	// distinct conditions differ from every other in the store (in a
	// literal, so each has the same shape and cost as its templated form).
	distinct
)

func (c conditions) String() string {
	if c == distinct {
		return "distinct"
	}
	return "templated"
}

// benchConnectionWith is the ConnectionPolicy of namespace i: one reach
// with two scopes and a CEL condition, the shape of the decision benchmarks.
func benchConnectionWith(i int, conds conditions) *v1alpha1.ConnectionPolicy {
	ns := fmt.Sprintf("team-%05d", i)
	when := `connection.age < duration("1h")`
	if conds == distinct {
		when = fmt.Sprintf(`connection.age < duration("%ds")`, 3600+i)
	}
	return &v1alpha1.ConnectionPolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "client", UID: types.UID(ns + "/client"), Generation: 1, CreationTimestamp: benchCreated},
		Spec: v1alpha1.ConnectionPolicySpec{
			ServiceAccountName: "worker",
			MaxTokenLifetime:   metav1.Duration{Duration: time.Hour},
			Reach: []v1alpha1.Reach{{
				Class: "ledger", Scopes: []v1alpha1.Scope{"ledger.read", "ledger.write"},
				MaxClassification: v1alpha1.ClassificationConfidential,
			}},
			When: v1alpha1.Expression(when),
		},
	}
}

// benchResourceWith is the ResourcePolicy of namespace i with ten rules: two
// Deny rules and eight Allow rules over two actions, two path patterns and
// a scope each, every rule naming the namespace's connection, and three of
// them (one Deny, two Allow) with a CEL condition.
func benchResourceWith(i int, conds conditions) *v1alpha1.ResourcePolicy {
	ns := fmt.Sprintf("team-%05d", i)
	night := `request.time.getHours() < 2`
	source := func(int) string { return `request.attributes["sourceIP"].startsWith("10.")` }
	if conds == distinct {
		night = fmt.Sprintf(`request.time.getHours() < %d`, 2+i)
		source = func(j int) string {
			return fmt.Sprintf(`request.attributes["sourceIP"].startsWith("10.%d.%d.")`, i, j)
		}
	}
	client := []v1alpha1.ConnectionRef{{Namespace: ns, Name: "client"}}
	rules := make([]v1alpha1.Rule, 0, 10)
	rules = append(rules,
		v1alpha1.Rule{Name: "no-archive-delete", Effect: v1alpha1.EffectDeny, Actions: []string{"DELETE"}, Resources: []string{"/archive/**"}},
		v1alpha1.Rule{Name: "no-night-writes", Effect: v1alpha1.EffectDeny, Actions: []string{"PUT", "POST"}, Resources: []string{"/entries/*", "/reports/**"},
			Connections: client, When: v1alpha1.Expression(night)},
	)
	for j := range 8 {
		r := v1alpha1.Rule{
			Name: fmt.Sprintf("allow-%d", j), Effect: v1alpha1.EffectAllow,
			Actions:   []string{"GET", "HEAD"},
			Resources: []string{fmt.Sprintf("/area-%d/*", j), fmt.Sprintf("/area-%d/reports/**", j)},
			Scopes:    []v1alpha1.Scope{"ledger.read"}, Connections: client,
		}
		if j < 2 {
			r.When = v1alpha1.Expression(source(j))
		}
		rules = append(rules, r)
	}
	return &v1alpha1.ResourcePolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "api", UID: types.UID(ns + "/api"), Generation: 1, CreationTimestamp: benchCreated},
		Spec: v1alpha1.ResourcePolicySpec{
			Service: "api", Class: "ledger", Classification: v1alpha1.ClassificationInternal, Rules: rules,
		},
	}
}

// loadedBuilder returns a builder holding n ConnectionPolicies and n
// ResourcePolicies, compiled, every condition distinct.
func loadedBuilder(b *testing.B, n int) *Builder {
	b.Helper()
	bld := NewBuilder(policy.NewCompiler(policy.CompilerOptions{}))
	for i := range n {
		if err := bld.UpsertConnection(benchConnectionWith(i, distinct)); err != nil {
			b.Fatal(err)
		}
		if err := bld.UpsertResource(benchResourceWith(i, distinct)); err != nil {
			b.Fatal(err)
		}
	}
	return bld
}

// BenchmarkBuild is the snapshot build after a change: the builder holds n
// compiled ConnectionPolicies and n ResourcePolicies, one ResourcePolicy is
// recompiled (a new generation with one condition edited, as after an
// edit; its other conditions are unchanged and not compiled again) and
// Build indexes them all into a new snapshot. This is what a policy change
// costs before the new snapshot serves.
func BenchmarkBuild(b *testing.B) {
	for _, n := range scaleSizes {
		b.Run(fmt.Sprintf("policies=%d", n), func(b *testing.B) {
			bld := loadedBuilder(b, n)
			rp := benchResourceWith(n/2, distinct)
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				rp.Generation++
				rp.Spec.Rules[1].When = v1alpha1.Expression(fmt.Sprintf(`request.time.getHours() < %d`, rp.Generation))
				if err := bld.UpsertResource(rp); err != nil {
					b.Fatal(err)
				}
				if s := bld.Build(); len(s.status) != 2*n {
					b.Fatalf("snapshot has %d statuses, want %d", len(s.status), 2*n)
				}
			}
		})
	}
}

// BenchmarkBuildFromScratch compiles n ConnectionPolicies and n
// ResourcePolicies, every condition distinct (the worst case: identical
// conditions compile once), into an empty builder and builds the first
// snapshot, as a replica does when it starts. ns/op is the whole load;
// ns/pair is per ConnectionPolicy and ResourcePolicy pair.
func BenchmarkBuildFromScratch(b *testing.B) {
	for _, n := range scaleSizes {
		b.Run(fmt.Sprintf("policies=%d", n), func(b *testing.B) {
			conns := make([]*v1alpha1.ConnectionPolicy, n)
			ress := make([]*v1alpha1.ResourcePolicy, n)
			for i := range n {
				conns[i], ress[i] = benchConnectionWith(i, distinct), benchResourceWith(i, distinct)
			}
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				bld := NewBuilder(policy.NewCompiler(policy.CompilerOptions{}))
				for i := range n {
					if err := bld.UpsertConnection(conns[i]); err != nil {
						b.Fatal(err)
					}
					if err := bld.UpsertResource(ress[i]); err != nil {
						b.Fatal(err)
					}
				}
				if s := bld.Build(); len(s.status) != 2*n {
					b.Fatalf("snapshot has %d statuses, want %d", len(s.status), 2*n)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(n), "ns/pair")
		})
	}
}

// BenchmarkBuildMemory reports the live heap that compiled policies hold:
// the heap after a GC with n ResourcePolicies of ten rules each compiled
// into a builder and built into a snapshot, minus the heap before, per
// policy (heap-B/policy). The compiler and its CEL environments are made
// before the first reading, so they are not counted: they are shared by
// all policies. The ConnectionPolicies are measured the same way
// (heap-B/connection). With templated conditions every policy repeats the
// same ones, which compile once (their cost is spread over the n
// policies); with distinct conditions each is compiled on its own, the
// worst case. ns/op is meaningless here.
func BenchmarkBuildMemory(b *testing.B) {
	for _, conds := range []conditions{distinct, templated} {
		for _, n := range scaleSizes {
			b.Run(fmt.Sprintf("conditions=%s/policies=%d", conds, n), func(b *testing.B) {
				ress := make([]*v1alpha1.ResourcePolicy, n)
				conns := make([]*v1alpha1.ConnectionPolicy, n)
				for i := range n {
					ress[i], conns[i] = benchResourceWith(i, conds), benchConnectionWith(i, conds)
				}
				var perRes, perConn float64
				for b.Loop() {
					perRes = heapPerPolicy(b, n, func(bld *Builder, i int) error { return bld.UpsertResource(ress[i]) })
					perConn = heapPerPolicy(b, n, func(bld *Builder, i int) error { return bld.UpsertConnection(conns[i]) })
				}
				b.ReportMetric(perRes, "heap-B/policy")
				b.ReportMetric(perConn, "heap-B/connection")
			})
		}
	}
}

// heapPerPolicy returns the live heap per policy that n upserts and a Build
// leave behind.
func heapPerPolicy(b *testing.B, n int, upsert func(*Builder, int) error) float64 {
	b.Helper()
	bld := NewBuilder(policy.NewCompiler(policy.CompilerOptions{}))
	// Compile one policy of each kind into a throwaway builder first, so
	// that lazily built shared state (CEL environments, caches) exists
	// before the first reading.
	warm := NewBuilder(policy.NewCompiler(policy.CompilerOptions{}))
	if err := upsert(warm, 0); err != nil {
		b.Fatal(err)
	}
	before := liveHeap()
	for i := range n {
		if err := upsert(bld, i); err != nil {
			b.Fatal(err)
		}
	}
	snap := bld.Build()
	after := liveHeap()
	runtime.KeepAlive(bld)
	runtime.KeepAlive(snap)
	runtime.KeepAlive(warm)
	return float64(after-before) / float64(n)
}

// liveHeap returns the bytes of live heap objects after a full collection.
func liveHeap() int64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return int64(m.HeapAlloc)
}
