package report

import (
	"bytes"
	"encoding/json"
	"reflect"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/sallyport/sallyport/api/v1alpha1"
)

// The window of the status tests: 2026-11-01T12:00:00Z to 2026-12-01T12:00:00Z.
var (
	until  = time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	window = 30 * 24 * time.Hour
	since  = until.Add(-window)
)

func at(t time.Time) *metav1.Time { return &metav1.Time{Time: t} }

// grant is GrantUsage with the given times; a zero time is absent.
func grant(decisions int64, lastUsed, trackedSince time.Time) v1alpha1.GrantUsage {
	g := v1alpha1.GrantUsage{Decisions: decisions}
	if !lastUsed.IsZero() {
		g.LastUsed = at(lastUsed)
	}
	if !trackedSince.IsZero() {
		g.TrackedSince = at(trackedSince)
	}
	return g
}

// Each case is one grant, judged both as a reach entry and as an Allow rule.
func TestGrantVerdicts(t *testing.T) {
	day := 24 * time.Hour
	for _, tc := range []struct {
		name  string
		usage *v1alpha1.GrantUsage // nil: the status does not list the grant
		want  string
	}{
		{"never used, tracked long enough", &v1alpha1.GrantUsage{TrackedSince: at(since.Add(-day))}, GrantUnused},
		{"never used, tracked since exactly the window's start", &v1alpha1.GrantUsage{TrackedSince: at(since)}, GrantUnused},
		{"used before the window", ptr(grant(7, since.Add(-time.Second), since.Add(-10*day))), GrantUnused},
		{"used at the window's start", ptr(grant(7, since, since.Add(-10*day))), GrantUsed},
		{"used in the window", ptr(grant(7, until.Add(-day), since.Add(-10*day))), GrantUsed},
		{"used after --until: the latest use hides the window's", ptr(grant(7, until.Add(day), since.Add(-10*day))), GrantUsed},
		{"used in the window, tracked too shortly", ptr(grant(1, until.Add(-day), until.Add(-2*day))), GrantUsed},
		{"never used, tracked too shortly", &v1alpha1.GrantUsage{TrackedSince: at(since.Add(time.Second))}, GrantNotTracked},
		{"used before tracking restarted, tracked too shortly", ptr(grant(3, since.Add(-day), until.Add(-day))), GrantNotTracked},
		{"no trackedSince", &v1alpha1.GrantUsage{}, GrantNotTracked},
		{"not in the status", nil, GrantNotTracked},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cp := &v1alpha1.ConnectionPolicy{
				ObjectMeta: metav1.ObjectMeta{Namespace: "billing", Name: "to-ledger"},
				Spec:       v1alpha1.ConnectionPolicySpec{Reach: []v1alpha1.Reach{{Class: "ledger", Scopes: []v1alpha1.Scope{"ledger.read"}}}},
				Status:     v1alpha1.ConnectionPolicyStatus{Usage: &v1alpha1.ConnectionUsageStatus{}},
			}
			rp := &v1alpha1.ResourcePolicy{
				ObjectMeta: metav1.ObjectMeta{Namespace: "ledger", Name: "ledger-api"},
				Spec:       v1alpha1.ResourcePolicySpec{Rules: []v1alpha1.Rule{{Name: "read", Effect: v1alpha1.EffectAllow}}},
				Status:     v1alpha1.ResourcePolicyStatus{Usage: &v1alpha1.ResourceUsageStatus{}},
			}
			if tc.usage != nil {
				cp.Status.Usage.Reach = []v1alpha1.ReachUsage{{Class: "ledger", GrantUsage: *tc.usage}}
				rp.Status.Usage.Rules = []v1alpha1.RuleUsage{{Name: "read", Effect: v1alpha1.EffectAllow, GrantUsage: *tc.usage}}
			}
			r := FromStatus([]*v1alpha1.ConnectionPolicy{cp}, []*v1alpha1.ResourcePolicy{rp}, until, window)
			c, res := r.Connections[0], r.Resources[0]
			if got := c.Grants[0].Verdict; got != tc.want {
				t.Errorf("reach verdict %s, want %s", got, tc.want)
			}
			if got := res.Grants[0].Verdict; got != tc.want {
				t.Errorf("rule verdict %s, want %s", got, tc.want)
			}
			// Only an unused grant leaves the suggestion; one not tracked
			// long enough stays, and is listed as such.
			wantUnused, wantNotTracked, wantKept := []string{}, []string{}, 1
			switch tc.want {
			case GrantUnused:
				wantUnused, wantKept = []string{"ledger"}, 0
			case GrantNotTracked:
				wantNotTracked = []string{"ledger"}
			}
			check(t, "unused reach", c.UnusedReach, wantUnused)
			check(t, "reach not tracked", c.NotTrackedReach, wantNotTracked)
			check(t, "suggested reach entries", len(c.SuggestedReach), wantKept)
			check(t, "unused Allow rules", len(res.UnusedAllowRules), len(wantUnused))
			check(t, "rules not tracked", len(res.NotTrackedRules), len(wantNotTracked))
			check(t, "suggested rules", len(res.SuggestedRules), wantKept)
		})
	}
}

func ptr[T any](v T) *T { return &v }

func check(t *testing.T, what string, got, want any) {
	t.Helper()
	if !reflect.DeepEqual(got, want) {
		t.Errorf("%s = %v, want %v", what, got, want)
	}
}

// statusPolicies are the fixtures of the report tests below: one policy
// of each kind in each state the report tells apart.
func statusPolicies() ([]*v1alpha1.ConnectionPolicy, []*v1alpha1.ResourcePolicy) {
	old, recent := since.Add(-24*time.Hour), until.Add(-24*time.Hour)
	conns := []*v1alpha1.ConnectionPolicy{
		{
			ObjectMeta: metav1.ObjectMeta{Namespace: "billing", Name: "to-ledger", Generation: 1},
			Spec: v1alpha1.ConnectionPolicySpec{Reach: []v1alpha1.Reach{
				{Class: "ledger", Scopes: []v1alpha1.Scope{"ledger.read", "ledger.write"}, MaxClassification: v1alpha1.ClassificationInternal},
				{Class: "audit", Scopes: []v1alpha1.Scope{"audit.read"}},
				{Class: "reports"},
			}},
			Status: v1alpha1.ConnectionPolicyStatus{Usage: &v1alpha1.ConnectionUsageStatus{Reach: []v1alpha1.ReachUsage{
				{Class: "ledger", GrantUsage: grant(40, recent, old)},
				{Class: "audit", GrantUsage: grant(0, time.Time{}, old)},
				{Class: "reports", GrantUsage: grant(0, time.Time{}, recent)},
			}}},
		},
		{
			// The operator has not merged usage yet.
			ObjectMeta: metav1.ObjectMeta{Namespace: "billing", Name: "to-reports", Generation: 1},
			Spec:       v1alpha1.ConnectionPolicySpec{Reach: []v1alpha1.Reach{{Class: "ledger"}}},
		},
		{
			// A DryRun policy whose counts are for its previous generation.
			ObjectMeta: metav1.ObjectMeta{Namespace: "billing", Name: "to-ledger-tight", Generation: 3},
			Spec:       v1alpha1.ConnectionPolicySpec{Enforcement: v1alpha1.EnforcementDryRun, Reach: []v1alpha1.Reach{{Class: "ledger"}}},
			Status:     v1alpha1.ConnectionPolicyStatus{DryRun: &v1alpha1.DryRunStatus{Generation: 2, Decisions: 500}},
		},
	}
	res := []*v1alpha1.ResourcePolicy{
		{
			ObjectMeta: metav1.ObjectMeta{Namespace: "ledger", Name: "ledger-api", Generation: 1},
			Spec: v1alpha1.ResourcePolicySpec{Rules: []v1alpha1.Rule{
				{Name: "no-deletes", Effect: v1alpha1.EffectDeny},
				{Name: "no-admin", Effect: v1alpha1.EffectDeny},
				{Name: "read", Effect: v1alpha1.EffectAllow},
				{Name: "write", Effect: v1alpha1.EffectAllow},
				{Name: "export", Effect: v1alpha1.EffectAllow},
			}},
			Status: v1alpha1.ResourcePolicyStatus{Usage: &v1alpha1.ResourceUsageStatus{Rules: []v1alpha1.RuleUsage{
				{Name: "no-deletes", Effect: v1alpha1.EffectDeny, GrantUsage: grant(2, recent, old)},
				{Name: "no-admin", Effect: v1alpha1.EffectDeny, GrantUsage: grant(0, time.Time{}, old)},
				{Name: "read", Effect: v1alpha1.EffectAllow, GrantUsage: grant(40, recent, old)},
				{Name: "write", Effect: v1alpha1.EffectAllow, GrantUsage: grant(3, old, old.Add(-time.Hour))},
				// export was added after the operator's last merge.
			}}},
		},
		{
			ObjectMeta: metav1.ObjectMeta{Namespace: "ledger", Name: "ledger-api-tight", Generation: 2},
			Spec:       v1alpha1.ResourcePolicySpec{Enforcement: v1alpha1.EnforcementDryRun},
			Status:     v1alpha1.ResourcePolicyStatus{DryRun: &v1alpha1.DryRunStatus{Generation: 2, Decisions: 120, UpdatedAt: at(recent)}},
		},
		{
			ObjectMeta: metav1.ObjectMeta{Namespace: "ledger", Name: "ledger-api-tighter", Generation: 1},
			Spec:       v1alpha1.ResourcePolicySpec{Enforcement: v1alpha1.EnforcementDryRun},
			Status: v1alpha1.ResourcePolicyStatus{DryRun: &v1alpha1.DryRunStatus{Generation: 1, Decisions: 120, WouldDeny: 4,
				LastDisagreement: at(recent), UpdatedAt: at(recent)}},
		},
		{
			ObjectMeta: metav1.ObjectMeta{Namespace: "ledger", Name: "ledger-api-idle", Generation: 1},
			Spec:       v1alpha1.ResourcePolicySpec{Enforcement: v1alpha1.EnforcementDryRun},
			Status:     v1alpha1.ResourcePolicyStatus{DryRun: &v1alpha1.DryRunStatus{Generation: 1}},
		},
		{
			ObjectMeta: metav1.ObjectMeta{Namespace: "ledger", Name: "ledger-api-new", Generation: 1},
			Spec:       v1alpha1.ResourcePolicySpec{Enforcement: v1alpha1.EnforcementDryRun},
		},
	}
	return conns, res
}

func TestFromStatus(t *testing.T) {
	conns, res := statusPolicies()
	r := FromStatus(conns, res, until, window)
	check(t, "source", r.Source, SourceCluster)
	check(t, "window", r.Since+" "+r.Until, "2026-11-01T12:00:00Z 2026-12-01T12:00:00Z")

	check(t, "enforced ConnectionPolicies", len(r.Connections), 2)
	c := r.Connections[0]
	check(t, "to-ledger unused reach", c.UnusedReach, []string{"audit"})
	check(t, "to-ledger reach not tracked", c.NotTrackedReach, []string{"reports"})
	// The suggestion keeps every field of the entries it keeps.
	check(t, "to-ledger suggested reach", c.SuggestedReach, []v1alpha1.Reach{
		{Class: "ledger", Scopes: []v1alpha1.Scope{"ledger.read", "ledger.write"}, MaxClassification: v1alpha1.ClassificationInternal},
		{Class: "reports"},
	})
	check(t, "to-ledger unused scopes (not in status)", c.UnusedScopes, map[string][]string{})
	noData := r.Connections[1]
	check(t, "to-reports without usage", noData.NoUsageData, true)
	check(t, "to-reports unused reach", noData.UnusedReach, []string{})
	check(t, "to-reports suggested reach", noData.SuggestedReach, conns[1].Spec.Reach)

	check(t, "enforced ResourcePolicies", len(r.Resources), 1)
	rr := r.Resources[0]
	check(t, "unused Allow rules", rr.UnusedAllowRules, []string{"write"})
	check(t, "unused Deny rules", rr.UnusedDenyRules, []string{"no-admin"})
	check(t, "rules not tracked", rr.NotTrackedRules, []string{"export"})
	var kept []string
	for _, rule := range rr.SuggestedRules {
		kept = append(kept, rule.Name)
	}
	check(t, "suggested rules", kept, []string{"no-deletes", "no-admin", "read", "export"})

	type dry struct {
		policy               string
		current, promotable  bool
		generation, countsOf int64
	}
	var got []dry
	for _, d := range r.DryRun {
		got = append(got, dry{d.Kind + " " + d.Policy, d.Current, d.Promotable, d.Generation, d.CountsGeneration})
	}
	check(t, "DryRun policies", got, []dry{
		{"ConnectionPolicy billing/to-ledger-tight", false, false, 3, 2}, // 500 quiet decisions, but of generation 2
		{"ResourcePolicy ledger/ledger-api-tight", true, true, 2, 2},
		{"ResourcePolicy ledger/ledger-api-tighter", true, false, 1, 1}, // would deny
		{"ResourcePolicy ledger/ledger-api-idle", true, false, 1, 1},    // no decision yet
		{"ResourcePolicy ledger/ledger-api-new", false, false, 1, 0},    // no status yet
	})

	var text bytes.Buffer
	r.WriteText(&text)
	const want = `Usage the operator merged into the policies' status, window 2026-11-01T12:00:00Z to 2026-12-01T12:00:00Z.
ConnectionPolicy billing/to-ledger: reach "audit" was never used since tracking began at 2026-10-31T12:00:00Z
ResourcePolicy ledger/ledger-api: Deny rule "no-admin" never denied a request since tracking began at 2026-10-31T12:00:00Z (kept: a Deny rule is a guard)
ResourcePolicy ledger/ledger-api: Allow rule "write" last allowed a request at 2026-10-31T12:00:00Z, before the window
2 unused grants.
Not tracked for the whole window, so not judged (kept):
  ConnectionPolicy billing/to-ledger: reach "reports" is tracked only since 2026-11-30T12:00:00Z
  ResourcePolicy ledger/ledger-api: Allow rule "export" is not tracked yet
No usage data in the status yet (the operator has not merged any), so not judged:
  ConnectionPolicy billing/to-reports
DryRun policies:
  ConnectionPolicy billing/to-ledger-tight: the counts are for generation 2, the policy is at generation 3: not ready to promote (no counts for this generation yet)
  ResourcePolicy ledger/ledger-api-tight: generation 2: 120 decisions, 0 would deny, 0 would allow: ready to promote
  ResourcePolicy ledger/ledger-api-tighter: generation 1: 120 decisions, 4 would deny, 0 would allow (last disagreement 2026-11-30T12:00:00Z): not ready to promote
  ResourcePolicy ledger/ledger-api-idle: generation 1: 0 decisions, 0 would deny, 0 would allow: not ready to promote (no decision yet)
  ResourcePolicy ledger/ledger-api-new: no dry-run counts in the status yet: not ready to promote
The status does not record scopes or connections: for unused scopes and connections, run sallyport report with -f and --decision-log.
`
	if text.String() != want {
		t.Errorf("text report:\n%s\nwant:\n%s", text.String(), want)
	}
}

// A report from decision logs keeps its JSON: the fields of the cluster
// source stay out of it.
func TestLogReportJSONUnchanged(t *testing.T) {
	r := Build(nil, nil, NewUsage())
	b, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	check(t, "JSON", string(b), `{"decisions":0,"connectionPolicies":[],"resourcePolicies":[]}`)
}
