package webhook

import (
	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
)

// Results of the pod token webhook, the values of the result label.
const (
	// resultInjected: the pod was changed to carry its tokens.
	resultInjected = "injected"
	// resultUnchanged: the pod already carried them, or asked for none.
	resultUnchanged = "unchanged"
	// resultDenied: the pod was refused, and told why.
	resultDenied = "denied"
	// resultError: the webhook could not decide (a policy could not be
	// read); with failurePolicy Fail the pod is refused too.
	resultError = "error"
)

var podTokenInjections = prometheus.NewCounterVec(prometheus.CounterOpts{
	Name: "sallyport_pod_token_injections_total",
	Help: "Pod admissions by the Projected-mode token webhook, by result: injected, unchanged, denied or error.",
}, []string{"result"})

func init() {
	metrics.Registry.MustRegister(podTokenInjections)
	for _, r := range []string{resultInjected, resultUnchanged, resultDenied, resultError} {
		podTokenInjections.WithLabelValues(r)
	}
}
