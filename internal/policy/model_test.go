package policy

import (
	"testing"

	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"

	"github.com/sallyport/sallyport/api/v1alpha1"
)

func TestParseLevel(t *testing.T) {
	tests := []struct {
		in   v1alpha1.Classification
		want Level
		name string
	}{
		{v1alpha1.ClassificationPublic, LevelPublic, "public"},
		{v1alpha1.ClassificationInternal, LevelInternal, "internal"},
		{v1alpha1.ClassificationConfidential, LevelConfidential, "confidential"},
		{v1alpha1.ClassificationRestricted, LevelRestricted, "restricted"},
		{"", LevelUnknown, "unknown"},
		{"Public", LevelUnknown, "unknown"},
		{"secret", LevelUnknown, "unknown"},
	}
	for _, tt := range tests {
		got := ParseLevel(tt.in)
		if got != tt.want || got.String() != tt.name {
			t.Errorf("ParseLevel(%q) = %d %q, want %d %q", tt.in, got, got, tt.want, tt.name)
		}
	}
	order := []Level{LevelUnknown, LevelPublic, LevelInternal, LevelConfidential, LevelRestricted}
	for i := 1; i < len(order); i++ {
		if order[i-1] >= order[i] {
			t.Errorf("%s is not below %s", order[i-1], order[i])
		}
	}
}

func TestReachAllowsScopes(t *testing.T) {
	c := NewCompiler(CompilerOptions{})
	compiled, err := c.CompileConnection(connectionPolicy(func(s *v1alpha1.ConnectionPolicySpec) {
		s.Reach = []v1alpha1.Reach{
			{Class: "none"},
			{Class: "some", Scopes: []v1alpha1.Scope{"ledger.write", "ledger.read", "ledger.list"}},
			{Class: "any", Scopes: []v1alpha1.Scope{"*"}},
		}
	}))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		class     string
		requested []string
		want      bool
	}{
		{"none", nil, true},
		{"none", []string{}, true},
		{"none", []string{"ledger.read"}, false},
		{"none", []string{"*"}, false},
		{"some", nil, true},
		{"some", []string{"ledger.read"}, true},
		{"some", []string{"ledger.write", "ledger.list"}, true},
		{"some", []string{"ledger.read", "ledger.admin"}, false},
		{"some", []string{"ledger.admin"}, false},
		{"some", []string{"*"}, false},
		{"some", []string{"Ledger.read"}, false},
		{"any", nil, true},
		{"any", []string{"ledger.admin", "anything"}, true},
	}
	for _, tt := range tests {
		if got := compiled.Reach[tt.class].AllowsScopes(tt.requested); got != tt.want {
			t.Errorf("Reach[%s].AllowsScopes(%q) = %v, want %v", tt.class, tt.requested, got, tt.want)
		}
	}
}

// compileRule compiles a ResourcePolicy in ledger with the one rule r and
// returns that rule.
func compileRule(t *testing.T, r v1alpha1.Rule) *Rule {
	t.Helper()
	if r.Name == "" {
		r.Name = "r"
	}
	if len(r.Actions) == 0 {
		r.Actions = []string{"*"}
	}
	if len(r.Resources) == 0 {
		r.Resources = []string{"/**"}
	}
	compiled, err := NewCompiler(CompilerOptions{}).CompileResource(resourcePolicy(func(s *v1alpha1.ResourcePolicySpec) {
		s.Rules = []v1alpha1.Rule{r}
	}))
	if err != nil {
		t.Fatal(err)
	}
	if len(compiled.Allow)+len(compiled.Deny) != 1 {
		t.Fatalf("compiled %d rules", len(compiled.Allow)+len(compiled.Deny))
	}
	if len(compiled.Allow) == 1 {
		return compiled.Allow[0]
	}
	return compiled.Deny[0]
}

var anyConnection = []v1alpha1.ConnectionRef{{NamespaceSelector: &v1alpha1.LabelSelector{}}}

func TestRuleMatchesAction(t *testing.T) {
	some := compileRule(t, v1alpha1.Rule{Effect: v1alpha1.EffectAllow, Actions: []string{"read", "HEAD", "GET"}, Connections: anyConnection})
	all := compileRule(t, v1alpha1.Rule{Effect: v1alpha1.EffectDeny, Actions: []string{"*"}})
	tests := []struct {
		action    string
		some, all bool
	}{
		{"GET", true, true},
		{"HEAD", true, true},
		{"read", true, true},
		{"get", false, true},
		{"READ", false, true},
		{"POST", false, true},
		{"*", false, true},
		{"", false, true},
	}
	for _, tt := range tests {
		if got := some.MatchesAction(tt.action); got != tt.some {
			t.Errorf("[GET HEAD read].MatchesAction(%q) = %v", tt.action, got)
		}
		if got := all.MatchesAction(tt.action); got != tt.all {
			t.Errorf("[*].MatchesAction(%q) = %v", tt.action, got)
		}
	}
}

func TestRuleMatchesPath(t *testing.T) {
	r := compileRule(t, v1alpha1.Rule{Effect: v1alpha1.EffectDeny, Resources: []string{"/entries/*", "/accounts/**/history", "/"}})
	tests := []struct {
		path string
		want bool
	}{
		{"/", true},
		{"/entries/42", true},
		{"/entries", false},
		{"/entries/42/lines", false},
		{"/accounts/history", true},
		{"/accounts/7/2026/history", true},
		{"/accounts/7", false},
		{"/other", false},
	}
	for _, tt := range tests {
		if got := r.MatchesPath(tt.path); got != tt.want {
			t.Errorf("MatchesPath(%q) = %v, want %v", tt.path, got, tt.want)
		}
	}
}

func TestRuleMatchesScopes(t *testing.T) {
	rules := map[string]*Rule{
		"allow none": compileRule(t, v1alpha1.Rule{Effect: v1alpha1.EffectAllow, Connections: anyConnection}),
		"allow some": compileRule(t, v1alpha1.Rule{Effect: v1alpha1.EffectAllow, Connections: anyConnection,
			Scopes: []v1alpha1.Scope{"ledger.read", "ledger.list"}}),
		"deny none": compileRule(t, v1alpha1.Rule{Effect: v1alpha1.EffectDeny}),
		"deny some": compileRule(t, v1alpha1.Rule{Effect: v1alpha1.EffectDeny, Scopes: []v1alpha1.Scope{"ledger.write", "ledger.admin"}}),
	}
	tests := []struct {
		rule      string
		requested []string
		want      bool
	}{
		// Allow: every requested scope among the rule's.
		{"allow none", nil, true},
		{"allow none", []string{}, true},
		{"allow none", []string{"ledger.read"}, false},
		{"allow some", nil, true},
		{"allow some", []string{"ledger.read"}, true},
		{"allow some", []string{"ledger.list", "ledger.read"}, true},
		{"allow some", []string{"ledger.read", "ledger.write"}, false},
		{"allow some", []string{"ledger.write"}, false},
		// Deny: any overlap, or always when the rule lists none.
		{"deny none", nil, true},
		{"deny none", []string{"ledger.read"}, true},
		{"deny some", nil, false},
		{"deny some", []string{"ledger.read"}, false},
		{"deny some", []string{"ledger.read", "ledger.admin"}, true},
		{"deny some", []string{"ledger.write"}, true},
	}
	for _, tt := range tests {
		if got := rules[tt.rule].MatchesScopes(tt.requested); got != tt.want {
			t.Errorf("%s: MatchesScopes(%q) = %v, want %v", tt.rule, tt.requested, got, tt.want)
		}
	}
}

func TestRuleMatchesConnection(t *testing.T) {
	conn := func(ns, name string, l map[string]string) *Connection {
		return &Connection{Meta: Meta{Ref: types.NamespacedName{Namespace: ns, Name: name}, Labels: l}}
	}
	gold := map[string]string{"tier": "gold"}
	var (
		billingB2L    = conn("billing", "billing-to-ledger", gold)
		billingOther  = conn("billing", "other", nil)
		ledgerSelf    = conn("ledger", "ledger-self", gold)
		ledgerPlain   = conn("ledger", "plain", nil)
		ledgerB2L     = conn("ledger", "billing-to-ledger", gold)
		unknownNS     = conn("ghost", "g", gold)
		reportingGold = conn("reporting", "r", gold)
	)
	nsLabels := func(ns string) (labels.Set, bool) {
		l, ok := map[string]labels.Set{
			"billing":   {"team": "billing", "env": "prod"},
			"ledger":    {"team": "ledger", "env": "prod"},
			"reporting": {"team": "reporting", "env": "dev"},
		}[ns]
		return l, ok
	}
	sel := func(m map[string]v1alpha1.LabelValue) *v1alpha1.LabelSelector {
		return &v1alpha1.LabelSelector{MatchLabels: m}
	}
	tests := []struct {
		name    string
		effect  v1alpha1.Effect
		refs    []v1alpha1.ConnectionRef
		match   []*Connection
		noMatch []*Connection
	}{
		{"by name and namespace", v1alpha1.EffectAllow, []v1alpha1.ConnectionRef{{Namespace: "billing", Name: "billing-to-ledger"}},
			[]*Connection{billingB2L}, []*Connection{ledgerB2L, billingOther, ledgerSelf}},
		{"by name, own namespace by default", v1alpha1.EffectAllow, []v1alpha1.ConnectionRef{{Name: "billing-to-ledger"}},
			[]*Connection{ledgerB2L}, []*Connection{billingB2L}},
		{"every namespace", v1alpha1.EffectAllow, []v1alpha1.ConnectionRef{{NamespaceSelector: &v1alpha1.LabelSelector{}}},
			[]*Connection{billingB2L, billingOther, ledgerSelf, ledgerPlain, unknownNS, reportingGold}, nil},
		{"namespaces by label", v1alpha1.EffectAllow, []v1alpha1.ConnectionRef{{NamespaceSelector: sel(map[string]v1alpha1.LabelValue{"env": "prod"})}},
			[]*Connection{billingB2L, billingOther, ledgerSelf}, []*Connection{reportingGold, unknownNS}},
		{"policies by label in own namespace", v1alpha1.EffectAllow, []v1alpha1.ConnectionRef{{PolicySelector: sel(map[string]v1alpha1.LabelValue{"tier": "gold"})}},
			[]*Connection{ledgerSelf, ledgerB2L}, []*Connection{ledgerPlain, billingB2L, reportingGold}},
		{"namespace and policy labels together", v1alpha1.EffectAllow, []v1alpha1.ConnectionRef{{
			NamespaceSelector: &v1alpha1.LabelSelector{MatchExpressions: []v1alpha1.LabelSelectorRequirement{
				{Key: "team", Operator: "In", Values: []v1alpha1.LabelValue{"billing", "reporting"}}}},
			PolicySelector: sel(map[string]v1alpha1.LabelValue{"tier": "gold"}),
		}}, []*Connection{billingB2L, reportingGold}, []*Connection{billingOther, ledgerSelf, unknownNS}},
		{"any of several entries", v1alpha1.EffectAllow, []v1alpha1.ConnectionRef{
			{Namespace: "billing", Name: "other"}, {Name: "plain"},
		}, []*Connection{billingOther, ledgerPlain}, []*Connection{billingB2L, ledgerSelf}},
		{"Deny without connections names every connection", v1alpha1.EffectDeny, nil,
			[]*Connection{billingB2L, billingOther, ledgerSelf, unknownNS}, nil},
		{"Deny with connections names only those", v1alpha1.EffectDeny, []v1alpha1.ConnectionRef{{Namespace: "billing", Name: "other"}},
			[]*Connection{billingOther}, []*Connection{billingB2L, ledgerSelf}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := compileRule(t, v1alpha1.Rule{Effect: tt.effect, Connections: tt.refs})
			for _, c := range tt.match {
				if !r.MatchesConnection(c, nsLabels) {
					t.Errorf("does not match %s", c.Ref)
				}
			}
			for _, c := range tt.noMatch {
				if r.MatchesConnection(c, nsLabels) {
					t.Errorf("matches %s", c.Ref)
				}
			}
		})
	}

	// An Allow rule never matches without connections (compilation
	// refuses one; a hand-built rule fails closed).
	if (&Rule{Effect: v1alpha1.EffectAllow}).MatchesConnection(billingB2L, nsLabels) {
		t.Error("Allow rule without connections matched")
	}
}
