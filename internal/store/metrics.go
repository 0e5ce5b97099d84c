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

	policies = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "sallyport_policies",
		Help: "Policies in the served snapshot by kind and state: serving (current generation), stale (an older generation serves because the current one does not compile), failed (nothing serves) and conflict (an older policy holds a claim).",
	}, []string{"kind", "state"})
)

func init() {
	metrics.Registry.MustRegister(buildDuration, snapshotVersion, policies)
}

// observeSnapshot sets the policy gauges from a published snapshot.
func observeSnapshot(s *Snapshot) {
	type key struct {
		kind  Kind
		state string
	}
	counts := map[key]int{}
	for _, k := range []Kind{KindConnection, KindResource} {
		for _, st := range []string{"serving", "stale", "failed", "conflict"} {
			counts[key{k, st}] = 0
		}
	}
	for ref, st := range s.status {
		state := "serving"
		switch {
		case st.Served == 0:
			state = "failed"
		case st.Conflict != nil:
			state = "conflict"
		case st.Err != nil:
			state = "stale"
		}
		counts[key{ref.Kind, state}]++
	}
	for k, n := range counts {
		policies.WithLabelValues(string(k.kind), k.state).Set(float64(n))
	}
}
