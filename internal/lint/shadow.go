package lint

import (
	"slices"

	"k8s.io/apimachinery/pkg/labels"

	"github.com/sallyport/sallyport/api/v1alpha1"
	"github.com/sallyport/sallyport/internal/pathpattern"
	"github.com/sallyport/sallyport/internal/policy"
)

// covers reports whether Deny rule d matches every request rule r matches,
// so that r can never decide where d is evaluated first. It is sound, not
// complete: true is a proof, false may only mean the proof was not found.
//
// d must have no condition: a condition may be false, and one that fails
// to evaluate denies with EvaluationError rather than matching. r's own
// condition does not matter: it only narrows what r matches. Each part of
// a request must be covered:
//
//   - actions: d has "*", or r lists actions and d lists them all;
//   - objects: each of r's patterns lies within one of d's (patternCovers);
//   - scopes: d has none (it matches whatever the request carries), or r is
//     a Deny rule with scopes that d all has (r matches only requests
//     carrying one of them, and so does d). An Allow rule is never covered
//     by a Deny rule with scopes: it matches requests without scopes, which
//     such a rule does not;
//   - connections: d names none (every connection), or each of r's entries
//     is covered by one of d's (entryCovers).
func covers(d, r *policy.Rule) bool {
	if d.When != nil {
		return false
	}
	if !d.AnyAction {
		if r.AnyAction {
			return false
		}
		for _, a := range r.Actions {
			if !d.MatchesAction(a) {
				return false
			}
		}
	}
	for _, rp := range r.Resources {
		if !slices.ContainsFunc(d.Resources, func(dp pathpattern.Pattern) bool { return patternCovers(dp.String(), rp.String()) }) {
			return false
		}
	}
	if len(d.Scopes) > 0 {
		if r.Effect != v1alpha1.EffectDeny || len(r.Scopes) == 0 {
			return false
		}
		for _, s := range r.Scopes {
			if _, ok := slices.BinarySearch(d.Scopes, s); !ok {
				return false
			}
		}
	}
	if len(d.Connections) == 0 {
		return true
	}
	if len(r.Connections) == 0 {
		return false // r is a Deny rule for every connection; d is not
	}
	for i := range r.Connections {
		if !slices.ContainsFunc(d.Connections, func(de policy.ConnectionSelector) bool { return entryCovers(&de, &r.Connections[i]) }) {
			return false
		}
	}
	return true
}

// entryCovers reports whether connection entry d names every connection
// entry r names, whatever the labels of policies and namespaces: selectors
// are compared as written, since labels change without the policy changing.
func entryCovers(d, r *policy.ConnectionSelector) bool {
	if d.Name.Name != "" {
		return r.Name == d.Name
	}
	everyPolicy := d.PolicySelector == nil || d.PolicySelector.Empty()
	switch {
	case d.NamespaceSelector != nil && d.NamespaceSelector.Empty() && everyPolicy:
		return true // {namespaceSelector: {}}: every connection
	case d.NamespaceSelector == nil && everyPolicy:
		// Every connection in the policy's own namespace.
		if r.Name.Name != "" {
			return r.Name.Namespace == d.OwnNamespace
		}
		return r.NamespaceSelector == nil
	case r.Name.Name != "":
		return false
	}
	return sameSelector(d.NamespaceSelector, r.NamespaceSelector) && sameSelector(d.PolicySelector, r.PolicySelector)
}

// sameSelector compares selectors by their canonical string form; nil (a
// namespace selector left out) is only the same as nil.
func sameSelector(a, b labels.Selector) bool {
	if a == nil || b == nil {
		return a == nil && b == nil
	}
	return a.String() == b.String()
}

// patternCovers reports whether every path resource pattern p matches is
// matched by pattern q. It aligns p's segments with q's: a literal is
// covered by the same literal, by "*" when not empty (a trailing "/"), or
// by "**"; p's "*" by "*" or "**"; p's "**" only by "**". An alignment
// turns every path p matches into one q matches, so true is a proof;
// a few inclusions it cannot align (q "/**/*" over p "/*/**") are missed.
func patternCovers(q, p string) bool {
	qs, ps := pathpattern.Split(q), pathpattern.Split(p)
	// memo[i][j]: 0 unknown, 1 covers, 2 does not (qs[i:] over ps[j:]).
	memo := make([][]int8, len(qs)+1)
	for i := range memo {
		memo[i] = make([]int8, len(ps)+1)
	}
	var rec func(i, j int) bool
	rec = func(i, j int) bool {
		if m := memo[i][j]; m != 0 {
			return m == 1
		}
		var ok bool
		switch {
		case i == len(qs):
			ok = j == len(ps)
		case qs[i] == "**":
			// "**" takes zero or more of p's segments.
			for k := j; k <= len(ps) && !ok; k++ {
				ok = rec(i+1, k)
			}
		case j == len(ps) || ps[j] == "**":
			ok = false
		case qs[i] == "*":
			ok = ps[j] != "" && rec(i+1, j+1)
		default:
			ok = qs[i] == ps[j] && rec(i+1, j+1)
		}
		memo[i][j] = 2
		if ok {
			memo[i][j] = 1
		}
		return ok
	}
	return rec(0, 0)
}
