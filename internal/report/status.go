package report

import (
	"fmt"
	"io"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/sallyport/sallyport/api/v1alpha1"
	"github.com/sallyport/sallyport/internal/usage"
)

// SourceCluster is Report.Source for a report built from the usage the
// operator merged into the policies' status.
const SourceCluster = "cluster"

// The verdicts of GrantStatus.
const (
	// GrantUsed: used in the window (or later: the status keeps only the
	// latest use, so a use after --until hides whether the window saw one,
	// and the grant is given the benefit of the doubt).
	GrantUsed = usage.VerdictUsed
	// GrantUnused: tracked for the whole window and not used in it.
	GrantUnused = usage.VerdictUnused
	// GrantNotTracked: not used in the window, but tracked for only part
	// of it (or not at all yet), so its disuse says nothing: a grant that
	// was just added must not be suggested for removal.
	GrantNotTracked = usage.VerdictNotTracked
)

// GrantStatus is one grant (a reach entry or a rule) as the policy's status
// tells its use, with the report's verdict over the window.
type GrantStatus struct {
	// Name is the reach entry's class or the rule's name.
	Name string `json:"name"`
	// Effect is the rule's effect; empty for a reach entry.
	Effect v1alpha1.Effect `json:"effect,omitempty"`
	// Decisions counts the decisions the grant took part in since it was
	// tracked (not only in the window).
	Decisions    int64  `json:"decisions"`
	LastUsed     string `json:"lastUsed,omitempty"`
	TrackedSince string `json:"trackedSince,omitempty"`
	// Verdict is GrantUsed, GrantUnused or GrantNotTracked.
	Verdict string `json:"verdict"`
}

// DryRunReport is a DryRun policy's disagreement counts from its status,
// and whether they say it can be promoted to Enforce.
type DryRunReport struct {
	// Kind is ConnectionPolicy or ResourcePolicy.
	Kind   string `json:"kind"`
	Policy string `json:"policy"`
	// Generation is the policy's metadata.generation; CountsGeneration the
	// generation the counts are for (0: no counts yet). Current is set when
	// they are the same: counts of an older generation say nothing about
	// the policy as it is now.
	Generation       int64  `json:"generation"`
	CountsGeneration int64  `json:"countsGeneration"`
	Current          bool   `json:"current"`
	Decisions        int64  `json:"decisions"`
	WouldDeny        int64  `json:"wouldDeny"`
	WouldAllow       int64  `json:"wouldAllow"`
	LastDisagreement string `json:"lastDisagreement,omitempty"`
	UpdatedAt        string `json:"updatedAt,omitempty"`
	// Promotable is set when the counts are for the current generation,
	// there was at least one decision, and the policy never disagreed with
	// the enforced answer.
	Promotable bool `json:"promotable"`
}

// FromStatus builds a report from the usage and dry-run counts in the
// policies' status, over the window that ends at until and reaches back
// window. Enforce policies are judged grant by grant; DryRun policies are
// listed with their disagreement counts. The status holds no scopes or
// connections, so UnusedScopes and UnusedConnections stay empty and the
// suggestions keep them as the spec has them.
func FromStatus(conns []*v1alpha1.ConnectionPolicy, res []*v1alpha1.ResourcePolicy, until time.Time, window time.Duration) *Report {
	since := until.Add(-window)
	r := &Report{
		Source: SourceCluster, Since: stamp(since), Until: stamp(until),
		Connections: []ConnectionReport{}, Resources: []ResourceReport{}, DryRun: []DryRunReport{},
	}
	for _, cp := range conns {
		name := cp.Namespace + "/" + cp.Name
		if cp.Spec.Enforcement == v1alpha1.EnforcementDryRun {
			r.DryRun = append(r.DryRun, dryRunReport("ConnectionPolicy", name, cp.Generation, cp.Status.DryRun))
			continue
		}
		r.Connections = append(r.Connections, connectionFromStatus(name, cp, since))
	}
	for _, rp := range res {
		name := rp.Namespace + "/" + rp.Name
		if rp.Spec.Enforcement == v1alpha1.EnforcementDryRun {
			r.DryRun = append(r.DryRun, dryRunReport("ResourcePolicy", name, rp.Generation, rp.Status.DryRun))
			continue
		}
		r.Resources = append(r.Resources, resourceFromStatus(name, rp, since))
	}
	return r
}

func connectionFromStatus(name string, cp *v1alpha1.ConnectionPolicy, since time.Time) ConnectionReport {
	cr := ConnectionReport{Policy: name, UnusedReach: []string{}, UnusedScopes: map[string][]string{},
		SuggestedReach: []v1alpha1.Reach{}, NotTrackedReach: []string{}, Grants: []GrantStatus{}}
	usage := cp.Status.Usage
	if usage == nil {
		// Nothing is known: judging would call every grant unused.
		cr.NoUsageData = true
		for _, reach := range cp.Spec.Reach {
			cr.SuggestedReach = append(cr.SuggestedReach, *reach.DeepCopy())
		}
		return cr
	}
	byClass := map[string]*v1alpha1.GrantUsage{}
	for i := range usage.Reach {
		byClass[usage.Reach[i].Class] = &usage.Reach[i].GrantUsage
	}
	for _, reach := range cp.Spec.Reach {
		class := string(reach.Class)
		g := grantStatus(class, "", byClass[class], since)
		cr.Grants = append(cr.Grants, g)
		switch g.Verdict {
		case GrantUnused:
			cr.UnusedReach = append(cr.UnusedReach, class)
			continue
		case GrantNotTracked:
			cr.NotTrackedReach = append(cr.NotTrackedReach, class)
		}
		cr.SuggestedReach = append(cr.SuggestedReach, *reach.DeepCopy())
	}
	return cr
}

func resourceFromStatus(name string, rp *v1alpha1.ResourcePolicy, since time.Time) ResourceReport {
	rr := ResourceReport{Policy: name, UnusedAllowRules: []string{}, UnusedDenyRules: []string{},
		UnusedConnections: map[string][]string{}, SuggestedRules: []v1alpha1.Rule{},
		NotTrackedRules: []string{}, Grants: []GrantStatus{}}
	usage := rp.Status.Usage
	if usage == nil {
		rr.NoUsageData = true
		for _, rule := range rp.Spec.Rules {
			rr.SuggestedRules = append(rr.SuggestedRules, *rule.DeepCopy())
		}
		return rr
	}
	byName := map[string]*v1alpha1.GrantUsage{}
	for i := range usage.Rules {
		byName[usage.Rules[i].Name] = &usage.Rules[i].GrantUsage
	}
	for _, rule := range rp.Spec.Rules {
		// The spec's effect, not the status's: the status may describe an
		// older generation.
		g := grantStatus(rule.Name, rule.Effect, byName[rule.Name], since)
		rr.Grants = append(rr.Grants, g)
		switch {
		case g.Verdict == GrantNotTracked:
			rr.NotTrackedRules = append(rr.NotTrackedRules, rule.Name)
		case g.Verdict == GrantUnused && rule.Effect == v1alpha1.EffectDeny:
			// Reported, kept: a Deny rule is a guard, and one that never
			// fired may be the reason nobody tries.
			rr.UnusedDenyRules = append(rr.UnusedDenyRules, rule.Name)
		case g.Verdict == GrantUnused:
			rr.UnusedAllowRules = append(rr.UnusedAllowRules, rule.Name)
			continue
		}
		rr.SuggestedRules = append(rr.SuggestedRules, *rule.DeepCopy())
	}
	return rr
}

// grantStatus judges one grant over the window that starts at since. A
// grant the status does not list (added after the operator's last merge)
// is not tracked.
func grantStatus(name string, effect v1alpha1.Effect, g *v1alpha1.GrantUsage, since time.Time) GrantStatus {
	s := GrantStatus{Name: name, Effect: effect, Verdict: GrantNotTracked}
	if g == nil {
		return s
	}
	s.Decisions, s.LastUsed, s.TrackedSince = g.Decisions, stampOf(g.LastUsed), stampOf(g.TrackedSince)
	s.Verdict = usage.Judge(g.LastUsed, g.TrackedSince, since)
	return s
}

func dryRunReport(kind, name string, generation int64, st *v1alpha1.DryRunStatus) DryRunReport {
	d := DryRunReport{Kind: kind, Policy: name, Generation: generation}
	if st == nil {
		return d
	}
	d.CountsGeneration, d.Decisions, d.WouldDeny, d.WouldAllow = st.Generation, st.Decisions, st.WouldDeny, st.WouldAllow
	d.LastDisagreement, d.UpdatedAt = stampOf(st.LastDisagreement), stampOf(st.UpdatedAt)
	d.Current = st.Generation == generation
	d.Promotable = d.Current && d.Decisions > 0 && d.WouldDeny == 0 && d.WouldAllow == 0
	return d
}

func stamp(t time.Time) string { return t.UTC().Format(time.RFC3339) }

func stampOf(t *metav1.Time) string {
	if t == nil {
		return ""
	}
	return stamp(t.Time)
}

// writeClusterText prints a report from the cluster for people: the unused
// grants, then what could not be judged, then the DryRun policies.
func (r *Report) writeClusterText(w io.Writer) {
	fmt.Fprintf(w, "Usage the operator merged into the policies' status, window %s to %s.\n", r.Since, r.Until)
	unused := 0
	for _, c := range r.Connections {
		for _, g := range c.Grants {
			if g.Verdict == GrantUnused {
				fmt.Fprintf(w, "ConnectionPolicy %s: reach %q %s\n", c.Policy, g.Name, unusedText(g, "was never used", "was last used"))
				unused++
			}
		}
	}
	for _, rr := range r.Resources {
		for _, g := range rr.Grants {
			if g.Verdict != GrantUnused {
				continue
			}
			if g.Effect == v1alpha1.EffectDeny {
				fmt.Fprintf(w, "ResourcePolicy %s: Deny rule %q %s (kept: a Deny rule is a guard)\n", rr.Policy, g.Name, unusedText(g, "never denied a request", "last denied a request"))
				continue
			}
			fmt.Fprintf(w, "ResourcePolicy %s: Allow rule %q %s\n", rr.Policy, g.Name, unusedText(g, "never allowed a request", "last allowed a request"))
			unused++
		}
	}
	fmt.Fprintf(w, "%d unused grants.\n", unused)

	var notTracked, noData []string
	for _, c := range r.Connections {
		if c.NoUsageData {
			noData = append(noData, "ConnectionPolicy "+c.Policy)
		}
		for _, g := range c.Grants {
			if g.Verdict == GrantNotTracked {
				notTracked = append(notTracked, fmt.Sprintf("ConnectionPolicy %s: reach %q %s", c.Policy, g.Name, trackedText(g)))
			}
		}
	}
	for _, rr := range r.Resources {
		if rr.NoUsageData {
			noData = append(noData, "ResourcePolicy "+rr.Policy)
		}
		for _, g := range rr.Grants {
			if g.Verdict == GrantNotTracked {
				notTracked = append(notTracked, fmt.Sprintf("ResourcePolicy %s: %s rule %q %s", rr.Policy, g.Effect, g.Name, trackedText(g)))
			}
		}
	}
	if len(notTracked) > 0 {
		fmt.Fprintln(w, "Not tracked for the whole window, so not judged (kept):")
		for _, l := range notTracked {
			fmt.Fprintln(w, "  "+l)
		}
	}
	if len(noData) > 0 {
		fmt.Fprintln(w, "No usage data in the status yet (the operator has not merged any), so not judged:")
		for _, l := range noData {
			fmt.Fprintln(w, "  "+l)
		}
	}
	if len(r.DryRun) > 0 {
		fmt.Fprintln(w, "DryRun policies:")
		for _, d := range r.DryRun {
			fmt.Fprintf(w, "  %s %s: %s\n", d.Kind, d.Policy, dryRunText(d))
		}
	}
	fmt.Fprintln(w, "The status does not record scopes or connections: for unused scopes and connections, run sallyport report with -f and --decision-log.")
}

// unusedText says how an unused grant was (not) used: never, or last
// before the window.
func unusedText(g GrantStatus, never, last string) string {
	if g.LastUsed == "" {
		return fmt.Sprintf("%s since tracking began at %s", never, g.TrackedSince)
	}
	return fmt.Sprintf("%s at %s, before the window", last, g.LastUsed)
}

func trackedText(g GrantStatus) string {
	if g.TrackedSince == "" {
		return "is not tracked yet"
	}
	return "is tracked only since " + g.TrackedSince
}

func dryRunText(d DryRunReport) string {
	switch {
	case d.CountsGeneration == 0 && d.Decisions == 0 && d.UpdatedAt == "":
		return "no dry-run counts in the status yet: not ready to promote"
	case !d.Current:
		return fmt.Sprintf("the counts are for generation %d, the policy is at generation %d: not ready to promote (no counts for this generation yet)", d.CountsGeneration, d.Generation)
	}
	counts := fmt.Sprintf("generation %d: %d decisions, %d would deny, %d would allow", d.Generation, d.Decisions, d.WouldDeny, d.WouldAllow)
	switch {
	case d.Promotable:
		return counts + ": ready to promote"
	case d.Decisions == 0:
		return counts + ": not ready to promote (no decision yet)"
	case d.LastDisagreement != "":
		return fmt.Sprintf("%s (last disagreement %s): not ready to promote", counts, d.LastDisagreement)
	default:
		return counts + ": not ready to promote"
	}
}
