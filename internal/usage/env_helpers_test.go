package usage_test

import (
	"context"
	"encoding/json"
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/sallyport/sallyport/internal/store"
	"github.com/sallyport/sallyport/internal/testenv"
	"github.com/sallyport/sallyport/internal/usage"
)

var errPodStays = errors.New("pod still exists")

func dump(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

// pod creates a bare pod (no kubelet runs it) and returns its identity.
func pod(t *testing.T, ns, name string) *usage.Pod {
	t.Helper()
	ctx := context.Background()
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "default"}}
	if err := env.Client.Create(ctx, sa); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatalf("create ServiceAccount: %v", err)
	}
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: corev1.PodSpec{
			AutomountServiceAccountToken: ptr.To(false),
			Containers:                   []corev1.Container{{Name: "operator", Image: "sallyport:test"}},
		},
	}
	if err := env.Client.Create(ctx, p); err != nil {
		t.Fatalf("create pod %s: %v", name, err)
	}
	return &usage.Pod{Name: p.Name, UID: p.UID}
}

// deletePod deletes a pod at once and waits until it is gone.
func deletePod(t *testing.T, ns, name string) {
	t.Helper()
	ctx := context.Background()
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}}
	if err := env.Client.Delete(ctx, p, client.GracePeriodSeconds(0)); err != nil {
		t.Fatalf("delete pod %s: %v", name, err)
	}
	testenv.Eventually(t, 30*time.Second, func() error {
		err := env.Client.Get(ctx, client.ObjectKeyFromObject(p), p)
		if apierrors.IsNotFound(err) {
			return nil
		}
		if err == nil {
			return errPodStays
		}
		return err
	})
}

// putReport creates the report ConfigMap of r's replica, as its Reporter
// would, and returns it.
func putReport(t *testing.T, ns string, r *usage.Report) *corev1.ConfigMap {
	t.Helper()
	r.SchemaVersion = usage.SchemaVersion
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{
		Namespace: ns, Name: usage.ReportName(r.Replica),
		Labels: map[string]string{usage.LabelRole: usage.RoleReplica},
	}}
	if err := usage.Encode(cm, r); err != nil {
		t.Fatal(err)
	}
	if err := env.Client.Create(context.Background(), cm); err != nil {
		t.Fatalf("create report %s: %v", cm.Name, err)
	}
	return cm
}

// getReport reads a report or archive ConfigMap; nil when it does not exist.
func getReport(t *testing.T, ns, name string) (*corev1.ConfigMap, *usage.Report) {
	t.Helper()
	cm := &corev1.ConfigMap{}
	err := env.Client.Get(context.Background(), types.NamespacedName{Namespace: ns, Name: name}, cm)
	if apierrors.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		t.Fatalf("get %s: %v", name, err)
	}
	r, err := usage.Decode(cm)
	if err != nil {
		t.Fatalf("decode %s: %v", name, err)
	}
	return cm, r
}

// report is a report of one replica with the policies given.
func report(replica string, p *usage.Pod, policies map[types.UID]*usage.Policy) *usage.Report {
	r := usage.NewReport()
	r.Replica, r.Pod, r.Written = replica, p, time.Now().UTC()
	r.Policies = policies
	return r
}

func resGrants(name string, grants map[string]usage.Grant) *usage.Policy {
	return &usage.Policy{Kind: usage.KindResource, Namespace: "ledger", Name: name, Grants: grants}
}

func newMerger(ns string, st *store.Store) *usage.Merger {
	return usage.NewMerger(env.Client, env.Client, st, usage.MergerOptions{Namespace: ns, Interval: time.Hour}, logr.Discard())
}

func merge(t *testing.T, m *usage.Merger) *usage.View {
	t.Helper()
	if err := m.Merge(context.Background()); err != nil {
		t.Fatalf("merge: %v", err)
	}
	return m.View()
}

func samePolicies(t *testing.T, what string, got, want map[types.UID]*usage.Policy) {
	t.Helper()
	if !reflect.DeepEqual(got, want) {
		t.Errorf("%s:\n got %s\nwant %s", what, dump(got), dump(want))
	}
}
