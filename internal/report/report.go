package report

import (
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"

	"github.com/sallyport/sallyport/api/v1alpha1"
)

// Report is the unused grants of a set of policies over a window.
type Report struct {
	// From and To are the earliest and latest decision read from the logs;
	// Decisions counts those in the window (decision-log source only).
	From        string             `json:"from,omitempty"`
	To          string             `json:"to,omitempty"`
	Decisions   int                `json:"decisions"`
	Connections []ConnectionReport `json:"connectionPolicies"`
	Resources   []ResourceReport   `json:"resourcePolicies"`

	// The fields below are set only by a report from the cluster
	// (FromStatus); they are left out of a decision-log report's JSON,
	// which predates them.

	// Source is SourceCluster for a report from the policies' status.
	Source string `json:"source,omitempty"`
	// Since and Until bound the window: a grant not used since Since is
	// unused, if it was tracked since Since or earlier.
	Since string `json:"since,omitempty"`
	Until string `json:"until,omitempty"`
	// DryRun are the DryRun policies with their disagreement counts.
	DryRun []DryRunReport `json:"dryRunPolicies,omitzero"`
}

// ConnectionReport is one ConnectionPolicy's unused grants.
type ConnectionReport struct {
	Policy string `json:"policy"`
	// UnusedReach are the classes no allowed connection reached.
	UnusedReach []string `json:"unusedReach"`
	// UnusedScopes are, per class reached, the scopes never requested.
	UnusedScopes map[string][]string `json:"unusedScopes"`
	// SuggestedReach keeps the classes reached, each with the scopes
	// requested there (within what it allowed).
	SuggestedReach []v1alpha1.Reach `json:"suggestedReach"`

	// Cluster source only: NoUsageData is set when the policy's status
	// holds no usage yet (nothing about it is judged); NotTrackedReach are
	// the classes not tracked for the whole window (too new to judge, kept
	// in the suggestion); Grants is every reach entry as the status tells
	// it.
	NoUsageData     bool          `json:"noUsageData,omitempty"`
	NotTrackedReach []string      `json:"notTrackedReach,omitzero"`
	Grants          []GrantStatus `json:"grants,omitzero"`
}

// ResourceReport is one ResourcePolicy's unused grants.
type ResourceReport struct {
	Policy string `json:"policy"`
	// UnusedAllowRules never allowed a request; UnusedDenyRules never
	// denied one (kept in the suggestion: a Deny rule is a guard).
	UnusedAllowRules []string `json:"unusedAllowRules"`
	UnusedDenyRules  []string `json:"unusedDenyRules"`
	// UnusedConnections are, per Allow rule that was used, the
	// ConnectionPolicies it names by name that never came.
	UnusedConnections map[string][]string `json:"unusedConnections"`
	// SuggestedRules keeps every Deny rule and the Allow rules that were
	// used, naming only the connections that came (selector entries kept).
	SuggestedRules []v1alpha1.Rule `json:"suggestedRules"`

	// Cluster source only, as in ConnectionReport: NotTrackedRules are the
	// rules not tracked for the whole window (kept in the suggestion).
	NoUsageData     bool          `json:"noUsageData,omitempty"`
	NotTrackedRules []string      `json:"notTrackedRules,omitzero"`
	Grants          []GrantStatus `json:"grants,omitzero"`
}

// Build compares the policies with the usage. Only Enforce policies are
// reported.
func Build(conns []*v1alpha1.ConnectionPolicy, res []*v1alpha1.ResourcePolicy, u *Usage) *Report {
	r := &Report{Decisions: u.Lines, Connections: []ConnectionReport{}, Resources: []ResourceReport{}}
	if u.Lines > 0 {
		r.From, r.To = u.From.UTC().Format("2006-01-02T15:04:05Z"), u.To.UTC().Format("2006-01-02T15:04:05Z")
	}
	for _, cp := range conns {
		if cp.Spec.Enforcement == v1alpha1.EnforcementDryRun {
			continue
		}
		name := cp.Namespace + "/" + cp.Name
		cr := ConnectionReport{Policy: name, UnusedReach: []string{}, UnusedScopes: map[string][]string{}, SuggestedReach: []v1alpha1.Reach{}}
		for _, reach := range cp.Spec.Reach {
			use := u.Reach[ReachKey{name, string(reach.Class)}]
			if use == nil {
				cr.UnusedReach = append(cr.UnusedReach, string(reach.Class))
				continue
			}
			tight := reach.DeepCopy()
			tight.Scopes = nil
			var unused []string
			for _, s := range reach.Scopes {
				if s == "*" {
					continue
				}
				if use.Scopes[string(s)] {
					tight.Scopes = append(tight.Scopes, s)
				} else {
					unused = append(unused, string(s))
				}
			}
			if slices.Contains(reach.Scopes, "*") {
				// A wildcard's tightening is what was requested.
				for _, s := range slices.Sorted(maps.Keys(use.Scopes)) {
					if !slices.Contains(tight.Scopes, v1alpha1.Scope(s)) {
						tight.Scopes = append(tight.Scopes, v1alpha1.Scope(s))
					}
				}
				unused = append(unused, "*")
			}
			if len(unused) > 0 {
				cr.UnusedScopes[string(reach.Class)] = unused
			}
			cr.SuggestedReach = append(cr.SuggestedReach, *tight)
		}
		r.Connections = append(r.Connections, cr)
	}
	for _, rp := range res {
		if rp.Spec.Enforcement == v1alpha1.EnforcementDryRun {
			continue
		}
		name := rp.Namespace + "/" + rp.Name
		rr := ResourceReport{Policy: name, UnusedAllowRules: []string{}, UnusedDenyRules: []string{},
			UnusedConnections: map[string][]string{}, SuggestedRules: []v1alpha1.Rule{}}
		for _, rule := range rp.Spec.Rules {
			use := u.Rules[RuleKey{name, rule.Name}]
			if rule.Effect == v1alpha1.EffectDeny {
				if use == nil {
					rr.UnusedDenyRules = append(rr.UnusedDenyRules, rule.Name)
				}
				rr.SuggestedRules = append(rr.SuggestedRules, *rule.DeepCopy())
				continue
			}
			if use == nil {
				rr.UnusedAllowRules = append(rr.UnusedAllowRules, rule.Name)
				continue
			}
			tight := rule.DeepCopy()
			tight.Connections = nil
			for _, c := range rule.Connections {
				if c.Name == "" {
					tight.Connections = append(tight.Connections, c)
					continue
				}
				ns := c.Namespace
				if ns == "" {
					ns = rp.Namespace
				}
				if use.Connections[ns+"/"+c.Name] {
					tight.Connections = append(tight.Connections, c)
				} else {
					rr.UnusedConnections[rule.Name] = append(rr.UnusedConnections[rule.Name], ns+"/"+c.Name)
				}
			}
			rr.SuggestedRules = append(rr.SuggestedRules, *tight)
		}
		r.Resources = append(r.Resources, rr)
	}
	return r
}

// WriteText prints the report for people: only what is unused.
func (r *Report) WriteText(w io.Writer) {
	if r.Source == SourceCluster {
		r.writeClusterText(w)
		return
	}
	if r.Decisions == 0 {
		fmt.Fprintln(w, "No decisions in the window: every grant is unused.")
	} else {
		fmt.Fprintf(w, "%d decisions from %s to %s.\n", r.Decisions, r.From, r.To)
	}
	unused := 0
	for _, c := range r.Connections {
		for _, class := range c.UnusedReach {
			fmt.Fprintf(w, "ConnectionPolicy %s: reach %q was never used\n", c.Policy, class)
			unused++
		}
		for _, class := range slices.Sorted(maps.Keys(c.UnusedScopes)) {
			fmt.Fprintf(w, "ConnectionPolicy %s: reach %q: scopes never requested: %s\n", c.Policy, class, strings.Join(c.UnusedScopes[class], ", "))
			unused++
		}
	}
	for _, rr := range r.Resources {
		for _, rule := range rr.UnusedAllowRules {
			fmt.Fprintf(w, "ResourcePolicy %s: Allow rule %q never allowed a request\n", rr.Policy, rule)
			unused++
		}
		for _, rule := range slices.Sorted(maps.Keys(rr.UnusedConnections)) {
			fmt.Fprintf(w, "ResourcePolicy %s: Allow rule %q: connections that never came: %s\n", rr.Policy, rule, strings.Join(rr.UnusedConnections[rule], ", "))
			unused++
		}
		for _, rule := range rr.UnusedDenyRules {
			fmt.Fprintf(w, "ResourcePolicy %s: Deny rule %q never denied a request (kept: a Deny rule is a guard)\n", rr.Policy, rule)
		}
	}
	fmt.Fprintf(w, "%d unused grants.\n", unused)
}
