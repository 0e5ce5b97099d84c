package webhook

import (
	"context"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/sallyport/sallyport/api/v1alpha1"
	"github.com/sallyport/sallyport/internal/policy"
)

// A policy stored while the webhook was down may not compile; updates that
// leave its spec alone, and updates while it is being deleted, must still be
// admitted, or it could never be labelled or have its finalizers removed.
func TestUpdatesOfAnInvalidStoredPolicy(t *testing.T) {
	v := &ResourcePolicyValidator{Compiler: policy.NewCompiler(policy.CompilerOptions{})}
	old := &v1alpha1.ResourcePolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ledger", Name: "ledger-api"},
		Spec: v1alpha1.ResourcePolicySpec{
			Service: "ledger-api", Class: "ledger", Classification: v1alpha1.ClassificationInternal,
			Rules: []v1alpha1.Rule{{Name: "r", Effect: v1alpha1.EffectDeny, Actions: []string{"GET"}, Resources: []string{"/x"}, When: "request.nope"}},
		},
	}
	if _, err := v.ValidateCreate(context.Background(), old); err == nil {
		t.Fatal("the invalid policy was admitted on create")
	}

	labelled := old.DeepCopy()
	labelled.Labels = map[string]string{"team": "ledger"}
	if _, err := v.ValidateUpdate(context.Background(), old, labelled); err != nil {
		t.Errorf("label update rejected: %v", err)
	}

	deleting := old.DeepCopy()
	deleting.DeletionTimestamp = &metav1.Time{Time: time.Now()}
	deleting.Spec.Rules[0].When = "request.still.nope"
	if _, err := v.ValidateUpdate(context.Background(), old, deleting); err != nil {
		t.Errorf("update of a policy being deleted rejected: %v", err)
	}

	changed := old.DeepCopy()
	changed.Spec.Rules[0].Actions = []string{"POST"}
	if _, err := v.ValidateUpdate(context.Background(), old, changed); err == nil {
		t.Error("a spec change that still does not compile was admitted")
	}
}
