package decision

import (
	"context"
	"sync"
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
		for _, r := range append(append([]*policy.Rule{}, rp.Deny...), rp.Allow...) {
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
	const n = 200
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for range n {
				if d := f.withDryRun.Decide(context.Background(), read); !d.Allowed {
					t.Errorf("read denied: %+v", d.Resource)
				}
				f.withDryRun.Decide(context.Background(), del)
			}
		})
	}
	wg.Wait()

	if got := count(&rule(ledger, "read").Usage); got != 4*n {
		t.Errorf("read rule used %d times, want %d", got, 4*n)
	}
	if got := count(&rule(ledger, "no-deletes").Usage); got != 4*n {
		t.Errorf("no-deletes used %d times, want %d", got, 4*n)
	}
	if got := count(&rule(ledger, "write").Usage); got != 0 {
		t.Errorf("write rule used %d times, want 0", got)
	}
	// Used by the allowed reads only: the denied deletes needed no grant.
	if got := count(&conn.Reach["ledger"].Usage); got != 4*n {
		t.Errorf("ledger reach used %d times, want %d", got, 4*n)
	}
	if _, last := conn.Reach["ledger"].Usage.Load(); !last.Equal(now) {
		t.Errorf("last used %s, want the decision clock's %s", last, now)
	}
	for _, r := range append(append([]*policy.Rule{}, dryLedger.Deny...), dryLedger.Allow...) {
		if got := count(&r.Usage); got != 0 {
			t.Errorf("DryRun rule %s counted %d uses", r.Name, got)
		}
	}
}
