package lint

import (
	"slices"
	"testing"

	"github.com/sallyport/sallyport/api/v1alpha1"
	"github.com/sallyport/sallyport/internal/policy"
)

func TestPatternCovers(t *testing.T) {
	for _, tc := range []struct {
		q, p string
		want bool
	}{
		{"/**", "/", true},
		{"/**", "/a/*/b/**", true},
		{"/a/**", "/a", true},
		{"/a/**", "/a/b/", true},
		{"/a/*", "/a/b", true},
		{"/a/*", "/a/*", true},
		{"/*/b", "/a/b", true},
		{"/a/b", "/a/b", true},
		{"/**/b", "/x/**/b", true},
		{"/a/*", "/a/", false}, // "*" needs a non-empty segment
		{"/a/**", "/a/", true},
		{"/a/*", "/a/**", false},
		{"/a/*", "/a", false},
		{"/a", "/a/", false},
		{"/a/b", "/a/*", false},
		{"/*/**", "/**", false}, // "/" is not matched by q
		{"/a/**", "/b/**", false},
		{"/", "/", true},
		{"/", "/a", false},
		// True, but beyond the alignment: missed, never wrongly claimed.
		{"/**/*", "/*/**", false},
	} {
		if got := patternCovers(tc.q, tc.p); got != tc.want {
			t.Errorf("patternCovers(%q, %q) = %v, want %v", tc.q, tc.p, got, tc.want)
		}
	}
}

func compileRules(t *testing.T, rules ...v1alpha1.Rule) *policy.Resource {
	t.Helper()
	rp := &v1alpha1.ResourcePolicy{}
	rp.Name, rp.Namespace = "r", "ledger"
	rp.Spec = v1alpha1.ResourcePolicySpec{Service: "s", Class: "c", Classification: v1alpha1.ClassificationInternal, Rules: rules}
	res, err := policy.NewCompiler(policy.CompilerOptions{}).CompileResource(rp)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

func rule(name string, effect v1alpha1.Effect, actions, resources []string, scopes []v1alpha1.Scope, conns ...v1alpha1.ConnectionRef) v1alpha1.Rule {
	return v1alpha1.Rule{Name: name, Effect: effect, Actions: actions, Resources: resources, Scopes: scopes, Connections: conns}
}

func TestCovers(t *testing.T) {
	all := []string{"/**"}
	byName := v1alpha1.ConnectionRef{Namespace: "billing", Name: "b"}
	other := v1alpha1.ConnectionRef{Namespace: "billing", Name: "c"}
	ownNS := v1alpha1.ConnectionRef{PolicySelector: &v1alpha1.LabelSelector{}}
	ownLocal := v1alpha1.ConnectionRef{Name: "local"}
	everyNS := v1alpha1.ConnectionRef{NamespaceSelector: &v1alpha1.LabelSelector{}}
	team := v1alpha1.ConnectionRef{NamespaceSelector: &v1alpha1.LabelSelector{}, PolicySelector: &v1alpha1.LabelSelector{MatchLabels: map[string]v1alpha1.LabelValue{"team": "a"}}}
	deny, allow := v1alpha1.EffectDeny, v1alpha1.EffectAllow
	for _, tc := range []struct {
		name string
		d, r v1alpha1.Rule
		want bool
	}{
		{"deny all covers allow", rule("d", deny, []string{"*"}, all, nil), rule("r", allow, []string{"GET"}, []string{"/x"}, nil, byName), true},
		{"actions subset", rule("d", deny, []string{"GET", "PUT"}, all, nil), rule("r", allow, []string{"GET"}, all, nil, byName), true},
		{"actions not covered", rule("d", deny, []string{"PUT"}, all, nil), rule("r", allow, []string{"GET", "PUT"}, all, nil, byName), false},
		{"any action not covered by a list", rule("d", deny, []string{"GET"}, all, nil), rule("r", allow, []string{"*"}, all, nil, byName), false},
		{"one pattern not covered", rule("d", deny, []string{"*"}, []string{"/a/**"}, nil), rule("r", allow, []string{"GET"}, []string{"/a/b", "/c"}, nil, byName), false},
		{"deny with scopes never covers allow", rule("d", deny, []string{"*"}, all, []v1alpha1.Scope{"x"}), rule("r", allow, []string{"GET"}, all, []v1alpha1.Scope{"x"}, byName), false},
		{"deny scopes cover deny scopes", rule("d", deny, []string{"*"}, all, []v1alpha1.Scope{"x", "y"}), rule("r", deny, []string{"GET"}, all, []v1alpha1.Scope{"x"}), true},
		{"deny scopes do not cover deny without scopes", rule("d", deny, []string{"*"}, all, []v1alpha1.Scope{"x"}), rule("r", deny, []string{"GET"}, all, nil), false},
		{"same connection", rule("d", deny, []string{"*"}, all, nil, byName), rule("r", allow, []string{"GET"}, all, nil, byName), true},
		{"other connection", rule("d", deny, []string{"*"}, all, nil, byName), rule("r", allow, []string{"GET"}, all, nil, byName, other), false},
		{"every namespace covers all", rule("d", deny, []string{"*"}, all, nil, everyNS), rule("r", allow, []string{"GET"}, all, nil, byName, team), true},
		{"own namespace covers own by name", rule("d", deny, []string{"*"}, all, nil, ownNS), rule("r", allow, []string{"GET"}, all, nil, ownLocal), true},
		{"own namespace does not cover another", rule("d", deny, []string{"*"}, all, nil, ownNS), rule("r", allow, []string{"GET"}, all, nil, byName), false},
		{"same selector", rule("d", deny, []string{"*"}, all, nil, team), rule("r", allow, []string{"GET"}, all, nil, team), true},
		{"selector does not cover by name", rule("d", deny, []string{"*"}, all, nil, team), rule("r", allow, []string{"GET"}, all, nil, byName), false},
		{"deny for some connections does not cover deny for all", rule("d", deny, []string{"*"}, all, nil, byName), rule("r", deny, []string{"GET"}, all, nil), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := compileRules(t, tc.d, tc.r)
			rules := slices.Collect(res.Rules())
			if got := covers(rules[0], rules[1]); got != tc.want {
				t.Errorf("covers = %v, want %v", got, tc.want)
			}
		})
	}
	// A condition on the Deny rule: never covers.
	d := rule("d", deny, []string{"*"}, all, nil)
	d.When = "request.action == 'GET'"
	res := compileRules(t, d, rule("r", allow, []string{"GET"}, all, nil, byName))
	if covers(res.Deny[0], res.Allow[0]) {
		t.Error("a Deny rule with a condition covers")
	}
}

func TestJoinReasons(t *testing.T) {
	if got := joinReasons([]string{"a", "b", "a"}); got != "a; b" {
		t.Errorf("got %q", got)
	}
	if got := joinReasons([]string{"1", "2", "3", "4", "5", "6", "7"}); got != "1; 2; 3; 4; 5; and 2 more" {
		t.Errorf("got %q", got)
	}
}
