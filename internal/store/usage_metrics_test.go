package store

import (
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/sallyport/sallyport/api/v1alpha1"
)

func TestUsageMetrics(t *testing.T) {
	b := newBuilder()
	if err := b.UpsertConnection(connPolicy("billing", "to-ledger", 1, 2, nil)); err != nil {
		t.Fatal(err)
	}
	if err := b.UpsertResource(resPolicy("ledger", "ledger-api", 1, 1, func(s *v1alpha1.ResourcePolicySpec) {
		s.Hosts = []string{"ledger.example.com"} // held twice in the index, counted once
		s.Rules = append(s.Rules, v1alpha1.Rule{Name: "no-deletes", Effect: v1alpha1.EffectDeny, Actions: []string{"DELETE"}, Resources: []string{"/**"}})
	})); err != nil {
		t.Fatal(err)
	}
	if err := b.UpsertResource(resPolicy("ledger", "dry", 1, 1, func(s *v1alpha1.ResourcePolicySpec) {
		s.Enforcement = v1alpha1.EnforcementDryRun
		s.Service = "ledger-api"
	})); err != nil {
		t.Fatal(err)
	}
	st := New()
	st.Publish(b.Build(), true)

	snap := st.Snapshot()
	rp, _ := snap.ResourceByService(v1alpha1.EnforcementEnforce, "ledger", "ledger-api")
	cp, _ := snap.ConnectionByAudience(v1alpha1.EnforcementEnforce, "sallyport.dev/billing/to-ledger")
	used := time.Date(2026, 12, 5, 1, 0, 0, 0, time.UTC)
	for range 3 {
		rp.Allow[0].Usage.Mark(used)
		cp.Reach["ledger"].Usage.Mark(used)
	}

	reg := prometheus.NewRegistry()
	if err := RegisterUsageMetrics(reg, st); err != nil {
		t.Fatal(err)
	}
	if err := RegisterUsageMetrics(reg, New()); err != nil {
		t.Errorf("a second store: %v, want it skipped", err)
	}
	want := `
# HELP sallyport_reach_connections_total Allowed decisions a ConnectionPolicy reach entry took part in on this replica, since its policy's generation was compiled here.
# TYPE sallyport_reach_connections_total counter
sallyport_reach_connections_total{class="ledger",namespace="billing",policy="to-ledger"} 3
# HELP sallyport_reach_last_used_timestamp_seconds When a ConnectionPolicy reach entry last took part in an allowed decision on this replica (Unix time); absent while it never has.
# TYPE sallyport_reach_last_used_timestamp_seconds gauge
sallyport_reach_last_used_timestamp_seconds{class="ledger",namespace="billing",policy="to-ledger"} 1.7964324e+09
# HELP sallyport_rule_decisions_total Decisions a ResourcePolicy rule made on this replica (an Allow rule that allowed, a Deny rule that denied), since its policy's generation was compiled here.
# TYPE sallyport_rule_decisions_total counter
sallyport_rule_decisions_total{effect="Allow",namespace="ledger",policy="ledger-api",rule="read"} 3
sallyport_rule_decisions_total{effect="Deny",namespace="ledger",policy="ledger-api",rule="no-deletes"} 0
# HELP sallyport_rule_last_used_timestamp_seconds When a ResourcePolicy rule last decided on this replica (Unix time, one-second resolution); absent while it never has.
# TYPE sallyport_rule_last_used_timestamp_seconds gauge
sallyport_rule_last_used_timestamp_seconds{effect="Allow",namespace="ledger",policy="ledger-api",rule="read"} 1.7964324e+09
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want)); err != nil {
		t.Error(err)
	}
}
