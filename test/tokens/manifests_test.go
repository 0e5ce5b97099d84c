package tokens_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sallyport/sallyport/internal/controlplane"
)

// The chart ships the same admission policy as config/ (which the suite
// installs and tests): their specs must not drift apart.
func TestChartAdmissionPolicyMatchesConfig(t *testing.T) {
	root, err := controlplane.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	read := func(rel string) []string {
		raw, err := os.ReadFile(filepath.Join(root, rel))
		if err != nil {
			t.Fatal(err)
		}
		var specs []string
		for _, doc := range strings.Split(string(raw), "\n---\n") {
			_, spec, ok := strings.Cut(doc, "\nspec:\n")
			if !ok {
				t.Fatalf("%s: a document without spec", rel)
			}
			spec, _, _ = strings.Cut(spec, "{{- end }}")
			specs = append(specs, strings.TrimSpace(spec))
		}
		return specs
	}
	config := read("config/admissionpolicy/secret_mode_policy.yaml")
	chart := read("charts/sallyport/templates/secret-mode-admission-policy.yaml")
	if len(config) != 2 || len(chart) != 2 {
		t.Fatalf("%d documents in config, %d in the chart; want 2 each", len(config), len(chart))
	}
	for i := range config {
		if config[i] != chart[i] {
			t.Errorf("document %d differs:\nconfig:\n%s\nchart:\n%s", i+1, config[i], chart[i])
		}
	}
}
