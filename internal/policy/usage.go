package policy

import (
	"sync/atomic"
	"time"
)

// Usage counts how often a compiled rule or reach entry decided a request,
// and when last, without a lock: the decision path marks it with atomic
// operations, and readers (status, metrics, reports) load it at any time.
// It belongs to one compiled generation; a recompiled policy starts anew.
type Usage struct {
	count atomic.Uint64
	// last is the time of the latest use, in Unix nanoseconds; 0 never.
	last atomic.Int64
}

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
