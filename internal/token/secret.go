package token

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/sallyport/sallyport/api/v1alpha1"
	"github.com/sallyport/sallyport/internal/credential"
)

// Requester mints ServiceAccount tokens with the TokenRequest API. The
// operator's implementation calls the API server; tests wrap it to inject
// failures.
type Requester interface {
	// CreateToken asks for a token of the ServiceAccount namespace/name.
	CreateToken(ctx context.Context, namespace, serviceAccount string, req *authenticationv1.TokenRequest) (*authenticationv1.TokenRequest, error)
}

// ClientsetRequester is a Requester over a clientset.
type ClientsetRequester struct {
	Clientset kubernetes.Interface
}

// CreateToken calls the serviceaccounts/token subresource.
func (r ClientsetRequester) CreateToken(ctx context.Context, namespace, serviceAccount string, req *authenticationv1.TokenRequest) (*authenticationv1.TokenRequest, error) {
	out, err := r.Clientset.CoreV1().ServiceAccounts(namespace).CreateToken(ctx, serviceAccount, req, metav1.CreateOptions{})
	if err != nil {
		return nil, fmt.Errorf("request a token for ServiceAccount %s/%s: %w", namespace, serviceAccount, err)
	}
	return out, nil
}

// NewRequest is a TokenRequest for one audience and lifetime, bound to the
// anchor Secret: deleting the anchor revokes the token.
func NewRequest(audience string, expirationSeconds int64, anchor *corev1.Secret) *authenticationv1.TokenRequest {
	return &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{
		Audiences:         []string{audience},
		ExpirationSeconds: &expirationSeconds,
		BoundObjectRef: &authenticationv1.BoundObjectReference{
			Kind: "Secret", APIVersion: "v1", Name: anchor.Name, UID: anchor.UID,
		},
	}}
}

// CredentialID is how the API server names a service-account token in a
// TokenReview's authentication.kubernetes.io/credential-id extra, and so how
// decisions and the decision log name it.
func CredentialID(jti string) string {
	if jti == "" {
		return ""
	}
	return "JTI=" + jti
}

// Held describes the token a token Secret holds, without the token.
type Held struct {
	Issued
	// CredentialID is "JTI=<jti>" of the token.
	CredentialID string
	// Audiences and Subject are the token's aud and sub, unverified.
	Audiences []string
	Subject   string
	// Requested is the lifetime the token was requested with, in seconds;
	// 0 when the Secret does not say.
	Requested int64
}

// ErrNoToken says a Secret holds no token the operator can account for.
var ErrNoToken = errors.New("the Secret holds no usable token")

// Inspect reads what a token Secret written by the operator holds: its
// anchor, the token's times, ID, audiences and subject (decoded, not
// verified: the Secret is the operator's own), and the requested lifetime.
// The expiresAt key must agree with the token's exp. Errors wrap ErrNoToken
// and never quote the token.
func Inspect(s *corev1.Secret) (*Held, error) {
	raw := string(s.Data[v1alpha1.TokenSecretKeyToken])
	if raw == "" {
		return nil, fmt.Errorf("%w: no %q key", ErrNoToken, v1alpha1.TokenSecretKeyToken)
	}
	anchor := s.Annotations[v1alpha1.AnnotationAnchor]
	if anchor == "" {
		return nil, fmt.Errorf("%w: no %s annotation", ErrNoToken, v1alpha1.AnnotationAnchor)
	}
	claims, err := credential.ParseClaims(raw)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrNoToken, err)
	}
	if claims.IssuedAt.IsZero() || claims.ExpiresAt.IsZero() {
		return nil, fmt.Errorf("%w: the token has no iat or exp", ErrNoToken)
	}
	exp, err := time.Parse(time.RFC3339, string(s.Data[v1alpha1.TokenSecretKeyExpiresAt]))
	if err != nil {
		return nil, fmt.Errorf("%w: the %q key is not an RFC 3339 time", ErrNoToken, v1alpha1.TokenSecretKeyExpiresAt)
	}
	if !exp.Equal(claims.ExpiresAt.Truncate(time.Second)) {
		return nil, fmt.Errorf("%w: the %q key does not match the token's expiry", ErrNoToken, v1alpha1.TokenSecretKeyExpiresAt)
	}
	h := &Held{
		Issued:       Issued{Anchor: anchor, IssuedAt: claims.IssuedAt, ExpiresAt: claims.ExpiresAt},
		CredentialID: CredentialID(claims.ID),
		Audiences:    claims.Audiences,
		Subject:      claims.Subject,
	}
	if v := s.Annotations[v1alpha1.AnnotationRequestedExpirationSeconds]; v != "" {
		if n, err := strconv.ParseInt(v, 10, 64); err == nil {
			h.Requested = n
		}
	}
	return h, nil
}

// Minted describes a token just returned by the TokenRequest API.
type Minted struct {
	Issued
	CredentialID string
}

// Describe reads the times and ID of a minted token: the expiry the API
// server granted (the token's exp, as status.expirationTimestamp says; it may
// be earlier than requested) and the token's iat and jti. now stands in for
// a missing iat.
func Describe(tr *authenticationv1.TokenRequest, anchor string, now time.Time) (*Minted, error) {
	claims, err := credential.ParseClaims(tr.Status.Token)
	if err != nil {
		return nil, fmt.Errorf("read the issued token: %w", err)
	}
	// The token's exp is what verifiers check; the status says the same.
	exp := claims.ExpiresAt
	if exp.IsZero() {
		exp = tr.Status.ExpirationTimestamp.Time
	}
	if exp.IsZero() {
		return nil, errors.New("read the issued token: no expiry")
	}
	iat := claims.IssuedAt
	if iat.IsZero() {
		iat = now
	}
	return &Minted{Issued: Issued{Anchor: anchor, IssuedAt: iat, ExpiresAt: exp}, CredentialID: CredentialID(claims.ID)}, nil
}

// SecretData is the data of a token Secret.
func SecretData(tok string, expiresAt time.Time) map[string][]byte {
	return map[string][]byte{
		v1alpha1.TokenSecretKeyToken:     []byte(tok),
		v1alpha1.TokenSecretKeyExpiresAt: []byte(expiresAt.UTC().Format(time.RFC3339)),
	}
}
