// Package policytest_test holds the offline/online equivalence test: one
// policy test suite decided by the offline runner (`sallyport test`) and by
// the live decision server on a real API server, with real tokens minted by
// TokenRequest for the fixtures, must get the same answers. It is what
// makes "the engine used offline is the engine used in the cluster" a
// checked claim rather than a hope.
package policytest_test

import (
	"testing"

	"k8s.io/client-go/kubernetes"

	"github.com/sallyport/sallyport/internal/controlplane"
	"github.com/sallyport/sallyport/internal/manager"
	"github.com/sallyport/sallyport/internal/testenv"
)

var (
	env       *testenv.Env
	op        *manager.Operator
	clientset *kubernetes.Clientset
	// decideURL is the live decision API's base URL.
	decideURL string
)

func TestMain(m *testing.M) {
	testenv.Main(m, controlplane.Options{}, func(e *testenv.Env) (func(), error) {
		env = e
		clientset = e.Clientset
		d, stop, err := e.StartDecider(manager.Options{}, true)
		if err != nil {
			return nil, err
		}
		op, decideURL = d.Op, d.URL
		return stop, nil
	})
}
