package credential

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	authenticationv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	authenticationv1client "k8s.io/client-go/kubernetes/typed/authentication/v1"
	"k8s.io/client-go/rest"
)

// Keys of the user info extra the API server sets on service-account
// tokens.
const (
	ExtraCredentialID = "authentication.kubernetes.io/credential-id"
	ExtraPodName      = "authentication.kubernetes.io/pod-name"
)

// serviceAccountPrefix starts the user name of every ServiceAccount.
const serviceAccountPrefix = "system:serviceaccount:"

// TokenReviewer asks the API server about a token.
type TokenReviewer interface {
	// Review creates a TokenReview of token for audience and returns its
	// status. An error means the review could not be made; a token the
	// API server rejects is a status with Authenticated false.
	Review(ctx context.Context, token, audience string) (*authenticationv1.TokenReviewStatus, error)
}

// NewTokenReviewer returns a TokenReviewer that creates TokenReviews
// (authentication.k8s.io/v1) with cfg, which needs the create verb on
// tokenreviews (ClusterRole system:auth-delegator has it). client-go's own
// rate limit is off: CachingAuthenticator limits its reviews itself.
func NewTokenReviewer(cfg *rest.Config) (TokenReviewer, error) {
	cfg = rest.CopyConfig(cfg)
	cfg.QPS, cfg.Burst, cfg.RateLimiter = -1, 0, nil
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("create client for token reviews: %w", err)
	}
	return &apiServerReviewer{reviews: cs.AuthenticationV1().TokenReviews()}, nil
}

type apiServerReviewer struct {
	reviews authenticationv1client.TokenReviewInterface
}

// Review implements TokenReviewer.
func (r *apiServerReviewer) Review(ctx context.Context, token, audience string) (*authenticationv1.TokenReviewStatus, error) {
	tr, err := r.reviews.Create(ctx, &authenticationv1.TokenReview{
		Spec: authenticationv1.TokenReviewSpec{Token: token, Audiences: []string{audience}},
	}, metav1.CreateOptions{})
	if err != nil {
		return nil, redact(err, token)
	}
	return &tr.Status, nil
}

// redact returns err, or a stand-in when its message contains the token:
// no error leaves this package with a token in it, whatever a lower layer
// put in its message.
func redact(err error, token string) error {
	if err == nil || token == "" || !strings.Contains(err.Error(), token) {
		return err
	}
	return errors.New("token review request failed (error message withheld: it contained the token)")
}

// reviewFromStatus checks a TokenReview's status for audience and builds the
// Review, with the token's issue and expiry times from claims.
func reviewFromStatus(st *authenticationv1.TokenReviewStatus, audience string, claims *Claims) (*Review, error) {
	if !st.Authenticated {
		// st.Error is the API server's reason. It is not passed on: it can
		// name objects (the bound Secret or Pod) that the token's
		// presenter has no business learning about.
		return nil, invalid("the API server did not authenticate the token")
	}
	if !slices.Contains(st.Audiences, audience) {
		return nil, invalid("the API server did not authenticate the token for this audience")
	}
	name := st.User.Username
	if name == "" {
		return nil, invalid("the API server authenticated the token without a user name")
	}
	if name != claims.Subject {
		return nil, invalid("the reviewed user is not the token's subject")
	}
	r := &Review{
		Identity:     name,
		Audience:     audience,
		CredentialID: first(st.User.Extra[ExtraCredentialID]),
		Pod:          first(st.User.Extra[ExtraPodName]),
		IssuedAt:     claims.IssuedAt,
		ExpiresAt:    claims.ExpiresAt,
	}
	if rest, ok := strings.CutPrefix(name, serviceAccountPrefix); ok {
		if ns, sa, ok := strings.Cut(rest, ":"); ok && ns != "" && sa != "" && !strings.Contains(sa, ":") {
			r.Namespace, r.ServiceAccount = ns, sa
		}
	}
	return r, nil
}

func first(v authenticationv1.ExtraValue) string {
	if len(v) == 0 {
		return ""
	}
	return v[0]
}
