package store

import (
	"sync"
	"sync/atomic"
)

// Store publishes snapshots. Readers call Snapshot on the hot path: one
// atomic load, no lock.
type Store struct {
	current atomic.Pointer[Snapshot]
	ready   atomic.Bool

	mu          sync.Mutex
	subscribers []func(Ref)
}

// New returns a store that serves an empty snapshot until the first one is
// published.
func New() *Store {
	s := &Store{}
	s.current.Store(&Snapshot{enforced: newIndex(), dryRun: newIndex(), status: map[Ref]*Status{}})
	return s
}

// Snapshot returns the current snapshot.
func (s *Store) Snapshot() *Snapshot { return s.current.Load() }

// Ready reports whether a snapshot of the complete initial state has been
// published.
func (s *Store) Ready() bool { return s.ready.Load() }

// Subscribe registers fn to be called with every policy whose Status changes
// in a published snapshot. fn must not block: it runs on the publishing
// goroutine.
func (s *Store) Subscribe(fn func(Ref)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.subscribers = append(s.subscribers, fn)
}

// Publish swaps in next, marks the store ready when initial is set, and
// tells subscribers which policies' Status changed. A snapshot older than
// the current one is ignored, so the served state never goes backwards.
func (s *Store) Publish(next *Snapshot, initial bool) {
	var prev *Snapshot
	for {
		prev = s.current.Load()
		if next.Version <= prev.Version {
			return
		}
		// Compare-and-swap, so concurrent publishers cannot move the
		// served version backwards.
		if s.current.CompareAndSwap(prev, next) {
			break
		}
	}
	if initial {
		s.ready.Store(true)
	}
	s.mu.Lock()
	subs := s.subscribers
	s.mu.Unlock()
	if len(subs) == 0 {
		return
	}
	for ref, st := range next.status {
		if old := prev.status[ref]; !st.equal(old) {
			for _, fn := range subs {
				fn(ref)
			}
		}
	}
	for ref := range prev.status {
		if _, ok := next.status[ref]; !ok {
			for _, fn := range subs {
				fn(ref)
			}
		}
	}
}
