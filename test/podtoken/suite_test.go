// Package podtoken_test checks Projected mode end to end: the pod token
// webhook registered on a real API server from config/webhook, served by the
// manager in this process, meeting pods as a Deployment's ReplicaSet or
// kubectl would create them.
package podtoken_test

import (
	"testing"

	"github.com/sallyport/sallyport/internal/controlplane"
	"github.com/sallyport/sallyport/internal/manager"
	"github.com/sallyport/sallyport/internal/testenv"
)

var env *testenv.Env

func TestMain(m *testing.M) {
	testenv.Main(m, controlplane.Options{Webhooks: true}, func(e *testenv.Env) (func(), error) {
		env = e
		_, stop, err := e.StartOperator(manager.Options{EnableWebhooks: true})
		return stop, err
	})
}
