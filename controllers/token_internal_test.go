package controllers

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/utils/ptr"

	"github.com/sallyport/sallyport/api/v1alpha1"
)

func TestAnchorPrefixFitsGenerateName(t *testing.T) {
	if got := anchorPrefix("to-ledger"); got != "to-ledger-anchor-" {
		t.Errorf("anchorPrefix = %q", got)
	}
	long := strings.Repeat("a", 250) + "-b"
	if got := anchorPrefix(long); len(got)+5 > 253 || !strings.HasSuffix(got, "-anchor-") {
		t.Errorf("anchorPrefix of a long name has %d characters: %q", len(got), got)
	}
}

func TestBindingSubject(t *testing.T) {
	for user, want := range map[string]string{
		"system:serviceaccount:sallyport-system:sallyport": "--serviceaccount sallyport-system:sallyport",
		"operator@example.com":                             "--user operator@example.com",
		"its ServiceAccount":                               "--serviceaccount <operator-namespace>:<operator-serviceaccount>",
	} {
		if got := bindingSubject(user); got != want {
			t.Errorf("bindingSubject(%q) = %q, want %q", user, got, want)
		}
	}
}

func TestClassify(t *testing.T) {
	ti := &TokenIssuer{identity: "system:serviceaccount:ops:sallyport"}
	ti.identityOnce.Do(func() {})
	cp := &v1alpha1.ConnectionPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "billing", Name: "p"},
		Spec: v1alpha1.ConnectionPolicySpec{ServiceAccountName: "worker"}}
	forbidden := apierrors.NewForbidden(schema.GroupResource{Resource: "serviceaccounts/token"}, "worker", errors.New("RBAC: nope"))
	a := ti.classify(context.Background(), cp, fmt.Errorf("request a token: %w", forbidden))
	if a.reason != v1alpha1.ReasonNotDelegated ||
		!strings.Contains(a.message, "kubectl create rolebinding sallyport-token-issuer --namespace billing --clusterrole sallyport-token-issuer --serviceaccount ops:sallyport") {
		t.Errorf("forbidden: %+v", a)
	}
	notFound := apierrors.NewNotFound(schema.GroupResource{Resource: "serviceaccounts"}, "worker")
	if a := ti.classify(context.Background(), cp, notFound); a.reason != v1alpha1.ReasonIssuanceFailed || !strings.Contains(a.message, "billing/worker does not exist") {
		t.Errorf("not found: %+v", a)
	}
	if a := ti.classify(context.Background(), cp, &secretConflictError{"billing", "p-token"}); a.reason != v1alpha1.ReasonSecretConflict {
		t.Errorf("conflict: %+v", a)
	}
	if a := ti.classify(context.Background(), cp, apierrors.NewServiceUnavailable("down")); a.reason != v1alpha1.ReasonIssuanceFailed {
		t.Errorf("unavailable: %+v", a)
	}
}

func TestOwnsSecret(t *testing.T) {
	cp := &v1alpha1.ConnectionPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "p", UID: "u-1"}}
	cp.APIVersion, cp.Kind = v1alpha1.GroupVersion.String(), "ConnectionPolicy"
	ours := func() *corev1.Secret {
		return &corev1.Secret{ObjectMeta: metav1.ObjectMeta{
			Labels: secretLabels(cp, v1alpha1.SecretRoleToken),
			OwnerReferences: []metav1.OwnerReference{{
				APIVersion: cp.APIVersion, Kind: cp.Kind, Name: "p", UID: "u-1", Controller: ptr.To(true),
			}},
		}}
	}
	if !ownsSecret(cp, ours(), v1alpha1.SecretRoleToken) {
		t.Error("its own Secret is not recognised")
	}
	for name, mutate := range map[string]func(*corev1.Secret){
		"unlabelled":                  func(s *corev1.Secret) { s.Labels = nil },
		"another role":                func(s *corev1.Secret) { s.Labels[v1alpha1.LabelSecretRole] = v1alpha1.SecretRoleAnchor },
		"another policy's label":      func(s *corev1.Secret) { s.Labels[v1alpha1.LabelPolicyUID] = "u-2" },
		"no owner":                    func(s *corev1.Secret) { s.OwnerReferences = nil },
		"owned by a namesake, gone":   func(s *corev1.Secret) { s.OwnerReferences[0].UID = "u-0" },
		"owned, but not a controller": func(s *corev1.Secret) { s.OwnerReferences[0].Controller = nil },
	} {
		s := ours()
		mutate(s)
		if ownsSecret(cp, s, v1alpha1.SecretRoleToken) {
			t.Errorf("%s: taken for its own", name)
		}
	}
}
