package loader_test

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/types"

	"github.com/sallyport/sallyport/internal/loader"
	"github.com/sallyport/sallyport/internal/store"
)

// lineOf returns the 1-based line of the first line of content that
// contains substr, after skipping skip such lines.
func lineOf(t *testing.T, content, substr string, skip int) int {
	t.Helper()
	for i, l := range strings.Split(content, "\n") {
		if strings.Contains(l, substr) {
			if skip == 0 {
				return i + 1
			}
			skip--
		}
	}
	t.Fatalf("%q not in content", substr)
	return 0
}

func TestFieldLines(t *testing.T) {
	res := `# a comment before the document
apiVersion: policy.sallyport.dev/v1alpha1
kind: ResourcePolicy
metadata:
  name: ledger-api
  namespace: ledger
  labels:
    app.kubernetes.io/name: ledger
spec:
  service: ledger-api
  class: ledger
  classification: confidential
  rules:
  - name: no-deletes
    effect: Deny
    actions: [DELETE]
    resources: ["/**"]
  - name: read-entries
    effect: Allow
    actions:
    - GET
    - HEAD
    resources: ["/entries/*"]
    connections:
    - namespace: billing
      name: billing-to-ledger
    when: |
      request.action == "GET" &&
        connection.age < duration("10m")
`
	content := connYAML + "---\n\n" + res
	list := `{"apiVersion": "v1", "kind": "List", "items": [
  {"apiVersion": "policy.sallyport.dev/v1alpha1", "kind": "ConnectionPolicy",
   "metadata": {"name": "c1", "namespace": "billing"},
   "spec": {"serviceAccountName": "a"}},
  {"apiVersion": "policy.sallyport.dev/v1alpha1", "kind": "ConnectionPolicy",
   "metadata": {"name": "c2", "namespace": "billing"},
   "spec": {"serviceAccountName": "b",
            "when": "connection.pod != \"\""}}]}`
	dir := write(t, map[string]string{"p.yaml": content, "l.json": list})
	set, err := loader.Load(filepath.Join(dir, "p.yaml"), filepath.Join(dir, "l.json"))
	if err != nil {
		t.Fatal(err)
	}
	rref := store.Ref{Kind: store.KindResource, NamespacedName: types.NamespacedName{Namespace: "ledger", Name: "ledger-api"}}
	cref := store.Ref{Kind: store.KindConnection, NamespacedName: types.NamespacedName{Namespace: "billing", Name: "billing-to-ledger"}}
	c2 := store.Ref{Kind: store.KindConnection, NamespacedName: types.NamespacedName{Namespace: "billing", Name: "c2"}}
	cases := []struct {
		ref  store.Ref
		path string
		want int
	}{
		{rref, "", lineOf(t, content, "kind: ResourcePolicy", 0) - 1},
		{rref, "metadata.name", lineOf(t, content, "name: ledger-api", 0)},
		{rref, "metadata.labels[app.kubernetes.io/name]", lineOf(t, content, "app.kubernetes.io/name", 0)},
		{rref, "spec.rules[0]", lineOf(t, content, "- name: no-deletes", 0)},
		{rref, "spec.rules[1]", lineOf(t, content, "- name: read-entries", 0)},
		{rref, "spec.rules[1].actions[1]", lineOf(t, content, "- HEAD", 0)},
		{rref, "spec.rules[1].connections[0].name", lineOf(t, content, "name: billing-to-ledger", 1)},
		{rref, "spec.rules[1].when", lineOf(t, content, "when: |", 0)},
		// Not written (a default): its closest written ancestor.
		{rref, "spec.enforcement", lineOf(t, content, "spec:", 1)},
		{rref, "spec.rules[7].when", lineOf(t, content, "  rules:", 0)},
		{cref, "spec.reach[0].scopes[0]", lineOf(t, content, "scopes: [ledger.read]", 0)},
		{cref, "spec.token.mode", lineOf(t, content, "mode: Secret", 0)},
		// A List item in JSON.
		{c2, "", 5},
		{c2, "spec.when", 8},
		{store.Ref{Kind: store.KindConnection, NamespacedName: types.NamespacedName{Namespace: "x", Name: "y"}}, "spec", 0},
	}
	for _, tc := range cases {
		if got := set.FieldLine(tc.ref, tc.path); got != tc.want {
			t.Errorf("FieldLine(%s, %q) = %d, want %d", tc.ref.Name, tc.path, got, tc.want)
		}
	}
	if got, want := set.ExpressionLine(rref, "spec.rules[1].when", 2), lineOf(t, content, `connection.age < duration("10m")`, 0); got != want {
		t.Errorf("ExpressionLine(line 2) = %d, want %d", got, want)
	}
	if got, want := set.ExpressionLine(c2, "spec.when", 1), 8; got != want {
		t.Errorf("ExpressionLine(JSON) = %d, want %d", got, want)
	}
}

// Problems carry the line of their field besides the document's.
func TestProblemFieldLines(t *testing.T) {
	doc := strings.Replace(resYAML, "    connections:", "    when: |\n      request.action == \"GET\" &&\n        request.actio == 'GET'\n    connections:", 1)
	doc = strings.Replace(doc, "  class: ledger\n", "  class: ledger\n  tier: x\n", 1)
	content := connYAML + "---\n" + doc
	dir := write(t, map[string]string{"p.yaml": content})
	_, err := loader.Load(dir)
	var le *loader.LoadError
	if !errors.As(err, &le) {
		t.Fatalf("error %v is not a *LoadError", err)
	}
	if len(le.Problems) != 1 {
		t.Fatalf("problems = %v", err)
	}
	p := le.Problems[0]
	if p.Type != loader.ProblemUnknownField || p.Field != "spec.tier" || p.FieldLine != lineOf(t, content, "tier: x", 0) || p.Line != lineOf(t, content, "apiVersion", 1) {
		t.Errorf("problem = %+v", p)
	}

	// Without the unknown field, the CEL error is the compiler's.
	content = strings.Replace(content, "  tier: x\n", "", 1)
	dir = write(t, map[string]string{"p.yaml": content})
	_, err = loader.Load(dir)
	if !errors.As(err, &le) || len(le.Problems) != 1 {
		t.Fatalf("error = %v", err)
	}
	p = le.Problems[0]
	if p.Type != loader.ProblemCompile || p.Field != "spec.rules[0].when" || p.FieldLine != lineOf(t, content, "when: |", 0) {
		t.Errorf("problem = %+v", p)
	}
	if !strings.Contains(p.Message, "line 2, column 10") {
		t.Errorf("message = %q", p.Message)
	}
}

func TestProblemTypes(t *testing.T) {
	dir := write(t, map[string]string{
		"a.yaml": "a: [",
		"b.yaml": strings.Replace(connYAML, "kind: ConnectionPolicy", "kind: ConnectionPolcy", 1),
		"c.yaml": strings.Replace(connYAML, "scopes: [ledger.read]", "scopes: [ledger.read]\n    maxClassification: secret", 1),
		"d.yaml": connYAML,
		"e.yaml": strings.Replace(connYAML, "mode: Secret", "mode: Secret\n  audience: kubernetes", 1),
	})
	_, err := loader.Load(dir, filepath.Join(dir, "missing.yaml"))
	var le *loader.LoadError
	if !errors.As(err, &le) {
		t.Fatalf("error %v is not a *LoadError", err)
	}
	got := map[string]loader.ProblemType{}
	for _, p := range le.Problems {
		got[filepath.Base(p.File)] = p.Type
	}
	want := map[string]loader.ProblemType{
		"a.yaml":       loader.ProblemSyntax,
		"b.yaml":       loader.ProblemKind,
		"c.yaml":       loader.ProblemSchema,
		"e.yaml":       loader.ProblemDuplicate, // d.yaml defines it first
		"missing.yaml": loader.ProblemFile,
	}
	for f, w := range want {
		if got[f] != w {
			t.Errorf("%s: type %q, want %q (%v)", f, got[f], w, err)
		}
	}
}

func TestNamespaceSources(t *testing.T) {
	dir := write(t, map[string]string{"p.yaml": nsYAML + "---\n" + resYAML})
	set, err := loader.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := set.NamespaceSources["billing"]; !ok {
		t.Errorf("billing not declared: %v", set.NamespaceSources)
	}
	if _, ok := set.NamespaceSources["ledger"]; ok {
		t.Errorf("ledger declared: %v", set.NamespaceSources)
	}
}

// A syntax error names the line of the file, not of the document.
func TestSyntaxErrorLine(t *testing.T) {
	content := connYAML + "---\n# comment\nspec:\n  a: b\n   c: d\n"
	dir := write(t, map[string]string{"p.yaml": content})
	_, err := loader.Load(dir)
	var le *loader.LoadError
	if !errors.As(err, &le) || len(le.Problems) != 1 {
		t.Fatalf("error = %v", err)
	}
	p := le.Problems[0]
	want := lineOf(t, content, "   c: d", 0)
	if p.Type != loader.ProblemSyntax || p.FieldLine != want || !strings.Contains(p.Message, "line "+itoa(want)) {
		t.Errorf("problem = %+v, want line %d", p, want)
	}
}
