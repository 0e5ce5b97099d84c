package credential

import (
	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
)

// Metric names. Their labels carry only the fixed result values below,
// never anything from a token.
const (
	MetricTokenReviews       = "sallyport_token_reviews_total"
	MetricTokenVerifications = "sallyport_token_verifications_total"
	MetricCredentialCache    = "sallyport_credential_cache_total"
	MetricJWKSRefresh        = "sallyport_jwks_refresh_total"
)

var (
	tokenReviewsVec = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: MetricTokenReviews,
		Help: "TokenReviews sallyport made, by result: authenticated, rejected (the API server " +
			"did not authenticate the token for the audience), error (the review failed), " +
			"throttled (not made: sallyport's review rate limit could not admit it in time).",
	}, []string{"result"})
	tokenVerificationsVec = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: MetricTokenVerifications,
		Help: "Local token checks (signature, issuer, validity period, audience) before any " +
			"TokenReview, by result: valid, invalid (rejected without an API call), error " +
			"(the issuer keys were unavailable).",
	}, []string{"result"})
	credentialCacheVec = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: MetricCredentialCache,
		Help: "Credential cache lookups, by result: hit, negative_hit (a cached rejection), miss.",
	}, []string{"result"})
	jwksRefreshVec = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: MetricJWKSRefresh,
		Help: "Fetches of the API server's service account issuer keys, by result: success, error.",
	}, []string{"result"})
)

// The counters, resolved once so the hot path does no label lookup.
var (
	tokenReviews = struct{ authenticated, rejected, error, throttled prometheus.Counter }{
		tokenReviewsVec.WithLabelValues("authenticated"),
		tokenReviewsVec.WithLabelValues("rejected"),
		tokenReviewsVec.WithLabelValues("error"),
		tokenReviewsVec.WithLabelValues("throttled"),
	}
	tokenVerifications = struct{ valid, invalid, error prometheus.Counter }{
		tokenVerificationsVec.WithLabelValues("valid"),
		tokenVerificationsVec.WithLabelValues("invalid"),
		tokenVerificationsVec.WithLabelValues("error"),
	}
	credentialCache = struct{ hit, negativeHit, miss prometheus.Counter }{
		credentialCacheVec.WithLabelValues("hit"),
		credentialCacheVec.WithLabelValues("negative_hit"),
		credentialCacheVec.WithLabelValues("miss"),
	}
	jwksRefreshes = struct{ success, error prometheus.Counter }{
		jwksRefreshVec.WithLabelValues("success"),
		jwksRefreshVec.WithLabelValues("error"),
	}
)

func init() {
	metrics.Registry.MustRegister(tokenReviewsVec, tokenVerificationsVec, credentialCacheVec, jwksRefreshVec)
}
