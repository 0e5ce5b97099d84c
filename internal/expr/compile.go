package expr

import (
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"weak"

	"github.com/google/cel-go/cel"
	"github.com/google/cel-go/common"
	"github.com/google/cel-go/interpreter"
	"k8s.io/apiserver/pkg/cel/library"
)

// Limits bound what an expression may cost.
type Limits struct {
	// ExpressionBudget is the largest static worst-case cost estimate one
	// expression may have.
	ExpressionBudget uint64
	// RuntimeCostLimit stops an evaluation that exceeds it. It is a backstop:
	// an expression within budget cannot reach it on bounded input.
	RuntimeCostLimit uint64
}

// DefaultLimits are the limits the operator, its webhook and the CLI share.
// One cost unit is roughly one cheap operation; a regex match over a 4 KiB
// attribute costs a few thousand. The budget allows a comprehension over every
// attribute or scope with a regex inside, and refuses nested comprehensions
// over them, which are quadratic.
var DefaultLimits = Limits{
	ExpressionBudget: 1_000_000,
	RuntimeCostLimit: 1_000_000,
}

// MaxExpressionLength is the longest expression source accepted, in bytes
// (the CRD allows the same).
const MaxExpressionLength = 4096

// Compiler compiles expressions with one set of limits. It is safe for
// concurrent use.
//
// Programs of the same source in the same scope share one compiled form:
// policies made from one template repeat their conditions, and each cel-go
// program holds about 18 KB, three quarters of it the function dispatcher
// cel-go builds for every program. The shared form lives as long as a
// Program uses it; the compiler holds it only weakly.
type Compiler struct {
	limits Limits

	mu       sync.Mutex
	compiled map[compiledKey]weak.Pointer[compiled]
}

// NewCompiler returns a compiler with the given limits.
func NewCompiler(l Limits) *Compiler {
	return &Compiler{limits: l, compiled: map[compiledKey]weak.Pointer[compiled]{}}
}

// compiledKey is what a compiled form depends on, besides the compiler's
// limits.
type compiledKey struct {
	scope  Scope
	source string
}

// compiled is the immutable result of compiling one source in one scope; a
// cel.Program is safe for concurrent evaluation.
type compiled struct {
	estimatedCost uint64
	prg           cel.Program
}

// Program is a compiled, type-checked expression that evaluates to a bool.
type Program struct {
	source string
	*compiled
}

// Source is the expression as written.
func (p *Program) Source() string { return p.source }

// EstimatedCost is the static worst-case cost of one evaluation.
func (p *Program) EstimatedCost() uint64 { return p.estimatedCost }

// lookup returns the live compiled form of key, if there is one.
func (c *Compiler) lookup(key compiledKey) *compiled {
	c.mu.Lock()
	defer c.mu.Unlock()
	if wp, ok := c.compiled[key]; ok {
		return wp.Value()
	}
	return nil
}

// remember records cp as the compiled form of key, and forgets it once no
// Program uses it any more.
func (c *Compiler) remember(key compiledKey, cp *compiled) {
	c.mu.Lock()
	c.compiled[key] = weak.Make(cp)
	c.mu.Unlock()
	runtime.AddCleanup(cp, c.forget, key)
}

// forget drops key's entry if its compiled form is gone; a form compiled
// again since then under the same key stays.
func (c *Compiler) forget(key compiledKey) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if wp, ok := c.compiled[key]; ok && wp.Value() == nil {
		delete(c.compiled, key)
	}
}

// Issue is one problem found in an expression, at a 1-based line and column
// (both 0 when it concerns the whole expression, such as its cost).
type Issue struct {
	Line    int
	Column  int
	Message string
}

// CompileError is every issue found in one expression.
type CompileError struct {
	// Location names the expression for the reader, such as
	// `spec.rules[1].when (rule "read-entries")`.
	Location string
	// Expression is the source.
	Expression string
	// Issues are the problems, in source order.
	Issues []Issue
}

// Error is the location followed by Detail.
func (e *CompileError) Error() string {
	if e.Location == "" {
		return e.Detail()
	}
	return e.Location + ": " + e.Detail()
}

// Detail formats each issue with its line and column and, where there is one,
// the source line with a caret under the column.
func (e *CompileError) Detail() string {
	lines := strings.Split(e.Expression, "\n")
	var b strings.Builder
	for i, is := range e.Issues {
		if i > 0 {
			b.WriteString("\n")
		}
		if is.Line == 0 {
			b.WriteString(is.Message)
			continue
		}
		fmt.Fprintf(&b, "line %d, column %d: %s", is.Line, is.Column, is.Message)
		if is.Line <= len(lines) && len(lines[is.Line-1]) <= 200 {
			src := strings.ReplaceAll(lines[is.Line-1], "\t", " ")
			col := min(max(is.Column-1, 0), len([]rune(src)))
			fmt.Fprintf(&b, "\n | %s\n | %s^", src, strings.Repeat(".", col))
		}
	}
	return b.String()
}

// Compile parses and type-checks src in the given scope, checks that it
// yields a bool and that its estimated worst-case cost fits the budget, and
// returns a program that stops at the runtime cost limit. location names the
// expression in errors.
func (c *Compiler) Compile(src string, scope Scope, location string) (*Program, error) {
	fail := func(issues ...Issue) error {
		return &CompileError{Location: location, Expression: src, Issues: issues}
	}
	if len(src) > MaxExpressionLength {
		return nil, fail(Issue{Message: fmt.Sprintf("expression is %d bytes long, more than the %d allowed", len(src), MaxExpressionLength)})
	}
	key := compiledKey{scope: scope, source: src}
	if cp := c.lookup(key); cp != nil {
		return &Program{source: src, compiled: cp}, nil
	}
	e, err := env(scope)
	if err != nil {
		return nil, err
	}
	ast, iss := e.CompileSource(common.NewStringSource(src, location))
	if iss.Err() != nil {
		out := make([]Issue, 0, len(iss.Errors()))
		for _, ce := range iss.Errors() {
			out = append(out, Issue{Line: ce.Location.Line(), Column: ce.Location.Column() + 1, Message: ce.Message})
		}
		return nil, fail(out...)
	}
	if !ast.OutputType().IsExactType(cel.BoolType) {
		return nil, fail(Issue{Message: fmt.Sprintf("must evaluate to bool, not %s", ast.OutputType())})
	}
	est, err := e.EstimateCost(ast, &library.CostEstimator{SizeEstimator: sizeEstimator{}})
	if err != nil {
		return nil, fail(Issue{Message: fmt.Sprintf("cannot estimate cost: %v", err)})
	}
	if est.Max > c.limits.ExpressionBudget {
		return nil, fail(Issue{Message: fmt.Sprintf(
			"estimated worst-case cost %d exceeds the budget of %d; bound comprehensions (avoid nesting them over request.attributes or request.scopes) or simplify the expression",
			est.Max, c.limits.ExpressionBudget)})
	}
	prg, err := e.Program(ast,
		cel.EvalOptions(cel.OptOptimize, cel.OptTrackCost),
		cel.CostLimit(c.limits.RuntimeCostLimit),
		cel.CostTracking(&library.CostEstimator{}),
		cel.CostTrackerOptions(interpreter.PresenceTestHasCost(false)),
	)
	if err != nil {
		return nil, fail(Issue{Message: fmt.Sprintf("cannot build program: %v", err)})
	}
	cp := &compiled{estimatedCost: est.Max, prg: prg}
	c.remember(key, cp)
	return &Program{source: src, compiled: cp}, nil
}

// ErrCostLimit is wrapped by an evaluation stopped by the runtime cost limit.
var ErrCostLimit = errors.New("runtime cost limit exceeded")

// Eval evaluates the program over the activation. An error means the
// expression could not decide: callers fail closed.
func (p *Program) Eval(a *Activation) (bool, error) {
	out, det, err := p.prg.Eval(a)
	if err != nil {
		if det != nil && det.ActualCost() != nil && strings.Contains(err.Error(), "cost limit exceeded") {
			return false, fmt.Errorf("%w after %d units: %w", ErrCostLimit, *det.ActualCost(), err)
		}
		return false, err
	}
	b, ok := out.Value().(bool)
	if !ok {
		return false, fmt.Errorf("evaluated to %s, not bool", out.Type())
	}
	return b, nil
}
