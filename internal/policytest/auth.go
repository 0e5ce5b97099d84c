package policytest

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/sallyport/sallyport/internal/credential"
	"github.com/sallyport/sallyport/internal/decision"
)

// Authenticator is the offline credential.Authenticator: it answers for
// tokens registered from connection fixtures and, when Unverified is set,
// reads any other JWT's claims without verifying them. There is no API
// server offline, so nothing is verified: a fixture's claims are taken as
// given. Everything after the review (audience, expiry, identity, lifetime,
// reach, conditions, rules) is the engine's, exactly as in the cluster.
type Authenticator struct {
	// Unverified accepts a JWT no fixture made, trusting its claims: aud,
	// sub (or kubernetes.io namespace and serviceaccount), iat, exp, jti and
	// kubernetes.io pod. For `sallyport decide` with a token in the request.
	Unverified bool

	mu      sync.Mutex
	reviews map[string]*credential.Review
}

// NewAuthenticator returns an authenticator that knows no token yet.
func NewAuthenticator(unverified bool) *Authenticator {
	return &Authenticator{Unverified: unverified, reviews: map[string]*credential.Review{}}
}

// Register makes token known with the review the API server would give it.
func (a *Authenticator) Register(token string, rev *credential.Review) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.reviews[token] = rev
}

// Authenticate implements credential.Authenticator. Like a TokenReview, it
// refuses a token that was not issued for the audience.
func (a *Authenticator) Authenticate(_ context.Context, token, audience string) (*credential.Review, error) {
	a.mu.Lock()
	rev, ok := a.reviews[token]
	a.mu.Unlock()
	if !ok {
		if !a.Unverified {
			return nil, fmt.Errorf("%w: not a token of a connection fixture (offline, only fixtures' tokens are known)", credential.ErrInvalid)
		}
		var err error
		if rev, err = unverifiedReview(token); err != nil {
			return nil, fmt.Errorf("%w: %w", credential.ErrInvalid, err)
		}
	}
	if rev.Audience != audience {
		return nil, fmt.Errorf("%w: token is not for audience %q", credential.ErrInvalid, audience)
	}
	return rev, nil
}

// Review is what the offline authenticator says about the fixture's token
// at the clock now.
func (c *Connection) Review(now time.Time) *credential.Review {
	iat, exp := c.Times(now)
	return &credential.Review{
		Identity: c.Identity, Namespace: c.Namespace, ServiceAccount: c.ServiceAccount,
		Audience: c.Audience, CredentialID: c.CredentialID, Pod: c.Pod,
		IssuedAt: iat, ExpiresAt: exp,
	}
}

// offlineHeader marks a fixture token: unsigned (alg none), so it is
// worthless to any server that verifies tokens.
var offlineHeader = base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"none","typ":"JWT"}`))

// offlineSignature fills the third segment, which must not be empty for
// the engine to read the token as a JWT.
var offlineSignature = base64.RawURLEncoding.EncodeToString([]byte("unsigned-offline-fixture"))

// Token returns the unsigned JWT a fixture presents at the clock now: its
// audience is what picks the ConnectionPolicy, as a real token's does, and
// its other claims say what the fixture says.
func (c *Connection) Token(now time.Time) string {
	iat, exp := c.Times(now)
	claims := map[string]any{
		"aud": []string{c.Audience},
		"sub": c.Identity,
		"iss": "sallyport-offline",
		"iat": iat.Unix(),
		"exp": exp.Unix(),
		"jti": strings.TrimPrefix(c.CredentialID, "JTI="),
	}
	if c.Pod != "" {
		claims["kubernetes.io"] = map[string]any{"pod": map[string]string{"name": c.Pod}}
	}
	p, err := json.Marshal(claims)
	if err != nil {
		panic(err) // strings and numbers always marshal
	}
	return offlineHeader + "." + base64.RawURLEncoding.EncodeToString(p) + "." + offlineSignature
}

// unverifiedReview reads a JWT's claims as a TokenReview would report
// them, without verifying anything.
func unverifiedReview(token string) (*credential.Review, error) {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return nil, fmt.Errorf("not a JWT")
	}
	p, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return nil, fmt.Errorf("JWT payload is not base64url")
	}
	var c struct {
		Aud audience `json:"aud"`
		Sub string   `json:"sub"`
		Iat *int64   `json:"iat"`
		Exp *int64   `json:"exp"`
		Jti string   `json:"jti"`
		K8s struct {
			Namespace      string `json:"namespace"`
			ServiceAccount struct {
				Name string `json:"name"`
			} `json:"serviceaccount"`
			Pod struct {
				Name string `json:"name"`
			} `json:"pod"`
		} `json:"kubernetes.io"`
	}
	if err := json.Unmarshal(p, &c); err != nil {
		return nil, fmt.Errorf("JWT claims: %w", err)
	}
	if len(c.Aud) != 1 {
		return nil, fmt.Errorf("JWT has %d audiences, not one", len(c.Aud))
	}
	rev := &credential.Review{Audience: c.Aud[0], Identity: c.Sub, Pod: c.K8s.Pod.Name}
	if m := identityRE.FindStringSubmatch(c.Sub); m != nil {
		rev.Namespace, rev.ServiceAccount = m[1], m[3]
	} else if c.K8s.Namespace != "" && c.K8s.ServiceAccount.Name != "" {
		rev.Namespace, rev.ServiceAccount = c.K8s.Namespace, c.K8s.ServiceAccount.Name
		rev.Identity = "system:serviceaccount:" + rev.Namespace + ":" + rev.ServiceAccount
	}
	if c.Jti != "" {
		rev.CredentialID = "JTI=" + c.Jti
	}
	if c.Iat != nil {
		rev.IssuedAt = time.Unix(*c.Iat, 0).UTC()
	}
	if c.Exp != nil {
		rev.ExpiresAt = time.Unix(*c.Exp, 0).UTC()
	}
	return rev, nil
}

// audience decodes "aud" as a string or a list of strings.
type audience []string

// UnmarshalJSON implements json.Unmarshaler.
func (a *audience) UnmarshalJSON(b []byte) error {
	var one string
	if err := json.Unmarshal(b, &one); err == nil {
		*a = []string{one}
		return nil
	}
	var many []string
	if err := json.Unmarshal(b, &many); err != nil {
		return fmt.Errorf("aud is neither a string nor a list of strings")
	}
	*a = slices.Clone(many)
	return nil
}

// Request returns the decision request of a case at the clock now, with
// the token of its connection fixture, registered with auth (which may be
// nil when the caller presents the token elsewhere).
func (s *Suite) Request(c *Case, now time.Time, auth *Authenticator) *decision.Request {
	r := s.Requests[c.Request]
	req := &decision.Request{
		Target: r.Target, Action: r.Action,
		Scopes: r.Scopes, Attributes: r.Attributes,
	}
	if conn := s.CaseConnection(c); conn != nil {
		req.Token = conn.Token(now)
		if auth != nil {
			auth.Register(req.Token, conn.Review(now))
		}
	}
	return req
}

// CaseConnection returns the connection fixture a case presents, nil for
// none.
func (s *Suite) CaseConnection(c *Case) *Connection {
	switch {
	case c.NoConnection:
		return nil
	case c.Connection != "":
		return s.Connections[c.Connection]
	}
	return s.Connections[s.Requests[c.Request].Connection]
}

// CaseNow is the clock of a case.
func (s *Suite) CaseNow(c *Case) time.Time {
	if !c.Now.IsZero() {
		return c.Now
	}
	return s.Now
}
