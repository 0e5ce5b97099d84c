package expr

import "testing"

// BenchmarkEval evaluates typical conditions over a full activation.
func BenchmarkEval(b *testing.B) {
	for _, bc := range []struct{ name, src string }{
		{"duration", `connection.age < duration("10m")`},
		{"action-and-scope", `request.action == "GET" && "ledger.read" in request.scopes`},
		{"attribute-startsWith", `request.attributes["sourceIP"].startsWith("10.")`},
		{"classification", `resource.classification == "confidential"`},
	} {
		b.Run(bc.name, func(b *testing.B) {
			p, err := NewCompiler(DefaultLimits).Compile(bc.src, RuleScope, "")
			if err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			for b.Loop() {
				if ok, err := p.Eval(fullActivation); err != nil || !ok {
					b.Fatalf("Eval = %v, %v", ok, err)
				}
			}
		})
	}
}
