package policy

import (
	"sync/atomic"
	"time"
)

// Usage counts how often a compiled rule or reach entry decided a request,
// and when last, without a lock: the decision path marks it with atomic
// operations, and readers (status, metrics, reports) load it at any time.
// The snapshot builder hands it on to the next compiled generation of the
// same policy for the rule of the same name or the reach entry of the same
// class, so it counts for as long as this process serves that grant.
type Usage struct {
	count atomic.Uint64
	// last is the time of the latest use, in Unix nanoseconds; 0 never.
	last atomic.Int64
	// since is when this process began to serve the grant.
	since time.Time
}

// NewUsage returns a Usage that tracks from since.
func NewUsage(since time.Time) *Usage { return &Usage{since: since.UTC()} }

// usageResolution is how stale the last-used time may be: a use within it of
// the stored one does not store, so a hot rule's cache line is mostly read,
// not written, by concurrent decisions.
const usageResolution = int64(time.Second)

// Mark records one use at now.
func (u *Usage) Mark(now time.Time) {
	u.count.Add(1)
	n := now.UnixNano()
	if last := u.last.Load(); n-last >= usageResolution {
		// A racing later mark may be overwritten by an earlier one; both are
		// within the resolution of each other or the next mark repairs it.
		u.last.Store(n)
	}
}

// Load returns the number of uses and the last one (zero when never used).
func (u *Usage) Load() (count uint64, last time.Time) {
	count = u.count.Load()
	if n := u.last.Load(); n != 0 {
		last = time.Unix(0, n).UTC()
	}
	return count, last
}

// Since returns when this process began to track the grant.
func (u *Usage) Since() time.Time { return u.since }

// ShadowUsage counts the shadow decisions one generation of a DryRun policy
// took part in, and its disagreements with the enforced answers.
type ShadowUsage struct {
	decisions, wouldDeny, wouldAllow atomic.Uint64
	// lastDisagreement is in Unix nanoseconds; 0 never.
	lastDisagreement atomic.Int64
}

// ShadowCounts is a ShadowUsage as read at one moment.
type ShadowCounts struct {
	Decisions, WouldDeny, WouldAllow uint64
	// LastDisagreement is zero while there was none.
	LastDisagreement time.Time
}

// Mark records one shadow decision at now: allowed is the enforced answer,
// shadowAllowed the DryRun one.
func (s *ShadowUsage) Mark(now time.Time, allowed, shadowAllowed bool) {
	s.decisions.Add(1)
	if allowed == shadowAllowed {
		return
	}
	if allowed {
		s.wouldDeny.Add(1)
	} else {
		s.wouldAllow.Add(1)
	}
	s.lastDisagreement.Store(now.UnixNano())
}

// Load returns the counts.
func (s *ShadowUsage) Load() ShadowCounts {
	c := ShadowCounts{Decisions: s.decisions.Load(), WouldDeny: s.wouldDeny.Load(), WouldAllow: s.wouldAllow.Load()}
	if n := s.lastDisagreement.Load(); n != 0 {
		c.LastDisagreement = time.Unix(0, n).UTC()
	}
	return c
}
