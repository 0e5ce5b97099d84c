package store

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/sallyport/sallyport/api/v1alpha1"
)

// An update that changes nothing the builder reads (the leader's status
// write, an annotation) must not rebuild the snapshot; every other update
// must.
func TestUnchangedUpdatesAreSkipped(t *testing.T) {
	base := &v1alpha1.ResourcePolicy{ObjectMeta: metav1.ObjectMeta{
		Namespace: "ledger", Name: "api", UID: "u1", Generation: 3, Labels: map[string]string{"team": "ledger"},
	}}
	status := base.DeepCopy()
	status.Status.ObservedGeneration = 3
	annotated := base.DeepCopy()
	annotated.Annotations = map[string]string{"note": "x"}
	spec := base.DeepCopy()
	spec.Generation = 4
	relabelled := base.DeepCopy()
	relabelled.Labels = map[string]string{"team": "audit"}
	recreated := base.DeepCopy()
	recreated.UID = "u2"

	for name, tc := range map[string]struct {
		next any
		want bool
	}{
		"status write":  {status, true},
		"annotation":    {annotated, true},
		"spec change":   {spec, false},
		"new labels":    {relabelled, false},
		"recreated":     {recreated, false},
		"not an object": {"tombstone", false},
	} {
		if got := unchanged(KindResource, base, tc.next); got != tc.want {
			t.Errorf("%s: unchanged = %t, want %t", name, got, tc.want)
		}
	}

	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "ledger", Labels: map[string]string{"env": "prod"}}}
	nsAnnotated := ns.DeepCopy()
	nsAnnotated.Annotations = map[string]string{"a": "b"}
	nsRelabelled := ns.DeepCopy()
	nsRelabelled.Labels = map[string]string{"env": "dev"}
	if !unchanged(kindNamespace, ns, nsAnnotated) {
		t.Error("a namespace annotation rebuilds the snapshot")
	}
	if unchanged(kindNamespace, ns, nsRelabelled) {
		t.Error("a namespace relabel does not rebuild the snapshot")
	}
}
