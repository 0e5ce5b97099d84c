package store

import (
	"testing"

	"k8s.io/apimachinery/pkg/types"

	"github.com/sallyport/sallyport/api/v1alpha1"
	"github.com/sallyport/sallyport/internal/policy"
)

// A recompiled policy keeps counting where its previous generation left
// off: rules by name and effect, reach entries by class, DryRun shadow
// counts only within one generation. A recreated policy starts anew.
func TestUsageCarriesAcrossGenerations(t *testing.T) {
	b := NewBuilder(policy.NewCompiler(policy.CompilerOptions{}))
	rules := func(s *v1alpha1.ResourcePolicySpec, names ...string) {
		base := s.Rules[0]
		s.Rules = nil
		for _, n := range names {
			r := base
			r.Name = n
			s.Rules = append(s.Rules, r)
		}
	}
	upsertRes := func(gen int64, uid types.UID, edit func(*v1alpha1.ResourcePolicySpec)) *policy.Resource {
		t.Helper()
		rp := resPolicy("ledger", "api", gen, 0, edit)
		rp.UID = uid
		if err := b.UpsertResource(rp); err != nil {
			t.Fatal(err)
		}
		mode := rp.Spec.Enforcement
		if mode == "" {
			mode = v1alpha1.EnforcementEnforce
		}
		res, _ := b.Build().ResourceByService(mode, "ledger", "api")
		if res == nil {
			t.Fatal("not served")
		}
		return res
	}
	rule := func(r *policy.Resource, name string) *policy.Rule {
		for _, x := range r.Allow {
			if x.Name == name {
				return x
			}
		}
		t.Fatalf("no rule %s", name)
		return nil
	}

	g1 := upsertRes(1, "u1", func(s *v1alpha1.ResourcePolicySpec) { rules(s, "read", "list") })
	rule(g1, "read").Usage.Mark(epoch)
	rule(g1, "list").Usage.Mark(epoch)
	g2 := upsertRes(2, "u1", func(s *v1alpha1.ResourcePolicySpec) { rules(s, "read", "audit") })
	if rule(g2, "read").Usage != rule(g1, "read").Usage {
		t.Error("rule read lost its counter in generation 2")
	}
	if n, _ := rule(g2, "audit").Usage.Load(); n != 0 {
		t.Errorf("new rule audit starts at %d uses", n)
	}
	g3 := upsertRes(3, "u2", func(s *v1alpha1.ResourcePolicySpec) { rules(s, "read") })
	if n, _ := rule(g3, "read").Usage.Load(); n != 0 {
		t.Errorf("recreated policy's rule starts at %d uses", n)
	}

	dry := func(s *v1alpha1.ResourcePolicySpec) { s.Enforcement = v1alpha1.EnforcementDryRun }
	d4 := upsertRes(4, "u2", dry)
	d4.Shadowed.Mark(epoch, true, false)
	relabel := resPolicy("ledger", "api", 4, 0, dry)
	relabel.UID, relabel.Labels = "u2", map[string]string{"team": "x"}
	if err := b.UpsertResource(relabel); err != nil {
		t.Fatal(err)
	}
	d4b, _ := b.Build().ResourceByService(v1alpha1.EnforcementDryRun, "ledger", "api")
	if d4b == d4 || d4b.Shadowed != d4.Shadowed {
		t.Error("a relabelled DryRun policy lost its shadow counts")
	}
	d5 := upsertRes(5, "u2", dry)
	if c := d5.Shadowed.Load(); c.Decisions != 0 {
		t.Errorf("generation 5 starts with %d shadow decisions, want 0", c.Decisions)
	}

	cp := connPolicy("billing", "c", 1, 0, nil)
	if err := b.UpsertConnection(cp); err != nil {
		t.Fatal(err)
	}
	c1, _ := b.Build().ConnectionByAudience(v1alpha1.EnforcementEnforce, policy.DefaultAudience("billing", "c"))
	cp2 := connPolicy("billing", "c", 2, 0, func(s *v1alpha1.ConnectionPolicySpec) {
		s.Reach = append(s.Reach, v1alpha1.Reach{Class: "audit"})
	})
	if err := b.UpsertConnection(cp2); err != nil {
		t.Fatal(err)
	}
	c2, _ := b.Build().ConnectionByAudience(v1alpha1.EnforcementEnforce, policy.DefaultAudience("billing", "c"))
	if c2.Reach["ledger"].Usage != c1.Reach["ledger"].Usage || c2.Reach["audit"].Usage == nil {
		t.Error("reach entry ledger lost its counter in generation 2")
	}
}
