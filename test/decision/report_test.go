package decision_test

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/sallyport/sallyport/api/v1alpha1"
	"github.com/sallyport/sallyport/internal/report"
	"github.com/sallyport/sallyport/internal/testenv"
)

// Scripted traffic through the real server, merged into the policies'
// status by the operator, and the report read from the cluster: it names
// exactly the grants the traffic never exercised (the audit reach of
// to-audit, the health rule, the no-deletes guard) and no other.
func TestReportFromClusterNamesUnexercisedGrants(t *testing.T) {
	f := setup(t)
	ctx := context.Background()
	// Uses land at least a second after tracking began (both have a
	// one-second resolution), so a window that reaches back exactly to
	// tracking's start holds every use.
	time.Sleep(1100 * time.Millisecond)
	tok := mint(t, f.callerNS, "worker", 600, nil, f.ledgerAud)
	const reads = 5
	for i := range reads {
		if a := decide(t, f.request(tok, "GET", fmt.Sprintf("/entries/%d", i), "ledger.read")); !a.Allowed {
			t.Fatalf("read %d: %+v", i, a)
		}
	}

	// Both kinds' status must show the reads: each is written by its own
	// controller, so one may lag the other.
	var conns []*v1alpha1.ConnectionPolicy
	var res []*v1alpha1.ResourcePolicy
	testenv.Eventually(t, 30*time.Second, func() error {
		var err error
		conns, res, err = listBoth(ctx, f.callerNS, f.serviceNS)
		if err != nil {
			return err
		}
		counted := map[string]bool{}
		for _, rp := range res {
			for _, r := range rp.Status.Usage.Rules {
				counted[rp.Name+"/"+r.Name] = r.Decisions == reads
			}
		}
		for _, cp := range conns {
			for _, r := range cp.Status.Usage.Reach {
				counted[cp.Name+"/"+r.Class] = r.Decisions == reads
			}
		}
		if !counted["ledger-api/read-entries"] || !counted["to-ledger/ledger"] {
			return fmt.Errorf("the %d reads are not yet in status.usage of both ledger-api's rule read-entries and to-ledger's reach ledger", reads)
		}
		return nil
	})

	// The window reaches back to when tracking began.
	var tracked time.Time
	for _, cp := range conns {
		for _, r := range cp.Status.Usage.Reach {
			tracked = latest(tracked, trackedSince(t, r.Class, r.TrackedSince))
		}
	}
	for _, rp := range res {
		for _, r := range rp.Status.Usage.Rules {
			tracked = latest(tracked, trackedSince(t, r.Name, r.TrackedSince))
		}
	}
	until := time.Now()
	rep := report.FromStatus(conns, res, until, until.Sub(tracked))

	unused := map[string][]string{}
	for _, c := range rep.Connections {
		unused[c.Policy] = append(unused[c.Policy], c.UnusedReach...)
	}
	for _, r := range rep.Resources {
		unused[r.Policy] = append(append(unused[r.Policy], r.UnusedAllowRules...), r.UnusedDenyRules...)
	}
	for k, v := range unused {
		if len(v) == 0 {
			delete(unused, k)
		}
		slices.Sort(v)
	}
	want := map[string][]string{
		f.callerNS + "/to-audit":    {"audit"},
		f.serviceNS + "/ledger-api": {"health", "no-deletes"},
	}
	if fmt.Sprint(unused) != fmt.Sprint(want) {
		t.Errorf("the report names %v unused, want exactly %v", unused, want)
	}

	// kubectl get shows the summary in its columns, as the API server
	// prints them from the CRD.
	if got := printedColumn(t, "resourcepolicies", f.serviceNS, "ledger-api", "Unused"); got != "0" {
		t.Errorf("kubectl get respol: Unused %q, want 0 (nothing tracked for 30 days yet)", got)
	}

	// The leader's per-policy metric counts the same grants, under the
	// operator's own window: 30 days, so none is tracked long enough yet.
	labels := map[string]string{"kind": "ResourcePolicy", "namespace": f.serviceNS, "policy": "ledger-api"}
	if got, ok := metricValue(t, "sallyport_policy_unused_grants", labels); !ok || got != 0 {
		t.Errorf("sallyport_policy_unused_grants of ledger-api = %v (exported: %v), want 0 under a 30-day window", got, ok)
	}
}

// printedColumn asks the API server for the table kubectl get prints and
// returns one cell of the named object's row.
func printedColumn(t *testing.T, resource, ns, name, column string) string {
	t.Helper()
	raw, err := clientset.RESTClient().Get().
		AbsPath("/apis", v1alpha1.GroupVersion.Group, v1alpha1.GroupVersion.Version, "namespaces", ns, resource).
		SetHeader("Accept", "application/json;as=Table;v=v1;g=meta.k8s.io").
		Do(context.Background()).Raw()
	if err != nil {
		t.Fatalf("get %s as a table: %v", resource, err)
	}
	var table metav1.Table
	if err := json.Unmarshal(raw, &table); err != nil {
		t.Fatal(err)
	}
	col := slices.IndexFunc(table.ColumnDefinitions, func(c metav1.TableColumnDefinition) bool { return c.Name == column })
	if col < 0 {
		t.Fatalf("%s has no printer column %q", resource, column)
	}
	for _, row := range table.Rows {
		var meta struct {
			Metadata metav1.ObjectMeta `json:"metadata"`
		}
		if err := json.Unmarshal(row.Object.Raw, &meta); err != nil {
			t.Fatal(err)
		}
		if meta.Metadata.Name == name {
			return fmt.Sprint(row.Cells[col])
		}
	}
	t.Fatalf("no row for %s/%s", ns, name)
	return ""
}

func listBoth(ctx context.Context, namespaces ...string) ([]*v1alpha1.ConnectionPolicy, []*v1alpha1.ResourcePolicy, error) {
	var conns []*v1alpha1.ConnectionPolicy
	var res []*v1alpha1.ResourcePolicy
	for _, ns := range namespaces {
		c, r, err := report.ListPolicies(ctx, env.Client, ns)
		if err != nil {
			return nil, nil, err
		}
		conns, res = append(conns, c...), append(res, r...)
	}
	for _, cp := range conns {
		if cp.Status.Usage == nil {
			return nil, nil, fmt.Errorf("%s/%s has no status.usage yet", cp.Namespace, cp.Name)
		}
	}
	for _, rp := range res {
		if rp.Status.Usage == nil {
			return nil, nil, fmt.Errorf("%s/%s has no status.usage yet", rp.Namespace, rp.Name)
		}
	}
	return conns, res, nil
}

func trackedSince(t *testing.T, grant string, ts *metav1.Time) time.Time {
	t.Helper()
	if ts == nil {
		t.Fatalf("grant %s has no trackedSince", grant)
	}
	return ts.Time
}

func latest(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}
