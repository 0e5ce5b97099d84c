package loader_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/types"

	"github.com/sallyport/sallyport/api/v1alpha1"
	"github.com/sallyport/sallyport/internal/loader"
	"github.com/sallyport/sallyport/internal/policy"
)

const connYAML = `apiVersion: policy.sallyport.dev/v1alpha1
kind: ConnectionPolicy
metadata:
  name: billing-to-ledger
  namespace: billing
spec:
  serviceAccountName: worker
  reach:
  - class: ledger
    scopes: [ledger.read]
  token:
    mode: Secret
`

const resYAML = `apiVersion: policy.sallyport.dev/v1alpha1
kind: ResourcePolicy
metadata:
  name: ledger-api
  namespace: ledger
spec:
  service: ledger-api
  class: ledger
  classification: confidential
  rules:
  - name: read-entries
    effect: Allow
    actions: [GET]
    resources: ["/entries/*"]
    scopes: [ledger.read]
    connections:
    - namespace: billing
      name: billing-to-ledger
`

const resJSON = `{
  "apiVersion": "policy.sallyport.dev/v1alpha1",
  "kind": "ResourcePolicy",
  "metadata": {"name": "ledger-api", "namespace": "ledger"},
  "spec": {
    "service": "ledger-api", "class": "ledger", "classification": "internal",
    "rules": [{"name": "no-deletes", "effect": "Deny", "actions": ["DELETE"], "resources": ["/**"]}]
  }
}`

const nsYAML = `apiVersion: v1
kind: Namespace
metadata:
  name: billing
  labels:
    team: payments
`

// write creates files (path relative to a new temporary directory) and
// returns the directory.
func write(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, content := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func newLoader(t *testing.T) *loader.Loader {
	t.Helper()
	l, err := loader.New(loader.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func TestLoadValid(t *testing.T) {
	list := `{"apiVersion": "v1", "kind": "List", "items": [` + resJSON + `,
  {"apiVersion": "policy.sallyport.dev/v1alpha1", "kind": "ConnectionPolicy",
   "metadata": {"name": "c2", "namespace": "billing"}, "spec": {"serviceAccountName": "other"}}]}`
	cases := []struct {
		name       string
		files      map[string]string
		args       []string // relative to the directory; empty means the directory
		conns, res int
		namespaces []string
	}{
		{name: "multi-document YAML", files: map[string]string{"p.yaml": "# leading comment\n---\n" + connYAML + "---\n" + resYAML + "---\n# empty\n---\n" + nsYAML}, args: []string{"p.yaml"}, conns: 1, res: 1, namespaces: []string{"billing", "ledger"}},
		{name: "JSON object", files: map[string]string{"r.json": resJSON}, args: []string{"r.json"}, res: 1, namespaces: []string{"ledger"}},
		{name: "JSON List", files: map[string]string{"l.json": list}, args: []string{"l.json"}, conns: 1, res: 1, namespaces: []string{"billing", "ledger"}},
		{name: "directory recursion skips hidden and other files", files: map[string]string{
			"a/conn.yml":       connYAML,
			"a/b/c/res.yaml":   resYAML,
			"a/README.md":      "not a policy",
			".git/bad.yaml":    "kind: Nonsense",
			"a/.hidden/x.yaml": "kind: Nonsense",
		}, conns: 1, res: 1, namespaces: []string{"billing", "ledger"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := write(t, tc.files)
			args := []string{dir}
			if len(tc.args) > 0 {
				args = nil
				for _, a := range tc.args {
					args = append(args, filepath.Join(dir, a))
				}
			}
			set, err := newLoader(t).Load(context.Background(), args...)
			if err != nil {
				t.Fatalf("Load: %v", err)
			}
			if len(set.ConnectionPolicies) != tc.conns || len(set.ResourcePolicies) != tc.res {
				t.Fatalf("loaded %d connection and %d resource policies, want %d and %d", len(set.ConnectionPolicies), len(set.ResourcePolicies), tc.conns, tc.res)
			}
			if len(set.Connections) != tc.conns || len(set.Resources) != tc.res {
				t.Errorf("compiled %d and %d", len(set.Connections), len(set.Resources))
			}
			for _, ns := range tc.namespaces {
				if l, ok := set.Snapshot.NamespaceLabels(ns); !ok || l["kubernetes.io/metadata.name"] != ns {
					t.Errorf("namespace %s: labels %v, %v", ns, l, ok)
				}
			}
		})
	}
}

// The defaults are the CRD's, as the API server applies them (see
// controllers TestConnectionPolicyBecomesReady on envtest), and the
// compiled policy serves from the snapshot.
func TestDefaultsAndSnapshot(t *testing.T) {
	dir := write(t, map[string]string{"p.yaml": nsYAML + "---\n" + connYAML + "---\n" + resYAML})
	set, err := loader.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	cp := set.ConnectionPolicies[0]
	if cp.Spec.Enforcement != v1alpha1.EnforcementEnforce {
		t.Errorf("enforcement = %q", cp.Spec.Enforcement)
	}
	if cp.Spec.MaxTokenLifetime.Duration != time.Hour {
		t.Errorf("maxTokenLifetime = %s", cp.Spec.MaxTokenLifetime.Duration)
	}
	if got := cp.Spec.Reach[0].MaxClassification; got != v1alpha1.ClassificationInternal {
		t.Errorf("reach maxClassification = %q", got)
	}
	if tok := cp.Spec.Token; tok == nil || tok.ExpirationSeconds == nil || *tok.ExpirationSeconds != 900 {
		t.Errorf("token = %+v", tok)
	}
	if rp := set.ResourcePolicies[0]; rp.Spec.Enforcement != v1alpha1.EnforcementEnforce {
		t.Errorf("resource enforcement = %q", rp.Spec.Enforcement)
	}
	// Deterministic creation times, oldest first in load order.
	if !cp.CreationTimestamp.Time.Equal(loader.ClockBase) || !set.ResourcePolicies[0].CreationTimestamp.Time.Equal(loader.ClockBase.Add(time.Second)) {
		t.Errorf("creation times %s, %s", cp.CreationTimestamp, set.ResourcePolicies[0].CreationTimestamp)
	}
	served, ok := set.Snapshot.ConnectionByAudience(v1alpha1.EnforcementEnforce, policy.DefaultAudience("billing", "billing-to-ledger"))
	if !ok || served.Ref != (types.NamespacedName{Namespace: "billing", Name: "billing-to-ledger"}) {
		t.Fatalf("snapshot does not serve the audience: %v %+v", ok, served)
	}
	if _, ok := set.Snapshot.ResourceByService(v1alpha1.EnforcementEnforce, "ledger", "ledger-api"); !ok {
		t.Error("snapshot does not serve the resource policy")
	}
	if l, _ := set.Snapshot.NamespaceLabels("billing"); l["team"] != "payments" {
		t.Errorf("billing labels = %v", l)
	}
}

func TestWarnings(t *testing.T) {
	dir := write(t, map[string]string{"p.yaml": strings.Replace(connYAML, "[ledger.read]", `["*"]`, 1)})
	set, err := loader.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(set.Warnings) != 1 || set.Warnings[0].Field != "spec.reach[0]" || set.Warnings[0].Line != 1 {
		t.Errorf("warnings = %+v", set.Warnings)
	}
}

func TestLoadErrors(t *testing.T) {
	conn := func(from, to string) string { return strings.Replace(connYAML, from, to, 1) }
	rules := func(from, to string) string {
		return strings.Replace(strings.Replace(resYAML, from, to, 1), "  name: ledger-api\n", "  name: ledger-api-2\n", 1)
	}
	many := make([]string, 65)
	for i := range many {
		many[i] = "s" + string(rune('a'+i%26)) + strings.Repeat("x", i/26)
	}
	cases := []struct {
		name string
		doc  string
		// want are substrings of one problem each.
		want []string
	}{
		{"bad enum", conn("scopes: [ledger.read]", "scopes: [ledger.read]\n    maxClassification: secret"),
			[]string{`(ConnectionPolicy billing/billing-to-ledger): spec.reach[0].maxClassification: Unsupported value: "secret"`}},
		{"too many scopes", conn("[ledger.read]", "["+strings.Join(many, ", ")+"]"),
			[]string{"spec.reach[0].scopes: Too many: 65: must have at most 64 items"}},
		{"expirationSeconds 3607 (CEL rule)", conn("mode: Secret", "mode: Secret\n    expirationSeconds: 3607"),
			[]string{"spec.token.expirationSeconds: Invalid value", "3607 is reserved"}},
		{"Allow rule without connections (CEL rule)", rules("    connections:\n    - namespace: billing\n      name: billing-to-ledger\n", ""),
			[]string{"spec.rules[0]"}},
		{"unknown field", conn("  reach:", "  reech: []\n  reach:"),
			[]string{"(ConnectionPolicy billing/billing-to-ledger): spec.reech: unknown field"}},
		{"CEL compile error", rules("    connections:", "    when: request.actio == 'GET'\n    connections:"),
			[]string{`spec.rules[0].when: Invalid value`, `rule "read-entries": line 1, column 8: undefined field 'actio'`}},
		{"unknown metadata field", conn("  namespace: billing\n", "  namespace: billing\n  lables: {a: b}\n"),
			[]string{`metadata: Invalid value`, `unknown field "lables"`}},
		{"bad name", conn("name: billing-to-ledger", "name: Billing_To_Ledger"),
			[]string{"metadata.name: Invalid value: \"Billing_To_Ledger\""}},
		{"missing namespace", conn("  namespace: billing\n", ""),
			[]string{"metadata.namespace: Required value: there is no default namespace offline"}},
		{"policy kind of another group", strings.Replace(connYAML, "policy.sallyport.dev/v1alpha1", "policy.sallyport.io/v1alpha1", 1),
			[]string{"policy.sallyport.io/v1alpha1 ConnectionPolicy is not supported"}},
		{"another kind in sallyport's group", strings.Replace(connYAML, "kind: ConnectionPolicy", "kind: ConnectionPolcy", 1),
			[]string{"policy.sallyport.dev/v1alpha1 ConnectionPolcy is not supported"}},
		{"no kind", "apiVersion: v1\nmetadata:\n  name: x\n", []string{"apiVersion and kind are required"}},
		{"wrong version", strings.Replace(connYAML, "v1alpha1", "v1", 1),
			[]string{"policy.sallyport.dev/v1 ConnectionPolicy is not supported"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			// The broken document is the second one, after a valid one and a
			// comment, so document index and line are checked too.
			content := resYAML + "---\n# comment\n" + tc.doc
			dir := write(t, map[string]string{"p.yaml": content})
			file := filepath.Join(dir, "p.yaml")
			set, err := loader.Load(dir)
			var le *loader.LoadError
			if !errors.As(err, &le) {
				t.Fatalf("error %v is not a *LoadError", err)
			}
			line := strings.Count(resYAML, "\n") + 3
			prefix := file + ":" + itoa(line) + ": document 2"
			msg := err.Error()
			for _, w := range tc.want {
				if !strings.Contains(msg, w) {
					t.Errorf("error lacks %q:\n%s", w, msg)
				}
			}
			for _, l := range strings.Split(msg, "\n") {
				if !strings.HasPrefix(l, prefix) {
					t.Errorf("problem %q does not start with %q", l, prefix)
				}
			}
			// The valid document still loads.
			if _, ok := set.Resources[types.NamespacedName{Namespace: "ledger", Name: "ledger-api"}]; !ok {
				t.Errorf("valid document not loaded: %+v", set)
			}
		})
	}
}

// Documents of other APIs beside the policies (a GitOps repository holds
// Deployments, kustomization files and test suites too) are skipped and
// listed, not errors.
func TestOtherAPIsAreSkipped(t *testing.T) {
	dir := write(t, map[string]string{
		"a.yaml":             connYAML + "---\napiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: x\n  namespace: billing\n",
		"b.json":             `{"apiVersion": "v1", "kind": "List", "items": [{"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}}]}`,
		"kustomization.yaml": "resources:\n  - a.yaml\n",
		"suite_test.yaml":    "apiVersion: test.sallyport.dev/v1alpha1\nkind: PolicyTestSuite\nmetadata:\n  name: s\n",
	})
	set, err := loader.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(set.ConnectionPolicies) != 1 {
		t.Errorf("%d ConnectionPolicies loaded, want 1", len(set.ConnectionPolicies))
	}
	var got []string
	for _, p := range set.Skipped {
		got = append(got, p.String())
	}
	wants := []string{
		"a.yaml:" + itoa(strings.Count(connYAML, "\n")+2) + ": document 2 (Deployment billing/x): apps/v1 Deployment is not a sallyport policy; skipped",
		"b.json:1: document 1, item 1 (Secret s): v1 Secret is not a sallyport policy; skipped",
		"kustomization.yaml:1: document 1: a kustomization file, not a policy; skipped",
		"suite_test.yaml:1: document 1 (PolicyTestSuite s): test.sallyport.dev/v1alpha1 PolicyTestSuite is not a sallyport policy; skipped",
	}
	if len(got) != len(wants) {
		t.Errorf("skipped %d documents, want %d:\n%s", len(got), len(wants), strings.Join(got, "\n"))
	}
	for _, w := range wants {
		if !slices.ContainsFunc(got, func(g string) bool { return strings.HasSuffix(g, w) }) {
			t.Errorf("skipped lacks %q:\n%s", w, strings.Join(got, "\n"))
		}
	}
}

func TestErrorsAreCollected(t *testing.T) {
	dir := write(t, map[string]string{
		"a.yaml":     strings.Replace(connYAML, "  namespace: billing\n", "", 1),
		"b/c.json":   `{"apiVersion": "v1", "kind": "List", "items": [{"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}}]}`,
		"d.yaml":     connYAML + "---\n" + connYAML,
		"e.yaml":     "a: [",
		"f.yaml":     "--- x\n",
		"g.yaml":     resYAML,
		"h/ok.yml":   nsYAML,
		"h/dup.yaml": nsYAML,
	})
	_, err := loader.Load(dir)
	var le *loader.LoadError
	if !errors.As(err, &le) {
		t.Fatalf("error %v is not a *LoadError", err)
	}
	wants := []string{
		"a.yaml:1: document 1 (ConnectionPolicy billing-to-ledger): metadata.namespace: Required value",
		"d.yaml:" + itoa(strings.Count(connYAML, "\n")+2) + ": document 2 (ConnectionPolicy billing/billing-to-ledger): defined twice: also at " + filepath.Join(dir, "d.yaml") + ":1: document 1",
		"e.yaml:1: document 1: invalid YAML or JSON",
		"f.yaml: line 1: invalid YAML document separator: x",
		"h/ok.yml:1: document 1 (Namespace billing): defined twice",
	}
	if len(le.Problems) != len(wants) {
		t.Errorf("%d problems, want %d:\n%s", len(le.Problems), len(wants), err)
	}
	for _, w := range wants {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error lacks %q:\n%s", w, err)
		}
	}
}

func TestNoPaths(t *testing.T) {
	if _, err := loader.Load(); err == nil {
		t.Error("no error for no paths")
	}
	if _, err := loader.Load(filepath.Join(t.TempDir(), "missing")); err == nil {
		t.Error("no error for a missing path")
	}
}

func itoa(i int) string { return strconv.Itoa(i) }
