package usage

import (
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/types"

	"github.com/sallyport/sallyport/api/v1alpha1"
)

// collect reads the live counters of a real snapshot: enforced policies as
// grants, DryRun policies as shadow counts; a baseline's counts add to the
// live ones and its policies the snapshot does not know are dropped.
func TestCollect(t *testing.T) {
	st := BuildStore(t,
		[]*v1alpha1.ConnectionPolicy{
			ConnPolicy("billing", "worker", "conn-enforced", 2, false, "ledger", "archive"),
			ConnPolicy("billing", "shadow", "conn-dry", 5, true, "ledger"),
		},
		[]*v1alpha1.ResourcePolicy{
			ResPolicy("ledger", "api", "res-enforced", 3, false, "read", "write", "never"),
			ResPolicy("ledger", "dry", "res-dry", 7, true, "read"),
		})
	compiled := time.Now().Add(-time.Minute)
	use := time.Date(2026, 3, 2, 10, 0, 0, 0, time.UTC)

	for range 3 {
		ServedRule(t, st, "ledger", "api", "read").Usage.Mark(use)
	}
	ServedRule(t, st, "ledger", "api", "write").Usage.Mark(use.Add(-time.Hour))
	ServedConnection(t, st, v1alpha1.EnforcementEnforce, "billing", "worker").Reach["ledger"].Usage.Mark(use)
	dry := ServedResource(t, st, v1alpha1.EnforcementDryRun, "ledger", "dry")
	dry.Shadowed.Mark(use, true, false)
	dry.Shadowed.Mark(use, true, true)
	ServedConnection(t, st, v1alpha1.EnforcementDryRun, "billing", "shadow").Shadowed.Mark(use, false, true)

	baseline := newReport()
	baseline.Policies["res-enforced"] = &Policy{Kind: KindResource, Namespace: "ledger", Name: "api", Grants: map[string]Grant{
		"read":    {Decisions: 10, Last: use.Add(-2 * time.Hour).Unix(), Since: use.Add(-48 * time.Hour).Unix()},
		"write":   {Decisions: 4, Last: use.Unix() + 60, Since: use.Add(-48 * time.Hour).Unix()},
		"renamed": {Decisions: 1, Last: use.Add(-3 * time.Hour).Unix(), Since: use.Add(-48 * time.Hour).Unix()},
	}}
	baseline.Policies["res-dry"] = &Policy{Kind: KindResource, Namespace: "ledger", Name: "dry",
		Shadow: &Shadow{Generation: 7, Decisions: 10, WouldDeny: 2, LastDisagreement: use.Add(-time.Hour).Unix()}}
	baseline.Policies["conn-dry"] = &Policy{Kind: KindConnection, Namespace: "billing", Name: "shadow",
		Shadow: &Shadow{Generation: 4, Decisions: 99, WouldDeny: 9}}
	baseline.Policies["deleted"] = &Policy{Kind: KindResource, Namespace: "ledger", Name: "gone", Grants: map[string]Grant{"read": {Decisions: 5}}}

	now := time.Date(2026, 3, 2, 11, 0, 0, 0, time.FixedZone("CET", 3600))
	r := collect(st.Snapshot(), baseline, now)
	if !r.Written.Equal(now) || r.Written.Location() != time.UTC {
		t.Errorf("written = %v, want %v in UTC", r.Written, now)
	}
	if r.SchemaVersion != SchemaVersion {
		t.Errorf("schema version %d", r.SchemaVersion)
	}
	if len(r.Policies) != 4 {
		t.Errorf("policies %v, want the 4 the snapshot serves", keysOf(r.Policies))
	}
	if _, ok := r.Policies["deleted"]; ok {
		t.Error("the baseline's policy the snapshot does not know is kept")
	}

	// Live since is when the rule was compiled: now-ish, later than the
	// baseline's, so the baseline's earlier start wins where it has one.
	res := mustPolicy(t, r, "res-enforced", KindResource, "ledger", "api")
	if res.Shadow != nil {
		t.Errorf("enforced policy has shadow counts %+v", res.Shadow)
	}
	wantGrant(t, res, "read", Grant{Decisions: 13, Last: use.Unix(), Since: use.Add(-48 * time.Hour).Unix()})
	wantGrant(t, res, "write", Grant{Decisions: 5, Last: use.Unix() + 60, Since: use.Add(-48 * time.Hour).Unix()})
	wantGrant(t, res, "renamed", Grant{Decisions: 1, Last: use.Add(-3 * time.Hour).Unix(), Since: use.Add(-48 * time.Hour).Unix()})
	never := res.Grants["never"]
	if never.Decisions != 0 || never.Last != 0 || never.Since < compiled.Unix() {
		t.Errorf("unused live rule = %+v, want 0 decisions, no last use, tracked since it was compiled (>= %d)", never, compiled.Unix())
	}

	conn := mustPolicy(t, r, "conn-enforced", KindConnection, "billing", "worker")
	if len(conn.Grants) != 2 || conn.Grants["ledger"].Decisions != 1 || conn.Grants["ledger"].Last != use.Unix() ||
		conn.Grants["archive"].Decisions != 0 || conn.Grants["archive"].Since < compiled.Unix() {
		t.Errorf("connection grants = %+v, want ledger used once at %d, archive unused", conn.Grants, use.Unix())
	}

	// DryRun: shadow counts of the served generation, the baseline's of
	// the same generation added, of an older one replaced.
	dryRes := mustPolicy(t, r, "res-dry", KindResource, "ledger", "dry")
	if len(dryRes.Grants) != 0 {
		t.Errorf("DryRun policy has grants %+v", dryRes.Grants)
	}
	if want := (Shadow{Generation: 7, Decisions: 12, WouldDeny: 3, LastDisagreement: use.Unix()}); dryRes.Shadow == nil || *dryRes.Shadow != want {
		t.Errorf("DryRun ResourcePolicy shadow = %+v, want %+v", dryRes.Shadow, want)
	}
	dryConn := mustPolicy(t, r, "conn-dry", KindConnection, "billing", "shadow")
	if want := (Shadow{Generation: 5, Decisions: 1, WouldAllow: 1, LastDisagreement: use.Unix()}); dryConn.Shadow == nil || *dryConn.Shadow != want {
		t.Errorf("DryRun ConnectionPolicy shadow = %+v, want %+v", dryConn.Shadow, want)
	}

	// The baseline is not changed.
	if g := baseline.Policies["res-enforced"].Grants["read"]; g.Decisions != 10 {
		t.Errorf("baseline changed: %+v", g)
	}

	// Without a baseline: the live counts alone.
	r = collect(st.Snapshot(), nil, now)
	if g := r.Policies["res-enforced"].Grants["read"]; g.Decisions != 3 || g.Since < compiled.Unix() {
		t.Errorf("read without baseline = %+v, want 3 decisions tracked since compile", g)
	}
	if _, ok := r.Policies["res-enforced"].Grants["renamed"]; ok {
		t.Error("a rule only the baseline had appears without it")
	}
}

func mustPolicy(t *testing.T, r *Report, uid types.UID, kind, ns, name string) *Policy {
	t.Helper()
	p := r.Policies[uid]
	if p == nil {
		t.Fatalf("no policy %s in %v", uid, keysOf(r.Policies))
	}
	if p.Kind != kind || p.Namespace != ns || p.Name != name {
		t.Errorf("policy %s is %s %s/%s, want %s %s/%s", uid, p.Kind, p.Namespace, p.Name, kind, ns, name)
	}
	return p
}

func wantGrant(t *testing.T, p *Policy, key string, want Grant) {
	t.Helper()
	if got := p.Grants[key]; got != want {
		t.Errorf("%s grant %s = %+v, want %+v", p.Name, key, got, want)
	}
}

func keysOf[V any](m map[types.UID]V) []types.UID {
	var out []types.UID
	for k := range m {
		out = append(out, k)
	}
	return out
}
