package usage

import (
	"context"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/sallyport/sallyport/api/v1alpha1"
	"github.com/sallyport/sallyport/internal/policy"
	"github.com/sallyport/sallyport/internal/store"
)

// The helpers below are exported for the envtest tests in package
// usage_test, which cannot be in package usage: internal/testenv imports
// internal/manager, which imports this package.

var (
	Encode    = encode
	Decode    = decode
	NewReport = newReport
	ShardOf   = shardOf
)

// Adopt is what Start does first: read the predecessor's report.
func (r *Reporter) Adopt(ctx context.Context) error {
	return r.adopt(ctx)
}

// ResPolicy is a ResourcePolicy with one allow rule per name.
func ResPolicy(ns, name string, uid types.UID, gen int64, dryRun bool, rules ...string) *v1alpha1.ResourcePolicy {
	rp := &v1alpha1.ResourcePolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, UID: uid, Generation: gen,
			CreationTimestamp: metav1.NewTime(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))},
		Spec: v1alpha1.ResourcePolicySpec{Service: name, Class: "ledger", Classification: v1alpha1.ClassificationInternal},
	}
	for _, r := range rules {
		rp.Spec.Rules = append(rp.Spec.Rules, v1alpha1.Rule{
			Name: r, Effect: v1alpha1.EffectAllow, Actions: []string{"GET"}, Resources: []string{"/" + r + "/**"},
			Connections: []v1alpha1.ConnectionRef{{NamespaceSelector: &v1alpha1.LabelSelector{}}},
		})
	}
	if dryRun {
		rp.Spec.Enforcement = v1alpha1.EnforcementDryRun
	}
	return rp
}

// ConnPolicy is a ConnectionPolicy reaching the classes.
func ConnPolicy(ns, name string, uid types.UID, gen int64, dryRun bool, classes ...string) *v1alpha1.ConnectionPolicy {
	cp := &v1alpha1.ConnectionPolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, UID: uid, Generation: gen,
			CreationTimestamp: metav1.NewTime(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))},
		Spec: v1alpha1.ConnectionPolicySpec{ServiceAccountName: name},
	}
	for _, c := range classes {
		cp.Spec.Reach = append(cp.Spec.Reach, v1alpha1.Reach{Class: v1alpha1.ResourceClass(c)})
	}
	if dryRun {
		cp.Spec.Enforcement = v1alpha1.EnforcementDryRun
	}
	return cp
}

// BuildStore compiles the policies with the real compiler into a
// published, ready store.
func BuildStore(t testing.TB, conns []*v1alpha1.ConnectionPolicy, res []*v1alpha1.ResourcePolicy) *store.Store {
	t.Helper()
	b := store.NewBuilder(policy.NewCompiler(policy.CompilerOptions{}))
	for _, cp := range conns {
		if err := b.UpsertConnection(cp); err != nil {
			t.Fatalf("compile ConnectionPolicy %s/%s: %v", cp.Namespace, cp.Name, err)
		}
	}
	for _, rp := range res {
		if err := b.UpsertResource(rp); err != nil {
			t.Fatalf("compile ResourcePolicy %s/%s: %v", rp.Namespace, rp.Name, err)
		}
	}
	s := store.New()
	s.Publish(b.Build(), true)
	return s
}

// ServedResource is the compiled ResourcePolicy serving ns/service.
func ServedResource(t testing.TB, st *store.Store, e v1alpha1.Enforcement, ns, service string) *policy.Resource {
	t.Helper()
	r, ok := st.Snapshot().ResourceByService(e, ns, service)
	if !ok {
		t.Fatalf("ResourcePolicy %s/%s does not serve as %s", ns, service, e)
	}
	return r
}

// ServedRule is the compiled rule name of the enforced ns/service.
func ServedRule(t testing.TB, st *store.Store, ns, service, name string) *policy.Rule {
	t.Helper()
	r := ServedResource(t, st, v1alpha1.EnforcementEnforce, ns, service)
	for x := range r.Rules() {
		if x.Name == name {
			return x
		}
	}
	t.Fatalf("ResourcePolicy %s/%s has no rule %s", ns, service, name)
	return nil
}

// ServedConnection is the compiled ConnectionPolicy ns/name.
func ServedConnection(t testing.TB, st *store.Store, e v1alpha1.Enforcement, ns, name string) *policy.Connection {
	t.Helper()
	c, ok := st.Snapshot().ConnectionByAudience(e, policy.DefaultAudience(ns, name))
	if !ok {
		t.Fatalf("ConnectionPolicy %s/%s does not serve as %s", ns, name, e)
	}
	return c
}
