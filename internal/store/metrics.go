package store

import (
	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
)

var (
	buildDuration = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "sallyport_snapshot_build_duration_seconds",
		Help:    "Time to compile a batch of policy changes and build and publish a snapshot.",
		Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14),
	})
	snapshotVersion = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "sallyport_snapshot_version",
		Help: "Version of the policy snapshot this replica serves; it only increases.",
	})
)

func init() {
	metrics.Registry.MustRegister(buildDuration, snapshotVersion)
}
