package controllers

import (
	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/sallyport/sallyport/api/v1alpha1"
)

var (
	tokenExpiry = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "sallyport_token_expiry_timestamp_seconds",
		Help: "When the current token of a Secret-mode ConnectionPolicy expires, in seconds since the epoch. Alert when it comes close: renewal is failing.",
	}, []string{"namespace", "policy"})
	tokenRenewal = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "sallyport_token_renewal_timestamp_seconds",
		Help: "When the operator next tries to renew the token of a Secret-mode ConnectionPolicy (after failures: the next attempt), in seconds since the epoch.",
	}, []string{"namespace", "policy"})
	tokenIssuance = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sallyport_token_issuance_total",
		Help: "Token issuance attempts by result: issued, not_delegated, secret_conflict or failed.",
	}, []string{"result"})
	tokenIssuanceDuration = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "sallyport_token_issuance_duration_seconds",
		Help:    "Time to issue one token: create its anchor, request it and write it into the token Secret, successful or not.",
		Buckets: prometheus.ExponentialBuckets(0.005, 2, 12),
	})
	tokenRevocations = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "sallyport_token_revocations_total",
		Help: "Tokens revoked by deleting their anchor Secret: after a rotation's overlap, on deletion of the policy or when it leaves Secret mode.",
	})
)

func init() {
	metrics.Registry.MustRegister(tokenExpiry, tokenRenewal, tokenIssuance, tokenIssuanceDuration, tokenRevocations)
}

// resultOf is the issuance result label of a failure reason.
func resultOf(reason string) string {
	switch reason {
	case v1alpha1.ReasonNotDelegated:
		return "not_delegated"
	case v1alpha1.ReasonSecretConflict:
		return "secret_conflict"
	}
	return "failed"
}

// observeToken sets the per-policy gauges from the token status.
func observeToken(cp *v1alpha1.ConnectionPolicy, ts *v1alpha1.TokenStatus) {
	if ts.ExpiresAt != nil && ts.Anchor != "" {
		tokenExpiry.WithLabelValues(cp.Namespace, cp.Name).Set(float64(ts.ExpiresAt.Unix()))
	} else {
		tokenExpiry.DeleteLabelValues(cp.Namespace, cp.Name)
	}
	if ts.RenewAt != nil {
		tokenRenewal.WithLabelValues(cp.Namespace, cp.Name).Set(float64(ts.RenewAt.Unix()))
	} else {
		tokenRenewal.DeleteLabelValues(cp.Namespace, cp.Name)
	}
}

// forgetTokenMetrics drops the gauges of a policy that issues no token.
func forgetTokenMetrics(namespace, name string) {
	tokenExpiry.DeleteLabelValues(namespace, name)
	tokenRenewal.DeleteLabelValues(namespace, name)
}
