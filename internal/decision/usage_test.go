package decision

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/sallyport/sallyport/api/v1alpha1"
	"github.com/sallyport/sallyport/internal/policy"
)

// Decisions mark the reach entry and the rule that decided, once each, and
// nothing else; concurrent decisions lose no count; shadow decisions with
// DryRun policies mark nothing.
func TestDecisionsMarkUsage(t *testing.T) {
	f := newDryRunFixture(t)
	snap := f.withDryRun.store.Snapshot()
	conn, _ := snap.ConnectionByAudience(v1alpha1.EnforcementEnforce, "ledger-api.example.com")
	ledger, _ := snap.ResourceByService(v1alpha1.EnforcementEnforce, "ledger", "ledger-api")
	dryLedger, _ := snap.ResourceByService(v1alpha1.EnforcementDryRun, "ledger", "ledger-api")
	rule := func(rp *policy.Resource, name string) *policy.Rule {
		for r := range rp.Rules() {
			if r.Name == name {
				return r
			}
		}
		t.Fatalf("no rule %s", name)
		return nil
	}
	count := func(u *policy.Usage) uint64 { n, _ := u.Load(); return n }

	read := &Request{Token: f.tokens[0], Action: "GET", Scopes: []string{"ledger.read"}, Target: Target{Namespace: "ledger", Service: "ledger-api", Name: "/entries/1"}}
	del := &Request{Token: f.tokens[0], Action: "DELETE", Target: Target{Namespace: "ledger", Service: "ledger-api", Name: "/entries/1"}}
	// The DryRun policies drop the write grant: writes would be denied.
	write := &Request{Token: f.tokens[0], Action: "POST", Scopes: []string{"ledger.write"}, Target: Target{Namespace: "ledger", Service: "ledger-api", Name: "/entries"}}
	const n = 200
	var wg sync.WaitGroup
	var shadows, wouldDeny, wouldAllow atomic.Uint64
	tally := func(d *Decision) {
		if d.DryRun != nil {
			shadows.Add(1)
		}
		switch d.Disagreement() {
		case DisagreementWouldDeny:
			wouldDeny.Add(1)
		case DisagreementWouldAllow:
			wouldAllow.Add(1)
		}
	}
	for range 4 {
		wg.Go(func() {
			for range n {
				d := f.withDryRun.Decide(context.Background(), read)
				if !d.Allowed {
					t.Errorf("read denied: %+v", d.Resource)
				}
				tally(d)
				tally(f.withDryRun.Decide(context.Background(), del))
				tally(f.withDryRun.Decide(context.Background(), write))
			}
		})
	}
	wg.Wait()

	// The DryRun ResourcePolicy took part in every shadow decision, and
	// counted exactly the disagreements the decisions report.
	sc := dryLedger.Shadowed.Load()
	if sc.Decisions != shadows.Load() || sc.WouldDeny != wouldDeny.Load() || sc.WouldAllow != wouldAllow.Load() {
		t.Errorf("shadow counts %+v, want %d decisions, %d WouldDeny, %d WouldAllow", sc, shadows.Load(), wouldDeny.Load(), wouldAllow.Load())
	}
	if sc.Decisions != 12*n || sc.WouldDeny != 4*n || sc.WouldAllow != 0 || !sc.LastDisagreement.Equal(now) {
		t.Errorf("shadow counts %+v: want all %d requests judged and the %d writes WouldDeny at %s", sc, 12*n, 4*n, now)
	}
	dryConn, _ := snap.ConnectionByAudience(v1alpha1.EnforcementDryRun, "ledger-api.example.com")
	if cc := dryConn.Shadowed.Load(); cc != sc {
		t.Errorf("DryRun ConnectionPolicy counts %+v, want the same as its ResourcePolicy's %+v", cc, sc)
	}
	if ledger.Shadowed != nil {
		t.Error("an enforced policy has shadow counters")
	}

	if got := count(rule(ledger, "read").Usage); got != 4*n {
		t.Errorf("read rule used %d times, want %d", got, 4*n)
	}
	if got := count(rule(ledger, "no-deletes").Usage); got != 4*n {
		t.Errorf("no-deletes used %d times, want %d", got, 4*n)
	}
	if got := count(rule(ledger, "write").Usage); got != 4*n {
		t.Errorf("write rule used %d times, want %d", got, 4*n)
	}
	// Used by the allowed reads and writes only: the denied deletes needed
	// no grant.
	if got := count(conn.Reach["ledger"].Usage); got != 8*n {
		t.Errorf("ledger reach used %d times, want %d", got, 8*n)
	}
	if _, last := conn.Reach["ledger"].Usage.Load(); !last.Equal(now) {
		t.Errorf("last used %s, want the decision clock's %s", last, now)
	}
	for r := range dryLedger.Rules() {
		if got := count(r.Usage); got != 0 {
			t.Errorf("DryRun rule %s counted %d uses", r.Name, got)
		}
	}
}
