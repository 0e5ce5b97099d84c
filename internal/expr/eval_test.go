package expr

import (
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"
)

var (
	t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

	fullActivation = &Activation{
		Connection: &Connection{
			Identity:       "system:serviceaccount:billing:worker",
			Namespace:      "billing",
			ServiceAccount: "worker",
			Audience:       "sallyport.dev/billing/billing-to-ledger",
			Policy:         "billing/billing-to-ledger",
			CredentialID:   "JTI=abc",
			IssuedAt:       t0,
			ExpiresAt:      t0.Add(15 * time.Minute),
			Lifetime:       15 * time.Minute,
			Age:            5 * time.Minute,
			Pod:            "worker-7d9f",
		},
		Request: &Request{
			Action: "GET",
			Scopes: []string{"ledger.read", "ledger.list"},
			Time:   t0.Add(5 * time.Minute),
			Attributes: map[string]string{
				"sourceIP":  "10.1.2.3",
				"sourceIP6": "fd00::1",
				"url":       "https://ledger.example:8443/entries?x=1",
				"memory":    "512Mi",
				"version":   "1.4.2",
			},
		},
		Resource: &Resource{
			Namespace:      "ledger",
			Service:        "ledger-api",
			Name:           "/entries/42",
			Class:          "ledger",
			Classification: "confidential",
		},
	}
)

// evalRule compiles src in RuleScope with the default limits and evaluates it.
func evalRule(t *testing.T, src string, a *Activation) (bool, error) {
	t.Helper()
	p, err := NewCompiler(DefaultLimits).Compile(src, RuleScope, "")
	if err != nil {
		t.Fatalf("Compile(%q): %v", src, err)
	}
	return p.Eval(a)
}

func TestEvalVariables(t *testing.T) {
	tests := []struct {
		src  string
		want bool
	}{
		{`connection.identity == "system:serviceaccount:billing:worker"`, true},
		{`connection.namespace == "billing"`, true},
		{`connection.namespace == "ledger"`, false},
		{`connection.serviceAccount == "worker"`, true},
		{`connection.audience == "sallyport.dev/billing/billing-to-ledger"`, true},
		{`connection.policy == "billing/billing-to-ledger"`, true},
		{`connection.credentialID == "JTI=abc"`, true},
		{`connection.issuedAt == timestamp("2026-03-01T12:00:00Z")`, true},
		{`connection.expiresAt == timestamp("2026-03-01T12:15:00Z")`, true},
		{`connection.expiresAt - connection.issuedAt == connection.lifetime`, true},
		{`connection.lifetime == duration("15m")`, true},
		{`connection.lifetime > duration("10m")`, true},
		{`connection.age == duration("5m")`, true},
		{`request.time - connection.issuedAt == connection.age`, true},
		{`connection.pod == "worker-7d9f"`, true},
		{`request.action == "GET"`, true},
		{`request.action == "get"`, false},
		{`request.scopes == ["ledger.read", "ledger.list"]`, true},
		{`"ledger.write" in request.scopes`, false},
		{`size(request.scopes) == 2`, true},
		{`request.time == timestamp("2026-03-01T12:05:00Z")`, true},
		{`request.time.getHours() == 12 && request.time.getMinutes() == 5`, true},
		{`request.time.getDayOfWeek() == 0`, true}, // 2026-03-01 is a Sunday
		{`request.time > connection.expiresAt`, false},
		{`size(request.attributes) == 5`, true},
		{`"sourceIP" in request.attributes`, true},
		{`request.attributes.exists(k, v, k == "memory" && v == "512Mi")`, true},
		{`resource.namespace == "ledger"`, true},
		{`resource.service == "ledger-api"`, true},
		{`resource.name == "/entries/42"`, true},
		{`resource.class == "ledger"`, true},
		{`resource.classification == "confidential"`, true},
		{`resource.classification == "restricted"`, false},
	}
	for _, tt := range tests {
		t.Run(tt.src, func(t *testing.T) {
			got, err := evalRule(t, tt.src, fullActivation)
			if err != nil {
				t.Fatalf("Eval: %v", err)
			}
			if got != tt.want {
				t.Errorf("Eval = %v, want %v", got, tt.want)
			}
		})
	}
}

// The Kubernetes CEL libraries of ValidatingAdmissionPolicy are present.
func TestEvalLibraries(t *testing.T) {
	tests := []struct {
		name string
		src  string
		want bool
	}{
		{"strings startsWith", `request.attributes["sourceIP"].startsWith("10.")`, true},
		{"strings ext", `request.action.lowerAscii() == "get" && "a,b".split(",") == ["a", "b"]`, true},
		{"regex matches", `resource.name.matches("^/entries/[0-9]+$")`, true},
		{"regex find", `resource.name.find("[0-9]+") == "42"`, true},
		{"isIP and ip", `isIP(request.attributes["sourceIP"]) && ip(request.attributes["sourceIP"]).family() == 4`, true},
		{"ipv6", `ip(request.attributes["sourceIP6"]).family() == 6`, true},
		{"isCIDR", `isCIDR("10.0.0.0/8") && !isCIDR("10.0.0.0/33")`, true},
		{"cidr contains", `cidr("10.0.0.0/8").containsIP(request.attributes["sourceIP"])`, true},
		{"cidr does not contain", `cidr("192.168.0.0/16").containsIP(ip(request.attributes["sourceIP"]))`, false},
		{"url", `isURL(request.attributes["url"]) && url(request.attributes["url"]).getHostname() == "ledger.example" && url(request.attributes["url"]).getPort() == "8443"`, true},
		{"quantity", `quantity(request.attributes["memory"]).isLessThan(quantity("1Gi"))`, true},
		{"quantity compare", `quantity("2Gi").compareTo(quantity(request.attributes["memory"])) == 1`, true},
		{"sets contains", `sets.contains(["ledger.read", "ledger.list", "ledger.write"], request.scopes)`, true},
		{"sets intersects", `sets.intersects(request.scopes, ["ledger.write"])`, false},
		{"format", `"%s/%s".format([resource.namespace, resource.service]) == "ledger/ledger-api"`, true},
		{"format library", `!format.dns1123Label().validate(resource.service).hasValue()`, true},
		{"k8s lists", `[1, 2, 3].isSorted() && [1, 2, 3].sum() == 6 && [3, 1].min() == 1`, true},
		{"ext lists", `request.scopes.sort() == ["ledger.list", "ledger.read"]`, true},
		{"semver", `semver(request.attributes["version"]).isLessThan(semver("1.10.0"))`, true},
		{"optional", `request.attributes[?"missing"].orValue("none") == "none"`, true},
		{"cross-type numeric comparison", `size(request.scopes) < 2.5`, true},
		{"two-variable comprehension", `request.attributes.all(k, v, size(k) > 0 && size(v) > 0)`, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := evalRule(t, tt.src, fullActivation)
			if err != nil {
				t.Fatalf("Eval: %v", err)
			}
			if got != tt.want {
				t.Errorf("Eval = %v, want %v", got, tt.want)
			}
		})
	}
}

// Nil fields, and zero values in set fields, read as the empty value of
// every field's type.
func TestEvalEmptyValues(t *testing.T) {
	const src = `connection.identity == "" && connection.namespace == "" && connection.serviceAccount == "" &&
		connection.audience == "" && connection.policy == "" && connection.credentialID == "" && connection.pod == "" &&
		int(connection.issuedAt) == 0 && int(connection.expiresAt) == 0 &&
		connection.lifetime == duration("0s") && connection.age == duration("0s") &&
		request.action == "" && size(request.scopes) == 0 && int(request.time) == 0 &&
		size(request.attributes) == 0 && !("x" in request.attributes) &&
		resource.namespace == "" && resource.service == "" && resource.name == "" &&
		resource.class == "" && resource.classification == ""`
	for name, a := range map[string]*Activation{
		"nil fields":  {},
		"zero values": {Connection: &Connection{}, Request: &Request{}, Resource: &Resource{}},
	} {
		t.Run(name, func(t *testing.T) {
			got, err := evalRule(t, src, a)
			if err != nil || !got {
				t.Errorf("Eval = %v, %v; want true", got, err)
			}
		})
	}
	// The empty values are not the full ones: the same expression over the
	// full activation is false.
	if got, err := evalRule(t, src, fullActivation); err != nil || got {
		t.Errorf("Eval over full activation = %v, %v; want false", got, err)
	}
}

func TestActivationResolveName(t *testing.T) {
	a := &Activation{}
	for _, name := range []string{VarConnection, VarRequest, VarResource} {
		v, ok := a.ResolveName(name)
		if !ok || v == nil {
			t.Errorf("ResolveName(%q) = %v, %v", name, v, ok)
		}
	}
	if v, ok := a.ResolveName("object"); ok || v != nil {
		t.Errorf("ResolveName(object) = %v, %v", v, ok)
	}
	if a.Parent() != nil {
		t.Error("Parent() != nil")
	}
	if v, _ := fullActivation.ResolveName(VarRequest); v != fullActivation.Request {
		t.Errorf("ResolveName(request) = %v, want the activation's Request", v)
	}
}

func TestEvalRuntimeErrors(t *testing.T) {
	for _, src := range []string{
		`request.attributes["missing"] == "x"`,
		`ip(request.action).family() == 4`,
		`quantity(request.action).isInteger()`,
		`url(request.action).getHost() == ""`,
	} {
		got, err := evalRule(t, src, fullActivation)
		if err == nil || got {
			t.Errorf("Eval(%q) = %v, %v; want false and an error", src, got, err)
			continue
		}
		if errors.Is(err, ErrCostLimit) {
			t.Errorf("Eval(%q) error %v wraps ErrCostLimit", src, err)
		}
	}
}

func TestEvalRuntimeCostLimit(t *testing.T) {
	scopes := make([]string, MaxScopes)
	for i := range scopes {
		scopes[i] = "ledger.s" + strconv.Itoa(i)
	}
	const src = `request.scopes.all(s, s.startsWith("ledger."))`

	// A runtime limit below what the static check allows stops the
	// evaluation on large input, and only on large input.
	small := NewCompiler(Limits{ExpressionBudget: DefaultLimits.ExpressionBudget, RuntimeCostLimit: 100})
	p, err := small.Compile(src, RuleScope, "")
	if err != nil {
		t.Fatal(err)
	}
	if got, err := p.Eval(&Activation{Request: &Request{Scopes: scopes[:2]}}); err != nil || !got {
		t.Errorf("two scopes: %v, %v; want true", got, err)
	}
	got, err := p.Eval(&Activation{Request: &Request{Scopes: scopes}})
	if !errors.Is(err, ErrCostLimit) || got {
		t.Fatalf("%d scopes: %v, %v; want ErrCostLimit", len(scopes), got, err)
	}
	if !strings.HasPrefix(err.Error(), "runtime cost limit exceeded after ") {
		t.Errorf("error = %q", err)
	}

	// With the default limits, input beyond the bounds the estimate
	// relies on hits the backstop.
	attrs := make(map[string]string, 2000)
	for i := range 2000 {
		attrs["k"+strconv.Itoa(i)] = strings.Repeat("a", 8192)
	}
	got, err = evalRule(t, `request.attributes.all(k, request.attributes[k].matches("^a+$"))`,
		&Activation{Request: &Request{Attributes: attrs}})
	if !errors.Is(err, ErrCostLimit) || got {
		t.Errorf("oversized attributes: %v, %v; want ErrCostLimit", got, err)
	}
}
