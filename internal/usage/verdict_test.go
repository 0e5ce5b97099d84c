package usage

import (
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// The one rule status and the cluster report judge grants by, boundaries
// included: a use at the window's start is in the window, and a grant
// tracked from exactly the window's start was tracked for all of it.
func TestJudge(t *testing.T) {
	since := time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)
	at := func(d time.Duration) *metav1.Time { return &metav1.Time{Time: since.Add(d)} }
	for _, tc := range []struct {
		name              string
		lastUsed, tracked *metav1.Time
		want              string
	}{
		{"used in the window", at(time.Hour), at(-time.Hour), VerdictUsed},
		{"used at the window's start", at(0), at(-time.Hour), VerdictUsed},
		{"used just before the window", at(-time.Second), at(-time.Hour), VerdictUnused},
		{"never used, tracked from the window's start", nil, at(0), VerdictUnused},
		{"never used, tracked from just after it", nil, at(time.Second), VerdictNotTracked},
		{"used in the window, tracking unknown", at(time.Hour), nil, VerdictUsed},
		{"nothing known", nil, nil, VerdictNotTracked},
	} {
		if got := Judge(tc.lastUsed, tc.tracked, since); got != tc.want {
			t.Errorf("%s: %s, want %s", tc.name, got, tc.want)
		}
	}
}
