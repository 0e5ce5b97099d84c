package decision

import (
	"context"
	"fmt"
	"strings"

	"github.com/sallyport/sallyport/api/v1alpha1"
	"github.com/sallyport/sallyport/internal/policy"
	"github.com/sallyport/sallyport/internal/store"
)

// Trace explains one decision: which policies were picked, which connection
// checks passed, and, for every rule tried, whether it matched and why not.
// It is made only by Engine.DecideTrace, for `sallyport test --verbose`
// and similar tools; Decide never builds one, so the serving path pays
// nothing for it.
type Trace struct {
	// Target says how the ResourcePolicy was looked up and what was found.
	Target TargetTrace `json:"target"`
	// Connection is the connection gate, check by check.
	Connection ConnectionTrace `json:"connection"`
	// Resource is the resource gate, rule by rule; empty when the gate was
	// not evaluated.
	Resource ResourceTrace `json:"resource"`
}

// TargetTrace is the lookup of the ResourcePolicy.
type TargetTrace struct {
	// By is "service" (by namespace and service), "host", or "" when the
	// request named neither.
	By string `json:"by,omitempty"`
	// Key is what was looked up: "namespace/service" or the host.
	Key string `json:"key,omitempty"`
	// Policy is the ResourcePolicy found, "" when none.
	Policy string `json:"policy,omitempty"`
	// Path is the canonical object path judged.
	Path string `json:"path,omitempty"`
}

// ConnectionTrace is the connection gate of one decision.
type ConnectionTrace struct {
	// Audience is the token's audience, read without verification; empty
	// without a token or when the token is not a JWT with one audience.
	Audience string `json:"audience,omitempty"`
	// Policy is the ConnectionPolicy the audience picked, "" when none.
	Policy string `json:"policy,omitempty"`
	// Checks are the checks in the order the engine makes them, up to and
	// including the first that failed.
	Checks []Check `json:"checks"`
}

// Names of connection checks, in the order the engine makes them.
const (
	CheckCredential     = "credential"
	CheckPolicy         = "policy"
	CheckLifetime       = "lifetime"
	CheckClass          = "class"
	CheckScopes         = "scopes"
	CheckClassification = "classification"
	CheckCondition      = "when"
)

// Check is one connection check.
type Check struct {
	// Name is one of the Check* constants.
	Name   string `json:"name"`
	Passed bool   `json:"passed"`
	// Detail says what was compared.
	Detail string `json:"detail,omitempty"`
}

// ResourceTrace is the resource gate of one decision.
type ResourceTrace struct {
	// Evaluated is false when the gate was not reached (connection denied,
	// no ResourcePolicy, or a malformed request).
	Evaluated bool `json:"evaluated"`
	// Rules are the rules tried, Deny rules first, in order, up to the one
	// that decided.
	Rules []RuleTrace `json:"rules,omitempty"`
}

// Names of the parts of a rule, in the order the engine checks them.
const (
	RuleAction      = "actions"
	RuleScopes      = "scopes"
	RuleResources   = "resources"
	RuleConnections = "connections"
	RuleCondition   = "when"
)

// RuleTrace is one rule tried.
type RuleTrace struct {
	Name   string `json:"name"`
	Effect string `json:"effect"`
	// Matched is true when every part matched (the condition too).
	Matched bool `json:"matched"`
	// Failed is the first part that did not match (one of the Rule*
	// constants), "" when the rule matched.
	Failed string `json:"failed,omitempty"`
	// Detail says why that part did not match, or, for a condition that
	// could not be evaluated, the error.
	Detail string `json:"detail,omitempty"`
}

// DecideTrace decides req exactly as Decide does and also returns the trace
// of the decision. It costs more than Decide (it formats every check), so
// it is for tools, not for serving.
func (e *Engine) DecideTrace(ctx context.Context, req *Request) (*Decision, *Trace) {
	tr := &Trace{}
	return e.decide(ctx, req, tr), tr
}

// traceTarget records the ResourcePolicy lookup.
func (tr *Trace) traceTarget(req *Request, host, path string, target *policy.Resource) {
	t := &tr.Target
	t.Path = path
	switch {
	case req.Target.Service != "":
		t.By, t.Key = "service", req.Target.Namespace+"/"+req.Target.Service
	case host != "":
		t.By, t.Key = "host", host
	}
	if target != nil {
		t.Policy = policyName(&target.Meta)
	}
}

// traceConnection derives the connection checks from the gate's answer:
// the engine checks in a fixed order, so every check before the one its
// reason names passed. Deriving them afterwards keeps the gate itself free
// of tracing.
func (tr *Trace) traceConnection(req *Request, c *Connection, cp *policy.Connection, target *policy.Resource, st *evalState) {
	ct := &tr.Connection
	ct.Policy = c.Policy
	if req.Token != "" {
		ct.Audience, _ = peekAudience(req.Token)
	}
	add := func(name string, passed bool, detail string) {
		ct.Checks = append(ct.Checks, Check{Name: name, Passed: passed, Detail: detail})
	}
	// failAt records the failing check with the gate's message.
	failAt := func(name string) { add(name, false, c.Message) }
	switch c.Reason {
	case ReasonMissingCredential:
		failAt(CheckCredential)
		return
	case ReasonNoConnectionPolicy:
		add(CheckCredential, true, "token is a JWT with one audience (not yet verified)")
		failAt(CheckPolicy)
		return
	case ReasonInvalidCredential, ReasonCredentialReviewFailed:
		if cp == nil {
			failAt(CheckCredential)
			return
		}
		add(CheckPolicy, true, fmt.Sprintf("audience %q picks %s", cp.Audience, c.Policy))
		failAt(CheckCredential)
		return
	}
	if cp == nil {
		// A malformed request or a panic before the policy was picked.
		failAt(CheckCredential)
		return
	}
	add(CheckPolicy, true, fmt.Sprintf("audience %q picks %s", cp.Audience, c.Policy))
	add(CheckCredential, true, fmt.Sprintf("reviewed as %s, the policy's ServiceAccount", c.Identity))
	if c.Reason == ReasonTokenLifetimeExceeded {
		failAt(CheckLifetime)
		return
	}
	add(CheckLifetime, true, "within maxTokenLifetime "+cp.MaxTokenLifetime.String())
	if target != nil {
		reach := cp.Reach[target.Class]
		if c.Reason == ReasonClassNotReachable {
			failAt(CheckClass)
			return
		}
		add(CheckClass, true, fmt.Sprintf("class %q is in the reach", target.Class))
		if c.Reason == ReasonScopeNotReachable {
			failAt(CheckScopes)
			return
		}
		add(CheckScopes, true, fmt.Sprintf("requested scopes %s are within %s", quoteList(st.req.Scopes), reachScopes(reach)))
		if c.Reason == ReasonClassificationNotReachable {
			failAt(CheckClassification)
			return
		}
		add(CheckClassification, true, fmt.Sprintf("%s is within maxClassification %s", target.Classification, reach.MaxClassification))
	}
	switch {
	case c.Reason == ReasonConditionFalse || c.Reason == ReasonEvaluationError:
		failAt(CheckCondition)
	case cp.When != nil:
		add(CheckCondition, true, "condition is true: "+sourceLine(cp.When.Source()))
	}
}

func reachScopes(r *policy.Reach) string {
	if r == nil {
		return "[]"
	}
	if r.AnyScope {
		return `["*"]`
	}
	return quoteList(r.Scopes)
}

// traceRule records a rule that did not apply, with the first part that
// did not match and why. It repeats the checks of ruleApplies one by one,
// on the tracing path only.
func (tr *Trace) traceRule(snap *store.Snapshot, rule *policy.Rule, cp *policy.Connection, req *Request, segs []string, path string) {
	rt := RuleTrace{Name: rule.Name, Effect: string(rule.Effect)}
	switch {
	case !rule.MatchesAction(req.Action):
		rt.Failed, rt.Detail = RuleAction, fmt.Sprintf("action %q is not among %s", req.Action, quoteList(rule.Actions))
	case !rule.MatchesScopes(req.Scopes):
		if rule.Effect == v1alpha1.EffectDeny {
			rt.Failed, rt.Detail = RuleScopes, fmt.Sprintf("the request carries none of %s", quoteList(rule.Scopes))
		} else {
			rt.Failed, rt.Detail = RuleScopes, fmt.Sprintf("requested scopes %s are not all among %s", quoteList(req.Scopes), quoteList(rule.Scopes))
		}
	case !matchesAnyPattern(rule, segs):
		pats := make([]string, len(rule.Resources))
		for i := range rule.Resources {
			pats[i] = rule.Resources[i].String()
		}
		rt.Failed, rt.Detail = RuleResources, fmt.Sprintf("path %q matches none of %s", truncate(path, maxPathInMessage), quoteList(pats))
	case !rule.MatchesConnection(cp, snap.NamespaceLabels):
		rt.Failed, rt.Detail = RuleConnections, fmt.Sprintf("connection %s is not among the rule's connections", policyName(&cp.Meta))
	}
	tr.Resource.Rules = append(tr.Resource.Rules, rt)
}

// traceWhen records a rule whose other parts matched, with the outcome of
// its condition (true when it has none).
func (tr *Trace) traceWhen(rule *policy.Rule, ok bool, err error) {
	rt := RuleTrace{Name: rule.Name, Effect: string(rule.Effect), Matched: ok && err == nil}
	switch {
	case err != nil:
		rt.Failed, rt.Detail = RuleCondition, "condition could not be evaluated: "+errMessage(err)
	case !ok:
		rt.Failed, rt.Detail = RuleCondition, "condition is false: "+sourceLine(rule.When.Source())
	}
	tr.Resource.Rules = append(tr.Resource.Rules, rt)
}

func matchesAnyPattern(rule *policy.Rule, segs []string) bool {
	for i := range rule.Resources {
		if rule.Resources[i].Match(segs) {
			return true
		}
	}
	return false
}

// sourceLine renders an expression on one line, for a trace line: a
// block literal's line breaks and indentation become single spaces.
func sourceLine(src string) string {
	lines := strings.Split(strings.TrimSpace(src), "\n")
	for i := range lines {
		lines[i] = strings.TrimSpace(lines[i])
	}
	return truncate(strings.Join(lines, " "), maxSourceInMessage)
}

// quoteList renders strings as a JSON-like list: ["a", "b"].
func quoteList(s []string) string {
	q := make([]string, len(s))
	for i := range s {
		q[i] = fmt.Sprintf("%q", s[i])
	}
	return "[" + strings.Join(q, ", ") + "]"
}

// String renders the trace for people, one check or rule a line, indented
// by prefix.
func (tr *Trace) String() string { return tr.Format("") }

// Format renders the trace for people, each line starting with prefix.
func (tr *Trace) Format(prefix string) string {
	var b strings.Builder
	line := func(format string, args ...any) {
		b.WriteString(prefix)
		fmt.Fprintf(&b, format, args...)
		b.WriteByte('\n')
	}
	t := &tr.Target
	switch {
	case t.By == "":
		line("target: none named")
	case t.Policy == "":
		line("target: by %s %s: no ResourcePolicy", t.By, t.Key)
	default:
		line("target: by %s %s: ResourcePolicy %s, path %s", t.By, t.Key, t.Policy, t.Path)
	}
	c := &tr.Connection
	switch {
	case c.Policy != "":
		line("connection: audience %q: ConnectionPolicy %s", c.Audience, c.Policy)
	case c.Audience != "":
		line("connection: audience %q: no ConnectionPolicy", c.Audience)
	default:
		line("connection:")
	}
	for _, ck := range c.Checks {
		line("  %s %s: %s", mark(ck.Passed), ck.Name, ck.Detail)
	}
	if !tr.Resource.Evaluated {
		line("resource: not evaluated")
		return b.String()
	}
	line("resource:")
	for _, r := range tr.Resource.Rules {
		if r.Matched {
			line("  %s %s rule %q: matched", mark(true), r.Effect, r.Name)
			continue
		}
		line("  %s %s rule %q: %s: %s", mark(false), r.Effect, r.Name, r.Failed, r.Detail)
	}
	return b.String()
}

func mark(ok bool) string {
	if ok {
		return "✓"
	}
	return "✗"
}
