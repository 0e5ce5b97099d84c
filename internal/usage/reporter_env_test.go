package usage_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"

	"github.com/sallyport/sallyport/api/v1alpha1"
	"github.com/sallyport/sallyport/internal/store"
	"github.com/sallyport/sallyport/internal/testenv"
	"github.com/sallyport/sallyport/internal/usage"
)

// apiStore is one process's store: ResourcePolicy ledger/api (uid-api) with
// rules read and write, its counters at zero.
func apiStore(t *testing.T) *store.Store {
	return usage.BuildStore(t, nil, []*v1alpha1.ResourcePolicy{usage.ResPolicy("ledger", "api", "uid-api", 1, false, "read", "write")})
}

func newReporter(ns, replica string, p *usage.Pod, st *store.Store, interval time.Duration) *usage.Reporter {
	return usage.NewReporter(env.Client, env.Client, st, usage.ReporterOptions{Namespace: ns, Replica: replica, Pod: p, Interval: interval}, logr.Discard())
}

func reads(t *testing.T, st *store.Store, n int) {
	for range n {
		usage.ServedRule(t, st, "ledger", "api", "read").Usage.Mark(time.Now())
	}
}

// Write creates the replica's report with its labels, its identity and
// the live counts.
func TestReporterWrites(t *testing.T) {
	ns := env.Namespace(t, nil)
	st := apiStore(t)
	reads(t, st, 3)
	p := &usage.Pod{Name: "Sallyport-0", UID: "pod-uid"}
	rep := newReporter(ns, "Sallyport-0", p, st, time.Hour)
	if err := rep.Adopt(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := rep.Write(context.Background()); err != nil {
		t.Fatal(err)
	}
	cm, r := getReport(t, ns, "sallyport-usage-sallyport-0-0")
	if cm == nil {
		t.Fatal("no report")
	}
	if cm.Labels[usage.LabelRole] != usage.RoleReplica || cm.Labels["app.kubernetes.io/name"] != "sallyport" {
		t.Errorf("labels %v", cm.Labels)
	}
	if r.Replica != "Sallyport-0" || r.Pod == nil || *r.Pod != *p {
		t.Errorf("report of %q, pod %+v; want Sallyport-0, %+v", r.Replica, r.Pod, p)
	}
	if g := r.Policies["uid-api"].Grants["read"]; g.Decisions != 3 || g.Last == 0 || g.Since == 0 {
		t.Errorf("read = %+v, want 3 decisions with a last use and a start", g)
	}

	// A later write updates the same object.
	reads(t, st, 2)
	if err := rep.Write(context.Background()); err != nil {
		t.Fatal(err)
	}
	cm2, r := getReport(t, ns, cm.Name)
	if cm2.UID != cm.UID || r.Policies["uid-api"].Grants["read"].Decisions != 5 {
		t.Errorf("second write: uid %s (was %s), read %+v; want the same object, 5 reads", cm2.UID, cm.UID, r.Policies["uid-api"].Grants["read"])
	}
}

// A process started later under the same replica name adopts its
// predecessor's report: its first write is the previous counts plus its
// own live counts.
func TestReporterAdoptsPredecessor(t *testing.T) {
	ns := env.Namespace(t, nil)
	first := apiStore(t)
	reads(t, first, 3)
	rep := newReporter(ns, "sallyport-0", nil, first, time.Hour)
	if err := rep.Adopt(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := rep.Write(context.Background()); err != nil {
		t.Fatal(err)
	}
	_, prev := getReport(t, ns, usage.ReportName("sallyport-0", 0))
	prevRead := prev.Policies["uid-api"].Grants["read"]

	// The process restarts: a new store with fresh counters.
	second := apiStore(t)
	reads(t, second, 2)
	usage.ServedRule(t, second, "ledger", "api", "write").Usage.Mark(time.Now())
	rep2 := newReporter(ns, "sallyport-0", nil, second, 100*time.Millisecond)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- rep2.Start(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Start: %v", err)
		}
	}()
	testenv.Eventually(t, 30*time.Second, func() error {
		_, r := getReport(t, ns, usage.ReportName("sallyport-0", 0))
		if !r.Written.After(prev.Written) {
			return errors.New("not written by the second process yet")
		}
		read, write := r.Policies["uid-api"].Grants["read"], r.Policies["uid-api"].Grants["write"]
		if read.Decisions != 5 || write.Decisions != 1 {
			return fmt.Errorf("read %+v, write %+v; want 3+2 reads and 1 write", read, write)
		}
		if read.Since != prevRead.Since {
			return fmt.Errorf("read tracked since %d, want the predecessor's %d", read.Since, prevRead.Since)
		}
		return nil
	})
}

// A report changed underneath (by another writer) makes Write fail, and
// the reporter counts on from what is there; a report deleted underneath
// makes it start over from its live counts.
func TestReporterReportChangedUnderneath(t *testing.T) {
	ns := env.Namespace(t, nil)
	st := apiStore(t)
	reads(t, st, 3)
	rep := newReporter(ns, "sallyport-0", nil, st, time.Hour)
	ctx := context.Background()
	if err := rep.Adopt(ctx); err != nil {
		t.Fatal(err)
	}
	if err := rep.Write(ctx); err != nil {
		t.Fatal(err)
	}

	// Someone else writes the report.
	cm, r := getReport(t, ns, usage.ReportName("sallyport-0", 0))
	r.Policies["uid-api"].Grants["read"] = usage.Grant{Decisions: 100, Last: 1, Since: 1}
	if err := usage.Encode(cm, r); err != nil {
		t.Fatal(err)
	}
	if err := env.Client.Update(ctx, cm); err != nil {
		t.Fatal(err)
	}
	reads(t, st, 1) // a write is due only when the counts changed
	err := rep.Write(ctx)
	if err == nil || !strings.Contains(err.Error(), "changed under this replica") {
		t.Fatalf("write over a changed report = %v, want an error saying it changed", err)
	}
	if _, r = getReport(t, ns, cm.Name); r.Policies["uid-api"].Grants["read"].Decisions != 100 {
		t.Errorf("the failed write changed the report: read %+v", r.Policies["uid-api"].Grants["read"])
	}
	if err := rep.Write(ctx); err != nil {
		t.Fatal(err)
	}
	if _, r = getReport(t, ns, cm.Name); r.Policies["uid-api"].Grants["read"].Decisions != 104 {
		t.Errorf("read = %+v, want what was there (100) plus the live 4", r.Policies["uid-api"].Grants["read"])
	}

	// Someone deletes the report.
	if err := env.Client.Delete(ctx, cm); err != nil {
		t.Fatal(err)
	}
	reads(t, st, 1)
	if err := rep.Write(ctx); err == nil {
		t.Fatal("write over a deleted report succeeded, want an error")
	}
	if err := rep.Write(ctx); err != nil {
		t.Fatal(err)
	}
	cm2, r := getReport(t, ns, cm.Name)
	if cm2 == nil || cm2.UID == cm.UID || r.Policies["uid-api"].Grants["read"].Decisions != 5 {
		t.Errorf("after deletion: read %+v, want a new report with the live 5", r.Policies["uid-api"].Grants["read"])
	}

	// Nothing changed: nothing is written.
	if err := rep.Write(ctx); err != nil {
		t.Fatal(err)
	}
	if cm3, _ := getReport(t, ns, cm.Name); cm3.ResourceVersion != cm2.ResourceVersion {
		t.Errorf("an unchanged report was written again (resourceVersion %s, was %s)", cm3.ResourceVersion, cm2.ResourceVersion)
	}
}
