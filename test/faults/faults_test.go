package faults_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/sallyport/sallyport/api/v1alpha1"
	"github.com/sallyport/sallyport/internal/policy"
	"github.com/sallyport/sallyport/internal/store"
	"github.com/sallyport/sallyport/internal/testenv"
)

// fixture is a caller with a ConnectionPolicy and a service with a
// ResourcePolicy that lets it read /entries/*.
type fixture struct {
	callerNS, serviceNS string
	rp                  *v1alpha1.ResourcePolicy
}

func setup(t *testing.T) *fixture {
	t.Helper()
	ctx := context.Background()
	f := &fixture{callerNS: env.Namespace(t, nil), serviceNS: env.Namespace(t, nil)}
	if err := env.Client.Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: f.callerNS, Name: "worker"}}); err != nil {
		t.Fatal(err)
	}
	cp := &v1alpha1.ConnectionPolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: f.callerNS, Name: "to-ledger"},
		Spec: v1alpha1.ConnectionPolicySpec{
			ServiceAccountName: "worker",
			Reach:              []v1alpha1.Reach{{Class: "ledger", Scopes: []v1alpha1.Scope{"ledger.read"}, MaxClassification: v1alpha1.ClassificationConfidential}},
		},
	}
	f.rp = &v1alpha1.ResourcePolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: f.serviceNS, Name: "ledger-api"},
		Spec: v1alpha1.ResourcePolicySpec{
			Service: "ledger-api", Class: "ledger", Classification: v1alpha1.ClassificationInternal,
			Rules: []v1alpha1.Rule{{
				Name: "read-entries", Effect: v1alpha1.EffectAllow, Actions: []string{"GET"}, Resources: []string{"/entries/*"},
				Connections: []v1alpha1.ConnectionRef{{Namespace: f.callerNS, Name: "to-ledger"}},
			}},
		},
	}
	for _, o := range []client.Object{cp, f.rp} {
		if err := env.Client.Create(ctx, o); err != nil {
			t.Fatal(err)
		}
	}
	aud := policy.DefaultAudience(f.callerNS, "to-ledger")
	testenv.Eventually(t, 30*time.Second, func() error {
		snap := op.Store.Snapshot()
		if _, ok := snap.ConnectionByAudience(v1alpha1.EnforcementEnforce, aud); !ok {
			return fmt.Errorf("audience %s not served yet", aud)
		}
		if _, ok := snap.ResourceByService(v1alpha1.EnforcementEnforce, f.serviceNS, "ledger-api"); !ok {
			return fmt.Errorf("ledger-api not served yet")
		}
		return nil
	})
	return f
}

// token mints a fresh token of the caller's ServiceAccount for the
// connection's audience, directly from the API server (not through the
// operator's link).
func (f *fixture) token(t *testing.T) string {
	t.Helper()
	seconds := int64(600)
	tr := &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{
		Audiences: []string{policy.DefaultAudience(f.callerNS, "to-ledger")}, ExpirationSeconds: &seconds,
	}}
	out, err := clientset.CoreV1().ServiceAccounts(f.callerNS).CreateToken(context.Background(), "worker", tr, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return minted.add(out.Status.Token)
}

func (f *fixture) decide(t *testing.T, token, path string) testenv.Answer {
	t.Helper()
	return testenv.Decide(t, decideURL, map[string]any{
		"credential": map[string]any{"token": token},
		"resource":   map[string]any{"namespace": f.serviceNS, "service": "ledger-api", "name": path},
		"action":     "GET",
	})
}

// TestAPIServerOutage cuts the operator off the API server while it serves
// decisions. A credential reviewed before the outage keeps its answer until
// its review expires; a credential never seen is denied with
// CredentialReviewFailed, saying the review failed (DESIGN.md: a review that
// cannot be made is CredentialReviewFailed, not InvalidCredential); the
// policies keep serving; and when the link returns, new credentials are
// reviewed and allowed again.
func TestAPIServerOutage(t *testing.T) {
	f := setup(t)
	known, unknown := f.token(t), f.token(t)
	if a := f.decide(t, known, "/entries/1"); !a.Allowed {
		t.Fatalf("before the outage: %+v, want allowed", a)
	}

	link.SetDown(true)
	defer link.SetDown(false)

	// Within reviewTTL of its review: the cached answer.
	if a := f.decide(t, known, "/entries/2"); !a.Allowed {
		t.Errorf("a reviewed credential during the outage: %+v, want allowed from the cache", a)
	}
	a := f.decide(t, unknown, "/entries/1")
	if a.Allowed || a.Connection.Reason != "CredentialReviewFailed" || !strings.Contains(a.Connection.Message, "could not be reviewed") {
		t.Errorf("a new credential during the outage: %+v, want denied with CredentialReviewFailed saying the review failed", a)
	}
	if a.Connection.Policy != f.callerNS+"/to-ledger" {
		t.Errorf("during the outage the connection policy is %q: the snapshot should keep serving", a.Connection.Policy)
	}
	// Once its review expires, the reviewed credential cannot be re-checked
	// either: denied the same way, never allowed on a stale review.
	testenv.Eventually(t, 3*reviewTTL, func() error {
		a := f.decide(t, known, "/entries/3")
		if a.Allowed || a.Connection.Reason != "CredentialReviewFailed" {
			return fmt.Errorf("reviewed credential after its TTL during the outage: %+v", a)
		}
		return nil
	})

	link.SetDown(false)
	testenv.Eventually(t, time.Minute, func() error {
		if a := f.decide(t, unknown, "/entries/4"); !a.Allowed {
			return fmt.Errorf("after the outage: %+v, want allowed", a)
		}
		return nil
	})
}

// TestBrokenWatches cuts every connection of the operator to the API server
// again and again while a policy changes. The snapshot the decisions read
// must never go backwards (its version, and the generation served for the
// policy) nor lose a policy, and the last change must arrive.
func TestBrokenWatches(t *testing.T) {
	f := setup(t)
	ref := store.Ref{Kind: store.KindResource, NamespacedName: types.NamespacedName{Namespace: f.serviceNS, Name: "ledger-api"}}
	baseline := op.Store.Snapshot().Len()

	var (
		mu        sync.Mutex
		problems  []string
		samples   int
		stop      = make(chan struct{})
		stopped   = make(chan struct{})
		lastVer   uint64
		lastGen   int64
		complaint = func(format string, args ...any) {
			if len(problems) < 10 {
				problems = append(problems, fmt.Sprintf(format, args...))
			}
		}
	)
	go func() {
		defer close(stopped)
		for {
			select {
			case <-stop:
				return
			case <-time.After(2 * time.Millisecond):
			}
			snap := op.Store.Snapshot()
			st, ok := snap.Status(ref)
			mu.Lock()
			samples++
			switch {
			case snap.Version < lastVer:
				complaint("snapshot version went back from %d to %d", lastVer, snap.Version)
			case snap.Len() < baseline:
				complaint("snapshot holds %d policies, fewer than the %d at the start", snap.Len(), baseline)
			case !ok || st.Served == 0:
				complaint("the ResourcePolicy is not served in snapshot %d", snap.Version)
			case st.Served < lastGen:
				complaint("served generation went back from %d to %d", lastGen, st.Served)
			}
			lastVer, lastGen = snap.Version, max(lastGen, st.Served)
			mu.Unlock()
		}
	}()

	ctx := context.Background()
	var want int64
	for i := range 6 {
		testenv.Eventually(t, 30*time.Second, func() error {
			if err := env.Client.Get(ctx, client.ObjectKeyFromObject(f.rp), f.rp); err != nil {
				return err
			}
			f.rp.Spec.Rules[0].Resources = []string{"/entries/*", fmt.Sprintf("/change-%d", i)}
			return env.Client.Update(ctx, f.rp)
		})
		want = f.rp.Generation
		link.Cut()
		time.Sleep(300 * time.Millisecond)
	}
	testenv.Eventually(t, time.Minute, func() error {
		st, _ := op.Store.Snapshot().Status(ref)
		if st.Served != want {
			return fmt.Errorf("served generation %d, want the last change's %d", st.Served, want)
		}
		return nil
	})
	close(stop)
	<-stopped
	mu.Lock()
	defer mu.Unlock()
	for _, p := range problems {
		t.Error(p)
	}
	if samples == 0 {
		t.Error("the snapshot was never sampled")
	}
	// The decision path follows the last change too.
	if a := f.decide(t, f.token(t), "/change-5"); !a.Allowed {
		t.Errorf("a decision after the cuts: %+v, want allowed by the last change", a)
	}
}
