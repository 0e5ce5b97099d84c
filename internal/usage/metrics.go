package usage

import (
	"github.com/prometheus/client_golang/prometheus"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"
)

var (
	reportErrors = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "sallyport_usage_report_errors_total",
		Help: "Usage reports this replica could not write; its counts reach the policies' status late, or (if it stops before a write succeeds) not at all.",
	})
	merges = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sallyport_usage_merges_total",
		Help: "Merges of the replicas' usage reports by the leader, by result (success or error).",
	}, []string{"result"})
	mergedReports = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "sallyport_usage_reports",
		Help: "Replica usage reports in the latest merge, not counting the archive.",
	})
)

func init() {
	ctrlmetrics.Registry.MustRegister(reportErrors, merges, mergedReports)
}
