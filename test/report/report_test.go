// Package report_test runs `sallyport report --kubeconfig` against a real
// API server: policies are created, their status.usage and status.dryRun
// written through the status subresource as the operator would, and the
// built binary must name exactly the unused grants, the grants too new to
// judge, the policies without usage data and the DryRun policies ready to
// promote.
package report_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/sallyport/sallyport/api/v1alpha1"
	"github.com/sallyport/sallyport/internal/controlplane"
	"github.com/sallyport/sallyport/internal/report"
	"github.com/sallyport/sallyport/internal/testenv"
)

var update = flag.Bool("update", false, "rewrite the golden files of testdata/golden")

var (
	env *testenv.Env
	// bin is the sallyport binary built for the package's tests.
	bin string
	// kubeconfig is a kubeconfig file for the control plane.
	kubeconfig string
)

func TestMain(m *testing.M) {
	testenv.Main(m, controlplane.Options{}, func(e *testenv.Env) (func(), error) {
		env = e
		dir, err := os.MkdirTemp("", "sallyport-report-")
		if err != nil {
			return nil, err
		}
		cleanup := func() { _ = os.RemoveAll(dir) }
		// The command is run as users run it, from a kubeconfig file:
		// the flag handling and the client it builds are part of the test.
		kubeconfig = filepath.Join(dir, "kubeconfig")
		if err := os.WriteFile(kubeconfig, e.KubeConfig, 0o600); err != nil {
			cleanup()
			return nil, err
		}
		root, err := controlplane.RepoRoot()
		if err != nil {
			cleanup()
			return nil, err
		}
		bin = filepath.Join(dir, "sallyport")
		build := exec.Command("go", "build", "-o", bin, "./cmd/sallyport")
		build.Dir = root
		build.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := build.CombinedOutput(); err != nil {
			cleanup()
			return nil, errors.Join(err, errors.New(string(out)))
		}
		return cleanup, nil
	})
}

// The window of the test: 2026-11-01T12:00:00Z to 2026-12-01T12:00:00Z.
var (
	until  = time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	since  = until.Add(-30 * 24 * time.Hour)
	old    = since.Add(-24 * time.Hour) // tracked for longer than the window
	recent = until.Add(-24 * time.Hour) // in the window
)

const policies = `apiVersion: policy.sallyport.dev/v1alpha1
kind: ConnectionPolicy
metadata: {name: to-ledger, namespace: billing}
spec:
  serviceAccountName: worker
  reach:
    - {class: ledger, scopes: [ledger.read, ledger.write]}
    - {class: audit, scopes: [audit.read]}
    - {class: reports, scopes: [reports.read]}
---
apiVersion: policy.sallyport.dev/v1alpha1
kind: ConnectionPolicy
metadata: {name: to-reports, namespace: billing}
spec:
  serviceAccountName: reporter
  reach:
    - {class: ledger, scopes: [ledger.read]}
---
apiVersion: policy.sallyport.dev/v1alpha1
kind: ConnectionPolicy
metadata: {name: to-ledger-tight, namespace: billing}
spec:
  enforcement: DryRun
  serviceAccountName: worker
  audience: sallyport.dev/billing/to-ledger
  reach:
    - {class: ledger, scopes: [ledger.read]}
---
apiVersion: policy.sallyport.dev/v1alpha1
kind: ResourcePolicy
metadata: {name: ledger-api, namespace: ledger}
spec:
  service: ledger-api
  class: ledger
  classification: internal
  rules:
    - {name: no-deletes, effect: Deny, actions: [DELETE], resources: ["/**"]}
    - {name: no-admin, effect: Deny, actions: [GET], resources: ["/admin/**"]}
    - name: read
      effect: Allow
      actions: [GET]
      resources: ["/entries/*"]
      scopes: [ledger.read]
      connections: [{namespace: billing, name: to-ledger}, {namespace: billing, name: to-reports}]
    - name: write
      effect: Allow
      actions: [POST]
      resources: ["/entries"]
      scopes: [ledger.write]
      connections: [{namespace: billing, name: to-ledger}]
    - name: export
      effect: Allow
      actions: [GET]
      resources: ["/export"]
      scopes: [ledger.read]
      connections: [{namespace: billing, name: to-ledger}]
---
apiVersion: policy.sallyport.dev/v1alpha1
kind: ResourcePolicy
metadata: {name: ledger-api-tight, namespace: ledger}
spec:
  enforcement: DryRun
  service: ledger-api
  class: ledger
  classification: internal
  rules:
    - name: read
      effect: Allow
      actions: [GET]
      resources: ["/entries/*"]
      scopes: [ledger.read]
      connections: [{namespace: billing, name: to-ledger}]
`

func TestReportFromCluster(t *testing.T) {
	ctx := context.Background()
	c := env.Client
	for _, ns := range []string{"billing", "ledger"} {
		if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
			t.Fatalf("create namespace %s: %v", ns, err)
		}
	}
	for _, doc := range bytes.Split([]byte(policies), []byte("\n---\n")) {
		var obj client.Object = &v1alpha1.ConnectionPolicy{}
		if bytes.Contains(doc, []byte("kind: ResourcePolicy")) {
			obj = &v1alpha1.ResourcePolicy{}
		}
		if err := yaml.UnmarshalStrict(doc, obj); err != nil {
			t.Fatal(err)
		}
		if err := c.Create(ctx, obj); err != nil {
			t.Fatalf("create %s: %v", obj.GetName(), err)
		}
	}

	// The status as the operator writes it. to-reports gets none: the
	// operator has not merged its usage yet.
	setStatus(t, &v1alpha1.ConnectionPolicy{}, "billing", "to-ledger", func(o client.Object) {
		o.(*v1alpha1.ConnectionPolicy).Status.Usage = &v1alpha1.ConnectionUsageStatus{Reach: []v1alpha1.ReachUsage{
			{Class: "ledger", GrantUsage: grant(40, recent, old)},
			{Class: "audit", GrantUsage: grant(0, time.Time{}, old)},
			{Class: "reports", GrantUsage: grant(0, time.Time{}, recent)}, // added a day ago
		}}
	})
	setStatus(t, &v1alpha1.ResourcePolicy{}, "ledger", "ledger-api", func(o client.Object) {
		o.(*v1alpha1.ResourcePolicy).Status.Usage = &v1alpha1.ResourceUsageStatus{Rules: []v1alpha1.RuleUsage{
			{Name: "no-deletes", Effect: v1alpha1.EffectDeny, GrantUsage: grant(2, recent, old)},
			{Name: "no-admin", Effect: v1alpha1.EffectDeny, GrantUsage: grant(0, time.Time{}, old)},
			{Name: "read", Effect: v1alpha1.EffectAllow, GrantUsage: grant(40, recent, old)},
			{Name: "write", Effect: v1alpha1.EffectAllow, GrantUsage: grant(3, old, old)}, // used before the window
			// export: not merged yet.
		}}
	})
	conn := setStatus(t, &v1alpha1.ConnectionPolicy{}, "billing", "to-ledger-tight", func(o client.Object) {
		o.(*v1alpha1.ConnectionPolicy).Status.DryRun = &v1alpha1.DryRunStatus{Generation: o.GetGeneration(), Decisions: 120, UpdatedAt: at(recent)}
	})
	res := setStatus(t, &v1alpha1.ResourcePolicy{}, "ledger", "ledger-api-tight", func(o client.Object) {
		o.(*v1alpha1.ResourcePolicy).Status.DryRun = &v1alpha1.DryRunStatus{Generation: o.GetGeneration(), Decisions: 80, UpdatedAt: at(recent)}
	})
	// A change to the tightened ResourcePolicy: its counts are now for an
	// older generation and say nothing about it.
	rp := res.(*v1alpha1.ResourcePolicy)
	rp.Spec.Rules[0].Actions = append(rp.Spec.Rules[0].Actions, "HEAD")
	if err := c.Update(ctx, rp); err != nil {
		t.Fatal(err)
	}
	if rp.Generation != 2 || conn.GetGeneration() != 1 {
		t.Fatalf("generations %d and %d, want 2 and 1", rp.Generation, conn.GetGeneration())
	}

	window := []string{"--kubeconfig", kubeconfig, "--until", until.Format(time.RFC3339), "--window", "720h"}
	out := run(t, window...)
	checkGolden(t, "testdata/golden/cluster.golden", out)

	var r report.Report
	if err := json.Unmarshal([]byte(run(t, append(window, "--format", "json")...)), &r); err != nil {
		t.Fatal(err)
	}
	check := func(what string, got, want any) {
		t.Helper()
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s = %v, want %v", what, got, want)
		}
	}
	check("ConnectionPolicies", []string{r.Connections[0].Policy, r.Connections[1].Policy}, []string{"billing/to-ledger", "billing/to-reports"})
	check("to-ledger unused reach", r.Connections[0].UnusedReach, []string{"audit"})
	check("to-ledger reach not tracked", r.Connections[0].NotTrackedReach, []string{"reports"})
	check("to-ledger suggested reach", classes(r.Connections[0].SuggestedReach), []string{"ledger", "reports"})
	check("to-reports without usage data", r.Connections[1].NoUsageData, true)
	check("to-reports unused reach", r.Connections[1].UnusedReach, []string{})
	check("ResourcePolicies", len(r.Resources), 1)
	check("ledger-api unused Allow rules", r.Resources[0].UnusedAllowRules, []string{"write"})
	check("ledger-api unused Deny rules", r.Resources[0].UnusedDenyRules, []string{"no-admin"})
	check("ledger-api rules not tracked", r.Resources[0].NotTrackedRules, []string{"export"})
	check("ledger-api suggested rules", ruleNames(r.Resources[0].SuggestedRules), []string{"no-deletes", "no-admin", "read", "export"})
	promotable := map[string]bool{}
	for _, d := range r.DryRun {
		promotable[d.Kind+" "+d.Policy] = d.Promotable
	}
	check("promotable", promotable, map[string]bool{
		"ConnectionPolicy billing/to-ledger-tight": true,
		"ResourcePolicy ledger/ledger-api-tight":   false, // counts of generation 1
	})

	// -n keeps to one namespace.
	if err := json.Unmarshal([]byte(run(t, append(window, "--format", "json", "-n", "ledger")...)), &r); err != nil {
		t.Fatal(err)
	}
	check("ConnectionPolicies in ledger", len(r.Connections), 0)
	check("ResourcePolicies in ledger", len(r.Resources), 1)
	check("DryRun policies in ledger", len(r.DryRun), 1)
}

// setStatus reads the policy, lets set change its status and writes it
// through the status subresource, as the operator does; it returns the
// policy as written.
func setStatus(t *testing.T, obj client.Object, ns, name string, set func(client.Object)) client.Object {
	t.Helper()
	ctx := context.Background()
	if err := env.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, obj); err != nil {
		t.Fatal(err)
	}
	set(obj)
	if err := env.Client.Status().Update(ctx, obj); err != nil {
		t.Fatalf("update the status of %s/%s: %v", ns, name, err)
	}
	return obj
}

// run runs the built binary's report command and returns its standard
// output, failing the test unless it exits 0.
func run(t *testing.T, args ...string) string {
	t.Helper()
	var stdout, stderr bytes.Buffer
	cmd := exec.Command(bin, append([]string{"report"}, args...)...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("sallyport report %v: %v\n%s", args, err, stderr.String())
	}
	return stdout.String()
}

func grant(decisions int64, lastUsed, trackedSince time.Time) v1alpha1.GrantUsage {
	g := v1alpha1.GrantUsage{Decisions: decisions, TrackedSince: at(trackedSince)}
	if !lastUsed.IsZero() {
		g.LastUsed = at(lastUsed)
	}
	return g
}

func at(t time.Time) *metav1.Time { return &metav1.Time{Time: t} }

func classes(reach []v1alpha1.Reach) []string {
	var out []string
	for _, r := range reach {
		out = append(out, string(r.Class))
	}
	return out
}

func ruleNames(rules []v1alpha1.Rule) []string {
	var out []string
	for _, r := range rules {
		out = append(out, r.Name)
	}
	return out
}

// checkGolden compares got with the golden file, or rewrites it with -update.
func checkGolden(t *testing.T, file, got string) {
	t.Helper()
	testenv.CheckGolden(t, file, got, *update)
}
