package store

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/sallyport/sallyport/api/v1alpha1"
)

func TestPolicyGauges(t *testing.T) {
	b := newBuilder()
	broken := func(s *v1alpha1.ConnectionPolicySpec) { s.When = "request.nope" }
	_ = b.UpsertConnection(connPolicy("a", "serving", 1, 0, audience("shared")))
	_ = b.UpsertConnection(connPolicy("a", "conflict", 1, 1, audience("shared")))
	_ = b.UpsertConnection(connPolicy("a", "stale", 1, 0, nil))
	_ = b.UpsertConnection(connPolicy("a", "stale", 2, 0, broken))
	_ = b.UpsertConnection(connPolicy("a", "failed", 1, 0, broken))
	_ = b.UpsertResource(resPolicy("b", "api", 1, 0, nil))
	observeSnapshot(b.Build())

	for state, want := range map[string]float64{"serving": 1, "conflict": 1, "stale": 1, "failed": 1} {
		if got := testutil.ToFloat64(policies.WithLabelValues(string(KindConnection), state)); got != want {
			t.Errorf("ConnectionPolicy %s = %v, want %v", state, got, want)
		}
	}
	if got := testutil.ToFloat64(policies.WithLabelValues(string(KindResource), "serving")); got != 1 {
		t.Errorf("ResourcePolicy serving = %v", got)
	}
	if got := testutil.ToFloat64(policies.WithLabelValues(string(KindResource), "failed")); got != 0 {
		t.Errorf("ResourcePolicy failed = %v, want 0 (reset)", got)
	}
}
