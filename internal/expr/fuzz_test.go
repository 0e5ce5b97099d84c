package expr

import (
	"errors"
	"testing"
)

// FuzzCompileAndEval compiles arbitrary expressions in both scopes and
// evaluates those that compile over a full activation. Invariants: nothing
// panics; a compiled program's estimated cost is within the budget; an
// evaluation either yields a bool or an error (callers fail closed on
// errors), and the runtime limit, not the fuzzer's timeout, stops a costly
// one.
func FuzzCompileAndEval(f *testing.F) {
	for _, s := range []string{
		`connection.age < duration("10m")`,
		`request.scopes.all(s, s.startsWith("ledger."))`,
		`request.attributes.exists(k, request.attributes[k].matches("^[a-z]+$"))`,
		`resource.name.startsWith("/entries/") && request.action == "GET"`,
		`request.scopes.map(a, request.scopes.map(b, a + b)).size() > 0`,
		`[1,2,3].map(x, [1,2,3].map(y, x * y)).size() == 3`,
		`ip(request.attributes["sourceIP"]).family() == 4`,
		`size(request.attributes) > 1 || connection.pod == ""`,
		`(((((((((((true)))))))))))`,
	} {
		f.Add(s, false)
		f.Add(s, true)
	}
	c := NewCompiler(DefaultLimits)
	f.Fuzz(func(t *testing.T, src string, rule bool) {
		scope := ConnectionScope
		if rule {
			scope = RuleScope
		}
		p, err := c.Compile(src, scope, "spec.when")
		if err != nil {
			var ce *CompileError
			if !errors.As(err, &ce) {
				t.Fatalf("compile error of type %T: %v", err, err)
			}
			return
		}
		if p.EstimatedCost() > DefaultLimits.ExpressionBudget {
			t.Fatalf("compiled with estimated cost %d over the budget %d: %q", p.EstimatedCost(), DefaultLimits.ExpressionBudget, src)
		}
		// An error is a fail-closed answer; only a panic is a failure here.
		_, _ = p.Eval(fullActivation)
	})
}
