package decision

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/sallyport/sallyport/api/v1alpha1"
	"github.com/sallyport/sallyport/internal/credential"
	"github.com/sallyport/sallyport/internal/policy"
	"github.com/sallyport/sallyport/internal/store"
)

// now is the fixed clock of every test: a Monday, 10:30 UTC.
var now = time.Date(2026, 3, 2, 10, 30, 0, 0, time.UTC)

func fixedClock() time.Time { return now }

func objectMeta(ns, name string, gen int64, lbls map[string]string) metav1.ObjectMeta {
	return metav1.ObjectMeta{
		Namespace: ns, Name: name, UID: types.UID(ns + "/" + name), Generation: gen, Labels: lbls,
		CreationTimestamp: metav1.NewTime(now.Add(-24 * time.Hour)),
	}
}

func connPolicy(ns, name, sa string, lbls map[string]string, reach []v1alpha1.Reach, edit func(*v1alpha1.ConnectionPolicySpec)) *v1alpha1.ConnectionPolicy {
	cp := &v1alpha1.ConnectionPolicy{
		ObjectMeta: objectMeta(ns, name, 3, lbls),
		Spec:       v1alpha1.ConnectionPolicySpec{ServiceAccountName: sa, Reach: reach},
	}
	if edit != nil {
		edit(&cp.Spec)
	}
	return cp
}

func resPolicy(ns, name, class string, cl v1alpha1.Classification, hosts []string, rules ...v1alpha1.Rule) *v1alpha1.ResourcePolicy {
	return &v1alpha1.ResourcePolicy{
		ObjectMeta: objectMeta(ns, name, 7, nil),
		Spec: v1alpha1.ResourcePolicySpec{
			Service: name, Hosts: hosts, Class: v1alpha1.ResourceClass(class), Classification: cl, Rules: rules,
		},
	}
}

func scopes(s ...string) []v1alpha1.Scope {
	out := make([]v1alpha1.Scope, len(s))
	for i := range s {
		out[i] = v1alpha1.Scope(s[i])
	}
	return out
}

func selector(kv ...string) *v1alpha1.LabelSelector {
	sel := &v1alpha1.LabelSelector{}
	for i := 0; i+1 < len(kv); i += 2 {
		if sel.MatchLabels == nil {
			sel.MatchLabels = map[string]v1alpha1.LabelValue{}
		}
		sel.MatchLabels[kv[i]] = v1alpha1.LabelValue(kv[i+1])
	}
	return sel
}

// everyone is a connection entry naming every connection in every namespace.
var everyone = []v1alpha1.ConnectionRef{{NamespaceSelector: &v1alpha1.LabelSelector{}}}

// newStore compiles policies with the real compiler into a published store.
func newStore(t testing.TB, namespaces map[string]map[string]string, conns []*v1alpha1.ConnectionPolicy, res []*v1alpha1.ResourcePolicy) *store.Store {
	t.Helper()
	b := store.NewBuilder(policy.NewCompiler(policy.CompilerOptions{}))
	for ns, l := range namespaces {
		b.SetNamespace(ns, l, false)
	}
	for _, cp := range conns {
		if err := b.UpsertConnection(cp); err != nil {
			t.Fatalf("compile ConnectionPolicy %s/%s: %v", cp.Namespace, cp.Name, err)
		}
	}
	for _, rp := range res {
		if err := b.UpsertResource(rp); err != nil {
			t.Fatalf("compile ResourcePolicy %s/%s: %v", rp.Namespace, rp.Name, err)
		}
	}
	s := store.New()
	snap := b.Build()
	for _, cp := range conns {
		if st, _ := snap.Status(store.Ref{Kind: store.KindConnection, NamespacedName: types.NamespacedName{Namespace: cp.Namespace, Name: cp.Name}}); st.Conflict != nil {
			t.Fatalf("ConnectionPolicy %s/%s conflicts: %+v", cp.Namespace, cp.Name, st.Conflict)
		}
	}
	s.Publish(snap, true)
	return s
}

// jwt returns an unsigned JWT-shaped token whose payload is claims.
func jwt(claims map[string]any) string {
	enc := base64.RawURLEncoding
	p, err := json.Marshal(claims)
	if err != nil {
		panic(err)
	}
	return enc.EncodeToString([]byte(`{"alg":"RS256","kid":"test"}`)) + "." + enc.EncodeToString(p) + "." + enc.EncodeToString([]byte("not-a-signature"))
}

// tokenFor returns a token for one audience; jti tells tokens apart.
func tokenFor(aud, jti string) string {
	return jwt(map[string]any{
		"aud": []string{aud}, "iss": "https://kubernetes.default.svc", "jti": jti,
		"iat": now.Add(-5 * time.Minute).Unix(), "exp": now.Add(10 * time.Minute).Unix(),
		"kubernetes.io": map[string]any{"namespace": "billing", "serviceaccount": map[string]string{"name": "worker", "uid": "u"}},
	})
}

// review is what the fake authenticator says about a ServiceAccount's
// token: issued 5 minutes ago, 15 minutes of lifetime.
func review(ns, sa, aud, jti string) *credential.Review {
	return &credential.Review{
		Identity: policy.Identity(ns, sa), Namespace: ns, ServiceAccount: sa, Audience: aud,
		CredentialID: "JTI=" + jti, Pod: sa + "-7d9f",
		IssuedAt: now.Add(-5 * time.Minute), ExpiresAt: now.Add(10 * time.Minute),
	}
}

// fakeAuth answers from a table of tokens, like a warm review cache.
type fakeAuth struct {
	mu      sync.Mutex
	answers map[string]fakeAnswer
	calls   atomic.Int64
}

type fakeAnswer struct {
	rev   *credential.Review
	err   error
	panic bool
}

func newFakeAuth() *fakeAuth { return &fakeAuth{answers: map[string]fakeAnswer{}} }

func (f *fakeAuth) set(token string, a fakeAnswer) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.answers[token] = a
}

// Authenticate implements credential.Authenticator. Like the real one, it
// checks the audience it is asked for against the token's.
func (f *fakeAuth) Authenticate(ctx context.Context, token, audience string) (*credential.Review, error) {
	f.calls.Add(1)
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("%w: %w", credential.ErrReviewFailed, err)
	}
	f.mu.Lock()
	a, ok := f.answers[token]
	f.mu.Unlock()
	switch {
	case !ok:
		return nil, fmt.Errorf("%w: unknown token", credential.ErrInvalid)
	case a.panic:
		panic("authenticator exploded")
	case a.err != nil:
		return nil, a.err
	case a.rev != nil && a.rev.Audience != audience:
		return nil, fmt.Errorf("%w: not for audience %q", credential.ErrInvalid, audience)
	}
	return a.rev, nil
}

// sequentialIDs returns IDs "d-1", "d-2", …
func sequentialIDs() func() string {
	var n atomic.Int64
	return func() string { return fmt.Sprintf("d-%d", n.Add(1)) }
}
