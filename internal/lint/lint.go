package lint

import (
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"

	"k8s.io/apimachinery/pkg/types"

	"github.com/sallyport/sallyport/api/v1alpha1"
	"github.com/sallyport/sallyport/internal/expr"
	"github.com/sallyport/sallyport/internal/loader"
	"github.com/sallyport/sallyport/internal/store"
)

// Options configure Run.
type Options struct {
	// Disable drops findings of these codes.
	Disable map[Code]bool
	// Limits are the expression limits the set was compiled with; zero
	// means expr.DefaultLimits, the loader's default.
	Limits expr.Limits
}

// Run lints what the loader loaded. loadErr is the error Load returned with
// set: each of its problems becomes a finding, so one run reports
// everything. The findings are sorted (see Sort).
func Run(set *loader.Set, loadErr error, o Options) []Finding {
	if o.Limits == (expr.Limits{}) {
		o.Limits = expr.DefaultLimits
	}
	l := &linter{set: set, exprs: expr.NewCompiler(o.Limits)}
	var problems []loader.Problem
	if le, ok := errors.AsType[*loader.LoadError](loadErr); ok {
		problems = le.Problems
	} else if loadErr != nil {
		l.out = append(l.out, l.finding(UnreadableInput, loader.Location{}, "", "", "", "", loadErr.Error()))
	}
	l.index(problems)
	for _, p := range problems {
		l.problem(p)
	}
	if set != nil {
		for _, p := range set.Skipped {
			l.out = append(l.out, l.finding(NotAPolicy, p.Location, p.Kind, p.Namespace, p.Name, "", p.Message))
		}
		l.conflicts()
		l.references()
		l.reach()
		l.rules()
		l.grants()
		l.admissionWarnings()
	}
	out := l.out[:0]
	for _, f := range l.out {
		if !o.Disable[f.Code] {
			out = append(out, f)
		}
	}
	Sort(out)
	return out
}

// linter is one Run in progress.
type linter struct {
	set   *loader.Set
	exprs *expr.Compiler
	out   []Finding

	// conns and resources are the policies that loaded (compiled or not),
	// by name.
	conns     map[types.NamespacedName]*v1alpha1.ConnectionPolicy
	resources map[types.NamespacedName]*v1alpha1.ResourcePolicy
	// brokenConns holds ConnectionPolicies that a problem names but that
	// did not load; connsUnknown and resourcesUnknown are set when some
	// policy of that kind may be missing altogether (a file or document
	// that could not be read, a policy refused before it was decoded), so
	// the checks that assume a complete set are skipped for it.
	brokenConns      map[types.NamespacedName]bool
	connsUnknown     bool
	resourcesUnknown bool
}

// index records which policies loaded, and whether the set is complete.
func (l *linter) index(problems []loader.Problem) {
	l.conns = map[types.NamespacedName]*v1alpha1.ConnectionPolicy{}
	l.resources = map[types.NamespacedName]*v1alpha1.ResourcePolicy{}
	l.brokenConns = map[types.NamespacedName]bool{}
	if l.set != nil {
		for _, cp := range l.set.ConnectionPolicies {
			l.conns[types.NamespacedName{Namespace: cp.Namespace, Name: cp.Name}] = cp
		}
		for _, rp := range l.set.ResourcePolicies {
			l.resources[types.NamespacedName{Namespace: rp.Namespace, Name: rp.Name}] = rp
		}
	}
	for _, p := range problems {
		nn := types.NamespacedName{Namespace: p.Namespace, Name: p.Name}
		switch {
		case p.Type == loader.ProblemFile || p.Type == loader.ProblemSyntax:
			// Whatever the file or document held is unknown.
			l.connsUnknown, l.resourcesUnknown = true, true
		case p.Type == loader.ProblemKind:
			// Documents of other APIs are in Set.Skipped, not here: a
			// kind problem is a policy that could not be read.
			switch {
			case strings.HasPrefix(p.Kind, string(store.KindConnection)):
				l.connsUnknown = true
			case strings.HasPrefix(p.Kind, string(store.KindResource)):
				l.resourcesUnknown = true
			default:
				l.connsUnknown, l.resourcesUnknown = true, true
			}
		case p.Kind == string(store.KindConnection) && l.conns[nn] == nil:
			l.brokenConns[nn] = true
			l.connsUnknown = true
		case p.Kind == string(store.KindResource) && l.resources[nn] == nil:
			l.resourcesUnknown = true
		}
	}
}

// finding makes a finding of code c at loc, with the line of fld when it
// is known.
func (l *linter) finding(c Code, loc loader.Location, kind, namespace, name, fld, msg string) Finding {
	ci, _ := Lookup(c)
	return Finding{
		Code: c, Check: ci.Check, Severity: ci.Severity,
		File: loc.File, Line: loc.Line, Document: loc.Document, Item: loc.Item,
		Kind: kind, Namespace: namespace, Name: name, Field: fld, Message: msg,
	}
}

// at makes a finding about a field of a loaded policy.
func (l *linter) at(c Code, ref store.Ref, fld, msg string) Finding {
	f := l.finding(c, l.set.Sources[ref], string(ref.Kind), ref.Namespace, ref.Name, fld, msg)
	if line := l.set.FieldLine(ref, fld); line > 0 {
		f.Line = line
	}
	return f
}

func (l *linter) add(c Code, ref store.Ref, fld, format string, args ...any) {
	l.out = append(l.out, l.at(c, ref, fld, fmt.Sprintf(format, args...)))
}

// problemCodes maps the loader's problem types to codes.
var problemCodes = map[loader.ProblemType]Code{
	loader.ProblemFile:         UnreadableInput,
	loader.ProblemSyntax:       InvalidDocument,
	loader.ProblemKind:         UnsupportedKind,
	loader.ProblemUnknownField: UnknownField,
	loader.ProblemSchema:       SchemaViolation,
	loader.ProblemDuplicate:    DuplicateObject,
	loader.ProblemCompile:      CompileError,
}

// problem turns a load problem into findings.
func (l *linter) problem(p loader.Problem) {
	if p.Type == loader.ProblemCompile && isWhen(p.Field) {
		if fs, ok := l.celFindings(p); ok {
			l.out = append(l.out, fs...)
			return
		}
	}
	c, ok := problemCodes[p.Type]
	switch {
	case !ok:
		c = SchemaViolation
	case p.Type == loader.ProblemCompile && isWhen(p.Field):
		c = CELError // reported as the compiler wrote it
	}
	msg, detail := splitMessage(p.Message)
	f := l.finding(c, p.Location, p.Kind, p.Namespace, p.Name, p.Field, msg)
	f.Detail = detail
	if p.FieldLine > 0 {
		f.Line = p.FieldLine
	}
	l.out = append(l.out, f)
}

// splitMessage keeps a problem's first line as the message and the rest
// (a CEL excerpt, say) as the detail.
func splitMessage(m string) (msg, detail string) {
	msg, detail, _ = strings.Cut(strings.TrimRight(m, "\n"), "\n")
	return msg, detail
}

func isWhen(fld string) bool {
	return fld == "spec.when" || (strings.HasPrefix(fld, "spec.rules[") && strings.HasSuffix(fld, "].when"))
}

var ruleIndex = regexp.MustCompile(`^spec\.rules\[(\d+)\]\.when$`)

// costPrefix starts the expr compiler's over-budget issue (see
// expr.Compiler.Compile), the one issue that tells a cost over budget from
// the others. The sp1009-cel-cost case compiles an expression over budget,
// so a change of wording fails that test rather than passing unnoticed.
const costPrefix = "estimated worst-case cost "

// celFindings recompiles the expression a compile problem is about, with
// the compiler the loader used, to report each issue on its own line of
// the file and to tell a cost over budget from a syntax or type error. ok
// is false when the expression cannot be found or compiles (then the
// problem is reported as it is).
func (l *linter) celFindings(p loader.Problem) (out []Finding, ok bool) {
	nn := types.NamespacedName{Namespace: p.Namespace, Name: p.Name}
	var (
		src   v1alpha1.Expression
		scope expr.Scope
		what  string
		ref   store.Ref
	)
	switch p.Kind {
	case string(store.KindConnection):
		cp := l.conns[nn]
		if cp == nil || p.Field != "spec.when" {
			return nil, false
		}
		src, scope, ref = cp.Spec.When, expr.ConnectionScope, store.Ref{Kind: store.KindConnection, NamespacedName: nn}
	case string(store.KindResource):
		rp := l.resources[nn]
		m := ruleIndex.FindStringSubmatch(p.Field)
		if rp == nil || m == nil {
			return nil, false
		}
		i, _ := strconv.Atoi(m[1])
		if i >= len(rp.Spec.Rules) {
			return nil, false
		}
		src, scope, ref = rp.Spec.Rules[i].When, expr.RuleScope, store.Ref{Kind: store.KindResource, NamespacedName: nn}
		what = fmt.Sprintf("rule %q: ", rp.Spec.Rules[i].Name)
	default:
		return nil, false
	}
	_, err := l.exprs.Compile(string(src), scope, p.Field)
	ce, isCE := errors.AsType[*expr.CompileError](err)
	if !isCE || len(ce.Issues) == 0 {
		return nil, false
	}
	lines := strings.Split(string(src), "\n")
	for _, is := range ce.Issues {
		c := CELError
		if is.Line == 0 && strings.HasPrefix(is.Message, costPrefix) {
			c = CELCost
		}
		f := l.finding(c, p.Location, p.Kind, p.Namespace, p.Name, p.Field, what+is.Message)
		f.Line = p.FieldLine
		if is.Line > 0 {
			f.Message = fmt.Sprintf("%sline %d, column %d of the expression: %s", what, is.Line, is.Column, is.Message)
			if line := l.set.ExpressionLine(ref, p.Field, is.Line); line > 0 {
				f.Line = line
			}
			if is.Line <= len(lines) && len(lines[is.Line-1]) <= 200 {
				src := strings.ReplaceAll(lines[is.Line-1], "\t", " ")
				col := min(max(is.Column-1, 0), len([]rune(src)))
				f.Detail = fmt.Sprintf("| %s\n| %s^", src, strings.Repeat(".", col))
			}
		}
		if f.Line == 0 {
			f.Line = p.Line
		}
		out = append(out, f)
	}
	return out, true
}
