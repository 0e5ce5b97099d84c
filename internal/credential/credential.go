// Package credential authenticates the bearer tokens connections present:
// the audience they carry, a local signature check against the API server's
// service-account issuer keys, and a TokenReview for that audience, cached.
package credential

import (
	"context"
	"errors"
	"time"
)

// Review is what an authenticated credential says about its holder.
type Review struct {
	// Identity is the reviewed user name, system:serviceaccount:<ns>:<name>.
	Identity string
	// Namespace and ServiceAccount split Identity; empty when the user is
	// not a ServiceAccount.
	Namespace      string
	ServiceAccount string
	// Audience is the audience the credential was reviewed for.
	Audience string
	// CredentialID identifies the credential ("JTI=…"), from the review's
	// authentication.kubernetes.io/credential-id extra.
	CredentialID string
	// Pod is the name of the pod the token is bound to, if any.
	Pod string
	// IssuedAt and ExpiresAt are the token's iat and exp.
	IssuedAt  time.Time
	ExpiresAt time.Time
}

// Authenticator authenticates a token for one audience.
type Authenticator interface {
	// Authenticate returns the review of token for audience. Its error
	// wraps ErrInvalid when the credential is rejected and ErrReviewFailed
	// when it could not be checked; the message never contains the token.
	Authenticate(ctx context.Context, token, audience string) (*Review, error)
}

var (
	// ErrInvalid is wrapped by errors for credentials that are rejected:
	// malformed, forged, expired, revoked, or not for the audience.
	ErrInvalid = errors.New("invalid credential")
	// ErrReviewFailed is wrapped by errors for credentials that could not be
	// checked, for example because the API server is unreachable.
	ErrReviewFailed = errors.New("credential review failed")
)
