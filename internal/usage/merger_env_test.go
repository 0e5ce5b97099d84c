package usage_test

import (
	"context"
	"slices"
	"strings"
	"sync"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/sallyport/sallyport/api/v1alpha1"
	"github.com/sallyport/sallyport/internal/store"
	"github.com/sallyport/sallyport/internal/usage"
)

// knownStore serves ResourcePolicies "api" (uid-api), "jobs" (uid-jobs)
// and the DryRun "dry" (uid-dry, generation 4).
func knownStore(t *testing.T) *store.Store {
	return usage.BuildStore(t, nil, []*v1alpha1.ResourcePolicy{
		usage.ResPolicy("ledger", "api", "uid-api", 1, false, "read", "write"),
		usage.ResPolicy("ledger", "jobs", "uid-jobs", 1, false, "run"),
		usage.ResPolicy("ledger", "dry", "uid-dry", 4, true, "read"),
	})
}

func twoReplicas(t *testing.T, ns string) (p0, p1 *usage.Pod, cm0, cm1 *corev1.ConfigMap) {
	p0, p1 = pod(t, ns, "sallyport-0"), pod(t, ns, "sallyport-1")
	cm0 = putReport(t, ns, report("sallyport-0", p0, map[types.UID]*usage.Policy{
		"uid-api": resGrants("api", map[string]usage.Grant{"read": {Decisions: 3, Last: 1000, Since: 100}}),
		"uid-dry": {Kind: usage.KindResource, Namespace: "ledger", Name: "dry", Shadow: &usage.Shadow{Generation: 4, Decisions: 5, WouldDeny: 1, LastDisagreement: 900}},
	}))
	cm1 = putReport(t, ns, report("sallyport-1", p1, map[types.UID]*usage.Policy{
		"uid-api":  resGrants("api", map[string]usage.Grant{"read": {Decisions: 4, Last: 800, Since: 50}, "write": {Decisions: 1, Last: 700, Since: 50}}),
		"uid-jobs": resGrants("jobs", map[string]usage.Grant{"run": {Since: 60}}),
		"uid-dry":  {Kind: usage.KindResource, Namespace: "ledger", Name: "dry", Shadow: &usage.Shadow{Generation: 4, Decisions: 2, WouldAllow: 2, LastDisagreement: 950}},
	}))
	return p0, p1, cm0, cm1
}

// wantTwo is the merge of twoReplicas' reports.
func wantTwo() map[types.UID]*usage.Policy {
	return map[types.UID]*usage.Policy{
		"uid-api":  resGrants("api", map[string]usage.Grant{"read": {Decisions: 7, Last: 1000, Since: 50}, "write": {Decisions: 1, Last: 700, Since: 50}}),
		"uid-jobs": resGrants("jobs", map[string]usage.Grant{"run": {Since: 60}}),
		"uid-dry":  {Kind: usage.KindResource, Namespace: "ledger", Name: "dry", Shadow: &usage.Shadow{Generation: 4, Decisions: 7, WouldDeny: 1, WouldAllow: 2, LastDisagreement: 950}},
	}
}

// The reports of two live replicas merge by sum, and nothing is archived.
func TestMergeLiveReports(t *testing.T) {
	ns := env.Namespace(t, nil)
	twoReplicas(t, ns)
	v := merge(t, newMerger(ns, knownStore(t)))
	samePolicies(t, "merged view", v.Policies, wantTwo())
	if cm, _ := getArchive(t, ns); cm != nil {
		t.Error("an archive was written though no replica is gone")
	}
}

// A report whose pod is gone (deleted, or replaced by a pod of the same
// name) is folded into the archive and deleted, and the merged view is
// exactly what it was before the fold; a new leader merges the same view.
func TestMergeFoldsGoneReplicas(t *testing.T) {
	ns := env.Namespace(t, nil)
	st := knownStore(t)
	_, _, cm0, cm1 := twoReplicas(t, ns)
	m := newMerger(ns, st)
	samePolicies(t, "before the fold", merge(t, m).Policies, wantTwo())

	// sallyport-1 is gone.
	deletePod(t, ns, "sallyport-1")
	samePolicies(t, "after folding sallyport-1", merge(t, m).Policies, wantTwo())
	if cm, _ := getReport(t, ns, cm1.Name); cm != nil {
		t.Error("the folded report of sallyport-1 still exists")
	}
	archiveCM, archive := getArchive(t, ns)
	if archiveCM == nil {
		t.Fatal("no archive")
	}
	if archiveCM.Labels[usage.LabelRole] != usage.RoleArchive {
		t.Errorf("archive labels %v", archiveCM.Labels)
	}
	if !slices.Contains(archive.Folded, cm1.UID) {
		t.Errorf("archive's folded %v does not list the folded report's UID %s", archive.Folded, cm1.UID)
	}
	if g := archive.Policies["uid-api"].Grants["read"]; g.Decisions != 4 {
		t.Errorf("archive read = %+v, want sallyport-1's 4", g)
	}

	// sallyport-0 is replaced by a new pod of the same name: its report
	// is of a pod that is gone.
	deletePod(t, ns, "sallyport-0")
	pod(t, ns, "sallyport-0")
	samePolicies(t, "after folding sallyport-0", merge(t, m).Policies, wantTwo())
	if cm, _ := getReport(t, ns, cm0.Name); cm != nil {
		t.Error("the report of the replaced pod sallyport-0 still exists")
	}
	_, archive = getArchive(t, ns)
	samePolicies(t, "archive after both folds", archive.Policies, wantTwo())

	// Once the folded reports are gone, the archive forgets their UIDs;
	// the view stays.
	samePolicies(t, "a merge later", merge(t, m).Policies, wantTwo())
	if _, archive = getArchive(t, ns); len(archive.Folded) != 0 {
		t.Errorf("archive still lists folded %v after their reports are gone", archive.Folded)
	}

	// A new leader, with no memory, merges the same view.
	samePolicies(t, "a new leader's view", merge(t, newMerger(ns, st)).Policies, wantTwo())
}

// A fold interrupted after the archive write (the archive lists the
// report's UID, the report still exists) deletes the report and does not
// count it twice.
func TestMergeInterruptedFold(t *testing.T) {
	ns := env.Namespace(t, nil)
	st := knownStore(t)
	gone := &usage.Pod{Name: "sallyport-9", UID: "no-such-pod"}
	cm := putReport(t, ns, report("sallyport-9", gone, map[types.UID]*usage.Policy{
		"uid-api": resGrants("api", map[string]usage.Grant{"read": {Decisions: 4, Last: 800, Since: 50}}),
	}))
	archive := report("", nil, map[types.UID]*usage.Policy{
		"uid-api": resGrants("api", map[string]usage.Grant{"read": {Decisions: 10, Last: 800, Since: 50}}),
	})
	archive.Replica, archive.Folded = "", []types.UID{cm.UID}
	putArchive(t, ns, archive)

	m := newMerger(ns, st)
	want := map[types.UID]*usage.Policy{"uid-api": resGrants("api", map[string]usage.Grant{"read": {Decisions: 10, Last: 800, Since: 50}})}
	samePolicies(t, "view", merge(t, m).Policies, want)
	if got, _ := getReport(t, ns, cm.Name); got != nil {
		t.Error("the report the archive already holds was not deleted")
	}
	_, a := getArchive(t, ns)
	samePolicies(t, "archive", a.Policies, want)
	samePolicies(t, "view a merge later", merge(t, m).Policies, want)
	if _, a = getArchive(t, ns); len(a.Folded) != 0 || a.Policies["uid-api"].Grants["read"].Decisions != 10 {
		t.Errorf("archive a merge later = %s, want read 10 and no folded UIDs", dump(a))
	}
}

// Policies the store does not know are dropped from the archive and the
// view, whether they come from the archive or a live report.
func TestMergeDropsUnknownPolicies(t *testing.T) {
	ns := env.Namespace(t, nil)
	p0 := pod(t, ns, "sallyport-0")
	putReport(t, ns, report("sallyport-0", p0, map[types.UID]*usage.Policy{
		"uid-api":     resGrants("api", map[string]usage.Grant{"read": {Decisions: 1}}),
		"uid-deleted": resGrants("deleted", map[string]usage.Grant{"read": {Decisions: 2}}),
	}))
	archive := report("", nil, map[types.UID]*usage.Policy{
		"uid-jobs": resGrants("jobs", map[string]usage.Grant{"run": {Decisions: 3}}),
		"uid-old":  resGrants("old", map[string]usage.Grant{"read": {Decisions: 4}}),
	})
	putArchive(t, ns, archive)
	v := merge(t, newMerger(ns, knownStore(t)))
	samePolicies(t, "view", v.Policies, map[types.UID]*usage.Policy{
		"uid-api":  resGrants("api", map[string]usage.Grant{"read": {Decisions: 1}}),
		"uid-jobs": resGrants("jobs", map[string]usage.Grant{"run": {Decisions: 3}}),
	})
	_, a := getArchive(t, ns)
	samePolicies(t, "archive", a.Policies, map[types.UID]*usage.Policy{
		"uid-jobs": resGrants("jobs", map[string]usage.Grant{"run": {Decisions: 3}}),
	})
}

// A report without a pod (a replica out of a cluster) is never folded.
func TestMergeNeverFoldsOutOfCluster(t *testing.T) {
	ns := env.Namespace(t, nil)
	cm := putReport(t, ns, report("laptop.example.com", nil, map[types.UID]*usage.Policy{
		"uid-api": resGrants("api", map[string]usage.Grant{"read": {Decisions: 2}}),
	}))
	m := newMerger(ns, knownStore(t))
	for range 2 {
		samePolicies(t, "view", merge(t, m).Policies, map[types.UID]*usage.Policy{
			"uid-api": resGrants("api", map[string]usage.Grant{"read": {Decisions: 2}}),
		})
	}
	if got, _ := getReport(t, ns, cm.Name); got == nil {
		t.Error("the out-of-cluster report was deleted")
	}
	if a, _ := getArchive(t, ns); a != nil {
		t.Error("the out-of-cluster report was archived")
	}
}

// Subscribers are told exactly the policies whose merged usage changed: all
// on the first merge, none when nothing changed or a report was only
// folded, the one that changed after a report changed.
func TestMergeNotifiesChanges(t *testing.T) {
	ns := env.Namespace(t, nil)
	_, _, cm0, _ := twoReplicas(t, ns)
	m := newMerger(ns, knownStore(t))
	var mu sync.Mutex
	var got []string
	m.Subscribe(func(c usage.Changed) {
		mu.Lock()
		defer mu.Unlock()
		got = append(got, c.Kind+" "+c.String())
	})
	take := func() []string {
		mu.Lock()
		defer mu.Unlock()
		out := got
		got = nil
		slices.Sort(out)
		return out
	}
	expect := func(what string, want ...string) {
		t.Helper()
		if g := take(); !slices.Equal(g, want) {
			t.Errorf("%s: notified %q, want %q", what, g, want)
		}
	}

	merge(t, m)
	expect("first merge", "ResourcePolicy ledger/api", "ResourcePolicy ledger/dry", "ResourcePolicy ledger/jobs")
	merge(t, m)
	expect("nothing changed")

	// sallyport-0 counted one more read of api.
	_, r0 := getReport(t, ns, cm0.Name)
	g := r0.Policies["uid-api"].Grants["read"]
	g.Decisions++
	r0.Policies["uid-api"].Grants["read"] = g
	if err := env.Client.Get(context.Background(), client.ObjectKeyFromObject(cm0), cm0); err != nil {
		t.Fatal(err)
	}
	if err := usage.Encode(cm0, r0); err != nil {
		t.Fatal(err)
	}
	if err := env.Client.Update(context.Background(), cm0); err != nil {
		t.Fatal(err)
	}
	merge(t, m)
	expect("api's read changed", "ResourcePolicy ledger/api")

	deletePod(t, ns, "sallyport-1")
	merge(t, m)
	expect("a fold")
}

// An unreadable archive makes the merge fail and is left as it is, and no
// report is folded into it.
func TestMergeUnreadableArchive(t *testing.T) {
	ns := env.Namespace(t, nil)
	cm := putReport(t, ns, report("sallyport-9", &usage.Pod{Name: "sallyport-9", UID: "gone"}, map[types.UID]*usage.Policy{
		"uid-api": resGrants("api", map[string]usage.Grant{"read": {Decisions: 1}}),
	}))
	bad := &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: usage.ArchiveName(0), Labels: map[string]string{usage.LabelRole: usage.RoleArchive, usage.LabelShard: "0"}},
		BinaryData: map[string][]byte{"usage.json.gz": []byte("not gzip")},
	}
	if err := env.Client.Create(context.Background(), bad); err != nil {
		t.Fatal(err)
	}
	m := newMerger(ns, knownStore(t))
	err := m.Merge(context.Background())
	if err == nil || !strings.Contains(err.Error(), usage.ArchiveName(0)) {
		t.Fatalf("merge = %v, want an error naming the archive", err)
	}
	if m.View() != nil {
		t.Error("a view was published from a failed merge")
	}
	after := &corev1.ConfigMap{}
	if err := env.Client.Get(context.Background(), client.ObjectKeyFromObject(bad), after); err != nil {
		t.Fatal(err)
	}
	if after.ResourceVersion != bad.ResourceVersion || string(after.BinaryData["usage.json.gz"]) != "not gzip" {
		t.Error("the unreadable archive was overwritten")
	}
	if got, _ := getReport(t, ns, cm.Name); got == nil {
		t.Error("a report was deleted though it could not be folded")
	}
}

// A policy that no report holds any more (its only report deleted by hand)
// is notified too, so its status is looked at again.
func TestMergeNotifiesRemovals(t *testing.T) {
	ns := env.Namespace(t, nil)
	cm := putReport(t, ns, report("laptop", nil, map[types.UID]*usage.Policy{
		"uid-jobs": resGrants("jobs", map[string]usage.Grant{"run": {Decisions: 1}}),
	}))
	m := newMerger(ns, knownStore(t))
	var mu sync.Mutex
	var got []string
	m.Subscribe(func(c usage.Changed) {
		mu.Lock()
		defer mu.Unlock()
		got = append(got, c.String())
	})
	merge(t, m)
	if err := env.Client.Delete(context.Background(), cm); err != nil {
		t.Fatal(err)
	}
	merge(t, m)
	mu.Lock()
	defer mu.Unlock()
	if want := []string{"ledger/jobs", "ledger/jobs"}; !slices.Equal(got, want) {
		t.Errorf("notified %q, want %q (appeared, then gone)", got, want)
	}
}

// A report without a shard label, and one that does not decode, are skipped
// (and logged): the merge goes on with the others and deletes neither.
func TestMergeSkipsBadReports(t *testing.T) {
	ns := env.Namespace(t, nil)
	putReport(t, ns, report("laptop", nil, map[types.UID]*usage.Policy{
		"uid-api": resGrants("api", map[string]usage.Grant{"read": {Decisions: 2}}),
	}))
	noShard := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "sallyport-usage-stray",
		Labels: map[string]string{usage.LabelRole: usage.RoleReplica}}}
	garbled := &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "sallyport-usage-garbled-0",
			Labels: map[string]string{usage.LabelRole: usage.RoleReplica, usage.LabelShard: "0"}},
		BinaryData: map[string][]byte{"usage.json.gz": []byte("not gzip")},
	}
	for _, cm := range []*corev1.ConfigMap{noShard, garbled} {
		if err := env.Client.Create(context.Background(), cm); err != nil {
			t.Fatal(err)
		}
	}
	samePolicies(t, "view", merge(t, newMerger(ns, knownStore(t))).Policies, map[types.UID]*usage.Policy{
		"uid-api": resGrants("api", map[string]usage.Grant{"read": {Decisions: 2}}),
	})
	for _, cm := range []*corev1.ConfigMap{noShard, garbled} {
		if err := env.Client.Get(context.Background(), client.ObjectKeyFromObject(cm), &corev1.ConfigMap{}); err != nil {
			t.Errorf("%s: %v (a bad report must be left for a person to look at)", cm.Name, err)
		}
	}
}
