package store

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sallyport/sallyport/api/v1alpha1"
)

// Usage metrics describe what each enforced rule and reach entry of the
// served snapshot decided on this replica since its generation was compiled
// here. They are read from the compiled policies' atomic counters at scrape
// time, so the decision path pays nothing for them. Across replicas, sum the
// counters and take the max of the timestamps.
var (
	ruleDecisionsDesc = prometheus.NewDesc("sallyport_rule_decisions_total",
		"Decisions a ResourcePolicy rule made on this replica (an Allow rule that allowed, a Deny rule that denied), since its policy's generation was compiled here.",
		[]string{"namespace", "policy", "rule", "effect"}, nil)
	ruleLastUsedDesc = prometheus.NewDesc("sallyport_rule_last_used_timestamp_seconds",
		"When a ResourcePolicy rule last decided on this replica (Unix time, one-second resolution); absent while it never has.",
		[]string{"namespace", "policy", "rule", "effect"}, nil)
	reachConnectionsDesc = prometheus.NewDesc("sallyport_reach_connections_total",
		"Allowed decisions a ConnectionPolicy reach entry took part in on this replica, since its policy's generation was compiled here.",
		[]string{"namespace", "policy", "class"}, nil)
	reachLastUsedDesc = prometheus.NewDesc("sallyport_reach_last_used_timestamp_seconds",
		"When a ConnectionPolicy reach entry last took part in an allowed decision on this replica (Unix time); absent while it never has.",
		[]string{"namespace", "policy", "class"}, nil)
)

// usageCollector exports the usage of the policies a store serves.
type usageCollector struct{ store *Store }

// RegisterUsageMetrics registers the usage metrics of s on reg. A second
// store in the same process (tests that run two operators) is not
// registered: the first one's metrics stay.
func RegisterUsageMetrics(reg prometheus.Registerer, s *Store) error {
	err := reg.Register(usageCollector{store: s})
	if are := (prometheus.AlreadyRegisteredError{}); errors.As(err, &are) {
		return nil
	}
	return err
}

// Describe implements prometheus.Collector.
func (usageCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- ruleDecisionsDesc
	ch <- ruleLastUsedDesc
	ch <- reachConnectionsDesc
	ch <- reachLastUsedDesc
}

// Collect implements prometheus.Collector.
func (c usageCollector) Collect(ch chan<- prometheus.Metric) {
	conns, res := c.store.Snapshot().Serving(v1alpha1.EnforcementEnforce)
	for _, cp := range conns {
		for class, r := range cp.Reach {
			n, last := r.Usage.Load()
			ch <- prometheus.MustNewConstMetric(reachConnectionsDesc, prometheus.CounterValue, float64(n), cp.Ref.Namespace, cp.Ref.Name, class)
			if !last.IsZero() {
				ch <- prometheus.MustNewConstMetric(reachLastUsedDesc, prometheus.GaugeValue, float64(last.Unix()), cp.Ref.Namespace, cp.Ref.Name, class)
			}
		}
	}
	for _, rp := range res {
		for r := range rp.Rules() {
			n, last := r.Usage.Load()
			ch <- prometheus.MustNewConstMetric(ruleDecisionsDesc, prometheus.CounterValue, float64(n), rp.Ref.Namespace, rp.Ref.Name, r.Name, string(r.Effect))
			if !last.IsZero() {
				ch <- prometheus.MustNewConstMetric(ruleLastUsedDesc, prometheus.GaugeValue, float64(last.Unix()), rp.Ref.Namespace, rp.Ref.Name, r.Name, string(r.Effect))
			}
		}
	}
}
