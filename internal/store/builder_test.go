package store

import (
	"errors"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/sallyport/sallyport/api/v1alpha1"
	"github.com/sallyport/sallyport/internal/policy"
)

var epoch = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// meta names an object; age is how many hours after epoch it was created.
func meta(ns, name string, gen int64, age int) metav1.ObjectMeta {
	return metav1.ObjectMeta{
		Namespace: ns, Name: name, UID: types.UID(ns + "/" + name), Generation: gen,
		CreationTimestamp: metav1.NewTime(epoch.Add(time.Duration(age) * time.Hour)),
	}
}

func connPolicy(ns, name string, gen int64, age int, edit func(*v1alpha1.ConnectionPolicySpec)) *v1alpha1.ConnectionPolicy {
	cp := &v1alpha1.ConnectionPolicy{
		ObjectMeta: meta(ns, name, gen, age),
		Spec: v1alpha1.ConnectionPolicySpec{
			ServiceAccountName: "worker",
			Reach:              []v1alpha1.Reach{{Class: "ledger"}},
		},
	}
	if edit != nil {
		edit(&cp.Spec)
	}
	return cp
}

func resPolicy(ns, name string, gen int64, age int, edit func(*v1alpha1.ResourcePolicySpec)) *v1alpha1.ResourcePolicy {
	rp := &v1alpha1.ResourcePolicy{
		ObjectMeta: meta(ns, name, gen, age),
		Spec: v1alpha1.ResourcePolicySpec{
			Service: name, Class: "ledger", Classification: v1alpha1.ClassificationInternal,
			Rules: []v1alpha1.Rule{{
				Name: "read", Effect: v1alpha1.EffectAllow, Actions: []string{"GET"}, Resources: []string{"/**"},
				Connections: []v1alpha1.ConnectionRef{{NamespaceSelector: &v1alpha1.LabelSelector{}}},
			}},
		},
	}
	if edit != nil {
		edit(&rp.Spec)
	}
	return rp
}

func connRef(ns, name string) Ref {
	return Ref{KindConnection, types.NamespacedName{Namespace: ns, Name: name}}
}

func resRef(ns, name string) Ref {
	return Ref{KindResource, types.NamespacedName{Namespace: ns, Name: name}}
}

func newBuilder() *Builder { return NewBuilder(policy.NewCompiler(policy.CompilerOptions{})) }

func mustStatus(t *testing.T, s *Snapshot, ref Ref) Status {
	t.Helper()
	st, ok := s.Status(ref)
	if !ok {
		t.Fatalf("no status for %v", ref)
	}
	return st
}

func audience(s string) func(*v1alpha1.ConnectionPolicySpec) {
	return func(spec *v1alpha1.ConnectionPolicySpec) { spec.Audience = s }
}

const enforce, dryRun = v1alpha1.EnforcementEnforce, v1alpha1.EnforcementDryRun

func TestBuilderKeepsLastGoodConnection(t *testing.T) {
	b := newBuilder()
	ref := connRef("billing", "b2l")
	aud := "sallyport.dev/billing/b2l"

	if err := b.UpsertConnection(connPolicy("billing", "b2l", 1, 0, nil)); err != nil {
		t.Fatal(err)
	}
	s1 := b.Build()
	if c, ok := s1.ConnectionByAudience(enforce, aud); !ok || c.Generation != 1 {
		t.Fatalf("generation 1 not served: %v %v", c, ok)
	}
	if st := mustStatus(t, s1, ref); st.Generation != 1 || st.Served != 1 || st.Err != nil || st.Audience != aud ||
		st.UID != "billing/b2l" || st.Conflict != nil || st.Summary != (policy.Summary{Rules: 1}) {
		t.Errorf("status = %+v", st)
	}

	// Generation 2 does not compile: generation 1 keeps serving.
	err := b.UpsertConnection(connPolicy("billing", "b2l", 2, 0, func(s *v1alpha1.ConnectionPolicySpec) {
		s.When = "request.action =="
		s.Reach = append(s.Reach, v1alpha1.Reach{Class: "audit"})
	}))
	var ie *policy.InvalidError
	if !errors.As(err, &ie) || ie.Errs[0].Field != "spec.when" {
		t.Fatalf("UpsertConnection(gen 2) = %v, want an InvalidError on spec.when", err)
	}
	s2 := b.Build()
	if s2.Version <= s1.Version {
		t.Errorf("versions %d then %d", s1.Version, s2.Version)
	}
	c, ok := s2.ConnectionByAudience(enforce, aud)
	if !ok || c.Generation != 1 || len(c.Reach) != 1 {
		t.Fatalf("served %+v, %v; want generation 1", c, ok)
	}
	st := mustStatus(t, s2, ref)
	if st.Generation != 2 || st.Served != 1 || !errors.As(st.Err, &ie) || st.Summary != (policy.Summary{Rules: 1}) {
		t.Errorf("status = %+v", st)
	}
	// The same failing version is not compiled again.
	if err := b.UpsertConnection(connPolicy("billing", "b2l", 2, 0, func(s *v1alpha1.ConnectionPolicySpec) { s.When = "request.action ==" })); err != nil {
		t.Errorf("unchanged version: %v", err)
	}
	if st := mustStatus(t, b.Build(), ref); st.Err == nil || st.Served != 1 {
		t.Errorf("status after unchanged upsert = %+v", st)
	}

	// Generation 3 compiles and replaces it.
	if err := b.UpsertConnection(connPolicy("billing", "b2l", 3, 0, func(s *v1alpha1.ConnectionPolicySpec) {
		s.Reach = append(s.Reach, v1alpha1.Reach{Class: "audit"})
	})); err != nil {
		t.Fatal(err)
	}
	s3 := b.Build()
	if c, ok := s3.ConnectionByAudience(enforce, aud); !ok || c.Generation != 3 || len(c.Reach) != 2 {
		t.Errorf("served %+v, %v; want generation 3", c, ok)
	}
	if st := mustStatus(t, s3, ref); st.Generation != 3 || st.Served != 3 || st.Err != nil || st.Summary.Rules != 2 {
		t.Errorf("status = %+v", st)
	}
	// Earlier snapshots do not change.
	if c, _ := s1.ConnectionByAudience(enforce, aud); c.Generation != 1 {
		t.Errorf("snapshot 1 now serves generation %d", c.Generation)
	}
	if st := mustStatus(t, s2, ref); st.Generation != 2 || st.Err == nil {
		t.Errorf("snapshot 2 status changed: %+v", st)
	}
}

func TestBuilderKeepsLastGoodResource(t *testing.T) {
	b := newBuilder()
	if err := b.UpsertResource(resPolicy("ledger", "api", 1, 0, nil)); err != nil {
		t.Fatal(err)
	}
	err := b.UpsertResource(resPolicy("ledger", "api", 2, 0, func(s *v1alpha1.ResourcePolicySpec) {
		s.Service = "renamed"
		s.Rules[0].Resources = []string{"no-slash"}
	}))
	if err == nil || !strings.Contains(err.Error(), "spec.rules[0].resources[0]") {
		t.Fatalf("UpsertResource(gen 2) = %v", err)
	}
	s := b.Build()
	r, ok := s.ResourceByService(enforce, "ledger", "api")
	if !ok || r.Generation != 1 {
		t.Fatalf("served %v, %v; want generation 1", r, ok)
	}
	if _, ok := s.ResourceByService(enforce, "ledger", "renamed"); ok {
		t.Error("failed generation is served")
	}
	if st := mustStatus(t, s, resRef("ledger", "api")); st.Generation != 2 || st.Served != 1 || st.Err == nil || st.Audience != "" {
		t.Errorf("status = %+v", st)
	}
}

// A recreated policy (new UID) does not inherit the old object's last good
// generation.
func TestBuilderNewUIDStartsOver(t *testing.T) {
	b := newBuilder()
	if err := b.UpsertConnection(connPolicy("billing", "b2l", 4, 0, nil)); err != nil {
		t.Fatal(err)
	}
	bad := connPolicy("billing", "b2l", 1, 5, func(s *v1alpha1.ConnectionPolicySpec) { s.ServiceAccountName = "" })
	bad.UID = "recreated"
	if err := b.UpsertConnection(bad); err == nil {
		t.Fatal("invalid policy compiled")
	}
	s := b.Build()
	if c, ok := s.ConnectionByAudience(enforce, "sallyport.dev/billing/b2l"); ok {
		t.Errorf("old object still serves: %+v", c)
	}
	if st := mustStatus(t, s, connRef("billing", "b2l")); st.UID != "recreated" || st.Generation != 1 || st.Served != 0 || st.Err == nil {
		t.Errorf("status = %+v", st)
	}
}

// A label change at the same generation is recompiled: policySelectors
// match on the served labels.
func TestBuilderRecompilesOnLabelChange(t *testing.T) {
	b := newBuilder()
	cp := connPolicy("billing", "b2l", 1, 0, nil)
	if err := b.UpsertConnection(cp); err != nil {
		t.Fatal(err)
	}
	cp = cp.DeepCopy()
	cp.Labels = map[string]string{"tier": "gold"}
	if err := b.UpsertConnection(cp); err != nil {
		t.Fatal(err)
	}
	c, ok := b.Build().ConnectionByAudience(enforce, "sallyport.dev/billing/b2l")
	if !ok || c.Labels.Get("tier") != "gold" {
		t.Errorf("served labels %v", c.Labels)
	}
}

func TestBuilderDelete(t *testing.T) {
	b := newBuilder()
	if err := b.UpsertConnection(connPolicy("billing", "b2l", 1, 0, nil)); err != nil {
		t.Fatal(err)
	}
	if err := b.UpsertResource(resPolicy("ledger", "api", 1, 0, func(s *v1alpha1.ResourcePolicySpec) { s.Hosts = []string{"api.example"} })); err != nil {
		t.Fatal(err)
	}
	before := b.Build()
	if before.Len() != 2 {
		t.Fatalf("Len = %d", before.Len())
	}
	b.Delete(connRef("billing", "b2l"))
	b.Delete(resRef("ledger", "api"))
	b.Delete(resRef("ledger", "never-existed"))
	b.Delete(Ref{Kind: "Namespace", NamespacedName: types.NamespacedName{Name: "ledger"}})
	after := b.Build()
	if after.Len() != 0 {
		t.Errorf("Len = %d after deleting everything", after.Len())
	}
	if _, ok := after.Status(connRef("billing", "b2l")); ok {
		t.Error("deleted connection has a status")
	}
	if _, ok := after.ConnectionByAudience(enforce, "sallyport.dev/billing/b2l"); ok {
		t.Error("deleted connection serves")
	}
	if _, ok := after.ResourceByService(enforce, "ledger", "api"); ok {
		t.Error("deleted resource serves by service")
	}
	if _, ok := after.ResourceByHost(enforce, "api.example"); ok {
		t.Error("deleted resource serves by host")
	}
	if got := after.ResourcesByClass(enforce, "ledger"); len(got) != 0 {
		t.Errorf("deleted resource serves by class: %v", got)
	}
	// The snapshot from before the delete still serves it.
	if _, ok := before.ResourceByHost(enforce, "api.example"); !ok {
		t.Error("earlier snapshot changed")
	}
}

func TestBuilderAudienceConflict(t *testing.T) {
	const shared = "https://ledger.example"
	older := connPolicy("zeta", "old", 1, 0, audience(shared))
	newer := connPolicy("alpha", "new", 1, 1, audience(shared))
	for name, order := range map[string][]*v1alpha1.ConnectionPolicy{
		"older first": {older, newer},
		"newer first": {newer, older},
	} {
		t.Run(name, func(t *testing.T) {
			b := newBuilder()
			for _, cp := range order {
				if err := b.UpsertConnection(cp); err != nil {
					t.Fatal(err)
				}
			}
			s := b.Build()
			c, ok := s.ConnectionByAudience(enforce, shared)
			if !ok || c.Ref != (types.NamespacedName{Namespace: "zeta", Name: "old"}) {
				t.Fatalf("audience held by %v, want zeta/old", c)
			}
			if st := mustStatus(t, s, connRef("zeta", "old")); st.Conflict != nil || st.Served != 1 {
				t.Errorf("holder status = %+v", st)
			}
			st := mustStatus(t, s, connRef("alpha", "new"))
			want := Conflict{Reason: v1alpha1.ReasonAudienceConflict, Claim: shared, Holder: types.NamespacedName{Namespace: "zeta", Name: "old"}}
			if st.Conflict == nil || *st.Conflict != want {
				t.Errorf("loser conflict = %+v, want %+v", st.Conflict, want)
			}
			if st.Served != 1 || st.Err != nil {
				t.Errorf("loser status = %+v", st)
			}

			// Once the holder is gone, the other policy takes the audience.
			b.Delete(connRef("zeta", "old"))
			s = b.Build()
			if c, ok := s.ConnectionByAudience(enforce, shared); !ok || c.Ref.Name != "new" {
				t.Errorf("after delete audience held by %v", c)
			}
			if st := mustStatus(t, s, connRef("alpha", "new")); st.Conflict != nil {
				t.Errorf("conflict remains: %+v", st.Conflict)
			}
		})
	}

	// Same creation time: namespace, then name decides.
	b := newBuilder()
	for _, cp := range []*v1alpha1.ConnectionPolicy{
		connPolicy("b", "a", 1, 0, audience(shared)),
		connPolicy("a", "z", 1, 0, audience(shared)),
		connPolicy("a", "y", 1, 0, audience(shared)),
	} {
		if err := b.UpsertConnection(cp); err != nil {
			t.Fatal(err)
		}
	}
	s := b.Build()
	if c, _ := s.ConnectionByAudience(enforce, shared); c == nil || c.Ref.String() != "a/y" {
		t.Errorf("tie went to %v, want a/y", c)
	}
	for _, loser := range []Ref{connRef("a", "z"), connRef("b", "a")} {
		if st := mustStatus(t, s, loser); st.Conflict == nil || st.Conflict.Holder.String() != "a/y" {
			t.Errorf("%v conflict = %+v", loser, st.Conflict)
		}
	}
}

// A policy's default audience is its own, so defaults never conflict; an
// explicit audience that another policy's served version claims does.
func TestBuilderDefaultAudiences(t *testing.T) {
	b := newBuilder()
	for _, cp := range []*v1alpha1.ConnectionPolicy{
		connPolicy("billing", "a", 1, 0, nil),
		connPolicy("billing", "b", 1, 0, nil),
		connPolicy("ledger", "a", 1, 0, nil),
	} {
		if err := b.UpsertConnection(cp); err != nil {
			t.Fatal(err)
		}
	}
	s := b.Build()
	for _, aud := range []string{"sallyport.dev/billing/a", "sallyport.dev/billing/b", "sallyport.dev/ledger/a"} {
		c, ok := s.ConnectionByAudience(enforce, aud)
		if !ok || policy.DefaultAudience(c.Ref.Namespace, c.Ref.Name) != aud {
			t.Errorf("%s held by %v", aud, c)
		}
	}
}

func TestBuilderEnforcementModesAreSeparate(t *testing.T) {
	const shared = "https://ledger.example"
	b := newBuilder()
	for _, cp := range []*v1alpha1.ConnectionPolicy{
		connPolicy("billing", "enforced", 1, 5, audience(shared)),
		connPolicy("billing", "dry", 1, 0, func(s *v1alpha1.ConnectionPolicySpec) { s.Audience = shared; s.Enforcement = dryRun }),
	} {
		if err := b.UpsertConnection(cp); err != nil {
			t.Fatal(err)
		}
	}
	for _, rp := range []*v1alpha1.ResourcePolicy{
		resPolicy("ledger", "enforced", 1, 5, func(s *v1alpha1.ResourcePolicySpec) { s.Service = "api"; s.Hosts = []string{"api.example"} }),
		resPolicy("ledger", "dry", 1, 0, func(s *v1alpha1.ResourcePolicySpec) {
			s.Service = "api"
			s.Hosts = []string{"api.example"}
			s.Enforcement = dryRun
		}),
	} {
		if err := b.UpsertResource(rp); err != nil {
			t.Fatal(err)
		}
	}
	s := b.Build()
	for _, tt := range []struct {
		mode v1alpha1.Enforcement
		name string
	}{{enforce, "enforced"}, {dryRun, "dry"}, {"", "enforced"}} {
		if c, ok := s.ConnectionByAudience(tt.mode, shared); !ok || c.Ref.Name != tt.name {
			t.Errorf("%q ConnectionByAudience = %v", tt.mode, c)
		}
		if r, ok := s.ResourceByService(tt.mode, "ledger", "api"); !ok || r.Ref.Name != tt.name {
			t.Errorf("%q ResourceByService = %v", tt.mode, r)
		}
		if r, ok := s.ResourceByHost(tt.mode, "api.example"); !ok || r.Ref.Name != tt.name {
			t.Errorf("%q ResourceByHost = %v", tt.mode, r)
		}
		if rs := s.ResourcesByClass(tt.mode, "ledger"); len(rs) != 1 || rs[0].Ref.Name != tt.name {
			t.Errorf("%q ResourcesByClass = %v", tt.mode, rs)
		}
	}
	for _, ref := range []Ref{connRef("billing", "enforced"), connRef("billing", "dry"), resRef("ledger", "enforced"), resRef("ledger", "dry")} {
		if st := mustStatus(t, s, ref); st.Conflict != nil {
			t.Errorf("%v conflict %+v", ref, st.Conflict)
		}
	}
}

func TestBuilderResourceConflicts(t *testing.T) {
	withHosts := func(service string, hosts ...string) func(*v1alpha1.ResourcePolicySpec) {
		return func(s *v1alpha1.ResourcePolicySpec) { s.Service = service; s.Hosts = hosts }
	}
	policies := []*v1alpha1.ResourcePolicy{
		resPolicy("ledger", "newest-same-service", 1, 9, withHosts("api")),
		resPolicy("ledger", "oldest", 1, 0, withHosts("api", "api.example", "api.example:8443")),
		resPolicy("other", "same-service-other-ns", 1, 5, withHosts("api")),
		resPolicy("other", "host-thief", 1, 3, withHosts("thief", "fresh.example", "api.example:8443")),
		resPolicy("other", "fresh", 1, 4, withHosts("fresh", "fresh.example")),
		resPolicy("third", "class-b", 1, 2, func(s *v1alpha1.ResourcePolicySpec) { s.Class = "b" }),
	}
	// Insertion order does not matter.
	for _, order := range [][]int{{0, 1, 2, 3, 4, 5}, {5, 4, 3, 2, 1, 0}, {3, 0, 5, 1, 4, 2}} {
		b := newBuilder()
		for _, i := range order {
			if err := b.UpsertResource(policies[i]); err != nil {
				t.Fatal(err)
			}
		}
		s := b.Build()
		if r, ok := s.ResourceByService(enforce, "ledger", "api"); !ok || r.Ref.Name != "oldest" {
			t.Errorf("%v: ledger/api held by %v", order, r)
		}
		if r, ok := s.ResourceByService(enforce, "other", "api"); !ok || r.Ref.Name != "same-service-other-ns" {
			t.Errorf("%v: other/api held by %v", order, r)
		}
		for host, want := range map[string]string{"api.example": "oldest", "api.example:8443": "oldest", "fresh.example": "fresh"} {
			if r, ok := s.ResourceByHost(enforce, host); !ok || r.Ref.Name != want {
				t.Errorf("%v: host %s held by %v, want %s", order, host, r, want)
			}
		}
		// The host thief lost one host and serves nothing at all: not its
		// service, not its other host, not in its class.
		if r, ok := s.ResourceByService(enforce, "other", "thief"); ok {
			t.Errorf("%v: loser serves its service: %v", order, r)
		}
		wantConflicts := map[Ref]Conflict{
			resRef("ledger", "newest-same-service"): {v1alpha1.ReasonServiceConflict, "api", types.NamespacedName{Namespace: "ledger", Name: "oldest"}},
			resRef("other", "host-thief"):           {v1alpha1.ReasonHostConflict, "api.example:8443", types.NamespacedName{Namespace: "ledger", Name: "oldest"}},
		}
		for _, rp := range policies {
			ref := resRef(rp.Namespace, rp.Name)
			st := mustStatus(t, s, ref)
			want, conflicted := wantConflicts[ref]
			switch {
			case conflicted && (st.Conflict == nil || *st.Conflict != want):
				t.Errorf("%v: %v conflict = %+v, want %+v", order, ref, st.Conflict, want)
			case !conflicted && st.Conflict != nil:
				t.Errorf("%v: %v conflict = %+v, want none", order, ref, st.Conflict)
			}
		}
		var class []string
		for _, r := range s.ResourcesByClass(enforce, "ledger") {
			class = append(class, r.Ref.String())
		}
		if want := []string{"ledger/oldest", "other/fresh", "other/same-service-other-ns"}; !slices.Equal(class, want) {
			t.Errorf("%v: ResourcesByClass(ledger) = %v, want %v (oldest first)", order, class, want)
		}
		if rs := s.ResourcesByClass(enforce, "b"); len(rs) != 1 || rs[0].Ref.Name != "class-b" {
			t.Errorf("%v: ResourcesByClass(b) = %v", order, rs)
		}
		if rs := s.ResourcesByClass(enforce, "unknown"); len(rs) != 0 {
			t.Errorf("%v: ResourcesByClass(unknown) = %v", order, rs)
		}
	}
}

// A policy whose served generation fails to compile later keeps its claims.
func TestBuilderFailedUpdateKeepsClaims(t *testing.T) {
	const shared = "https://ledger.example"
	b := newBuilder()
	if err := b.UpsertConnection(connPolicy("a", "old", 1, 0, audience(shared))); err != nil {
		t.Fatal(err)
	}
	if err := b.UpsertConnection(connPolicy("a", "old", 2, 0, func(s *v1alpha1.ConnectionPolicySpec) {
		s.Audience = "kubernetes"
	})); err == nil {
		t.Fatal("API audience accepted")
	}
	if err := b.UpsertConnection(connPolicy("b", "new", 1, 1, audience(shared))); err != nil {
		t.Fatal(err)
	}
	s := b.Build()
	if c, _ := s.ConnectionByAudience(enforce, shared); c == nil || c.Ref.String() != "a/old" || c.Generation != 1 {
		t.Errorf("audience held by %v", c)
	}
	st := mustStatus(t, s, connRef("a", "old"))
	if st.Audience != shared || st.Served != 1 || st.Err == nil {
		t.Errorf("holder status = %+v (Audience is the served generation's)", st)
	}
	if st := mustStatus(t, s, connRef("b", "new")); st.Conflict == nil || st.Conflict.Holder.String() != "a/old" {
		t.Errorf("newer policy conflict = %+v", st.Conflict)
	}
}

func TestBuilderSetNamespace(t *testing.T) {
	b := newBuilder()
	l := map[string]string{"team": "billing"}
	b.SetNamespace("billing", l, false)
	b.SetNamespace("ledger", nil, false)
	l["team"] = "mutated"
	s1 := b.Build()
	if got, ok := s1.NamespaceLabels("billing"); !ok || !maps.Equal(got, map[string]string{"team": "billing"}) {
		t.Errorf("billing labels = %v, %v", got, ok)
	}
	if got, ok := s1.NamespaceLabels("ledger"); !ok || len(got) != 0 {
		t.Errorf("ledger labels = %v, %v; want known and empty", got, ok)
	}
	if _, ok := s1.NamespaceLabels("ghost"); ok {
		t.Error("unknown namespace is known")
	}

	b.SetNamespace("billing", map[string]string{"team": "payments"}, false)
	b.SetNamespace("ledger", nil, true)
	s2 := b.Build()
	if got, _ := s2.NamespaceLabels("billing"); got.Get("team") != "payments" {
		t.Errorf("billing labels = %v", got)
	}
	if _, ok := s2.NamespaceLabels("ledger"); ok {
		t.Error("forgotten namespace is known")
	}
	if got, _ := s1.NamespaceLabels("billing"); got.Get("team") != "billing" {
		t.Errorf("earlier snapshot changed: %v", got)
	}
	if _, ok := s1.NamespaceLabels("ledger"); !ok {
		t.Error("earlier snapshot forgot ledger")
	}
}

func TestSafeCompile(t *testing.T) {
	out, err := safeCompile(func() (*int, error) { panic("boom") })
	if out != nil || err == nil || err.Error() != "internal error while compiling: boom" {
		t.Errorf("safeCompile(panic) = %v, %v", out, err)
	}
	v := 7
	if out, err := safeCompile(func() (*int, error) { return &v, nil }); out != &v || err != nil {
		t.Errorf("safeCompile(ok) = %v, %v", out, err)
	}
	want := errors.New("bad")
	if out, err := safeCompile(func() (*int, error) { return nil, want }); out != nil || !errors.Is(err, want) {
		t.Errorf("safeCompile(err) = %v, %v", out, err)
	}
}
