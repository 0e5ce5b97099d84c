package main

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math/big"
	"sync/atomic"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/sallyport/sallyport/api/v1alpha1"
	"github.com/sallyport/sallyport/internal/credential"
	"github.com/sallyport/sallyport/internal/decision"
	"github.com/sallyport/sallyport/internal/policy"
	"github.com/sallyport/sallyport/internal/store"
)

// The conditions of every pair, in CEL for sallyport; hack/bench/opa
// evaluates the same conditions in Rego with the parameters below.
const (
	// connectionWhen admits tokens issued less than an hour ago.
	connectionWhen = `connection.age < duration("1h")`
	// maxAgeSeconds is connectionWhen's hour, for Rego.
	maxAgeSeconds = 3600
	// readWhen admits requests from the internal network when the caller
	// reports the source address: the HTTP body carries it in attributes;
	// Envoy's CheckRequest, as sallyport maps it, has no attributes, so
	// the same rule allows the same request over gRPC.
	readWhen = `!("sourceIP" in request.attributes) || request.attributes["sourceIP"].startsWith("10.")`
	// sourceIPPrefix is readWhen's prefix, for Rego.
	sourceIPPrefix = "10."

	issuer = "https://kubernetes.default.svc.cluster.local"
	keyID  = "q0bC2k8mH1x4rYtV3nLwS9fJdE6gP7aZ-uIoKcNsQeM"
)

// fixture is the store, the signing key, the token and the request of a
// run, and the policies they were compiled from.
type fixture struct {
	store   *store.Store
	conns   []*v1alpha1.ConnectionPolicy
	ress    []*v1alpha1.ResourcePolicy
	key     *rsa.PrivateKey
	keys    *staticKeys
	token   string
	jti     string
	user    string
	pod     string
	request *decision.Request
	body    []byte
}

// newFixture compiles n ConnectionPolicies and n ResourcePolicies, one pair
// per namespace team-NNNNN, each ConnectionPolicy with its own (default)
// audience, makes an RSA signing key, and returns the token and the
// request for pair n/2.
//
// Each pair is what a typical policy looks like, and the same shape as the
// engine benchmark (internal/decision/bench_test.go): the ConnectionPolicy
// reaches class ledger with two scopes and has a CEL condition; the
// ResourcePolicy has a Deny rule that does not match the request, an Allow
// rule before the one that matches, and the matching rule has a CEL
// condition over the request's attributes.
func newFixture(n int, now time.Time) (*fixture, error) {
	fx := &fixture{}
	b := store.NewBuilder(policy.NewCompiler(policy.CompilerOptions{}))
	created := metav1.NewTime(now.Add(-24 * time.Hour))
	for i := range n {
		ns := fmt.Sprintf("team-%05d", i)
		cp := &v1alpha1.ConnectionPolicy{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "client", UID: types.UID(ns + "/client"), Generation: 1, CreationTimestamp: created},
			Spec: v1alpha1.ConnectionPolicySpec{
				ServiceAccountName: "worker",
				MaxTokenLifetime:   metav1.Duration{Duration: time.Hour},
				Reach: []v1alpha1.Reach{{
					Class: "ledger", Scopes: []v1alpha1.Scope{"ledger.read", "ledger.write"},
					MaxClassification: v1alpha1.ClassificationConfidential,
				}},
				When: connectionWhen,
			},
		}
		if err := b.UpsertConnection(cp); err != nil {
			return nil, fmt.Errorf("compile ConnectionPolicy %s/client: %w", ns, err)
		}
		client := []v1alpha1.ConnectionRef{{Namespace: ns, Name: "client"}}
		rp := &v1alpha1.ResourcePolicy{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "api", UID: types.UID(ns + "/api"), Generation: 1, CreationTimestamp: created},
			Spec: v1alpha1.ResourcePolicySpec{
				Service: "api", Class: "ledger", Classification: v1alpha1.ClassificationInternal,
				Rules: []v1alpha1.Rule{
					{Name: "no-archive-delete", Effect: v1alpha1.EffectDeny, Actions: []string{"DELETE"}, Resources: []string{"/archive/**"}},
					{Name: "write", Effect: v1alpha1.EffectAllow, Actions: []string{"PUT", "POST"}, Resources: []string{"/entries/*"},
						Scopes: []v1alpha1.Scope{"ledger.write"}, Connections: client},
					{Name: "read", Effect: v1alpha1.EffectAllow, Actions: []string{"GET"}, Resources: []string{"/entries/*", "/reports/**"},
						Scopes: []v1alpha1.Scope{"ledger.read"}, Connections: client, When: readWhen},
				},
			},
		}
		if err := b.UpsertResource(rp); err != nil {
			return nil, fmt.Errorf("compile ResourcePolicy %s/api: %w", ns, err)
		}
		fx.conns = append(fx.conns, cp)
		fx.ress = append(fx.ress, rp)
	}
	fx.store = store.New()
	fx.store.Publish(b.Build(), true)

	target := fmt.Sprintf("team-%05d", n/2)
	aud := policy.DefaultAudience(target, "client")
	if _, ok := fx.store.Snapshot().ConnectionByAudience(v1alpha1.EnforcementEnforce, aud); !ok {
		return nil, fmt.Errorf("no ConnectionPolicy holds audience %q", aud)
	}
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, fmt.Errorf("generate the signing key: %w", err)
	}
	fx.key = key
	fx.keys, err = newStaticKeys(&key.PublicKey)
	if err != nil {
		return nil, err
	}
	fx.jti, fx.user, fx.pod = "5f0c7a52-3b1e-4f5d-9a43-bench0000001", policy.Identity(target, "worker"), "worker-7d9f8c6b5-x2x4q"
	fx.token, err = serviceAccountToken(key, aud, target, "worker", fx.pod, fx.jti, now)
	if err != nil {
		return nil, err
	}
	fx.request = &decision.Request{
		Token:      fx.token,
		Target:     decision.Target{Namespace: target, Service: "api", Name: "/reports/2026/q1"},
		Action:     "GET",
		Scopes:     []string{"ledger.read"},
		Attributes: map[string]string{"sourceIP": "10.1.2.3"},
	}
	fx.body, err = json.Marshal(decideBody{
		Credential: credentialBody{Token: fx.token},
		Resource:   resourceBody{Namespace: target, Service: "api", Name: fx.request.Target.Name},
		Action:     fx.request.Action,
		Scopes:     fx.request.Scopes,
		Attributes: fx.request.Attributes,
	})
	if err != nil {
		return nil, fmt.Errorf("encode the request body: %w", err)
	}
	return fx, nil
}

// decideBody is a POST /v1/decide body.
type decideBody struct {
	Credential credentialBody    `json:"credential"`
	Resource   resourceBody      `json:"resource"`
	Action     string            `json:"action"`
	Scopes     []string          `json:"scopes"`
	Attributes map[string]string `json:"attributes"`
}

type credentialBody struct {
	Token string `json:"token"`
}

type resourceBody struct {
	Namespace string `json:"namespace"`
	Service   string `json:"service"`
	Name      string `json:"name"`
}

// serviceAccountToken returns a projected service-account token as the API
// server makes it (RS256 with a key ID, the kubernetes.io claims), signed
// with key. Issued two minutes ago, valid for 45 more.
func serviceAccountToken(key *rsa.PrivateKey, aud, ns, sa, pod, jti string, now time.Time) (string, error) {
	enc := base64.RawURLEncoding
	header, err := json.Marshal(map[string]string{"alg": "RS256", "kid": keyID, "typ": "JWT"})
	if err != nil {
		return "", err
	}
	claims, err := json.Marshal(map[string]any{
		"aud": []string{aud},
		"exp": now.Add(45 * time.Minute).Unix(),
		"iat": now.Add(-2 * time.Minute).Unix(),
		"nbf": now.Add(-2 * time.Minute).Unix(),
		"iss": issuer,
		"jti": jti,
		"sub": policy.Identity(ns, sa),
		"kubernetes.io": map[string]any{
			"namespace":      ns,
			"node":           map[string]string{"name": "node-1", "uid": "6f1d2a9e-3c41-4b7a-8e0d-1f2a3b4c5d6e"},
			"pod":            map[string]string{"name": pod, "uid": "0b8f4c2e-7a6d-4e5f-9c1b-2d3e4f5a6b7c"},
			"serviceaccount": map[string]string{"name": sa, "uid": "9e8d7c6b-5a4f-4e3d-8c2b-1a0f9e8d7c6b"},
		},
	})
	if err != nil {
		return "", err
	}
	input := enc.EncodeToString(header) + "." + enc.EncodeToString(claims)
	digest := sha256.Sum256([]byte(input))
	sig, err := rsa.SignPKCS1v15(rand.Reader, key, crypto.SHA256, digest[:])
	if err != nil {
		return "", fmt.Errorf("sign the token: %w", err)
	}
	return input + "." + enc.EncodeToString(sig), nil
}

// staticKeys is a credential.KeySource holding one public key: what the
// API server's service-account issuer discovery would serve.
type staticKeys struct {
	jwks []byte
}

func newStaticKeys(pub *rsa.PublicKey) (*staticKeys, error) {
	enc := base64.RawURLEncoding
	doc, err := json.Marshal(map[string]any{"keys": []map[string]string{{
		"kty": "RSA", "use": "sig", "alg": "RS256", "kid": keyID,
		"n": enc.EncodeToString(pub.N.Bytes()),
		"e": enc.EncodeToString(big.NewInt(int64(pub.E)).Bytes()),
	}}})
	if err != nil {
		return nil, fmt.Errorf("encode the key set: %w", err)
	}
	return &staticKeys{jwks: doc}, nil
}

// FetchKeys implements credential.KeySource.
func (k *staticKeys) FetchKeys(context.Context) (string, []byte, error) {
	return issuer, k.jwks, nil
}

// countingVerifier counts the verifications that reach the real verifier:
// one per credential-cache miss.
type countingVerifier struct {
	v     credential.Verifier
	calls atomic.Int64
}

// Verify implements credential.Verifier.
func (c *countingVerifier) Verify(ctx context.Context, token string) (*credential.Claims, error) {
	c.calls.Add(1)
	return c.v.Verify(ctx, token)
}
