package store

import (
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"

	"k8s.io/apimachinery/pkg/types"

	"github.com/sallyport/sallyport/api/v1alpha1"
	"github.com/sallyport/sallyport/internal/policy"
)

func TestNewStore(t *testing.T) {
	s := New()
	if s.Ready() {
		t.Error("new store is ready")
	}
	snap := s.Snapshot()
	if snap == nil || snap.Version != 0 || snap.Len() != 0 {
		t.Fatalf("initial snapshot = %+v", snap)
	}
	if _, ok := snap.ConnectionByAudience(enforce, "x"); ok {
		t.Error("empty snapshot has a connection")
	}
	if _, ok := snap.ResourceByService(dryRun, "a", "b"); ok {
		t.Error("empty snapshot has a resource")
	}
	if _, ok := snap.ResourceByHost(enforce, "h"); ok {
		t.Error("empty snapshot has a host")
	}
	if _, ok := snap.NamespaceLabels("default"); ok {
		t.Error("empty snapshot knows a namespace")
	}
	if _, ok := snap.Status(connRef("a", "b")); ok {
		t.Error("empty snapshot has a status")
	}
}

// recorder collects notifications.
type recorder struct {
	mu   sync.Mutex
	refs []Ref
}

func (r *recorder) record(ref Ref) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.refs = append(r.refs, ref)
}

// take returns the recorded refs, sorted, and forgets them.
func (r *recorder) take() []Ref {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := r.refs
	r.refs = nil
	slices.SortFunc(out, func(a, b Ref) int {
		return strings.Compare(string(a.Kind)+" "+a.String(), string(b.Kind)+" "+b.String())
	})
	return out
}

func TestStorePublish(t *testing.T) {
	b := newBuilder()
	st := New()
	var rec recorder
	st.Subscribe(rec.record)

	if err := b.UpsertConnection(connPolicy("billing", "a", 1, 0, nil)); err != nil {
		t.Fatal(err)
	}
	s1 := b.Build()
	st.Publish(s1, false)
	if st.Ready() {
		t.Error("ready after a non-initial publish")
	}
	if st.Snapshot() != s1 {
		t.Error("snapshot 1 not current")
	}
	if got := rec.take(); !slices.Equal(got, []Ref{connRef("billing", "a")}) {
		t.Errorf("notified %v", got)
	}

	if err := b.UpsertResource(resPolicy("ledger", "api", 1, 0, nil)); err != nil {
		t.Fatal(err)
	}
	s2 := b.Build()
	st.Publish(s2, true)
	if !st.Ready() || st.Snapshot() != s2 {
		t.Errorf("after initial publish: ready %v, version %d", st.Ready(), st.Snapshot().Version)
	}
	// Only the policy whose status changed is named.
	if got := rec.take(); !slices.Equal(got, []Ref{resRef("ledger", "api")}) {
		t.Errorf("notified %v", got)
	}

	// Older and equal versions are ignored, and nobody is told.
	st.Publish(s1, false)
	st.Publish(&Snapshot{Version: s2.Version, enforced: newIndex(), dryRun: newIndex()}, false)
	if st.Snapshot() != s2 {
		t.Errorf("current version %d after stale publishes, want %d", st.Snapshot().Version, s2.Version)
	}
	if got := rec.take(); len(got) != 0 {
		t.Errorf("stale publishes notified %v", got)
	}

	// Nothing changed: no notifications, but the newer snapshot serves.
	s3 := b.Build()
	st.Publish(s3, false)
	if st.Snapshot() != s3 || !st.Ready() {
		t.Error("snapshot 3 not current, or no longer ready")
	}
	if got := rec.take(); len(got) != 0 {
		t.Errorf("unchanged build notified %v", got)
	}

	// A changed audience, a conflict with an older policy, a deletion and
	// a policy that does not compile are each notified.
	const shared = "https://ledger.example"
	if err := b.UpsertConnection(connPolicy("billing", "a", 2, 0, audience(shared))); err != nil {
		t.Fatal(err)
	}
	st.Publish(b.Build(), false)
	if got := rec.take(); !slices.Equal(got, []Ref{connRef("billing", "a")}) {
		t.Errorf("audience change notified %v", got)
	}
	if err := b.UpsertConnection(connPolicy("aaa", "older", 1, -1, audience(shared))); err != nil {
		t.Fatal(err)
	}
	b.Delete(resRef("ledger", "api"))
	if err := b.UpsertResource(resPolicy("ledger", "other", 1, 0, func(s *v1alpha1.ResourcePolicySpec) { s.Class = "" })); err == nil {
		t.Fatal("resource without class compiled")
	}
	st.Publish(b.Build(), false)
	want := []Ref{connRef("aaa", "older"), connRef("billing", "a"), resRef("ledger", "api"), resRef("ledger", "other")}
	if got := rec.take(); !slices.Equal(got, want) {
		t.Errorf("notified %v, want %v", got, want)
	}
	cur := st.Snapshot()
	if s, _ := cur.Status(connRef("billing", "a")); s.Conflict == nil || s.Conflict.Reason != v1alpha1.ReasonAudienceConflict {
		t.Errorf("billing/a status = %+v", s)
	}
	if s, _ := cur.Status(resRef("ledger", "other")); s.Err == nil || s.Served != 0 {
		t.Errorf("ledger/other status = %+v", s)
	}
}

func TestStoreSubscribersAll(t *testing.T) {
	b := newBuilder()
	st := New()
	var r1, r2 recorder
	st.Subscribe(r1.record)
	st.Subscribe(r2.record)
	if err := b.UpsertConnection(connPolicy("billing", "a", 1, 0, nil)); err != nil {
		t.Fatal(err)
	}
	st.Publish(b.Build(), true)
	for i, r := range []*recorder{&r1, &r2} {
		if got := r.take(); !slices.Equal(got, []Ref{connRef("billing", "a")}) {
			t.Errorf("subscriber %d notified %v", i, got)
		}
	}
}

// Readers load snapshots while one goroutine builds and publishes.
func TestStoreConcurrentReaders(t *testing.T) {
	b := newBuilder()
	st := New()
	var readers sync.WaitGroup
	st.Subscribe(func(Ref) {})
	stop := make(chan struct{})
	for range 4 {
		readers.Go(func() {
			last := uint64(0)
			for {
				select {
				case <-stop:
					return
				default:
				}
				s := st.Snapshot()
				if s.Version < last {
					t.Errorf("version went back from %d to %d", last, s.Version)
					return
				}
				last = s.Version
				if c, ok := s.ConnectionByAudience(enforce, "sallyport.dev/billing/a"); ok && c.Generation > int64(s.Version) {
					t.Errorf("snapshot %d serves generation %d", s.Version, c.Generation)
				}
			}
		})
	}
	for gen := int64(1); gen <= 50; gen++ {
		if err := b.UpsertConnection(connPolicy("billing", "a", gen, 0, nil)); err != nil {
			t.Fatal(err)
		}
		st.Publish(b.Build(), gen == 1)
	}
	close(stop)
	readers.Wait()
	if c, _ := st.Snapshot().ConnectionByAudience(enforce, "sallyport.dev/billing/a"); c == nil || c.Generation != 50 {
		t.Errorf("final generation %v", c)
	}
}

func TestStatusEqual(t *testing.T) {
	base := Status{UID: "u", Generation: 2, Served: 1, Summary: policy.Summary{Rules: 1}, Audience: "a",
		Err: errors.New("bad"), Conflict: &Conflict{Reason: "R", Claim: "c", Holder: types.NamespacedName{Namespace: "n", Name: "h"}}}
	same := base
	same.Err = errors.New("bad")
	same.Conflict = &Conflict{Reason: "R", Claim: "c", Holder: types.NamespacedName{Namespace: "n", Name: "h"}}
	if !base.equal(&same) {
		t.Error("equal statuses with distinct pointers differ")
	}
	for name, edit := range map[string]func(*Status){
		"uid":         func(s *Status) { s.UID = "v" },
		"generation":  func(s *Status) { s.Generation = 3 },
		"served":      func(s *Status) { s.Served = 2 },
		"summary":     func(s *Status) { s.Summary.Expressions = 1 },
		"audience":    func(s *Status) { s.Audience = "b" },
		"err text":    func(s *Status) { s.Err = errors.New("worse") },
		"err gone":    func(s *Status) { s.Err = nil },
		"conflict":    func(s *Status) { s.Conflict = &Conflict{Reason: "R", Claim: "d", Holder: s.Conflict.Holder} },
		"no conflict": func(s *Status) { s.Conflict = nil },
	} {
		other := same
		edit(&other)
		if base.equal(&other) || other.equal(&base) {
			t.Errorf("%s: statuses compare equal", name)
		}
	}
	var nilStatus *Status
	if !nilStatus.equal(nil) || nilStatus.equal(&base) || base.equal(nil) {
		t.Error("nil handling")
	}
}
