package loader_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"k8s.io/apimachinery/pkg/types"

	"github.com/sallyport/sallyport/internal/loader"
)

// FuzzLoad loads arbitrary file contents as a policy file. Invariants:
// nothing panics; an error is a *LoadError naming problems; a Set comes
// back either way; without an error every policy listed is compiled and
// served; and loading the same bytes again gives the same result.
func FuzzLoad(f *testing.F) {
	f.Add(connYAML)
	f.Add(resYAML)
	f.Add(connYAML + "---\n" + resYAML)
	f.Add(nsYAML + "---\n" + connYAML)
	f.Add(`{"apiVersion": "v1", "kind": "List", "items": [` + "{}" + `]}`)
	f.Add("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\n")
	f.Add("--- x\n")
	l, err := loader.New(loader.Options{})
	if err != nil {
		f.Fatal(err)
	}
	dir := f.TempDir()
	file := filepath.Join(dir, "policies.yaml")
	load := func(t *testing.T, content string) (*loader.Set, error) {
		if err := os.WriteFile(file, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return l.Load(context.Background(), file)
	}
	f.Fuzz(func(t *testing.T, content string) {
		set, err := load(t, content)
		if set == nil {
			t.Fatalf("no Set (error %v)", err)
		}
		if err != nil {
			var le *loader.LoadError
			if !errors.As(err, &le) || len(le.Problems) == 0 {
				t.Fatalf("error is not a *LoadError with problems: %v", err)
			}
		} else {
			for _, cp := range set.ConnectionPolicies {
				if set.Connections[types.NamespacedName{Namespace: cp.Namespace, Name: cp.Name}] == nil {
					t.Fatalf("ConnectionPolicy %s/%s loaded without error but not compiled", cp.Namespace, cp.Name)
				}
			}
			for _, rp := range set.ResourcePolicies {
				if set.Resources[types.NamespacedName{Namespace: rp.Namespace, Name: rp.Name}] == nil {
					t.Fatalf("ResourcePolicy %s/%s loaded without error but not compiled", rp.Namespace, rp.Name)
				}
			}
		}
		again, err2 := load(t, content)
		if (err == nil) != (err2 == nil) || (err != nil && err.Error() != err2.Error()) ||
			len(again.ConnectionPolicies) != len(set.ConnectionPolicies) || len(again.ResourcePolicies) != len(set.ResourcePolicies) {
			t.Fatalf("loading the same bytes twice differs: %v / %v", err, err2)
		}
	})
}
