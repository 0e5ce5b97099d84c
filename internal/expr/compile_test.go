package expr

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
)

// compileErr compiles src and returns its *CompileError, failing the test
// when compilation succeeds or fails with another error type.
func compileErr(t *testing.T, c *Compiler, src string, scope Scope) *CompileError {
	t.Helper()
	p, err := c.Compile(src, scope, "spec.when")
	if err == nil {
		t.Fatalf("Compile(%q) succeeded (cost %d), want an error", src, p.EstimatedCost())
	}
	var ce *CompileError
	if !errors.As(err, &ce) {
		t.Fatalf("Compile(%q) error %T %v, want *CompileError", src, err, err)
	}
	if ce.Expression != src || ce.Location != "spec.when" {
		t.Errorf("CompileError names %q at %q, want %q at %q", ce.Expression, ce.Location, src, "spec.when")
	}
	return ce
}

func TestScopeString(t *testing.T) {
	if got := ConnectionScope.String(); got != "connection" {
		t.Errorf("ConnectionScope.String() = %q", got)
	}
	if got := RuleScope.String(); got != "rule" {
		t.Errorf("RuleScope.String() = %q", got)
	}
}

// Every field of every variable type-checks in the scopes that see it, and a
// Program keeps its source and a nonzero cost estimate.
func TestCompileEveryField(t *testing.T) {
	c := NewCompiler(DefaultLimits)
	fields := []struct {
		src    string
		inConn bool // visible to a ConnectionPolicy's when
	}{
		{`connection.identity == "system:serviceaccount:a:b"`, true},
		{`connection.namespace == "a"`, true},
		{`connection.serviceAccount == "b"`, true},
		{`connection.audience == "sallyport.dev/a/c"`, true},
		{`connection.policy == "a/c"`, true},
		{`connection.credentialID.startsWith("JTI=")`, true},
		{`connection.issuedAt < timestamp("2030-01-01T00:00:00Z")`, true},
		{`connection.expiresAt > connection.issuedAt`, true},
		{`connection.lifetime <= duration("1h")`, true},
		{`connection.age < duration("5m")`, true},
		{`connection.pod != ""`, true},
		{`request.action == "GET"`, true},
		{`"ledger.read" in request.scopes`, true},
		{`request.scopes.all(s, s.startsWith("ledger."))`, true},
		{`request.time.getHours() < 18`, true},
		{`request.attributes["sourceIP"] == "10.0.0.1"`, true},
		{`request.attributes.exists(k, v, k == "a" && v == "b")`, true},
		{`resource.namespace == "ledger"`, false},
		{`resource.service == "ledger-api"`, false},
		{`resource.name.startsWith("/entries/")`, false},
		{`resource.class == "ledger"`, false},
		{`resource.classification == "confidential"`, false},
	}
	for _, f := range fields {
		t.Run(f.src, func(t *testing.T) {
			p, err := c.Compile(f.src, RuleScope, "spec.rules[0].when")
			if err != nil {
				t.Fatalf("RuleScope: %v", err)
			}
			if p.Source() != f.src {
				t.Errorf("Source() = %q", p.Source())
			}
			if p.EstimatedCost() == 0 {
				t.Errorf("EstimatedCost() = 0")
			}
			_, err = c.Compile(f.src, ConnectionScope, "spec.when")
			if f.inConn && err != nil {
				t.Errorf("ConnectionScope: %v", err)
			}
			if !f.inConn && err == nil {
				t.Errorf("ConnectionScope accepted %q", f.src)
			}
		})
	}
}

func TestCompileScopeRules(t *testing.T) {
	c := NewCompiler(DefaultLimits)
	ce := compileErr(t, c, `request.action == "GET" && resource.name == "/x"`, ConnectionScope)
	if len(ce.Issues) != 1 {
		t.Fatalf("Issues = %+v, want one", ce.Issues)
	}
	is := ce.Issues[0]
	if is.Line != 1 || is.Column != 28 || !strings.Contains(is.Message, "undeclared reference to 'resource'") {
		t.Errorf("issue = %+v, want line 1, column 28, undeclared reference to 'resource'", is)
	}
	if !strings.HasPrefix(ce.Error(), "spec.when: line 1, column 28: ") {
		t.Errorf("Error() = %q", ce.Error())
	}
	// The same expression is fine in a rule.
	if _, err := c.Compile(`request.action == "GET" && resource.name == "/x"`, RuleScope, ""); err != nil {
		t.Errorf("RuleScope: %v", err)
	}
	// Names outside the three variables exist in neither scope.
	for _, scope := range []Scope{ConnectionScope, RuleScope} {
		for _, src := range []string{`object.metadata.name == "x"`, `params.x == "y"`, `self == 1`, `oldObject == null`} {
			ce := compileErr(t, c, src, scope)
			if !strings.Contains(ce.Issues[0].Message, "undeclared reference") {
				t.Errorf("%s %q: %+v", scope, src, ce.Issues)
			}
		}
	}
}

func TestCompileErrors(t *testing.T) {
	c := NewCompiler(DefaultLimits)
	tests := []struct {
		name string
		src  string
		want []Issue // Message is a substring
	}{
		{"string compared with int", `request.action == 1`,
			[]Issue{{1, 16, "no matching overload for '_==_' applied to '(string, int)'"}}},
		{"unknown field", `request.method == "GET"`,
			[]Issue{{1, 8, "undefined field 'method'"}}},
		{"unknown connection field", `connection.subject == "x"`,
			[]Issue{{1, 11, "undefined field 'subject'"}}},
		{"string output", `request.action`,
			[]Issue{{0, 0, "must evaluate to bool, not string"}}},
		{"list output", `request.scopes`,
			[]Issue{{0, 0, "must evaluate to bool, not list(string)"}}},
		{"dyn output", `dyn(true)`,
			[]Issue{{0, 0, "must evaluate to bool, not dyn"}}},
		{"scopes is not a map", `request.scopes["a"] == "b"`,
			[]Issue{{1, 15, "no matching overload"}}},
		{"syntax error at end", `request.action == `,
			[]Issue{{1, 19, "Syntax error"}}},
		{"syntax error on line 2", "request.action == \"GET\" &&\n  request.scopes.exists(s, s ==)",
			[]Issue{{2, 32, "Syntax error: mismatched input ')'"}}},
		{"undeclared on line 3 after a blank line", "true &&\n\n   foo.bar",
			[]Issue{{3, 4, "undeclared reference to 'foo'"}}},
		{"columns count runes, not bytes", "\"ééé\" == 1 ||\n  \"éé\" == 2",
			[]Issue{{1, 7, "no matching overload"}, {2, 8, "no matching overload"}}},
		{"invalid regex literal", `request.action.matches("[")`,
			[]Issue{{1, 24, "invalid matches argument"}}},
		{"invalid duration literal", `connection.age < duration("5 minutes")`,
			[]Issue{{1, 27, "invalid duration argument"}}},
		{"invalid timestamp literal", `request.time > timestamp("2020-13-01T00:00:00Z")`,
			[]Issue{{1, 26, "invalid timestamp argument"}}},
		{"heterogeneous list literal", `[1, "a"].size() == 2`,
			[]Issue{{1, 5, "expected type 'int' but found 'string'"}}},
		{"authorizer library absent", `authorizer.path("/healthz").check("get").allowed()`,
			[]Issue{{1, 1, "undeclared reference to 'authorizer'"}}},
		{"too long", `"` + strings.Repeat("a", 4089) + `" == ""`,
			[]Issue{{0, 0, "expression is 4097 bytes long, more than the 4096 allowed"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ce := compileErr(t, c, tt.src, RuleScope)
			// Each wanted issue is found, in order (others may follow,
			// such as the authorizer's member functions).
			if len(ce.Issues) < len(tt.want) {
				t.Fatalf("Issues = %+v, want %+v", ce.Issues, tt.want)
			}
			for i, w := range tt.want {
				got := ce.Issues[i]
				if got.Line != w.Line || got.Column != w.Column || !strings.Contains(got.Message, w.Message) {
					t.Errorf("Issues[%d] = %+v, want line %d column %d containing %q", i, got, w.Line, w.Column, w.Message)
				}
			}
			for i := 1; i < len(ce.Issues); i++ {
				a, b := ce.Issues[i-1], ce.Issues[i]
				if a.Line > b.Line || (a.Line == b.Line && a.Column > b.Column) {
					t.Errorf("Issues not in source order: %+v before %+v", a, b)
				}
			}
			for _, is := range ce.Issues {
				if is.Line > 0 && !strings.Contains(ce.Detail(), fmt.Sprintf("line %d, column %d: ", is.Line, is.Column)) {
					t.Errorf("Detail() lacks the position of %+v:\n%s", is, ce.Detail())
				}
			}
			if !strings.HasPrefix(ce.Error(), "spec.when: ") || !strings.HasSuffix(ce.Error(), ce.Detail()) {
				t.Errorf("Error() = %q, want location then Detail()", ce.Error())
			}
		})
	}
}

func TestMaxExpressionLength(t *testing.T) {
	c := NewCompiler(DefaultLimits)
	src := `"` + strings.Repeat("a", MaxExpressionLength-8) + `" == ""`
	if len(src) != MaxExpressionLength {
		t.Fatalf("test expression is %d bytes", len(src))
	}
	if _, err := c.Compile(src, RuleScope, ""); err != nil {
		t.Errorf("expression of exactly %d bytes: %v", MaxExpressionLength, err)
	}
}

// Detail points at the reported position in the source line; multi-line
// expressions show the right line.
func TestCompileErrorDetail(t *testing.T) {
	c := NewCompiler(DefaultLimits)
	ce := compileErr(t, c, "request.action == \"GET\" &&\n\t\tfoo", RuleScope)
	want := "line 2, column 3: undeclared reference to 'foo' (in container '')\n |   foo\n | ..^"
	if got := ce.Detail(); got != want {
		t.Errorf("Detail() =\n%s\nwant\n%s", got, want)
	}
	if got := ce.Error(); got != "spec.when: "+want {
		t.Errorf("Error() = %q", got)
	}

	tests := []struct {
		name string
		err  CompileError
		want string
	}{
		{
			name: "no location: Error is Detail",
			err:  CompileError{Expression: "a ==\n  b", Issues: []Issue{{Line: 2, Column: 3, Message: "bad b"}}},
			want: "line 2, column 3: bad b\n |   b\n | ..^",
		},
		{
			name: "whole-expression issue has no position",
			err:  CompileError{Expression: "x", Issues: []Issue{{Message: "too costly"}}},
			want: "too costly",
		},
		{
			name: "several issues, one per paragraph",
			err: CompileError{Expression: "ab\ncd", Issues: []Issue{
				{Line: 1, Column: 1, Message: "m1"}, {Line: 2, Column: 2, Message: "m2"}, {Message: "m3"},
			}},
			want: "line 1, column 1: m1\n | ab\n | ^\nline 2, column 2: m2\n | cd\n | .^\nm3",
		},
		{
			name: "line beyond the source is not echoed",
			err:  CompileError{Expression: "a", Issues: []Issue{{Line: 3, Column: 1, Message: "m"}}},
			want: "line 3, column 1: m",
		},
		{
			name: "long source line is not echoed",
			err:  CompileError{Expression: strings.Repeat("x", 201), Issues: []Issue{{Line: 1, Column: 5, Message: "m"}}},
			want: "line 1, column 5: m",
		},
		{
			name: "caret clamped to the line",
			err:  CompileError{Expression: "ab", Issues: []Issue{{Line: 1, Column: 9, Message: "m"}}},
			want: "line 1, column 9: m\n | ab\n | ..^",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.err.Detail(); got != tt.want {
				t.Errorf("Detail() =\n%s\nwant\n%s", got, tt.want)
			}
			if got := tt.err.Error(); got != tt.want {
				t.Errorf("Error() = %q, want %q", got, tt.want)
			}
			located := tt.err
			located.Location = "spec.rules[2].when"
			if got := located.Error(); got != "spec.rules[2].when: "+tt.want {
				t.Errorf("Error() with location = %q", got)
			}
		})
	}
}

func TestCompileCostBudget(t *testing.T) {
	c := NewCompiler(DefaultLimits)
	// Within the budget: one comprehension over every attribute or scope,
	// with a regex inside (the DefaultLimits promise).
	for _, src := range []string{
		`request.attributes.all(k, request.attributes[k].matches("^[a-z0-9.]+$"))`,
		`request.scopes.exists(s, s.matches("^ledger\\.(read|list)$"))`,
		`resource.name.matches("^/entries/[0-9]+$")`,
	} {
		p, err := c.Compile(src, RuleScope, "")
		if err != nil {
			t.Errorf("Compile(%q): %v", src, err)
			continue
		}
		if p.EstimatedCost() == 0 || p.EstimatedCost() > DefaultLimits.ExpressionBudget {
			t.Errorf("Compile(%q): EstimatedCost() = %d", src, p.EstimatedCost())
		}
	}
	// Over the budget: nested comprehensions over the request's bounded
	// collections.
	for _, src := range []string{
		`request.attributes.all(k, request.attributes.all(k2, request.attributes[k].matches(k2)))`,
		`request.attributes.exists(k, request.attributes.exists(k2, request.attributes[k].contains(request.attributes[k2])))`,
		`request.scopes.exists(s, request.attributes.exists(k, request.attributes[k].matches(s)))`,
		`request.scopes.all(a, request.scopes.all(b, request.scopes.all(c, a + b != c)))`,
	} {
		ce := compileErr(t, c, src, RuleScope)
		if len(ce.Issues) != 1 || ce.Issues[0].Line != 0 ||
			!strings.Contains(ce.Issues[0].Message, "exceeds the budget of 1000000") {
			t.Errorf("Compile(%q): %+v", src, ce.Issues)
		}
	}

	// The budget is the compiler's: the same expression, a smaller budget.
	const src = `request.scopes.all(s, s.startsWith("ledger."))`
	p, err := c.Compile(src, RuleScope, "")
	if err != nil {
		t.Fatal(err)
	}
	tight := NewCompiler(Limits{ExpressionBudget: p.EstimatedCost() - 1, RuntimeCostLimit: DefaultLimits.RuntimeCostLimit})
	ce := compileErr(t, tight, src, RuleScope)
	want := fmt.Sprintf("estimated worst-case cost %d exceeds the budget of %d", p.EstimatedCost(), p.EstimatedCost()-1)
	if !strings.HasPrefix(ce.Issues[0].Message, want) {
		t.Errorf("message = %q, want prefix %q", ce.Issues[0].Message, want)
	}
	exact := NewCompiler(Limits{ExpressionBudget: p.EstimatedCost(), RuntimeCostLimit: DefaultLimits.RuntimeCostLimit})
	if _, err := exact.Compile(src, RuleScope, ""); err != nil {
		t.Errorf("budget equal to the estimate: %v", err)
	}
}

// Every string, list and map field has a size bound for the cost estimator;
// a field without one would be estimated as unbounded.
func TestMaxSizesCoverEveryField(t *testing.T) {
	want := []string{
		"connection.identity", "connection.namespace", "connection.serviceAccount", "connection.audience",
		"connection.policy", "connection.credentialID", "connection.pod",
		"request.action", "request.scopes", "request.scopes.@items",
		"request.attributes", "request.attributes.@keys", "request.attributes.@values",
		"resource.namespace", "resource.service", "resource.name", "resource.class", "resource.classification",
	}
	for _, k := range want {
		if maxSizes[k] == 0 {
			t.Errorf("maxSizes[%q] missing", k)
		}
	}
	if len(maxSizes) != len(want) {
		t.Errorf("maxSizes has %d entries, want %d", len(maxSizes), len(want))
	}
	if got := maxSizes["request.attributes.@values"]; got != MaxAttributeValueLength {
		t.Errorf("attribute value bound = %d", got)
	}
	if got := maxSizes["connection.identity"]; got != uint64(len("system:serviceaccount:"))+63+1+253 {
		t.Errorf("identity bound = %d", got)
	}
}

func TestCompileConcurrent(t *testing.T) {
	c := NewCompiler(DefaultLimits)
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for i := range 8 {
		wg.Go(func() {
			scope := Scope(i % 2)
			p, err := c.Compile(fmt.Sprintf(`request.action == "A%d"`, i), scope, "")
			if err != nil {
				errs <- err
				return
			}
			ok, err := p.Eval(&Activation{Request: &Request{Action: fmt.Sprintf("A%d", i)}})
			if err != nil || !ok {
				errs <- fmt.Errorf("goroutine %d: %v %w", i, ok, err)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}
