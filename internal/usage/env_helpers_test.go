package usage_test

import (
	"context"
	"encoding/json"
	"errors"
	"reflect"
	"strconv"
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

// putReport creates the report ConfigMaps of r's replica, one per shard
// that holds a policy, as its Reporter would, and returns the one of the
// lowest shard.
func putReport(t *testing.T, ns string, r *usage.Report) *corev1.ConfigMap {
	t.Helper()
	var first *corev1.ConfigMap
	for k, part := range split(r) {
		if len(part.Policies) == 0 {
			continue
		}
		cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{
			Namespace: ns, Name: usage.ReportName(r.Replica, k),
			Labels: map[string]string{usage.LabelRole: usage.RoleReplica, usage.LabelShard: strconv.Itoa(k)},
		}}
		create(t, cm, part)
		if first == nil {
			first = cm
		}
	}
	return first
}

// putArchive creates the archive shards that hold r's policies, each
// listing all of r's folded report UIDs.
func putArchive(t *testing.T, ns string, r *usage.Report) {
	t.Helper()
	for k, part := range split(r) {
		part.Folded = r.Folded
		if len(part.Policies) == 0 && len(part.Folded) == 0 {
			continue
		}
		create(t, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{
			Namespace: ns, Name: usage.ArchiveName(k),
			Labels: map[string]string{usage.LabelRole: usage.RoleArchive, usage.LabelShard: strconv.Itoa(k)},
		}}, part)
	}
}

func split(r *usage.Report) [usage.Shards]*usage.Report {
	var out [usage.Shards]*usage.Report
	for k := range out {
		out[k] = usage.NewReport()
		out[k].Replica, out[k].Pod, out[k].Written = r.Replica, r.Pod, r.Written
	}
	for uid, p := range r.Policies {
		out[usage.ShardOf(uid)].Policies[uid] = p
	}
	return out
}

func create(t *testing.T, cm *corev1.ConfigMap, r *usage.Report) {
	t.Helper()
	r.SchemaVersion = usage.SchemaVersion
	if err := usage.Encode(cm, r); err != nil {
		t.Fatal(err)
	}
	if err := env.Client.Create(context.Background(), cm); err != nil {
		t.Fatalf("create %s: %v", cm.Name, err)
	}
}

// getArchive reads every archive shard into one report (nil when there is
// none) and returns the lowest shard's ConfigMap.
func getArchive(t *testing.T, ns string) (*corev1.ConfigMap, *usage.Report) {
	t.Helper()
	var first *corev1.ConfigMap
	var all *usage.Report
	for k := range usage.Shards {
		cm, r := getReport(t, ns, usage.ArchiveName(k))
		if cm == nil {
			continue
		}
		if all == nil {
			first, all = cm, usage.NewReport()
		}
		all.Add(r)
		all.Folded = append(all.Folded, r.Folded...)
	}
	return first, all
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
