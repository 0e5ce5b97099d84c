package controlplane

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// FieldOwner is the field manager of what ApplyDir applies.
const FieldOwner = "sallyport-local"

// ApplyDir server-side applies every object in the YAML files of dir (not
// kustomization.yaml), creating the namespaces they live in first. It
// returns the objects applied, in file order.
func ApplyDir(ctx context.Context, c client.Client, dir string) ([]*unstructured.Unstructured, error) {
	files, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", dir, err)
	}
	slices.Sort(files)
	var objs []*unstructured.Unstructured
	for _, f := range files {
		if filepath.Base(f) == "kustomization.yaml" {
			continue
		}
		docs, err := readObjects(f)
		if err != nil {
			return nil, err
		}
		objs = append(objs, docs...)
	}
	if err := Apply(ctx, c, objs); err != nil {
		return nil, err
	}
	return objs, nil
}

// Apply server-side applies objs in order, creating the namespaces they live
// in first.
func Apply(ctx context.Context, c client.Client, objs []*unstructured.Unstructured) error {
	for _, o := range objs {
		if ns := o.GetNamespace(); ns != "" {
			if err := ensureNamespace(ctx, c, ns); err != nil {
				return err
			}
		}
		o.SetManagedFields(nil)
		if err := c.Apply(ctx, client.ApplyConfigurationFromUnstructured(o), client.FieldOwner(FieldOwner), client.ForceOwnership); err != nil {
			return fmt.Errorf("apply %s %s/%s: %w", o.GetKind(), o.GetNamespace(), o.GetName(), err)
		}
	}
	return nil
}

// Render renders config/default of the repository at root with
// hack/render.sh (kustomize, built from hack/kustomize) and the optional
// components named, and returns its objects in order. The manager's image is
// left as config/manager names it.
func Render(ctx context.Context, root string, components ...string) ([]*unstructured.Unstructured, error) {
	args := []string{filepath.Join(root, "hack", "render.sh")}
	for _, c := range components {
		args = append(args, "--component", c)
	}
	cmd := exec.CommandContext(ctx, args[0], args[1:]...) //nolint:gosec // the repository's own script; components name its directories

	cmd.Dir = root
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("hack/render.sh %s: %w: %s", strings.Join(args[1:], " "), err, strings.TrimSpace(stderr.String()))
	}
	return DecodeObjects("config/default", out)
}

func readObjects(path string) ([]*unstructured.Unstructured, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	return DecodeObjects(path, raw)
}

// DecodeObjects decodes the objects of a multi-document YAML stream; source
// names it in errors. Empty documents are skipped.
func DecodeObjects(source string, raw []byte) ([]*unstructured.Unstructured, error) {
	path := source
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(raw)))
	var out []*unstructured.Unstructured
	for i := 1; ; i++ {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", path, err)
		}
		if strings.TrimSpace(string(doc)) == "" {
			continue
		}
		u := &unstructured.Unstructured{}
		if err := utilyaml.Unmarshal(doc, &u.Object); err != nil {
			return nil, fmt.Errorf("decode %s, document %d: %w", path, i, err)
		}
		if len(u.Object) == 0 {
			continue
		}
		if u.GetAPIVersion() == "" || u.GetKind() == "" || u.GetName() == "" {
			return nil, fmt.Errorf("%s, document %d: apiVersion, kind and metadata.name are required", path, i)
		}
		out = append(out, u)
	}
}

func ensureNamespace(ctx context.Context, c client.Client, name string) error {
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}
	if err := c.Create(ctx, ns); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("create namespace %s: %w", name, err)
	}
	return nil
}
