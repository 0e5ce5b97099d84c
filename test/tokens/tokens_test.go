package tokens_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/sallyport/sallyport/api/v1alpha1"
	"github.com/sallyport/sallyport/internal/credential"
	"github.com/sallyport/sallyport/internal/testenv"
)

// A Secret-mode policy gets a Secret with a token the decision API accepts,
// and status, Events and metrics that describe it without holding it.
func TestSecretModeIssuesAnAcceptedToken(t *testing.T) {
	t.Parallel()
	ns := setupNamespace(t, "to-ledger", true)
	create(t, secretPolicy(ns, "to-ledger"))
	cp := waitFor(t, ns, "to-ledger", tokenIssued)
	ts := cp.Status.Token

	if !controllerutil.ContainsFinalizer(cp, v1alpha1.FinalizerTokens) {
		t.Errorf("finalizers %v", cp.Finalizers)
	}
	if ts.SecretName != "to-ledger-token" || !strings.HasPrefix(ts.Anchor, "to-ledger-anchor-") ||
		ts.RequestedExpirationSeconds != 900 || ts.GrantedExpirationSeconds != 900 || ts.Failures != 0 || ts.LastFailure != "" {
		t.Errorf("status.token = %+v", ts)
	}
	life := ts.ExpiresAt.Sub(ts.IssuedAt.Time)
	renewIn := ts.RenewAt.Sub(ts.IssuedAt.Time)
	if life != 900*time.Second || renewIn < 509*time.Second || renewIn > 600*time.Second {
		t.Errorf("lifetime %s, renewal %s after issue; want 900s and two thirds less up to 10%%", life, renewIn)
	}

	s := secret(t, ns, "to-ledger-token")
	tok := string(s.Data[v1alpha1.TokenSecretKeyToken])
	if s.Type != v1alpha1.SecretTypeToken || len(s.Data) != 2 || string(s.Data[v1alpha1.TokenSecretKeyExpiresAt]) != ts.ExpiresAt.UTC().Format(time.RFC3339) {
		t.Errorf("Secret type %s, keys %d, expiresAt %s", s.Type, len(s.Data), s.Data[v1alpha1.TokenSecretKeyExpiresAt])
	}
	if !metav1.IsControlledBy(s, cp) || s.Labels[v1alpha1.LabelSecretRole] != v1alpha1.SecretRoleToken || s.Annotations[v1alpha1.AnnotationAnchor] != ts.Anchor {
		t.Errorf("Secret metadata %+v", s.ObjectMeta)
	}
	claims, err := credential.ParseClaims(tok)
	if err != nil {
		t.Fatal(err)
	}
	if "JTI="+claims.ID != ts.CredentialID || claims.Subject != "system:serviceaccount:"+ns+":worker" ||
		len(claims.Audiences) != 1 || claims.Audiences[0] != audienceOf(cp) {
		t.Errorf("token claims %+v, status credentialID %s", claims, ts.CredentialID)
	}
	a := anchors(t, ns, cp.UID)
	if len(a) != 1 || a[0].Name != ts.Anchor || !metav1.IsControlledBy(&a[0], cp) || len(a[0].Data) != 0 {
		t.Errorf("anchors %v", a)
	}

	// The decision API accepts it, and names it as status does.
	if id := accepted(t, tok, ns); id != ts.CredentialID {
		t.Errorf("decision credentialID %s, status %s", id, ts.CredentialID)
	}
	if note := waitEvent(t, ns, "to-ledger", "TokenIssued"); !strings.Contains(note, ts.CredentialID) {
		t.Errorf("TokenIssued note %q", note)
	}
	checkGauge(t, "sallyport_token_expiry_timestamp_seconds", ns, "to-ledger", float64(ts.ExpiresAt.Unix()))
	checkGauge(t, "sallyport_token_renewal_timestamp_seconds", ns, "to-ledger", float64(ts.RenewAt.Unix()))

	// Reconciles keep coming (resyncs); none reissues a fresh token.
	time.Sleep(2*testResync + time.Second)
	if again := get(t, ns, "to-ledger").Status.Token; again.CredentialID != ts.CredentialID || !again.RenewAt.Equal(ts.RenewAt) {
		t.Errorf("the token or its schedule changed without cause: %+v, was %+v", again, ts)
	}
	noTokenLeaks(t, ns, "to-ledger")
}

func checkGauge(t *testing.T, name, ns, policy string, want float64) {
	t.Helper()
	families, err := metrics.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["namespace"] == ns && labels["policy"] == policy {
				if got := m.GetGauge().GetValue(); got != want {
					t.Errorf("%s = %v, want %v", name, got, want)
				}
				return
			}
		}
	}
	t.Errorf("%s{namespace=%q,policy=%q} not found", name, ns, policy)
}

// The admission policy: only a user who may mint the ServiceAccount's
// tokens may ask the operator to mint them.
func TestOnlyUsersWhoMayMintTokensMayAskForSecretMode(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	ns := setupNamespace(t, "bobs", true)
	for _, u := range []string{"alice", "bob"} {
		if err := grantPolicyEditing(ctx, ns, u); err != nil {
			t.Fatal(err)
		}
	}
	if err := env.Client.Create(ctx, mintWorkerRole(ns)); err != nil {
		t.Fatal(err)
	}
	if err := bindRole(ctx, ns, "bob-mints-worker", "Role", "mint-worker", userSubject("bob")); err != nil {
		t.Fatal(err)
	}
	alice, err := impersonating("alice")
	if err != nil {
		t.Fatal(err)
	}
	bob, err := impersonating("bob")
	if err != nil {
		t.Fatal(err)
	}

	err = alice.Create(ctx, secretPolicy(ns, "alices"))
	if !apierrors.IsForbidden(err) && !apierrors.IsInvalid(err) {
		t.Fatalf("alice created a Secret-mode policy: %v", err)
	}
	if msg := err.Error(); !strings.Contains(msg, "serviceaccounts/token") || !strings.Contains(msg, ns+"/worker") || !strings.Contains(msg, "alice may not") {
		t.Errorf("refusal message %q", msg)
	}
	if err := bob.Create(ctx, secretPolicy(ns, "bobs")); err != nil {
		t.Fatalf("bob, who may mint worker's tokens, could not create the policy: %v", err)
	}
	projected := secretPolicy(ns, "alices-projected")
	projected.Spec.Token = &v1alpha1.TokenSpec{Mode: v1alpha1.TokenModeProjected}
	if err := alice.Create(ctx, projected); err != nil {
		t.Fatalf("alice could not create a Projected-mode policy: %v", err)
	}

	// Updates that do not change what is minted pass; those that do are
	// checked like a create.
	if err := update(t, alice, ns, "bobs", func(cp *v1alpha1.ConnectionPolicy) {
		cp.Spec.Reach = append(cp.Spec.Reach, v1alpha1.Reach{Class: "audit"})
	}); err != nil {
		t.Errorf("alice could not change the reach of bob's policy: %v", err)
	}
	if err := update(t, alice, ns, "bobs", func(cp *v1alpha1.ConnectionPolicy) {
		cp.Annotations = map[string]string{v1alpha1.AnnotationRenew: "1"}
	}); err != nil {
		t.Errorf("alice could not ask for a renewal: %v", err)
	}
	for what, change := range map[string]func(*v1alpha1.ConnectionPolicy){
		"audience":          func(cp *v1alpha1.ConnectionPolicy) { cp.Spec.Audience = "https://vault.example" },
		"secretName":        func(cp *v1alpha1.ConnectionPolicy) { cp.Spec.Token.SecretName = "elsewhere" },
		"expirationSeconds": func(cp *v1alpha1.ConnectionPolicy) { cp.Spec.Token.ExpirationSeconds = ptr.To[int64](1800) },
		"serviceAccount":    func(cp *v1alpha1.ConnectionPolicy) { cp.Spec.ServiceAccountName = "other" },
	} {
		if err := update(t, alice, ns, "bobs", change); !apierrors.IsForbidden(err) && !apierrors.IsInvalid(err) {
			t.Errorf("alice changed the %s of a Secret-mode policy: %v", what, err)
		}
	}
	if err := update(t, alice, ns, "alices-projected", func(cp *v1alpha1.ConnectionPolicy) {
		cp.Spec.Token.Mode = v1alpha1.TokenModeSecret
	}); !apierrors.IsForbidden(err) && !apierrors.IsInvalid(err) {
		t.Errorf("alice switched her policy to Secret mode: %v", err)
	}
	// The operator's own writes (finalizer, status) are not in the way.
	waitFor(t, ns, "bobs", tokenIssued)
}

// Without the delegation binding the policy says NotDelegated and how to
// delegate; once a namespace admin binds the role, the token comes.
func TestWithoutDelegationThePolicyReportsNotDelegated(t *testing.T) {
	t.Parallel()
	ns := setupNamespace(t, "to-ledger", false)
	create(t, secretPolicy(ns, "to-ledger"))
	cp := waitFor(t, ns, "to-ledger", tokenCondition(metav1.ConditionFalse, v1alpha1.ReasonNotDelegated))
	msg := ""
	for _, c := range cp.Status.Conditions {
		if c.Type == v1alpha1.ConditionTokenIssued {
			msg = c.Message
		}
	}
	for _, want := range []string{operatorUser, "ClusterRole sallyport-token-issuer", "--namespace " + ns, "--serviceaccount " + operatorNamespace + ":" + operatorServiceAccount} {
		if !strings.Contains(msg, want) {
			t.Errorf("NotDelegated message lacks %q: %s", want, msg)
		}
	}
	if cp.Status.Token == nil || cp.Status.Token.Failures < 1 || cp.Status.Token.LastFailure == "" || cp.Status.Token.CredentialID != "" {
		t.Errorf("status.token = %+v", cp.Status.Token)
	}
	// A pipeline that waits for Ready waits for the token too.
	if r := meta.FindStatusCondition(cp.Status.Conditions, v1alpha1.ConditionReady); r == nil || r.Status != metav1.ConditionFalse || r.Reason != v1alpha1.ReasonNotDelegated {
		t.Errorf("Ready = %+v, want False with reason NotDelegated", r)
	}
	if err := env.Client.Get(context.Background(), types.NamespacedName{Namespace: ns, Name: "to-ledger-token"}, &corev1.Secret{}); !apierrors.IsNotFound(err) {
		t.Errorf("token Secret: %v", err)
	}
	if a := anchors(t, ns, cp.UID); len(a) != 0 {
		t.Errorf("anchors left behind: %d", len(a))
	}
	waitEvent(t, ns, "to-ledger", "IssuanceFailed")

	delegateTo(t, ns)
	cp = waitFor(t, ns, "to-ledger", tokenIssued)
	if cp.Status.Token.Failures != 0 || cp.Status.Token.LastFailure != "" {
		t.Errorf("failures not reset: %+v", cp.Status.Token)
	}
	if !meta.IsStatusConditionTrue(cp.Status.Conditions, v1alpha1.ConditionReady) {
		t.Errorf("Ready is not True once the token is issued: %+v", cp.Status.Conditions)
	}
	accepted(t, tokenIn(t, ns, "to-ledger-token"), ns)
}

// A Secret of the token's name that is not the operator's is never touched.
func TestSomeoneElsesSecretIsLeftUntouched(t *testing.T) {
	t.Parallel()
	ns := setupNamespace(t, "to-ledger", true)
	theirs := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "to-ledger-token", Labels: map[string]string{"owner": "someone"}},
		Data:       map[string][]byte{"token": []byte("theirs")},
	}
	create(t, theirs)
	create(t, secretPolicy(ns, "to-ledger"))
	cp := waitFor(t, ns, "to-ledger", tokenCondition(metav1.ConditionFalse, v1alpha1.ReasonSecretConflict))

	after := secret(t, ns, "to-ledger-token")
	if after.ResourceVersion != theirs.ResourceVersion || string(after.Data["token"]) != "theirs" || len(after.OwnerReferences) != 0 {
		t.Errorf("their Secret was changed: %+v", after)
	}
	if a := anchors(t, ns, cp.UID); len(a) != 0 {
		t.Errorf("anchors left behind: %d", len(a))
	}

	// Pointed at a free name, the policy gets its token; theirs stays.
	if err := update(t, env.Client, ns, "to-ledger", func(cp *v1alpha1.ConnectionPolicy) {
		cp.Spec.Token.SecretName = "to-ledger-credentials"
	}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, ns, "to-ledger", tokenIssued)
	accepted(t, tokenIn(t, ns, "to-ledger-credentials"), ns)
	if after := secret(t, ns, "to-ledger-token"); after.ResourceVersion != theirs.ResourceVersion {
		t.Errorf("their Secret was changed")
	}
}

// The renew annotation rotates at once; the new token is accepted, the
// Secret is updated in place, and after the overlap the old token is
// revoked and refused.
func TestForcedRotationRevokesThePreviousTokenAfterTheOverlap(t *testing.T) {
	t.Parallel()
	ns := setupNamespace(t, "to-ledger", true)
	create(t, secretPolicy(ns, "to-ledger"))
	first := waitFor(t, ns, "to-ledger", tokenIssued).Status.Token
	before := secret(t, ns, "to-ledger-token")
	oldTok := string(before.Data[v1alpha1.TokenSecretKeyToken])
	accepted(t, oldTok, ns)

	annotate(t, ns, "to-ledger", v1alpha1.AnnotationRenew, "2026-03-01T12:00:00Z")
	second := waitFor(t, ns, "to-ledger", func(cp *v1alpha1.ConnectionPolicy) error {
		if err := tokenIssued(cp); err != nil {
			return err
		}
		if cp.Status.Token.CredentialID == first.CredentialID {
			return fmt.Errorf("not rotated yet")
		}
		return nil
	}).Status.Token
	if second.RenewRequest != "2026-03-01T12:00:00Z" || second.Anchor == first.Anchor {
		t.Errorf("status after rotation %+v", second)
	}
	if second.PreviousAnchor != "" && second.PreviousAnchor != first.Anchor {
		t.Errorf("previousAnchor %s, want %s", second.PreviousAnchor, first.Anchor)
	}
	if second.PreviousAnchor == first.Anchor {
		if d := second.RevokePreviousAt.Sub(second.IssuedAt.Time); d < testOverlap-time.Second || d > testOverlap+2*time.Second {
			t.Errorf("previous token revoked %s after the new one was issued, want the %s overlap", d, testOverlap)
		}
	}
	after := secret(t, ns, "to-ledger-token")
	newTok := string(after.Data[v1alpha1.TokenSecretKeyToken])
	if after.UID != before.UID || newTok == oldTok {
		t.Errorf("the Secret was not updated in place")
	}
	if id := accepted(t, newTok, ns); id != second.CredentialID {
		t.Errorf("decision credentialID %s, status %s", id, second.CredentialID)
	}

	// After the overlap the previous anchor goes, which revokes its token.
	waitFor(t, ns, "to-ledger", func(cp *v1alpha1.ConnectionPolicy) error {
		if cp.Status.Token.PreviousAnchor != "" {
			return fmt.Errorf("previous anchor %s still pending", cp.Status.Token.PreviousAnchor)
		}
		return nil
	})
	if err := env.Client.Get(context.Background(), types.NamespacedName{Namespace: ns, Name: first.Anchor}, &corev1.Secret{}); !apierrors.IsNotFound(err) {
		t.Errorf("previous anchor: %v", err)
	}
	refusedEventually(t, oldTok, ns)
	accepted(t, newTok, ns)
	waitEvent(t, ns, "to-ledger", "TokenRotated")
	waitEvent(t, ns, "to-ledger", "TokenRevoked")
	noTokenLeaks(t, ns, "to-ledger")
}

// Deleting the policy revokes every token it issued and deletes its Secret,
// even without a garbage collector.
func TestDeletingThePolicyRevokesItsTokens(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	ns := setupNamespace(t, "to-ledger", true)
	create(t, secretPolicy(ns, "to-ledger"))
	cp := waitFor(t, ns, "to-ledger", tokenIssued)
	tok := tokenIn(t, ns, "to-ledger-token")
	aud := audienceOf(cp)
	if !authenticated(t, tok, aud) {
		t.Fatal("the API server does not accept the issued token")
	}

	if err := env.Client.Delete(ctx, cp); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, timeout, func() error {
		err := env.Client.Get(ctx, types.NamespacedName{Namespace: ns, Name: "to-ledger"}, &v1alpha1.ConnectionPolicy{})
		switch {
		case apierrors.IsNotFound(err):
			return nil
		case err != nil:
			return err
		}
		return fmt.Errorf("policy still there")
	})
	if a := anchors(t, ns, cp.UID); len(a) != 0 {
		t.Errorf("anchors left behind: %d", len(a))
	}
	if err := env.Client.Get(ctx, types.NamespacedName{Namespace: ns, Name: "to-ledger-token"}, &corev1.Secret{}); !apierrors.IsNotFound(err) {
		t.Errorf("token Secret: %v", err)
	}
	testenv.Eventually(t, timeout, func() error {
		if authenticated(t, tok, aud) {
			return fmt.Errorf("the API server still accepts the token")
		}
		return nil
	})
}

// Failed TokenRequests leave the valid token in place, say so, back off and
// recover.
func TestIssuanceFailuresKeepTheTokenAndRecover(t *testing.T) {
	t.Parallel()
	ns := setupNamespace(t, "to-ledger", true)
	create(t, secretPolicy(ns, "to-ledger"))
	first := waitFor(t, ns, "to-ledger", tokenIssued).Status.Token
	oldTok := tokenIn(t, ns, "to-ledger-token")
	calls := requester.callsIn(ns)

	requester.failNext(ns, 3)
	annotate(t, ns, "to-ledger", v1alpha1.AnnotationRenew, "now")
	failing := waitFor(t, ns, "to-ledger", tokenCondition(metav1.ConditionFalse, v1alpha1.ReasonIssuanceFailed)).Status.Token
	if failing.Failures < 1 || !strings.Contains(failing.LastFailure, "injected TokenRequest failure") || failing.LastFailureTime == nil ||
		failing.CredentialID != first.CredentialID || failing.Anchor != first.Anchor {
		t.Errorf("status while failing %+v", failing)
	}
	if tok := tokenIn(t, ns, "to-ledger-token"); tok != oldTok {
		t.Error("a failed renewal replaced the token")
	}
	accepted(t, oldTok, ns)
	note := waitEvent(t, ns, "to-ledger", "IssuanceFailed")
	if !strings.Contains(note, "stays in the Secret") {
		t.Errorf("IssuanceFailed note %q", note)
	}

	recovered := waitFor(t, ns, "to-ledger", func(cp *v1alpha1.ConnectionPolicy) error {
		if err := tokenIssued(cp); err != nil {
			return err
		}
		if cp.Status.Token.CredentialID == first.CredentialID {
			return fmt.Errorf("not renewed yet")
		}
		return nil
	}).Status.Token
	if recovered.Failures != 0 || recovered.LastFailure != "" {
		t.Errorf("failures not reset: %+v", recovered)
	}
	if n := requester.callsIn(ns) - calls; n != 4 {
		t.Errorf("%d TokenRequests for 3 injected failures and a success, want 4", n)
	}
	if a := anchors(t, ns, get(t, ns, "to-ledger").UID); len(a) > 2 {
		t.Errorf("%d anchors: failed attempts left theirs behind", len(a))
	}
	accepted(t, tokenIn(t, ns, "to-ledger-token"), ns)
}

// A lifetime the API server shortens is reported, and the schedule follows
// the granted lifetime.
func TestShortenedLifetimeIsReportedAndScheduled(t *testing.T) {
	t.Parallel()
	ns := setupNamespace(t, "to-ledger", true)
	requester.capLifetime(ns, 600)
	cp := secretPolicy(ns, "to-ledger")
	cp.Spec.Token.ExpirationSeconds = ptr.To[int64](1800)
	create(t, cp)
	ts := waitFor(t, ns, "to-ledger", tokenIssued).Status.Token
	if ts.RequestedExpirationSeconds != 1800 || ts.GrantedExpirationSeconds != 600 {
		t.Errorf("requested %d, granted %d", ts.RequestedExpirationSeconds, ts.GrantedExpirationSeconds)
	}
	if d := ts.RenewAt.Sub(ts.IssuedAt.Time); d < 339*time.Second || d > 400*time.Second {
		t.Errorf("renewal %s after issue, want two thirds of 600s less up to 10%%", d)
	}
	waitEvent(t, ns, "to-ledger", "LifetimeShortened")
	// The shortened token is not mistaken for a stale one.
	time.Sleep(testResync + time.Second)
	if again := get(t, ns, "to-ledger").Status.Token; again.CredentialID != ts.CredentialID {
		t.Errorf("reissued without cause")
	}
}

// Leaving Secret mode revokes what the policy issued and drops the
// finalizer.
func TestLeavingSecretModeCleansUp(t *testing.T) {
	t.Parallel()
	ns := setupNamespace(t, "to-ledger", true)
	create(t, secretPolicy(ns, "to-ledger"))
	waitFor(t, ns, "to-ledger", tokenIssued)
	if err := update(t, env.Client, ns, "to-ledger", func(cp *v1alpha1.ConnectionPolicy) {
		cp.Spec.Token = &v1alpha1.TokenSpec{Mode: v1alpha1.TokenModeProjected}
	}); err != nil {
		t.Fatal(err)
	}
	cp := waitFor(t, ns, "to-ledger", tokenCondition(metav1.ConditionTrue, v1alpha1.ReasonTokenProjected))
	if cp.Status.Token != nil || controllerutil.ContainsFinalizer(cp, v1alpha1.FinalizerTokens) {
		t.Errorf("status.token %+v, finalizers %v", cp.Status.Token, cp.Finalizers)
	}
	if a := anchors(t, ns, cp.UID); len(a) != 0 {
		t.Errorf("anchors left behind: %d", len(a))
	}
	if err := env.Client.Get(context.Background(), types.NamespacedName{Namespace: ns, Name: "to-ledger-token"}, &corev1.Secret{}); !apierrors.IsNotFound(err) {
		t.Errorf("token Secret: %v", err)
	}
}

// Someone deleting the anchor revokes the token; the operator notices and
// issues a new one.
func TestDeletedAnchorIsReplaced(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	ns := setupNamespace(t, "to-ledger", true)
	create(t, secretPolicy(ns, "to-ledger"))
	first := waitFor(t, ns, "to-ledger", tokenIssued).Status.Token
	if err := env.Client.Delete(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: first.Anchor}}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, ns, "to-ledger", func(cp *v1alpha1.ConnectionPolicy) error {
		if err := tokenIssued(cp); err != nil {
			return err
		}
		if cp.Status.Token.Anchor == first.Anchor {
			return fmt.Errorf("not replaced yet")
		}
		return nil
	})
	accepted(t, tokenIn(t, ns, "to-ledger-token"), ns)
}

// mintWorkerRole may mint the tokens of the ServiceAccount worker.
func mintWorkerRole(ns string) *rbacv1.Role {
	return &rbacv1.Role{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "mint-worker"},
		Rules: []rbacv1.PolicyRule{{
			APIGroups: []string{""}, Resources: []string{"serviceaccounts/token"},
			ResourceNames: []string{"worker"}, Verbs: []string{"create"},
		}},
	}
}

func userSubject(name string) rbacv1.Subject {
	return rbacv1.Subject{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: name}
}

// Each reconcile rebuilds the schedule from status and the token Secret, as
// a restarted operator does: with the token status lost, the operator
// takes the token in the Secret back instead of issuing a new one.
func TestScheduleIsRebuiltFromTheSecretWithoutReissuing(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	ns := setupNamespace(t, "to-ledger", true)
	create(t, secretPolicy(ns, "to-ledger"))
	cp := waitFor(t, ns, "to-ledger", tokenIssued)
	first := cp.Status.Token
	calls := requester.callsIn(ns)

	lost := cp.DeepCopy()
	lost.Status.Token = nil
	if err := env.Client.Status().Patch(ctx, lost, client.MergeFrom(cp)); err != nil {
		t.Fatal(err)
	}
	rebuilt := waitFor(t, ns, "to-ledger", func(cp *v1alpha1.ConnectionPolicy) error {
		if cp.Status.Token == nil || cp.Status.Token.RenewAt == nil {
			return fmt.Errorf("status.token not rebuilt yet: %+v", cp.Status.Token)
		}
		return tokenIssued(cp)
	}).Status.Token
	if rebuilt.CredentialID != first.CredentialID || rebuilt.Anchor != first.Anchor || !rebuilt.ExpiresAt.Equal(first.ExpiresAt) ||
		rebuilt.RequestedExpirationSeconds != 900 || rebuilt.GrantedExpirationSeconds != 900 {
		t.Errorf("rebuilt %+v, was %+v", rebuilt, first)
	}
	if d := rebuilt.RenewAt.Sub(rebuilt.IssuedAt.Time); d < 509*time.Second || d > 600*time.Second {
		t.Errorf("rebuilt renewal %s after issue", d)
	}
	if n := requester.callsIn(ns) - calls; n != 0 {
		t.Errorf("%d tokens requested while the one in the Secret was fresh", n)
	}
}
