// Package deploy_test checks what a cluster admin installs, on a real API
// server: config/default (kustomize) and the Helm chart render objects the
// API server accepts and that agree with each other, and the manager run as
// the installed ServiceAccount, with the Deployment's own arguments, serves
// admission and decisions over TLS with the certificates it makes, with two
// replicas and a leader that can die.
package deploy_test

import (
	"testing"

	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"

	"github.com/sallyport/sallyport/internal/controlplane"
	"github.com/sallyport/sallyport/internal/testenv"
)

var (
	env       *testenv.Env
	root      string
	clientset *kubernetes.Clientset
	dyn       *dynamic.DynamicClient
)

func TestMain(m *testing.M) {
	testenv.Main(m, controlplane.Options{}, func(e *testenv.Env) (func(), error) {
		env = e
		var err error
		if root, err = controlplane.RepoRoot(); err != nil {
			return nil, err
		}
		clientset = e.Clientset
		if dyn, err = dynamic.NewForConfig(e.Config); err != nil {
			return nil, err
		}
		return func() {}, nil
	})
}
