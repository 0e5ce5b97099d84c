package policy

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation/field"

	"github.com/sallyport/sallyport/api/v1alpha1"
	"github.com/sallyport/sallyport/internal/expr"
)

var created = metav1.NewTime(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC))

func objectMeta(ns, name string) metav1.ObjectMeta {
	return metav1.ObjectMeta{
		Namespace: ns, Name: name, UID: types.UID("uid-" + name), Generation: 3,
		CreationTimestamp: created, Labels: map[string]string{"tier": "gold"},
	}
}

// connectionPolicy is a minimal valid ConnectionPolicy in billing, with the
// API server's defaults left out; edit adjusts its spec.
func connectionPolicy(edit func(*v1alpha1.ConnectionPolicySpec)) *v1alpha1.ConnectionPolicy {
	cp := &v1alpha1.ConnectionPolicy{
		ObjectMeta: objectMeta("billing", "billing-to-ledger"),
		Spec: v1alpha1.ConnectionPolicySpec{
			ServiceAccountName: "worker",
			Reach:              []v1alpha1.Reach{{Class: "ledger", Scopes: []v1alpha1.Scope{"ledger.read"}}},
		},
	}
	if edit != nil {
		edit(&cp.Spec)
	}
	return cp
}

// resourcePolicy is a minimal valid ResourcePolicy in ledger: one Allow rule
// "read" for billing/billing-to-ledger.
func resourcePolicy(edit func(*v1alpha1.ResourcePolicySpec)) *v1alpha1.ResourcePolicy {
	rp := &v1alpha1.ResourcePolicy{
		ObjectMeta: objectMeta("ledger", "ledger-api"),
		Spec: v1alpha1.ResourcePolicySpec{
			Service:        "ledger-api",
			Class:          "ledger",
			Classification: v1alpha1.ClassificationConfidential,
			Rules: []v1alpha1.Rule{{
				Name: "read", Effect: v1alpha1.EffectAllow,
				Actions: []string{"GET"}, Resources: []string{"/entries/**"},
				Connections: []v1alpha1.ConnectionRef{{Namespace: "billing", Name: "billing-to-ledger"}},
			}},
		},
	}
	if edit != nil {
		edit(&rp.Spec)
	}
	return rp
}

func int64p(v int64) *int64 { return &v }

// fieldErr is one expected entry of an InvalidError.
type fieldErr struct {
	field  string
	typ    field.ErrorType
	detail string // substring of the error's Error()
}

// checkInvalid asserts err is an *InvalidError of kind and ref holding
// exactly the wanted errors, in order.
func checkInvalid(t *testing.T, err error, kind string, ref types.NamespacedName, want []fieldErr) {
	t.Helper()
	var ie *InvalidError
	if !errors.As(err, &ie) {
		t.Fatalf("error %T %v, want *InvalidError", err, err)
	}
	if ie.Kind != kind || ie.Ref != ref {
		t.Errorf("InvalidError for %s %s, want %s %s", ie.Kind, ie.Ref, kind, ref)
	}
	if len(ie.Errs) != len(want) {
		t.Fatalf("got %d errors, want %d:\n%v", len(ie.Errs), len(want), ie)
	}
	for i, w := range want {
		got := ie.Errs[i]
		if got.Field != w.field || got.Type != w.typ || !strings.Contains(got.Error(), w.detail) {
			t.Errorf("Errs[%d] = %s %q: %s\nwant %s %q containing %q", i, got.Field, got.Type, got.Error(), w.field, w.typ, w.detail)
		}
		if !strings.Contains(ie.Error(), got.Error()) {
			t.Errorf("Error() does not list %s:\n%s", got.Field, ie.Error())
		}
	}
}

func TestAudiences(t *testing.T) {
	if got := DefaultAudience("billing", "b2l"); got != "sallyport.dev/billing/b2l" {
		t.Errorf("DefaultAudience = %q", got)
	}
	if got := EffectiveAudience(connectionPolicy(nil)); got != "sallyport.dev/billing/billing-to-ledger" {
		t.Errorf("EffectiveAudience without audience = %q", got)
	}
	cp := connectionPolicy(func(s *v1alpha1.ConnectionPolicySpec) { s.Audience = "https://ledger.example" })
	if got := EffectiveAudience(cp); got != "https://ledger.example" {
		t.Errorf("EffectiveAudience with audience = %q", got)
	}
	if got := Identity("billing", "worker"); got != "system:serviceaccount:billing:worker" {
		t.Errorf("Identity = %q", got)
	}
}

func TestCompileConnectionDefaults(t *testing.T) {
	c := NewCompiler(CompilerOptions{})
	cp := connectionPolicy(func(s *v1alpha1.ConnectionPolicySpec) {
		s.Reach = []v1alpha1.Reach{
			{Class: "ledger", Scopes: []v1alpha1.Scope{"ledger.read", "ledger.list", "ledger.read"}},
			{Class: "audit"},
		}
	})
	got, err := c.CompileConnection(cp)
	if err != nil {
		t.Fatal(err)
	}
	want := Meta{
		Ref: types.NamespacedName{Namespace: "billing", Name: "billing-to-ledger"}, UID: "uid-billing-to-ledger",
		Generation: 3, Created: created.Time, Labels: map[string]string{"tier": "gold"},
		Enforcement: v1alpha1.EnforcementEnforce, Summary: Summary{Rules: 2},
	}
	if got.Ref != want.Ref || got.UID != want.UID || got.Generation != want.Generation || !got.Created.Equal(want.Created) ||
		got.Labels.String() != "tier=gold" || got.Enforcement != want.Enforcement || got.Summary != want.Summary {
		t.Errorf("Meta = %+v, want %+v", got.Meta, want)
	}
	if got.ServiceAccount != "worker" || got.Identity != "system:serviceaccount:billing:worker" {
		t.Errorf("identity = %q %q", got.ServiceAccount, got.Identity)
	}
	if got.Audience != "sallyport.dev/billing/billing-to-ledger" {
		t.Errorf("Audience = %q", got.Audience)
	}
	if got.MaxTokenLifetime != time.Hour {
		t.Errorf("MaxTokenLifetime = %s", got.MaxTokenLifetime)
	}
	if got.When != nil || got.Token != nil {
		t.Errorf("When = %v, Token = %v; want nil", got.When, got.Token)
	}
	if len(got.Reach) != 2 {
		t.Fatalf("Reach = %v", got.Reach)
	}
	ledger := got.Reach["ledger"]
	if ledger == nil || ledger.Class != "ledger" || ledger.AnyScope || !slices.Equal(ledger.Scopes, []string{"ledger.list", "ledger.read"}) ||
		ledger.MaxClassification != LevelInternal {
		t.Errorf("Reach[ledger] = %+v", ledger)
	}
	audit := got.Reach["audit"]
	if audit == nil || audit.AnyScope || len(audit.Scopes) != 0 || audit.MaxClassification != LevelInternal {
		t.Errorf("Reach[audit] = %+v", audit)
	}
}

func TestCompileConnectionFull(t *testing.T) {
	c := NewCompiler(CompilerOptions{})
	cp := connectionPolicy(func(s *v1alpha1.ConnectionPolicySpec) {
		s.Enforcement = v1alpha1.EnforcementDryRun
		s.Audience = "https://ledger.example"
		s.MaxTokenLifetime = metav1.Duration{Duration: 2 * time.Hour}
		s.Reach = []v1alpha1.Reach{{Class: "ledger", Scopes: []v1alpha1.Scope{"ledger.read", "*"}, MaxClassification: v1alpha1.ClassificationRestricted}}
		s.When = `connection.lifetime <= duration("30m") && request.action != "DELETE"`
		s.Token = &v1alpha1.TokenSpec{Mode: v1alpha1.TokenModeSecret}
	})
	got, err := c.CompileConnection(cp)
	if err != nil {
		t.Fatal(err)
	}
	if got.Enforcement != v1alpha1.EnforcementDryRun || got.Audience != "https://ledger.example" || got.MaxTokenLifetime != 2*time.Hour {
		t.Errorf("got %s %q %s", got.Enforcement, got.Audience, got.MaxTokenLifetime)
	}
	r := got.Reach["ledger"]
	if r == nil || !r.AnyScope || !slices.Equal(r.Scopes, []string{"ledger.read"}) || r.MaxClassification != LevelRestricted {
		t.Errorf("Reach[ledger] = %+v", r)
	}
	if got.Token == nil || *got.Token != (Token{Mode: v1alpha1.TokenModeSecret, SecretName: "billing-to-ledger-token", ExpirationSeconds: 900}) {
		t.Errorf("Token = %+v", got.Token)
	}
	if got.When == nil || got.Summary.Expressions != 1 || got.Summary.EstimatedCost != got.When.EstimatedCost() || got.Summary.Rules != 1 {
		t.Fatalf("When = %v, Summary = %+v", got.When, got.Summary)
	}
	for _, tt := range []struct {
		a    *expr.Activation
		want bool
	}{
		{&expr.Activation{Connection: &expr.Connection{Lifetime: 15 * time.Minute}, Request: &expr.Request{Action: "GET"}}, true},
		{&expr.Activation{Connection: &expr.Connection{Lifetime: 15 * time.Minute}, Request: &expr.Request{Action: "DELETE"}}, false},
		{&expr.Activation{Connection: &expr.Connection{Lifetime: time.Hour}, Request: &expr.Request{Action: "GET"}}, false},
	} {
		if ok, err := got.When.Eval(tt.a); err != nil || ok != tt.want {
			t.Errorf("When.Eval(%+v, %+v) = %v, %v; want %v", tt.a.Connection, tt.a.Request, ok, err, tt.want)
		}
	}

	// Projected mode keeps an explicit expirationSeconds and sets no Secret.
	cp.Spec.Token = &v1alpha1.TokenSpec{Mode: v1alpha1.TokenModeProjected, ExpirationSeconds: int64p(7200)}
	got, err = c.CompileConnection(cp)
	if err != nil {
		t.Fatal(err)
	}
	if *got.Token != (Token{Mode: v1alpha1.TokenModeProjected, ExpirationSeconds: 7200}) {
		t.Errorf("Token = %+v", got.Token)
	}
	// An explicit secretName is kept.
	cp.Spec.Token = &v1alpha1.TokenSpec{Mode: v1alpha1.TokenModeSecret, SecretName: "ledger-creds"}
	if got, err = c.CompileConnection(cp); err != nil || got.Token.SecretName != "ledger-creds" {
		t.Errorf("SecretName = %+v, %v", got, err)
	}
}

func TestCompileConnectionAcceptsBounds(t *testing.T) {
	c := NewCompiler(CompilerOptions{})
	for name, edit := range map[string]func(*v1alpha1.ConnectionPolicySpec){
		"own default audience spelled out": func(s *v1alpha1.ConnectionPolicySpec) { s.Audience = "sallyport.dev/billing/billing-to-ledger" },
		"shortest maxTokenLifetime":        func(s *v1alpha1.ConnectionPolicySpec) { s.MaxTokenLifetime.Duration = 10 * time.Minute },
		"longest maxTokenLifetime":         func(s *v1alpha1.ConnectionPolicySpec) { s.MaxTokenLifetime.Duration = 48 * time.Hour },
		"expirationSeconds at floor": func(s *v1alpha1.ConnectionPolicySpec) {
			s.Token = &v1alpha1.TokenSpec{Mode: v1alpha1.TokenModeProjected, ExpirationSeconds: int64p(600)}
		},
		"expirationSeconds equal to maxTokenLifetime": func(s *v1alpha1.ConnectionPolicySpec) {
			s.Token = &v1alpha1.TokenSpec{Mode: v1alpha1.TokenModeProjected, ExpirationSeconds: int64p(3600)}
		},
		"3608": func(s *v1alpha1.ConnectionPolicySpec) {
			s.MaxTokenLifetime.Duration = 2 * time.Hour
			s.Token = &v1alpha1.TokenSpec{Mode: v1alpha1.TokenModeProjected, ExpirationSeconds: int64p(3608)}
		},
		"no reach":           func(s *v1alpha1.ConnectionPolicySpec) { s.Reach = nil },
		"explicit Enforce":   func(s *v1alpha1.ConnectionPolicySpec) { s.Enforcement = v1alpha1.EnforcementEnforce },
		"public ceiling":     func(s *v1alpha1.ConnectionPolicySpec) { s.Reach[0].MaxClassification = v1alpha1.ClassificationPublic },
		"non-API https host": func(s *v1alpha1.ConnectionPolicySpec) { s.Audience = "https://kubernetes.example.com" },
	} {
		if _, err := c.CompileConnection(connectionPolicy(edit)); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
}

func TestCompileConnectionInvalid(t *testing.T) {
	ref := types.NamespacedName{Namespace: "billing", Name: "billing-to-ledger"}
	tests := []struct {
		name string
		opts CompilerOptions
		edit func(*v1alpha1.ConnectionPolicySpec)
		want []fieldErr
	}{
		{"no service account", CompilerOptions{}, func(s *v1alpha1.ConnectionPolicySpec) { s.ServiceAccountName = "" },
			[]fieldErr{{"spec.serviceAccountName", field.ErrorTypeRequired, "workload identity"}}},
		{"unknown enforcement", CompilerOptions{}, func(s *v1alpha1.ConnectionPolicySpec) { s.Enforcement = "Audit" },
			[]fieldErr{{"spec.enforcement", field.ErrorTypeNotSupported, `"Audit"`}}},
		{"API audience", CompilerOptions{}, func(s *v1alpha1.ConnectionPolicySpec) { s.Audience = "https://kubernetes.default.svc" },
			[]fieldErr{{"spec.audience", field.ErrorTypeForbidden, "audience of the Kubernetes API server"}}},
		{"API audience with trailing slash", CompilerOptions{}, func(s *v1alpha1.ConnectionPolicySpec) {
			s.Audience = "https://kubernetes.default.svc.cluster.local/"
		}, []fieldErr{{"spec.audience", field.ErrorTypeForbidden, "audience of the Kubernetes API server"}}},
		{"bare kubernetes audience", CompilerOptions{}, func(s *v1alpha1.ConnectionPolicySpec) { s.Audience = "kubernetes" },
			[]fieldErr{{"spec.audience", field.ErrorTypeForbidden, "audience of the Kubernetes API server"}}},
		{"configured API audience", CompilerOptions{APIAudiences: []string{" https://oidc.example/issuer/ ", ""}},
			func(s *v1alpha1.ConnectionPolicySpec) { s.Audience = "https://oidc.example/issuer" },
			[]fieldErr{{"spec.audience", field.ErrorTypeForbidden, `"https://oidc.example/issuer" is an audience of the Kubernetes API server`}}},
		{"another policy's default audience", CompilerOptions{}, func(s *v1alpha1.ConnectionPolicySpec) {
			s.Audience = "sallyport.dev/ledger/ledger-admin"
		}, []fieldErr{{"spec.audience", field.ErrorTypeForbidden, `this policy's default is "sallyport.dev/billing/billing-to-ledger"`}}},
		{"own default audience with a suffix", CompilerOptions{}, func(s *v1alpha1.ConnectionPolicySpec) {
			s.Audience = "sallyport.dev/billing/billing-to-ledger/x"
		}, []fieldErr{{"spec.audience", field.ErrorTypeForbidden, "reserved for defaults"}}},
		{"maxTokenLifetime too short", CompilerOptions{}, func(s *v1alpha1.ConnectionPolicySpec) { s.MaxTokenLifetime.Duration = 5 * time.Minute },
			[]fieldErr{{"spec.maxTokenLifetime", field.ErrorTypeInvalid, "must be between 10m0s and 48h0m0s"}}},
		{"maxTokenLifetime too long", CompilerOptions{}, func(s *v1alpha1.ConnectionPolicySpec) { s.MaxTokenLifetime.Duration = 49 * time.Hour },
			[]fieldErr{{"spec.maxTokenLifetime", field.ErrorTypeInvalid, `"49h0m0s"`}}},
		{"reach without class", CompilerOptions{}, func(s *v1alpha1.ConnectionPolicySpec) {
			s.Reach = append(s.Reach, v1alpha1.Reach{})
		}, []fieldErr{{"spec.reach[1].class", field.ErrorTypeRequired, ""}}},
		{"duplicate reach class", CompilerOptions{}, func(s *v1alpha1.ConnectionPolicySpec) {
			s.Reach = append(s.Reach, v1alpha1.Reach{Class: "audit"}, v1alpha1.Reach{Class: "ledger"})
		}, []fieldErr{{"spec.reach[2].class", field.ErrorTypeDuplicate, `"ledger"`}}},
		{"unknown maxClassification", CompilerOptions{}, func(s *v1alpha1.ConnectionPolicySpec) { s.Reach[0].MaxClassification = "secret" },
			[]fieldErr{{"spec.reach[0].maxClassification", field.ErrorTypeNotSupported, `"public", "internal", "confidential", "restricted"`}}},
		{"when syntax error", CompilerOptions{}, func(s *v1alpha1.ConnectionPolicySpec) {
			s.When = "request.action == \"GET\" &&\n  connection.namespace =="
		}, []fieldErr{{"spec.when", field.ErrorTypeInvalid, "line 2, column 26: Syntax error"}}},
		{"when uses resource", CompilerOptions{}, func(s *v1alpha1.ConnectionPolicySpec) { s.When = `resource.class == "ledger"` },
			[]fieldErr{{"spec.when", field.ErrorTypeInvalid, "line 1, column 1: undeclared reference to 'resource'"}}},
		{"when not bool", CompilerOptions{}, func(s *v1alpha1.ConnectionPolicySpec) { s.When = `connection.namespace` },
			[]fieldErr{{"spec.when", field.ErrorTypeInvalid, "must evaluate to bool, not string"}}},
		{"when over a tight budget", CompilerOptions{Limits: expr.Limits{ExpressionBudget: 5, RuntimeCostLimit: 5}},
			func(s *v1alpha1.ConnectionPolicySpec) { s.When = `request.scopes.all(s, s.startsWith("a"))` },
			[]fieldErr{{"spec.when", field.ErrorTypeInvalid, "exceeds the budget of 5"}}},
		{"token without mode", CompilerOptions{}, func(s *v1alpha1.ConnectionPolicySpec) { s.Token = &v1alpha1.TokenSpec{} },
			[]fieldErr{{"spec.token.mode", field.ErrorTypeNotSupported, `"Projected", "Secret"`}}},
		{"secretName in Projected mode", CompilerOptions{}, func(s *v1alpha1.ConnectionPolicySpec) {
			s.Token = &v1alpha1.TokenSpec{Mode: v1alpha1.TokenModeProjected, SecretName: "x"}
		}, []fieldErr{{"spec.token.secretName", field.ErrorTypeForbidden, "only valid with mode Secret"}}},
		{"expirationSeconds below the floor", CompilerOptions{}, func(s *v1alpha1.ConnectionPolicySpec) {
			s.Token = &v1alpha1.TokenSpec{Mode: v1alpha1.TokenModeSecret, ExpirationSeconds: int64p(599)}
		}, []fieldErr{{"spec.token.expirationSeconds", field.ErrorTypeInvalid, "must be at least 600"}}},
		{"expirationSeconds above maxTokenLifetime", CompilerOptions{}, func(s *v1alpha1.ConnectionPolicySpec) {
			s.Token = &v1alpha1.TokenSpec{Mode: v1alpha1.TokenModeSecret, ExpirationSeconds: int64p(3601)}
		}, []fieldErr{{"spec.token.expirationSeconds", field.ErrorTypeInvalid, "may not exceed maxTokenLifetime (1h0m0s)"}}},
		{"default expirationSeconds above maxTokenLifetime", CompilerOptions{}, func(s *v1alpha1.ConnectionPolicySpec) {
			s.MaxTokenLifetime.Duration = 10 * time.Minute
			s.Token = &v1alpha1.TokenSpec{Mode: v1alpha1.TokenModeSecret}
		}, []fieldErr{{"spec.token.expirationSeconds", field.ErrorTypeInvalid, "Invalid value: 900: may not exceed maxTokenLifetime (10m0s)"}}},
		{"expirationSeconds that overflows a Duration", CompilerOptions{}, func(s *v1alpha1.ConnectionPolicySpec) {
			s.Token = &v1alpha1.TokenSpec{Mode: v1alpha1.TokenModeSecret, ExpirationSeconds: int64p(9223372037)}
		}, []fieldErr{{"spec.token.expirationSeconds", field.ErrorTypeInvalid, "may not exceed maxTokenLifetime"}}},
		{"legacy 3607", CompilerOptions{}, func(s *v1alpha1.ConnectionPolicySpec) {
			s.MaxTokenLifetime.Duration = 2 * time.Hour
			s.Token = &v1alpha1.TokenSpec{Mode: v1alpha1.TokenModeProjected, ExpirationSeconds: int64p(3607)}
		}, []fieldErr{{"spec.token.expirationSeconds", field.ErrorTypeInvalid, "3607 is reserved"}}},
		{"every problem at once", CompilerOptions{}, func(s *v1alpha1.ConnectionPolicySpec) {
			s.Enforcement = "Audit"
			s.ServiceAccountName = ""
			s.Audience = "kubernetes.default.svc"
			s.Reach[0].MaxClassification = "top"
			s.When = "1 +"
			s.Token = &v1alpha1.TokenSpec{Mode: "Vault", ExpirationSeconds: int64p(60)}
		}, []fieldErr{
			{"spec.enforcement", field.ErrorTypeNotSupported, ""},
			{"spec.serviceAccountName", field.ErrorTypeRequired, ""},
			{"spec.audience", field.ErrorTypeForbidden, ""},
			{"spec.reach[0].maxClassification", field.ErrorTypeNotSupported, ""},
			{"spec.when", field.ErrorTypeInvalid, "line 1, column 4"},
			{"spec.token.mode", field.ErrorTypeNotSupported, `"Vault"`},
			{"spec.token.expirationSeconds", field.ErrorTypeInvalid, "at least 600"},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := NewCompiler(tt.opts).CompileConnection(connectionPolicy(tt.edit))
			if got != nil {
				t.Errorf("compiled %+v despite errors", got)
			}
			checkInvalid(t, err, "ConnectionPolicy", ref, tt.want)
		})
	}
}

// Zero limits mean the default limits, not a zero budget.
func TestNewCompilerDefaultLimits(t *testing.T) {
	cp := connectionPolicy(func(s *v1alpha1.ConnectionPolicySpec) { s.When = `request.scopes.all(s, s.matches("^ledger\\."))` })
	if _, err := NewCompiler(CompilerOptions{}).CompileConnection(cp); err != nil {
		t.Errorf("zero limits: %v", err)
	}
	if _, err := NewCompiler(CompilerOptions{Limits: expr.Limits{ExpressionBudget: 1, RuntimeCostLimit: 1}}).CompileConnection(cp); err == nil {
		t.Error("budget of 1 accepted a comprehension")
	}
}

func TestCompileResource(t *testing.T) {
	c := NewCompiler(CompilerOptions{})
	rp := resourcePolicy(func(s *v1alpha1.ResourcePolicySpec) {
		s.Hosts = []string{"ledger.example", "ledger.example:8443"}
		s.Rules = []v1alpha1.Rule{
			{
				Name: "read", Effect: v1alpha1.EffectAllow,
				Actions:   []string{"HEAD", "GET", "GET"},
				Resources: []string{"/entries/**", "/accounts/*"},
				Scopes:    []v1alpha1.Scope{"ledger.read", "ledger.list", "ledger.read"},
				Connections: []v1alpha1.ConnectionRef{
					{Namespace: "billing", Name: "billing-to-ledger"},
					{Name: "ledger-self"},
					{NamespaceSelector: &v1alpha1.LabelSelector{}},
					{PolicySelector: &v1alpha1.LabelSelector{MatchLabels: map[string]v1alpha1.LabelValue{"tier": "gold"}}},
				},
				When: `resource.name != "/entries/secret"`,
			},
			{
				Name: "no-deletes", Effect: v1alpha1.EffectDeny,
				Actions: []string{"DELETE"}, Resources: []string{"/**"},
			},
			{
				Name: "write", Effect: v1alpha1.EffectAllow,
				Actions: []string{"*", "POST"}, Resources: []string{"/entries"},
				Connections: []v1alpha1.ConnectionRef{{Name: "ledger-self"}},
			},
			{
				Name: "business-hours", Effect: v1alpha1.EffectDeny,
				Actions: []string{"*"}, Resources: []string{"/**"},
				When: `request.time.getHours() < 8`,
			},
		}
	})
	got, err := c.CompileResource(rp)
	if err != nil {
		t.Fatal(err)
	}
	if got.Ref != (types.NamespacedName{Namespace: "ledger", Name: "ledger-api"}) || got.Enforcement != v1alpha1.EnforcementEnforce ||
		got.Service != "ledger-api" || got.Class != "ledger" || got.Classification != LevelConfidential ||
		!slices.Equal(got.Hosts, []string{"ledger.example", "ledger.example:8443"}) {
		t.Errorf("got %+v", got)
	}
	rp.Spec.Hosts[0] = "changed.example"
	if got.Hosts[0] != "ledger.example" {
		t.Error("Hosts shares the spec's slice")
	}
	names := func(rules []*Rule) (out []string) {
		for _, r := range rules {
			out = append(out, r.Name)
		}
		return out
	}
	if !slices.Equal(names(got.Allow), []string{"read", "write"}) || !slices.Equal(names(got.Deny), []string{"no-deletes", "business-hours"}) {
		t.Fatalf("Allow = %v, Deny = %v", names(got.Allow), names(got.Deny))
	}
	read, write, noDeletes := got.Allow[0], got.Allow[1], got.Deny[0]
	if read.Index != 0 || noDeletes.Index != 1 || write.Index != 2 || got.Deny[1].Index != 3 {
		t.Errorf("indexes %d %d %d %d", read.Index, noDeletes.Index, write.Index, got.Deny[1].Index)
	}
	if read.Effect != v1alpha1.EffectAllow || noDeletes.Effect != v1alpha1.EffectDeny {
		t.Errorf("effects %s %s", read.Effect, noDeletes.Effect)
	}
	if read.AnyAction || !slices.Equal(read.Actions, []string{"GET", "HEAD"}) {
		t.Errorf("read actions %v %v", read.AnyAction, read.Actions)
	}
	if !write.AnyAction || !slices.Equal(write.Actions, []string{"POST"}) {
		t.Errorf("write actions %v %v", write.AnyAction, write.Actions)
	}
	if !slices.Equal(read.Scopes, []string{"ledger.list", "ledger.read"}) || len(noDeletes.Scopes) != 0 {
		t.Errorf("scopes %v %v", read.Scopes, noDeletes.Scopes)
	}
	if len(read.Resources) != 2 || read.Resources[0].String() != "/entries/**" || read.Resources[1].String() != "/accounts/*" {
		t.Errorf("resources %v", read.Resources)
	}
	if len(read.Connections) != 4 || len(noDeletes.Connections) != 0 {
		t.Fatalf("connections %d %d", len(read.Connections), len(noDeletes.Connections))
	}
	if n := read.Connections[0].Name; n != (types.NamespacedName{Namespace: "billing", Name: "billing-to-ledger"}) {
		t.Errorf("connections[0] = %v", n)
	}
	if n := read.Connections[1].Name; n != (types.NamespacedName{Namespace: "ledger", Name: "ledger-self"}) {
		t.Errorf("connections[1] namespace not defaulted: %v", n)
	}
	if read.When == nil || noDeletes.When != nil || got.Deny[1].When == nil {
		t.Errorf("When %v %v %v", read.When, noDeletes.When, got.Deny[1].When)
	}
	wantSum := Summary{Rules: 4, Expressions: 2, EstimatedCost: read.When.EstimatedCost() + got.Deny[1].When.EstimatedCost()}
	if got.Summary != wantSum {
		t.Errorf("Summary = %+v, want %+v", got.Summary, wantSum)
	}
	if ok, err := read.When.Eval(&expr.Activation{Resource: &expr.Resource{Name: "/entries/secret"}}); err != nil || ok {
		t.Errorf("read.When on /entries/secret = %v, %v", ok, err)
	}

	// DryRun and no rules at all.
	rp = resourcePolicy(func(s *v1alpha1.ResourcePolicySpec) { s.Enforcement = v1alpha1.EnforcementDryRun; s.Rules = nil })
	if got, err = c.CompileResource(rp); err != nil || got.Enforcement != v1alpha1.EnforcementDryRun || len(got.Allow)+len(got.Deny) != 0 {
		t.Errorf("DryRun without rules: %+v, %v", got, err)
	}
}

func TestCompileResourceInvalid(t *testing.T) {
	ref := types.NamespacedName{Namespace: "ledger", Name: "ledger-api"}
	rule := func(edit func(*v1alpha1.Rule)) func(*v1alpha1.ResourcePolicySpec) {
		return func(s *v1alpha1.ResourcePolicySpec) { edit(&s.Rules[0]) }
	}
	badSelector := &v1alpha1.LabelSelector{MatchExpressions: []v1alpha1.LabelSelectorRequirement{{Key: "team", Operator: "Near"}}}
	tests := []struct {
		name string
		edit func(*v1alpha1.ResourcePolicySpec)
		want []fieldErr
	}{
		{"no service", func(s *v1alpha1.ResourcePolicySpec) { s.Service = "" },
			[]fieldErr{{"spec.service", field.ErrorTypeRequired, ""}}},
		{"no class", func(s *v1alpha1.ResourcePolicySpec) { s.Class = "" },
			[]fieldErr{{"spec.class", field.ErrorTypeRequired, ""}}},
		{"no classification", func(s *v1alpha1.ResourcePolicySpec) { s.Classification = "" },
			[]fieldErr{{"spec.classification", field.ErrorTypeNotSupported, `"public", "internal", "confidential", "restricted"`}}},
		{"unknown classification", func(s *v1alpha1.ResourcePolicySpec) { s.Classification = "Secret" },
			[]fieldErr{{"spec.classification", field.ErrorTypeNotSupported, `"Secret"`}}},
		{"unknown enforcement", func(s *v1alpha1.ResourcePolicySpec) { s.Enforcement = "enforce" },
			[]fieldErr{{"spec.enforcement", field.ErrorTypeNotSupported, ""}}},
		{"bad hosts", func(s *v1alpha1.ResourcePolicySpec) { s.Hosts = []string{"ok.example", "Ledger.Example", ""} },
			[]fieldErr{
				{"spec.hosts[1]", field.ErrorTypeInvalid, "must be a lower-case host name"},
				{"spec.hosts[2]", field.ErrorTypeInvalid, "must be a lower-case host name"},
			}},
		{"rule without name", rule(func(r *v1alpha1.Rule) { r.Name = "" }),
			[]fieldErr{{"spec.rules[0].name", field.ErrorTypeRequired, ""}}},
		{"duplicate rule name", func(s *v1alpha1.ResourcePolicySpec) {
			s.Rules = append(s.Rules, v1alpha1.Rule{Name: "deny", Effect: v1alpha1.EffectDeny, Actions: []string{"*"}, Resources: []string{"/**"}}, s.Rules[0])
		}, []fieldErr{{"spec.rules[2].name", field.ErrorTypeDuplicate, `"read (also rules[0])"`}}},
		{"unknown effect", rule(func(r *v1alpha1.Rule) { r.Effect = "Permit" }),
			[]fieldErr{{"spec.rules[0].effect", field.ErrorTypeNotSupported, `"Permit"`}}},
		{"no actions", rule(func(r *v1alpha1.Rule) { r.Actions = nil }),
			[]fieldErr{{"spec.rules[0].actions", field.ErrorTypeRequired, `rule "read": at least one action`}}},
		{"bad actions", rule(func(r *v1alpha1.Rule) { r.Actions = []string{"GET", "", "GE*", "GET POST", "\tGET"} }),
			[]fieldErr{
				{"spec.rules[0].actions[1]", field.ErrorTypeInvalid, `rule "read": an action is an exact method or verb`},
				{"spec.rules[0].actions[2]", field.ErrorTypeInvalid, `"GE*"`},
				{"spec.rules[0].actions[3]", field.ErrorTypeInvalid, `"GET POST"`},
				{"spec.rules[0].actions[4]", field.ErrorTypeInvalid, ""},
			}},
		{"no resources", rule(func(r *v1alpha1.Rule) { r.Resources = nil }),
			[]fieldErr{{"spec.rules[0].resources", field.ErrorTypeRequired, `rule "read": at least one pattern`}}},
		{"bad resources", rule(func(r *v1alpha1.Rule) { r.Resources = []string{"/ok", "entries", "/a/../b", "/a*"} }),
			[]fieldErr{
				{"spec.rules[0].resources[1]", field.ErrorTypeInvalid, `rule "read": must start with "/"`},
				{"spec.rules[0].resources[2]", field.ErrorTypeInvalid, `rule "read": segment 2: ".." segments are not allowed`},
				{"spec.rules[0].resources[3]", field.ErrorTypeInvalid, `must be a whole segment`},
			}},
		{"Allow without connections", rule(func(r *v1alpha1.Rule) { r.Connections = nil }),
			[]fieldErr{{"spec.rules[0].connections", field.ErrorTypeRequired, `rule "read": an Allow rule must name at least one connection`}}},
		{"connection with name and selector", rule(func(r *v1alpha1.Rule) {
			r.Connections = []v1alpha1.ConnectionRef{{Name: "x", NamespaceSelector: &v1alpha1.LabelSelector{}}}
		}), []fieldErr{{"spec.rules[0].connections[0]", field.ErrorTypeInvalid, "not both"}}},
		{"empty connection", rule(func(r *v1alpha1.Rule) {
			r.Connections = []v1alpha1.ConnectionRef{{Name: "x"}, {}}
		}), []fieldErr{{"spec.rules[0].connections[1]", field.ErrorTypeRequired, `rule "read": set either name`}}},
		{"namespace without name", rule(func(r *v1alpha1.Rule) {
			r.Connections = []v1alpha1.ConnectionRef{{Namespace: "billing"}}
		}), []fieldErr{{"spec.rules[0].connections[0]", field.ErrorTypeRequired, "set either name"}}},
		{"namespace with selector", rule(func(r *v1alpha1.Rule) {
			r.Connections = []v1alpha1.ConnectionRef{{Namespace: "billing", PolicySelector: &v1alpha1.LabelSelector{}}}
		}), []fieldErr{{"spec.rules[0].connections[0].namespace", field.ErrorTypeForbidden, "namespace is only valid with name"}}},
		{"bad selectors", rule(func(r *v1alpha1.Rule) {
			r.Connections = []v1alpha1.ConnectionRef{{NamespaceSelector: badSelector, PolicySelector: badSelector}}
		}), []fieldErr{
			{"spec.rules[0].connections[0].namespaceSelector", field.ErrorTypeInvalid, `rule "read": "Near" is not a valid label selector operator`},
			{"spec.rules[0].connections[0].policySelector", field.ErrorTypeInvalid, "not a valid label selector operator"},
		}},
		{"when type error names the rule", func(s *v1alpha1.ResourcePolicySpec) {
			s.Rules = append(s.Rules, v1alpha1.Rule{
				Name: "deny-writes", Effect: v1alpha1.EffectDeny, Actions: []string{"*"}, Resources: []string{"/**"},
				When: "request.action != \"GET\" &&\n  request.action == 1",
			})
		}, []fieldErr{{"spec.rules[1].when", field.ErrorTypeInvalid, `rule "deny-writes": line 2, column 18: found no matching overload`}}},
		{"when unknown field", rule(func(r *v1alpha1.Rule) { r.When = `resource.owner == "x"` }),
			[]fieldErr{{"spec.rules[0].when", field.ErrorTypeInvalid, `rule "read": line 1, column 9: undefined field 'owner'`}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := NewCompiler(CompilerOptions{}).CompileResource(resourcePolicy(tt.edit))
			if got != nil {
				t.Errorf("compiled %+v despite errors", got)
			}
			checkInvalid(t, err, "ResourcePolicy", ref, tt.want)
		})
	}
}

// The caret line of an expression error ends up in the field error detail,
// after the rule name.
func TestInvalidErrorMessage(t *testing.T) {
	_, err := NewCompiler(CompilerOptions{}).CompileResource(resourcePolicy(func(s *v1alpha1.ResourcePolicySpec) {
		s.Service = ""
		s.Rules[0].When = `request.action == 1`
	}))
	want := "spec.service: Required value\n" +
		`spec.rules[0].when: Invalid value: "request.action == 1": rule "read": line 1, column 16: found no matching overload for '_==_' applied to '(string, int)'` +
		"\n | request.action == 1\n | ...............^"
	if err == nil || err.Error() != want {
		t.Errorf("Error() =\n%v\nwant\n%s", err, want)
	}
}
