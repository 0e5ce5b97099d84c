// Package controlplane starts a local Kubernetes control plane (kube-apiserver
// and etcd built from Go modules by hack/envtest.sh) with sallyport's CRDs
// and, optionally, its admission webhooks pointed at a local process. The
// test suites and `make run` share it, so both run against the same API
// server build.
package controlplane

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/sallyport/sallyport/internal/manager"
)

// RepoRoot finds the repository root: the nearest directory at or above the
// working directory that holds hack/envtest.sh.
func RepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("find repository root: %w", err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "hack", "envtest.sh")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("find repository root: no hack/envtest.sh at or above the working directory")
		}
		dir = parent
	}
}

// Assets returns the directory with kube-apiserver and etcd: the
// KUBEBUILDER_ASSETS environment variable when set, else what
// hack/envtest.sh prints (it builds the binaries on a machine's first run and
// reuses them afterwards).
func Assets(ctx context.Context, root string) (string, error) {
	if dir := os.Getenv("KUBEBUILDER_ASSETS"); dir != "" {
		return dir, nil
	}
	cmd := exec.CommandContext(ctx, filepath.Join(root, "hack", "envtest.sh")) //nolint:gosec // the repository's own script
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = os.Stderr // progress of a first build
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("run hack/envtest.sh: %w", err)
	}
	dir := strings.TrimSpace(out.String())
	if dir == "" {
		return "", errors.New("hack/envtest.sh printed no directory")
	}
	return dir, nil
}

// Options say what to install on the control plane.
type Options struct {
	// Webhooks registers the validating webhooks of config/webhook, pointed at
	// a local server on a free loopback port with a generated certificate;
	// the environment's WebhookInstallOptions then say where to listen.
	Webhooks bool
}

// New returns an environment for the repository at root, not yet started.
func New(ctx context.Context, root string, o Options) (*envtest.Environment, error) {
	assets, err := Assets(ctx, root)
	if err != nil {
		return nil, err
	}
	env := &envtest.Environment{
		BinaryAssetsDirectory: assets,
		CRDDirectoryPaths:     []string{filepath.Join(root, "config", "crd", "bases")},
		ErrorIfCRDPathMissing: true,
		Scheme:                manager.Scheme(),
	}
	if o.Webhooks {
		env.WebhookInstallOptions = envtest.WebhookInstallOptions{
			Paths:            []string{filepath.Join(root, "config", "webhook", "manifests.yaml")},
			LocalServingHost: "127.0.0.1",
		}
	}
	return env, nil
}
