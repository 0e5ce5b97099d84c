package token

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/sallyport/sallyport/api/v1alpha1"
)

// unsignedJWT is a JWT with the claims and a dummy signature: Inspect and
// Describe decode, they do not verify.
func unsignedJWT(t *testing.T, claims map[string]any) string {
	t.Helper()
	enc := func(v any) string {
		raw, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		return base64.RawURLEncoding.EncodeToString(raw)
	}
	return enc(map[string]any{"alg": "RS256", "kid": "k"}) + "." + enc(claims) + "." + base64.RawURLEncoding.EncodeToString([]byte("sig"))
}

func tokenSecret(tok string, exp time.Time) *corev1.Secret {
	return &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "p-token", Annotations: map[string]string{
			v1alpha1.AnnotationAnchor:                     "p-anchor-x1",
			v1alpha1.AnnotationRequestedExpirationSeconds: "900",
		}},
		Data: SecretData(tok, exp),
	}
}

func TestInspect(t *testing.T) {
	exp := t0.Add(900 * time.Second)
	tok := unsignedJWT(t, map[string]any{
		"aud": []string{"sallyport.dev/ns/p"}, "sub": "system:serviceaccount:ns:worker",
		"jti": "5e1f", "iat": t0.Unix(), "exp": exp.Unix(),
	})
	h, err := Inspect(tokenSecret(tok, exp))
	if err != nil {
		t.Fatal(err)
	}
	if h.Anchor != "p-anchor-x1" || !h.IssuedAt.Equal(t0) || !h.ExpiresAt.Equal(exp) || h.CredentialID != "JTI=5e1f" ||
		h.Subject != "system:serviceaccount:ns:worker" || len(h.Audiences) != 1 || h.Audiences[0] != "sallyport.dev/ns/p" || h.Requested != 900 {
		t.Errorf("Inspect = %+v", h)
	}
}

func TestInspectRefusesWhatItCannotAccountFor(t *testing.T) {
	exp := t0.Add(900 * time.Second)
	tok := unsignedJWT(t, map[string]any{"aud": "a", "sub": "s", "jti": "j", "iat": t0.Unix(), "exp": exp.Unix()})
	for name, mutate := range map[string]func(*corev1.Secret){
		"no token":          func(s *corev1.Secret) { delete(s.Data, v1alpha1.TokenSecretKeyToken) },
		"not a JWT":         func(s *corev1.Secret) { s.Data[v1alpha1.TokenSecretKeyToken] = []byte("secret-value-not-a-jwt") },
		"no anchor":         func(s *corev1.Secret) { delete(s.Annotations, v1alpha1.AnnotationAnchor) },
		"expiresAt garbled": func(s *corev1.Secret) { s.Data[v1alpha1.TokenSecretKeyExpiresAt] = []byte("soon") },
		"expiresAt differs": func(s *corev1.Secret) {
			s.Data[v1alpha1.TokenSecretKeyExpiresAt] = []byte(exp.Add(time.Hour).Format(time.RFC3339))
		},
	} {
		t.Run(name, func(t *testing.T) {
			s := tokenSecret(tok, exp)
			mutate(s)
			_, err := Inspect(s)
			if !errors.Is(err, ErrNoToken) {
				t.Fatalf("Inspect error %v, want ErrNoToken", err)
			}
			for _, secret := range []string{tok, "secret-value-not-a-jwt"} {
				if strings.Contains(err.Error(), secret) {
					t.Fatalf("error quotes the token: %v", err)
				}
			}
		})
	}
}

func TestDescribe(t *testing.T) {
	exp := t0.Add(600 * time.Second) // shortened from 900
	tr := &authenticationv1.TokenRequest{Status: authenticationv1.TokenRequestStatus{
		Token:               unsignedJWT(t, map[string]any{"aud": "a", "sub": "s", "jti": "77", "iat": t0.Unix(), "exp": exp.Unix()}),
		ExpirationTimestamp: metav1.NewTime(exp),
	}}
	m, err := Describe(tr, "anchor-1", t0.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if m.Anchor != "anchor-1" || !m.IssuedAt.Equal(t0) || !m.ExpiresAt.Equal(exp) || m.CredentialID != "JTI=77" {
		t.Errorf("Describe = %+v", m)
	}
	tr.Status.Token = "not-a-token"
	if _, err := Describe(tr, "a", t0); err == nil || strings.Contains(err.Error(), "not-a-token") {
		t.Errorf("Describe of garbage: %v", err)
	}
}

func TestNewRequestBindsToTheAnchor(t *testing.T) {
	anchor := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "p-anchor-abcde", UID: "u-1"}}
	tr := NewRequest("aud", 900, anchor)
	ref := tr.Spec.BoundObjectRef
	if ref == nil || ref.Kind != "Secret" || ref.APIVersion != "v1" || ref.Name != "p-anchor-abcde" || ref.UID != "u-1" ||
		len(tr.Spec.Audiences) != 1 || tr.Spec.Audiences[0] != "aud" || *tr.Spec.ExpirationSeconds != 900 {
		t.Errorf("NewRequest = %+v", tr.Spec)
	}
}
