package expr

import (
	"errors"
	"fmt"
	"runtime"
	"strconv"
	"sync"
	"testing"
	"time"
)

// entries is how many compiled forms the compiler remembers.
func (c *Compiler) entries() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.compiled)
}

// The same source in the same scope compiles once; each Program keeps its own
// source and evaluates on its own input.
func TestCompileSharesIdenticalSources(t *testing.T) {
	c := NewCompiler(DefaultLimits)
	const src = `request.action == "read"`
	a, err := c.Compile(src, RuleScope, `policy "a" rule "read"`)
	if err != nil {
		t.Fatal(err)
	}
	b, err := c.Compile(src, RuleScope, `policy "b" rule "read"`)
	if err != nil {
		t.Fatal(err)
	}
	if a == b {
		t.Fatal("Compile returned the same *Program twice; each caller needs its own")
	}
	if a.compiled != b.compiled {
		t.Error("two compilations of one source in one scope did not share their compiled form")
	}
	if a.Source() != src || b.Source() != src || a.EstimatedCost() != b.EstimatedCost() {
		t.Errorf("sources %q, %q and costs %d, %d; want %q and equal costs", a.Source(), b.Source(), a.EstimatedCost(), b.EstimatedCost(), src)
	}
	for _, c := range []struct {
		action string
		want   bool
	}{{"read", true}, {"write", false}} {
		for _, p := range []*Program{a, b} {
			if got, err := p.Eval(&Activation{Request: &Request{Action: c.action}}); err != nil || got != c.want {
				t.Errorf("Eval(action %q) = %v, %v; want %v", c.action, got, err, c.want)
			}
		}
	}
	if n := c.entries(); n != 1 {
		t.Errorf("the compiler remembers %d compiled forms, want 1", n)
	}
}

// What a compiled form depends on keeps forms apart: the scope, the source
// (byte for byte), and the compiler with its limits.
func TestCompileKeepsDifferentFormsApart(t *testing.T) {
	c := NewCompiler(DefaultLimits)
	compile := func(c *Compiler, src string, scope Scope) *Program {
		t.Helper()
		p, err := c.Compile(src, scope, "")
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	base := compile(c, `request.action == "read"`, RuleScope)
	for name, p := range map[string]*Program{
		"other scope":    compile(c, `request.action == "read"`, ConnectionScope),
		"other source":   compile(c, `request.action == "write"`, RuleScope),
		"other spacing":  compile(c, `request.action  == "read"`, RuleScope),
		"other compiler": compile(NewCompiler(Limits{ExpressionBudget: 500, RuntimeCostLimit: 500}), `request.action == "read"`, RuleScope),
	} {
		if p.compiled == base.compiled {
			t.Errorf("%s: shares the compiled form of %q in %s", name, base.Source(), RuleScope)
		}
	}
}

// A failed compilation is not remembered: each caller's error names its own
// location.
func TestCompileErrorsAreNotShared(t *testing.T) {
	c := NewCompiler(DefaultLimits)
	const src = `request.nope == "x"`
	for _, loc := range []string{`policy "a"`, `policy "b"`} {
		_, err := c.Compile(src, RuleScope, loc)
		var ce *CompileError
		if !errors.As(err, &ce) || ce.Location != loc {
			t.Errorf("Compile at %s: error %v, want a *CompileError at that location", loc, err)
		}
	}
	if n := c.entries(); n != 0 {
		t.Errorf("the compiler remembers %d compiled forms after failures only, want 0", n)
	}
}

// Once no Program uses a compiled form, the compiler forgets it, and the
// same source compiles anew.
func TestCompileForgetsUnusedForms(t *testing.T) {
	c := NewCompiler(DefaultLimits)
	for i := range 20 {
		if _, err := c.Compile(`request.action == "A`+strconv.Itoa(i)+`"`, RuleScope, ""); err != nil {
			t.Fatal(err)
		}
	}
	// Cleanups run on their own goroutine after a collection; give them
	// time without asserting how long they take.
	deadline := time.Now().Add(30 * time.Second)
	for c.entries() > 0 && time.Now().Before(deadline) {
		runtime.GC()
		time.Sleep(10 * time.Millisecond)
	}
	if n := c.entries(); n != 0 {
		t.Fatalf("the compiler still remembers %d compiled forms no Program uses", n)
	}
	p, err := c.Compile(`request.action == "A3"`, RuleScope, "")
	if err != nil {
		t.Fatal(err)
	}
	if got, err := p.Eval(&Activation{Request: &Request{Action: "A3"}}); err != nil || !got {
		t.Errorf("recompiled program: %v, %v; want true", got, err)
	}
	if n := c.entries(); n != 1 {
		t.Errorf("the compiler remembers %d compiled forms, want 1", n)
	}
	runtime.KeepAlive(p)
}

// A shared form evaluates concurrently for many Programs, each evaluation
// with its own input and its own cost count: one stopped by the runtime cost
// limit leaves the others alone.
func TestSharedFormEvaluatesConcurrently(t *testing.T) {
	c := NewCompiler(Limits{ExpressionBudget: DefaultLimits.ExpressionBudget, RuntimeCostLimit: 100})
	const src = `request.scopes.all(s, s.startsWith("ledger."))`
	progs := make([]*Program, 4)
	for i := range progs {
		p, err := c.Compile(src, RuleScope, fmt.Sprintf("policy %d", i))
		if err != nil {
			t.Fatal(err)
		}
		progs[i] = p
	}
	many := make([]string, MaxScopes)
	for i := range many {
		many[i] = "ledger.s" + strconv.Itoa(i)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for i := range 32 {
		wg.Go(func() {
			p := progs[i%len(progs)]
			if i%2 == 0 {
				got, err := p.Eval(&Activation{Request: &Request{Scopes: []string{"ledger.read"}}})
				if err != nil || !got {
					errs <- fmt.Errorf("small input %d: %v, %w; want true", i, got, err)
				}
				return
			}
			if got, err := p.Eval(&Activation{Request: &Request{Scopes: many}}); !errors.Is(err, ErrCostLimit) || got {
				errs <- fmt.Errorf("large input %d: %v, %w; want ErrCostLimit", i, got, err)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}
