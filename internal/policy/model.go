// Package policy turns ConnectionPolicy and ResourcePolicy objects into the
// compiled form the decision path uses, with one validation path shared by
// the admission webhook, the snapshot builder and the command line.
package policy

import (
	"iter"
	"slices"
	"time"

	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"

	"github.com/sallyport/sallyport/api/v1alpha1"
	"github.com/sallyport/sallyport/internal/expr"
	"github.com/sallyport/sallyport/internal/pathpattern"
)

// Level is a data classification as an ordered number:
// public < internal < confidential < restricted.
type Level int8

// Classification levels, in order.
const (
	LevelUnknown Level = iota
	LevelPublic
	LevelInternal
	LevelConfidential
	LevelRestricted
)

// ParseLevel maps a classification to its level; LevelUnknown when it is not
// one of the four.
func ParseLevel(c v1alpha1.Classification) Level {
	switch c {
	case v1alpha1.ClassificationPublic:
		return LevelPublic
	case v1alpha1.ClassificationInternal:
		return LevelInternal
	case v1alpha1.ClassificationConfidential:
		return LevelConfidential
	case v1alpha1.ClassificationRestricted:
		return LevelRestricted
	}
	return LevelUnknown
}

// String returns the classification name.
func (l Level) String() string {
	switch l {
	case LevelPublic:
		return string(v1alpha1.ClassificationPublic)
	case LevelInternal:
		return string(v1alpha1.ClassificationInternal)
	case LevelConfidential:
		return string(v1alpha1.ClassificationConfidential)
	case LevelRestricted:
		return string(v1alpha1.ClassificationRestricted)
	}
	return "unknown"
}

// Meta is what every compiled policy carries about the object it came from.
type Meta struct {
	// Ref is the policy's namespace and name.
	Ref types.NamespacedName
	// Name is Ref as "<namespace>/<name>", made once at compile time so
	// that decisions, which name their policies, do not build it.
	Name string
	// UID tells a recreated policy from the one it replaced.
	UID types.UID
	// Generation is the compiled generation.
	Generation int64
	// Created orders conflicting claims: the older policy keeps them.
	Created time.Time
	// Labels are matched by policySelector.
	Labels labels.Set
	// Enforcement is Enforce or DryRun.
	Enforcement v1alpha1.Enforcement
	// Summary counts what was compiled.
	Summary Summary
	// Shadowed counts the shadow decisions of a DryRun policy; nil on an
	// enforced one.
	Shadowed *ShadowUsage
}

// Summary counts what a policy compiled to, for its status.
type Summary struct {
	Rules         int
	Expressions   int
	EstimatedCost uint64
}

// Connection is a compiled ConnectionPolicy.
type Connection struct {
	Meta
	// ServiceAccount is the workload identity's ServiceAccount name.
	ServiceAccount string
	// Identity is the user name a credential must be reviewed as.
	Identity string
	// Audience is the effective audience.
	Audience string
	// MaxTokenLifetime bounds exp - iat of a presented token.
	MaxTokenLifetime time.Duration
	// Reach maps a resource class to what the connection may do there.
	Reach map[string]*Reach
	// When is the optional condition; nil when there is none.
	When *expr.Program
	// Token is the issuance the policy asks for; nil when none.
	Token *Token
}

// Reach is what a connection may do on one class.
type Reach struct {
	Class string
	// AnyScope is set by the scope "*".
	AnyScope bool
	// Scopes are the allowed scopes, sorted.
	Scopes []string
	// MaxClassification is the ceiling.
	MaxClassification Level
	// Usage counts the allowed decisions this entry let through.
	Usage *Usage
}

// AllowsScopes reports whether every requested scope is within the reach.
func (r *Reach) AllowsScopes(requested []string) bool {
	if r.AnyScope {
		return true
	}
	for _, s := range requested {
		if _, ok := slices.BinarySearch(r.Scopes, s); !ok {
			return false
		}
	}
	return true
}

// Token is the compiled token issuance of a ConnectionPolicy.
type Token struct {
	Mode              v1alpha1.TokenMode
	SecretName        string
	ExpirationSeconds int64
}

// Resource is a compiled ResourcePolicy.
type Resource struct {
	Meta
	Service        string
	Hosts          []string
	Class          string
	Classification Level
	// Deny and Allow hold the rules by effect, each in spec order; Deny rules
	// are evaluated first.
	Deny  []*Rule
	Allow []*Rule
}

// Rules yields every rule, Deny rules first, each kind in spec order: the
// order the rules are evaluated in.
func (r *Resource) Rules() iter.Seq[*Rule] {
	return func(yield func(*Rule) bool) {
		for _, rules := range [2][]*Rule{r.Deny, r.Allow} {
			for _, rule := range rules {
				if !yield(rule) {
					return
				}
			}
		}
	}
}

// Rule is a compiled ResourcePolicy rule.
type Rule struct {
	// Name is the rule's name; Index its position in spec.rules.
	Name   string
	Index  int
	Effect v1alpha1.Effect
	// AnyAction is set by the action "*"; Actions holds the others, sorted.
	AnyAction bool
	Actions   []string
	Resources []pathpattern.Pattern
	// Scopes are the rule's scopes, sorted.
	Scopes []string
	// Connections are the connections the rule names; empty on a Deny rule
	// means every connection.
	Connections []ConnectionSelector
	// When is the optional condition; nil when there is none.
	When *expr.Program
	// Usage counts the decisions this rule made: an Allow rule that
	// allowed, a Deny rule that denied.
	Usage *Usage
}

// MatchesAction reports whether the rule covers the action.
func (r *Rule) MatchesAction(action string) bool {
	if r.AnyAction {
		return true
	}
	_, ok := slices.BinarySearch(r.Actions, action)
	return ok
}

// MatchesPath reports whether one of the rule's patterns matches a canonical
// path.
func (r *Rule) MatchesPath(path string) bool {
	for _, p := range r.Resources {
		if p.MatchPath(path) {
			return true
		}
	}
	return false
}

// MatchesScopes applies the scope semantics of the rule's effect: an Allow
// rule matches when every requested scope is among its scopes (an empty list
// matches only requests without scopes); a Deny rule matches when the request
// carries any of its scopes, or always when it has none.
func (r *Rule) MatchesScopes(requested []string) bool {
	if r.Effect == v1alpha1.EffectDeny {
		if len(r.Scopes) == 0 {
			return true
		}
		for _, s := range requested {
			if _, ok := slices.BinarySearch(r.Scopes, s); ok {
				return true
			}
		}
		return false
	}
	for _, s := range requested {
		if _, ok := slices.BinarySearch(r.Scopes, s); !ok {
			return false
		}
	}
	return true
}

// NamespaceLabels returns the labels of a namespace, and whether it is known.
type NamespaceLabels func(namespace string) (labels.Set, bool)

// MatchesConnection reports whether the rule names the connection. A Deny
// rule without connections names every connection.
func (r *Rule) MatchesConnection(conn *Connection, nsLabels NamespaceLabels) bool {
	if len(r.Connections) == 0 {
		return r.Effect == v1alpha1.EffectDeny
	}
	for i := range r.Connections {
		if r.Connections[i].Matches(conn, nsLabels) {
			return true
		}
	}
	return false
}

// ConnectionSelector is a compiled rule connection entry: one policy by name,
// or policies by namespace and policy labels.
type ConnectionSelector struct {
	// Name is set for a by-name entry.
	Name types.NamespacedName
	// NamespaceSelector selects namespaces; nil means OwnNamespace only.
	NamespaceSelector labels.Selector
	// OwnNamespace is the ResourcePolicy's namespace.
	OwnNamespace string
	// PolicySelector selects ConnectionPolicies by label.
	PolicySelector labels.Selector
}

// Matches reports whether the entry names the connection. A namespace whose
// labels are unknown matches no selector.
func (s *ConnectionSelector) Matches(conn *Connection, nsLabels NamespaceLabels) bool {
	if s.Name.Name != "" {
		return s.Name == conn.Ref
	}
	if s.NamespaceSelector == nil {
		if conn.Ref.Namespace != s.OwnNamespace {
			return false
		}
	} else if !s.NamespaceSelector.Empty() {
		l, ok := nsLabels(conn.Ref.Namespace)
		if !ok || !s.NamespaceSelector.Matches(l) {
			return false
		}
	}
	return s.PolicySelector.Matches(conn.Labels)
}
