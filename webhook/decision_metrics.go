package webhook

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/sallyport/sallyport/internal/decision"
)

var (
	decisionsTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sallyport_decisions_total",
		Help: "Decisions by endpoint, outcome, and the reason of each gate.",
	}, []string{"endpoint", "allowed", "connection_reason", "resource_reason"})
	decisionLatency = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "sallyport_decision_duration_seconds",
		Help:    "Time from receiving a decision request to its decision, by endpoint.",
		Buckets: prometheus.ExponentialBuckets(0.00001, 2, 18),
	}, []string{"endpoint"})
	dryRunTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sallyport_dryrun_decisions_total",
		Help: "Shadow decisions made with DryRun policies, by the connection and resource policies of the shadow and whether it agreed with the enforced answer (Agree, WouldDeny, WouldAllow).",
	}, []string{"connection_policy", "resource_policy", "result"})
)

func init() {
	metrics.Registry.MustRegister(decisionsTotal, decisionLatency, dryRunTotal)
}

// observeDryRun counts a shadow decision; d.DryRun must not be nil.
func observeDryRun(d *decision.Decision) {
	result := d.Disagreement()
	if result == "" {
		result = "Agree"
	}
	dryRunTotal.WithLabelValues(d.DryRun.Connection.Policy, d.DryRun.Resource.Policy, result).Inc()
}

func observeDecision(d *decision.Decision, endpoint string, latency time.Duration) {
	allowed := "false"
	if d.Allowed {
		allowed = "true"
	}
	decisionsTotal.WithLabelValues(endpoint, allowed, d.Connection.Reason, d.Resource.Reason).Inc()
	decisionLatency.WithLabelValues(endpoint).Observe(latency.Seconds())
}
