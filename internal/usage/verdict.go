package usage

import (
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// The verdicts of Judge.
const (
	// VerdictUsed: used at or after the window's start.
	VerdictUsed = "Used"
	// VerdictUnused: tracked from the window's start or earlier, and not
	// used since.
	VerdictUnused = "Unused"
	// VerdictNotTracked: not used in the window, but tracked for only part
	// of it (or not at all), so its disuse says nothing: a grant that was
	// just added must not count as unused.
	VerdictNotTracked = "NotTracked"
)

// Judge judges a grant's use over the window that starts at since, from its
// last use and when tracking it began, as status shows them (nil: unknown).
// The operator's status and `sallyport report --cluster` both judge with
// it, so they agree.
func Judge(lastUsed, trackedSince *metav1.Time, since time.Time) string {
	switch {
	case lastUsed != nil && !lastUsed.Time.Before(since):
		return VerdictUsed
	case trackedSince != nil && !trackedSince.Time.After(since):
		return VerdictUnused
	}
	return VerdictNotTracked
}
