package tokens_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/sallyport/sallyport/api/v1alpha1"
	"github.com/sallyport/sallyport/internal/policy"
	"github.com/sallyport/sallyport/internal/testenv"
)

const timeout = 60 * time.Second

func namespaceObject(name string) *corev1.Namespace {
	return &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}
}

// secretPolicy is a Secret-mode ConnectionPolicy for the ServiceAccount
// "worker" that reaches the ledger class.
func secretPolicy(ns, name string) *v1alpha1.ConnectionPolicy {
	return &v1alpha1.ConnectionPolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: v1alpha1.ConnectionPolicySpec{
			ServiceAccountName: "worker",
			Reach:              []v1alpha1.Reach{{Class: "ledger", Scopes: []v1alpha1.Scope{"ledger.read"}}},
			Token:              &v1alpha1.TokenSpec{Mode: v1alpha1.TokenModeSecret},
		},
	}
}

// setupNamespace makes a namespace with the ServiceAccount "worker" and a
// ResourcePolicy "ledger-api" that lets the connection named conn read
// entries; with delegate, Secret mode is delegated to the operator there.
func setupNamespace(t *testing.T, conn string, delegate bool) string {
	t.Helper()
	ctx := context.Background()
	ns := env.Namespace(t, nil)
	if err := env.Client.Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "worker"}}); err != nil {
		t.Fatal(err)
	}
	rp := &v1alpha1.ResourcePolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "ledger-api"},
		Spec: v1alpha1.ResourcePolicySpec{
			Service: "ledger-api", Class: "ledger", Classification: v1alpha1.ClassificationInternal,
			Rules: []v1alpha1.Rule{{
				Name: "read-entries", Effect: v1alpha1.EffectAllow, Actions: []string{"GET"},
				Resources: []string{"/entries/*"}, Scopes: []v1alpha1.Scope{"ledger.read"},
				Connections: []v1alpha1.ConnectionRef{{Name: conn}},
			}},
		},
	}
	if err := env.Client.Create(ctx, rp); err != nil {
		t.Fatal(err)
	}
	if delegate {
		delegateTo(t, ns)
	}
	return ns
}

// delegateTo binds sallyport-token-issuer to the operator in ns, as a
// namespace admin does.
func delegateTo(t *testing.T, ns string) {
	t.Helper()
	if err := bindRole(context.Background(), ns, v1alpha1.TokenIssuerClusterRole, "ClusterRole", v1alpha1.TokenIssuerClusterRole,
		rbacv1.Subject{Kind: rbacv1.ServiceAccountKind, Namespace: operatorNamespace, Name: operatorServiceAccount}); err != nil {
		t.Fatal(err)
	}
}

func create(t *testing.T, obj client.Object) {
	t.Helper()
	if err := env.Client.Create(context.Background(), obj); err != nil {
		t.Fatalf("create %T %s: %v", obj, obj.GetName(), err)
	}
}

func get(t *testing.T, ns, name string) *v1alpha1.ConnectionPolicy {
	t.Helper()
	cp := &v1alpha1.ConnectionPolicy{}
	if err := env.Client.Get(context.Background(), types.NamespacedName{Namespace: ns, Name: name}, cp); err != nil {
		t.Fatal(err)
	}
	return cp
}

// waitFor polls the policy until cond accepts it.
func waitFor(t *testing.T, ns, name string, cond func(*v1alpha1.ConnectionPolicy) error) *v1alpha1.ConnectionPolicy {
	t.Helper()
	var cp *v1alpha1.ConnectionPolicy
	testenv.Eventually(t, timeout, func() error {
		cp = &v1alpha1.ConnectionPolicy{}
		if err := env.Client.Get(context.Background(), types.NamespacedName{Namespace: ns, Name: name}, cp); err != nil {
			return err
		}
		return cond(cp)
	})
	return cp
}

// tokenIssued accepts a policy whose TokenIssued condition is True, reason
// Issued, for its current generation.
func tokenIssued(cp *v1alpha1.ConnectionPolicy) error {
	c := meta.FindStatusCondition(cp.Status.Conditions, v1alpha1.ConditionTokenIssued)
	if c == nil || c.Status != metav1.ConditionTrue || c.Reason != v1alpha1.ReasonTokenIssued || c.ObservedGeneration != cp.Generation {
		return fmt.Errorf("TokenIssued = %+v", c)
	}
	if cp.Status.Token == nil || cp.Status.Token.CredentialID == "" {
		return fmt.Errorf("status.token = %+v", cp.Status.Token)
	}
	return nil
}

// tokenCondition accepts a policy whose TokenIssued condition has status
// and reason.
func tokenCondition(status metav1.ConditionStatus, reason string) func(*v1alpha1.ConnectionPolicy) error {
	return func(cp *v1alpha1.ConnectionPolicy) error {
		c := meta.FindStatusCondition(cp.Status.Conditions, v1alpha1.ConditionTokenIssued)
		if c == nil || c.Status != status || c.Reason != reason || c.ObservedGeneration != cp.Generation {
			return fmt.Errorf("TokenIssued = %+v", c)
		}
		return nil
	}
}

func secret(t *testing.T, ns, name string) *corev1.Secret {
	t.Helper()
	s := &corev1.Secret{}
	if err := env.Client.Get(context.Background(), types.NamespacedName{Namespace: ns, Name: name}, s); err != nil {
		t.Fatalf("get Secret %s: %v", name, err)
	}
	return s
}

func tokenIn(t *testing.T, ns, secretName string) string {
	t.Helper()
	tok := string(secret(t, ns, secretName).Data[v1alpha1.TokenSecretKeyToken])
	if tok == "" {
		t.Fatalf("Secret %s holds no token", secretName)
	}
	return tok
}

// anchors lists the anchor Secrets of the policy with uid.
func anchors(t *testing.T, ns string, uid types.UID) []corev1.Secret {
	t.Helper()
	l := &corev1.SecretList{}
	if err := env.Client.List(context.Background(), l, client.InNamespace(ns), client.MatchingLabels{
		v1alpha1.LabelSecretRole: v1alpha1.SecretRoleAnchor, v1alpha1.LabelPolicyUID: string(uid),
	}); err != nil {
		t.Fatal(err)
	}
	return l.Items
}

// decide asks the decision API whether tok may read an entry of ledger-api
// in ns.
func decide(t *testing.T, tok, ns string) testenv.Answer {
	t.Helper()
	return testenv.Decide(t, decideURL, map[string]any{
		"credential": map[string]any{"token": tok},
		"resource":   map[string]any{"namespace": ns, "service": "ledger-api", "name": "/entries/1"},
		"action":     "GET", "scopes": []string{"ledger.read"},
	})
}

// accepted fails the test unless the decision API allows tok, and returns
// the credential ID it reports.
func accepted(t *testing.T, tok, ns string) string {
	t.Helper()
	var a testenv.Answer
	// The decision servers' snapshot may lag the status by a moment.
	testenv.Eventually(t, timeout, func() error {
		a = decide(t, tok, ns)
		if !a.Allowed || a.Connection.Reason != "Matched" {
			return fmt.Errorf("not allowed: connection %s (%s), resource %s (%s)", a.Connection.Reason, a.Connection.Message, a.Resource.Reason, a.Resource.Message)
		}
		return nil
	})
	return a.Connection.CredentialID
}

// refusedEventually waits until the decision API refuses tok as an invalid
// credential: the API server caches successful authentications for 10 s.
func refusedEventually(t *testing.T, tok, ns string) {
	t.Helper()
	testenv.Eventually(t, timeout, func() error {
		a := decide(t, tok, ns)
		if a.Allowed || a.Connection.Reason != "InvalidCredential" {
			return fmt.Errorf("connection %s", a.Connection.Reason)
		}
		return nil
	})
}

// authenticated asks the API server itself about tok.
func authenticated(t *testing.T, tok, audience string) bool {
	t.Helper()
	r, err := clientset.AuthenticationV1().TokenReviews().Create(context.Background(), &authenticationv1.TokenReview{
		Spec: authenticationv1.TokenReviewSpec{Token: tok, Audiences: []string{audience}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return r.Status.Authenticated
}

// events returns the Events about the policy named name.
func events(t *testing.T, ns, name string) []eventsv1.Event {
	t.Helper()
	l := &eventsv1.EventList{}
	if err := env.Client.List(context.Background(), l, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	var out []eventsv1.Event
	for _, e := range l.Items {
		if e.Regarding.Kind == "ConnectionPolicy" && e.Regarding.Name == name {
			out = append(out, e)
		}
	}
	return out
}

// waitEvent waits for an Event of the reason about the policy and returns
// its note.
func waitEvent(t *testing.T, ns, name, reason string) string {
	t.Helper()
	var note string
	testenv.Eventually(t, timeout, func() error {
		for _, e := range events(t, ns, name) {
			if e.Reason == reason {
				note = e.Note
				return nil
			}
		}
		return fmt.Errorf("no %s Event", reason)
	})
	return note
}

// noTokenLeaks fails the test when any token the operator was given appears
// in the policy (status included) or its Events.
func noTokenLeaks(t *testing.T, ns, name string) {
	t.Helper()
	cp := get(t, ns, name)
	raw, _ := json.Marshal(cp)
	evs, _ := json.Marshal(events(t, ns, name))
	for _, tok := range requester.issued() {
		sig := tok[strings.LastIndex(tok, ".")+1:]
		if bytes.Contains(raw, []byte(tok)) || bytes.Contains(evs, []byte(tok)) || bytes.Contains(raw, []byte(sig)) || bytes.Contains(evs, []byte(sig)) {
			t.Fatalf("a token appears in the status or Events of %s/%s", ns, name)
		}
	}
}

func annotate(t *testing.T, ns, name, key, value string) {
	t.Helper()
	cp := get(t, ns, name)
	patch := client.MergeFrom(cp.DeepCopy())
	if cp.Annotations == nil {
		cp.Annotations = map[string]string{}
	}
	cp.Annotations[key] = value
	if err := env.Client.Patch(context.Background(), cp, patch); err != nil {
		t.Fatal(err)
	}
}

// update changes the policy as c, reading it afresh when the operator's
// status writes got in between.
func update(t *testing.T, c client.Client, ns, name string, change func(*v1alpha1.ConnectionPolicy)) error {
	t.Helper()
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		cp := get(t, ns, name)
		change(cp)
		return c.Update(context.Background(), cp)
	})
}

func audienceOf(cp *v1alpha1.ConnectionPolicy) string { return policy.EffectiveAudience(cp) }
