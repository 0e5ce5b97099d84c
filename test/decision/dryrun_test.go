package decision_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/sallyport/sallyport/api/v1alpha1"
	"github.com/sallyport/sallyport/internal/testenv"
)

// A DryRun ResourcePolicy beside the enforced one, through the real
// operator and decision server with real tokens: every answer is the
// enforced policy's, every shadow decision is counted exactly, and each
// disagreement is one marked line in the decision log.
func TestDryRunThroughTheServer(t *testing.T) {
	f := setup(t)
	ctx := context.Background()
	next := &v1alpha1.ResourcePolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: f.serviceNS, Name: "ledger-api-next"},
		Spec: v1alpha1.ResourcePolicySpec{
			Enforcement: v1alpha1.EnforcementDryRun,
			Service:     "ledger-api", Class: "ledger", Classification: v1alpha1.ClassificationConfidential,
			Rules: []v1alpha1.Rule{{
				// Tighter: only entry 1.
				Name: "read-entry-1", Effect: v1alpha1.EffectAllow, Actions: []string{"GET"}, Resources: []string{"/entries/1"},
				Scopes: []v1alpha1.Scope{"ledger.read"}, Connections: []v1alpha1.ConnectionRef{{Namespace: f.callerNS, Name: "to-ledger"}},
			}},
		},
	}
	if err := env.Client.Create(ctx, next); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 30*time.Second, func() error {
		if _, ok := op.Store.Snapshot().ResourceByService(v1alpha1.EnforcementDryRun, f.serviceNS, "ledger-api"); !ok {
			return fmt.Errorf("the DryRun policy is not served yet")
		}
		return nil
	})

	conn, res := f.callerNS+"/to-ledger", f.serviceNS+"/ledger-api-next"
	before := map[string]float64{}
	for _, r := range []string{"Agree", "WouldDeny", "WouldAllow"} {
		before[r] = dryRunCount(t, conn, res, r)
	}
	tok := mint(t, f.callerNS, "worker", 600, nil, f.ledgerAud)
	for i, name := range []string{"/entries/1", "/entries/2", "/entries/1", "/entries/3", "/entries/1", "/entries/4", "/entries/5"} {
		a := decide(t, f.request(tok, "GET", name, "ledger.read"))
		if !a.Allowed || a.Resource.Policy != f.serviceNS+"/ledger-api" {
			t.Fatalf("request %d for %s: %+v; the enforced policy must decide, and allow", i, name, a)
		}
	}
	for r, want := range map[string]float64{"Agree": 3, "WouldDeny": 4, "WouldAllow": 0} {
		if got := dryRunCount(t, conn, res, r) - before[r]; got != want {
			t.Errorf("sallyport_dryrun_decisions_total{result=%q} rose by %v, want %v", r, got, want)
		}
	}
	testenv.Eventually(t, 10*time.Second, func() error {
		raw, err := os.ReadFile(logPath)
		if err != nil {
			return err
		}
		n := 0
		for _, l := range bytes.Split(raw, []byte("\n")) {
			var e struct {
				Enforcement, Disagreement string
				Resource                  struct{ Policy, Reason string }
			}
			if json.Unmarshal(l, &e) != nil || e.Resource.Policy != res {
				continue
			}
			if e.Enforcement != "DryRun" || e.Disagreement != "WouldDeny" || e.Resource.Reason != "NoRuleMatched" {
				return fmt.Errorf("unexpected line %s", l)
			}
			n++
		}
		if n != 4 {
			return fmt.Errorf("%d DryRun lines for %s, want 4", n, res)
		}
		return nil
	})

	// The counts reach the policy's status, exactly, for its generation:
	// not yet promotable.
	waitDryRun(t, next, v1alpha1.DryRunStatus{Decisions: 7, WouldDeny: 4})
	if got := printedColumn(t, "resourcepolicies", f.serviceNS, next.Name, "Would Deny"); got != "4" {
		t.Errorf("kubectl get respol -o wide: Would Deny %q, want 4", got)
	}
	for result, want := range map[string]float64{"all": 7, "WouldDeny": 4, "WouldAllow": 0} {
		labels := map[string]string{"kind": "ResourcePolicy", "namespace": f.serviceNS, "policy": next.Name, "result": result}
		if got, ok := metricValue(t, "sallyport_policy_dryrun_decisions", labels); !ok || got != want {
			t.Errorf("sallyport_policy_dryrun_decisions{result=%q} = %v (exported: %v), want %v", result, got, ok, want)
		}
	}

	// A new generation that agrees starts from zero and, after decisions,
	// shows none that disagree: a pipeline may promote it.
	testenv.Eventually(t, 30*time.Second, func() error {
		if err := env.Client.Get(ctx, client.ObjectKeyFromObject(next), next); err != nil {
			return err
		}
		next.Spec.Rules[0].Resources = []string{"/entries/*"}
		return env.Client.Update(ctx, next)
	})
	testenv.Eventually(t, 30*time.Second, func() error {
		if p, ok := op.Store.Snapshot().ResourceByService(v1alpha1.EnforcementDryRun, f.serviceNS, "ledger-api"); !ok || p.Generation != next.Generation {
			return fmt.Errorf("generation %d of the DryRun policy is not served yet", next.Generation)
		}
		return nil
	})
	waitDryRun(t, next, v1alpha1.DryRunStatus{})
	for _, name := range []string{"/entries/2", "/entries/3", "/entries/9"} {
		if a := decide(t, f.request(tok, "GET", name, "ledger.read")); !a.Allowed {
			t.Fatalf("%s: %+v", name, a)
		}
	}
	waitDryRun(t, next, v1alpha1.DryRunStatus{Decisions: 3})
}

// waitDryRun waits until the policy's status.dryRun has want's counts for
// its current generation.
func waitDryRun(t *testing.T, rp *v1alpha1.ResourcePolicy, want v1alpha1.DryRunStatus) {
	t.Helper()
	testenv.Eventually(t, 30*time.Second, func() error {
		if err := env.Client.Get(context.Background(), client.ObjectKeyFromObject(rp), rp); err != nil {
			return err
		}
		d := rp.Status.DryRun
		if d == nil {
			return fmt.Errorf("no status.dryRun yet")
		}
		if d.Generation != rp.Generation || d.Decisions != want.Decisions || d.WouldDeny != want.WouldDeny || d.WouldAllow != want.WouldAllow {
			return fmt.Errorf("status.dryRun %+v, want generation %d with %d decisions, %d WouldDeny, %d WouldAllow",
				*d, rp.Generation, want.Decisions, want.WouldDeny, want.WouldAllow)
		}
		if rp.Status.Usage != nil {
			return fmt.Errorf("a DryRun policy has status.usage %+v", rp.Status.Usage)
		}
		return nil
	})
}

// dryRunCount reads sallyport_dryrun_decisions_total from the operator's
// registry.
func dryRunCount(t *testing.T, conn, res, result string) float64 {
	t.Helper()
	v, _ := metricValue(t, "sallyport_dryrun_decisions_total", map[string]string{"connection_policy": conn, "resource_policy": res, "result": result})
	return v
}

// metricValue reads the counter or gauge of a metric with labels from the
// operator's registry, and whether there is such a series.
func metricValue(t *testing.T, name string, labels map[string]string) (float64, bool) {
	t.Helper()
	families, err := ctrlmetrics.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range families {
		if mf.GetName() != name {
			continue
		}
	metrics:
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if want, ok := labels[lp.GetName()]; ok && want != lp.GetValue() {
					continue metrics
				}
			}
			if c := m.GetCounter(); c != nil {
				return c.GetValue(), true
			}
			return m.GetGauge().GetValue(), true
		}
	}
	return 0, false
}
