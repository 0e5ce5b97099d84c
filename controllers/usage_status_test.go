package controllers

import (
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/sallyport/sallyport/api/v1alpha1"
	"github.com/sallyport/sallyport/internal/store"
	"github.com/sallyport/sallyport/internal/usage"
)

var usageNow = time.Date(2026, 3, 2, 10, 30, 0, 0, time.UTC)

func tracking() *UsageTracking {
	return &UsageTracking{Window: 24 * time.Hour, Now: func() time.Time { return usageNow }}
}

func ago(d time.Duration) int64 { return usageNow.Add(-d).Unix() }

func mt(unix int64) *metav1.Time { return unixTime(unix) }

// judgeOne judges one grant "g" with merged counts m and previous status prev.
func judgeOne(m usage.Grant, prev v1alpha1.GrantUsage) (v1alpha1.GrantUsage, v1alpha1.UsageSummary, time.Duration) {
	var out v1alpha1.GrantUsage
	var sum v1alpha1.UsageSummary
	next := tracking().judge([]grant{{key: "g", prev: &prev, out: &out}}, &usage.Policy{Grants: map[string]usage.Grant{"g": m}}, &sum, usageNow)
	return out, sum, next
}

// judge: a grant is unused once tracked for the whole window and not used
// in it, and the returned duration is when the next grant turns unused.
func TestJudgeUsage(t *testing.T) {
	day := 24 * time.Hour
	cases := []struct {
		name       string
		merged     usage.Grant
		prev       v1alpha1.GrantUsage
		wantUnused bool
		wantNext   time.Duration
		wantLast   *metav1.Time
		wantSince  *metav1.Time
	}{
		{name: "never used, tracked longer than the window", merged: usage.Grant{Since: ago(48 * time.Hour)},
			wantUnused: true, wantSince: mt(ago(48 * time.Hour))},
		{name: "never used, tracked exactly the window", merged: usage.Grant{Since: ago(day)},
			wantUnused: true, wantSince: mt(ago(day))},
		{name: "tracked less than the window", merged: usage.Grant{Since: ago(2 * time.Hour)},
			wantNext: 22*time.Hour + time.Second, wantSince: mt(ago(2 * time.Hour))},
		{name: "used within the window", merged: usage.Grant{Decisions: 9, Last: ago(time.Hour), Since: ago(48 * time.Hour)},
			wantNext: 23*time.Hour + time.Second, wantLast: mt(ago(time.Hour)), wantSince: mt(ago(48 * time.Hour))},
		{name: "used within the window, tracked less than it", merged: usage.Grant{Decisions: 9, Last: ago(time.Hour), Since: ago(2 * time.Hour)},
			wantNext: 23*time.Hour + time.Second, wantLast: mt(ago(time.Hour)), wantSince: mt(ago(2 * time.Hour))},
		{name: "used before the window", merged: usage.Grant{Decisions: 9, Last: ago(30 * time.Hour), Since: ago(48 * time.Hour)},
			wantUnused: true, wantLast: mt(ago(30 * time.Hour)), wantSince: mt(ago(48 * time.Hour))},
		{name: "not tracked at all", merged: usage.Grant{}},
		{name: "used, never tracked: never turns unused", merged: usage.Grant{Decisions: 1, Last: ago(time.Hour)},
			wantLast: mt(ago(time.Hour))},
		{name: "later last use in status kept", merged: usage.Grant{Decisions: 1, Last: ago(30 * time.Hour), Since: ago(48 * time.Hour)},
			prev:     v1alpha1.GrantUsage{LastUsed: mt(ago(time.Hour))},
			wantNext: 23*time.Hour + time.Second, wantLast: mt(ago(time.Hour)), wantSince: mt(ago(48 * time.Hour))},
		{name: "earlier tracking start in status kept", merged: usage.Grant{Since: ago(2 * time.Hour)},
			prev:       v1alpha1.GrantUsage{TrackedSince: mt(ago(48 * time.Hour))},
			wantUnused: true, wantSince: mt(ago(48 * time.Hour))},
		{name: "status times earlier last use and later start ignored", merged: usage.Grant{Decisions: 2, Last: ago(time.Hour), Since: ago(48 * time.Hour)},
			prev:     v1alpha1.GrantUsage{LastUsed: mt(ago(40 * time.Hour)), TrackedSince: mt(ago(2 * time.Hour))},
			wantNext: 23*time.Hour + time.Second, wantLast: mt(ago(time.Hour)), wantSince: mt(ago(48 * time.Hour))},
		{name: "archive lost: status alone", merged: usage.Grant{},
			prev:       v1alpha1.GrantUsage{Decisions: 50, LastUsed: mt(ago(30 * time.Hour)), TrackedSince: mt(ago(48 * time.Hour))},
			wantUnused: true, wantLast: mt(ago(30 * time.Hour)), wantSince: mt(ago(48 * time.Hour))},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			out, sum, next := judgeOne(c.merged, c.prev)
			if out.Unused != c.wantUnused {
				t.Errorf("unused = %v, want %v", out.Unused, c.wantUnused)
			}
			if next != c.wantNext {
				t.Errorf("next = %v, want %v", next, c.wantNext)
			}
			if out.Decisions != int64(c.merged.Decisions) {
				t.Errorf("decisions = %d, want the merged %d", out.Decisions, c.merged.Decisions)
			}
			if !timeEq(out.LastUsed, c.wantLast) || !timeEq(out.TrackedSince, c.wantSince) {
				t.Errorf("lastUsed %v trackedSince %v, want %v and %v", out.LastUsed, out.TrackedSince, c.wantLast, c.wantSince)
			}
			wantCount := int32(0)
			if c.wantUnused {
				wantCount = 1
			}
			if sum.Unused != wantCount || !timeEq(sum.LastUsed, c.wantLast) || sum.Window == nil || sum.Window.Duration != 24*time.Hour {
				t.Errorf("summary %+v, want %d unused, lastUsed %v, window 24h", sum, wantCount, c.wantLast)
			}
		})
	}
}

// The summary counts the unused grants, names the latest use of any, and
// the next time is the soonest of all grants'.
func TestJudgeSummary(t *testing.T) {
	grants := map[string]usage.Grant{
		"a": {Since: ago(48 * time.Hour)},
		"b": {Decisions: 1, Last: ago(30 * time.Hour), Since: ago(48 * time.Hour)},
		"c": {Decisions: 1, Last: ago(3 * time.Hour), Since: ago(48 * time.Hour)},
		"d": {Decisions: 1, Last: ago(5 * time.Hour), Since: ago(48 * time.Hour)},
		"e": {Since: ago(10 * time.Hour)},
	}
	var gs []grant
	outs := map[string]*v1alpha1.GrantUsage{}
	for _, k := range []string{"a", "b", "c", "d", "e"} {
		outs[k] = &v1alpha1.GrantUsage{}
		gs = append(gs, grant{key: k, prev: &v1alpha1.GrantUsage{}, out: outs[k]})
	}
	sum := v1alpha1.UsageSummary{Unused: 7, LastUsed: mt(ago(time.Minute))}
	next := tracking().judge(gs, &usage.Policy{Grants: grants}, &sum, usageNow)
	if sum.Unused != 2 {
		t.Errorf("unused = %d, want 2 (a, b)", sum.Unused)
	}
	if !timeEq(sum.LastUsed, mt(ago(3*time.Hour))) {
		t.Errorf("summary lastUsed = %v, want c's, 3h ago (the previous summary's is not kept)", sum.LastUsed)
	}
	if want := 14*time.Hour + time.Second; next != want {
		t.Errorf("next = %v, want %v (e's tracking reaches the window)", next, want)
	}
}

func timeEq(a, b *metav1.Time) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.Equal(b)
}

func usageRP(dryRun bool) *v1alpha1.ResourcePolicy {
	rp := &v1alpha1.ResourcePolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ledger", Name: "api", UID: "uid-api", Generation: 4},
		Spec: v1alpha1.ResourcePolicySpec{Rules: []v1alpha1.Rule{
			{Name: "write", Effect: v1alpha1.EffectDeny},
			{Name: "read", Effect: v1alpha1.EffectAllow},
			{Name: "new", Effect: v1alpha1.EffectAllow},
		}},
	}
	if dryRun {
		rp.Spec.Enforcement = v1alpha1.EnforcementDryRun
	}
	return rp
}

func view(at time.Time, p *usage.Policy) *usage.View {
	return &usage.View{At: at, Policies: map[types.UID]*usage.Policy{"uid-api": p}}
}

// status.usage of a ResourcePolicy lists its rules in spec order with their
// effects; a rule the view does not know has no decisions and is not
// tracked (so not unused); updatedAt moves only when the usage changed.
func TestResourceUsageStatus(t *testing.T) {
	u := tracking()
	rp := usageRP(false)
	rp.Status.DryRun = &v1alpha1.DryRunStatus{Generation: 3}
	p := &usage.Policy{Kind: usage.KindResource, Namespace: "ledger", Name: "api", Grants: map[string]usage.Grant{
		"read":  {Decisions: 12, Last: ago(time.Hour), Since: ago(48 * time.Hour)},
		"write": {Since: ago(48 * time.Hour)},
		"gone":  {Decisions: 5, Last: ago(time.Hour), Since: ago(48 * time.Hour)},
	}}
	at1 := usageNow.Add(-time.Minute)
	next := u.resourceUsage(rp, store.Status{Served: 4}, view(at1, p))
	if rp.Status.DryRun != nil {
		t.Error("an enforced policy keeps status.dryRun")
	}
	s := rp.Status.Usage
	if s == nil {
		t.Fatal("no status.usage")
	}
	names := []string{}
	for _, r := range s.Rules {
		names = append(names, r.Name+"/"+string(r.Effect))
	}
	if got, want := names, []string{"write/Deny", "read/Allow", "new/Allow"}; !equalStrings(got, want) {
		t.Errorf("rules %v, want %v", got, want)
	}
	if r := s.Rules[0]; !r.Unused || r.Decisions != 0 {
		t.Errorf("write = %+v, want unused", r)
	}
	// The unused rule is a Deny rule: a guard, not counted as a grant.
	if r := s.Rules[1]; r.Unused || r.Decisions != 12 || !timeEq(r.LastUsed, mt(ago(time.Hour))) {
		t.Errorf("read = %+v, want 12 decisions, used 1h ago", r)
	}
	if r := s.Rules[2]; r.Unused || r.Decisions != 0 || r.TrackedSince != nil || r.LastUsed != nil {
		t.Errorf("new = %+v, want zero and untracked", r)
	}
	if s.Unused != 0 || !timeEq(s.LastUsed, mt(ago(time.Hour))) || !timeEq(s.UpdatedAt, &metav1.Time{Time: at1}) {
		t.Errorf("summary %+v, want 0 unused (the unused Deny rule is a guard), lastUsed 1h ago, updatedAt %v", s.UsageSummary, at1)
	}
	if want := 23*time.Hour + time.Second; next != want {
		t.Errorf("next = %v, want %v", next, want)
	}

	// A merge that changed nothing keeps updatedAt.
	at2 := usageNow
	u.resourceUsage(rp, store.Status{Served: 4}, view(at2, p))
	if !timeEq(rp.Status.Usage.UpdatedAt, &metav1.Time{Time: at1}) {
		t.Errorf("updatedAt = %v after an unchanged merge, want %v", rp.Status.Usage.UpdatedAt, at1)
	}
	// One that did moves it.
	p.Grants["read"] = usage.Grant{Decisions: 13, Last: ago(time.Minute), Since: ago(48 * time.Hour)}
	u.resourceUsage(rp, store.Status{Served: 4}, view(at2, p))
	if s := rp.Status.Usage; !timeEq(s.UpdatedAt, &metav1.Time{Time: at2}) || s.Rules[1].Decisions != 13 {
		t.Errorf("after a change: updatedAt %v, read %+v; want %v, 13", s.UpdatedAt, s.Rules[1], at2)
	}

	// A policy the view does not know: zero, untracked.
	other := usageRP(false)
	other.UID = "uid-other"
	if next := u.resourceUsage(other, store.Status{Served: 4}, view(at2, p)); next != 0 {
		t.Errorf("next = %v for a policy no replica reported, want 0", next)
	}
	for _, r := range other.Status.Usage.Rules {
		if r.Decisions != 0 || r.TrackedSince != nil || r.Unused {
			t.Errorf("unreported rule %+v", r)
		}
	}
}

// status.usage of a ConnectionPolicy lists its reach entries in spec order.
func TestConnectionUsageStatus(t *testing.T) {
	cp := &v1alpha1.ConnectionPolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: "billing", Name: "worker", UID: "uid-api", Generation: 2},
		Spec:       v1alpha1.ConnectionPolicySpec{Reach: []v1alpha1.Reach{{Class: "ledger"}, {Class: "archive"}, {Class: "new"}}},
	}
	p := &usage.Policy{Kind: usage.KindConnection, Namespace: "billing", Name: "worker", Grants: map[string]usage.Grant{
		"archive": {Since: ago(48 * time.Hour)},
		"ledger":  {Decisions: 3, Last: ago(time.Hour), Since: ago(48 * time.Hour)},
	}}
	tracking().connectionUsage(cp, store.Status{Served: 2}, view(usageNow, p))
	s := cp.Status.Usage
	if s == nil || len(s.Reach) != 3 {
		t.Fatalf("status.usage = %+v", s)
	}
	if r := s.Reach[0]; r.Class != "ledger" || r.Decisions != 3 || r.Unused {
		t.Errorf("reach[0] = %+v, want ledger used 3 times", r)
	}
	if r := s.Reach[1]; r.Class != "archive" || !r.Unused {
		t.Errorf("reach[1] = %+v, want archive unused", r)
	}
	if r := s.Reach[2]; r.Class != "new" || r.TrackedSince != nil || r.Unused {
		t.Errorf("reach[2] = %+v, want new untracked", r)
	}
	if s.Unused != 1 || !timeEq(s.UpdatedAt, &metav1.Time{Time: usageNow}) {
		t.Errorf("summary %+v", s.UsageSummary)
	}
}

// A DryRun policy has no status.usage; status.dryRun holds the shadow
// counts of the served generation, zero while the replicas report only an
// older one; updatedAt moves only with the counts.
func TestDryRunUsageStatus(t *testing.T) {
	u := tracking()
	rp := usageRP(true)
	rp.Status.Usage = &v1alpha1.ResourceUsageStatus{UsageSummary: v1alpha1.UsageSummary{Unused: 2}}
	shadow := func(gen int64, n uint64) *usage.Policy {
		return &usage.Policy{Kind: usage.KindResource, Namespace: "ledger", Name: "api",
			Shadow: &usage.Shadow{Generation: gen, Decisions: n, WouldDeny: 2, WouldAllow: 1, LastDisagreement: ago(time.Hour)}}
	}
	at1 := usageNow.Add(-time.Minute)
	if next := u.resourceUsage(rp, store.Status{Served: 4}, view(at1, shadow(4, 10))); next != 0 {
		t.Errorf("next = %v for a DryRun policy, want 0", next)
	}
	if rp.Status.Usage != nil {
		t.Error("a DryRun policy keeps status.usage")
	}
	d := rp.Status.DryRun
	if d == nil || d.Generation != 4 || d.Decisions != 10 || d.WouldDeny != 2 || d.WouldAllow != 1 ||
		!timeEq(d.LastDisagreement, mt(ago(time.Hour))) || !timeEq(d.UpdatedAt, &metav1.Time{Time: at1}) {
		t.Fatalf("dryRun = %+v", d)
	}
	u.resourceUsage(rp, store.Status{Served: 4}, view(usageNow, shadow(4, 10)))
	if !timeEq(rp.Status.DryRun.UpdatedAt, &metav1.Time{Time: at1}) {
		t.Errorf("updatedAt moved on an unchanged merge: %v", rp.Status.DryRun.UpdatedAt)
	}

	// Generation 5 serves; the replicas have reported only generation 4.
	u.resourceUsage(rp, store.Status{Served: 5}, view(usageNow, shadow(4, 10)))
	if d := rp.Status.DryRun; d.Generation != 5 || d.Decisions != 0 || d.WouldDeny != 0 || d.WouldAllow != 0 || d.LastDisagreement != nil ||
		!timeEq(d.UpdatedAt, &metav1.Time{Time: usageNow}) {
		t.Errorf("dryRun with an older shadow = %+v, want generation 5 with zero counts", d)
	}
	// Nothing reported at all.
	u.resourceUsage(rp, store.Status{Served: 5}, &usage.View{At: usageNow})
	if d := rp.Status.DryRun; d.Generation != 5 || d.Decisions != 0 {
		t.Errorf("dryRun with no report = %+v", d)
	}

	// ConnectionPolicies alike.
	cp := &v1alpha1.ConnectionPolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: "billing", Name: "worker", UID: "uid-api"},
		Spec:       v1alpha1.ConnectionPolicySpec{Enforcement: v1alpha1.EnforcementDryRun, Reach: []v1alpha1.Reach{{Class: "ledger"}}},
		Status:     v1alpha1.ConnectionPolicyStatus{Usage: &v1alpha1.ConnectionUsageStatus{}},
	}
	tracking().connectionUsage(cp, store.Status{Served: 4}, view(usageNow, shadow(4, 7)))
	if cp.Status.Usage != nil || cp.Status.DryRun == nil || cp.Status.DryRun.Decisions != 7 {
		t.Errorf("DryRun ConnectionPolicy: usage %+v, dryRun %+v", cp.Status.Usage, cp.Status.DryRun)
	}
}

func equalStrings(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
