package controllers_test

import (
	"testing"

	"github.com/sallyport/sallyport/internal/controlplane"
	"github.com/sallyport/sallyport/internal/manager"
	"github.com/sallyport/sallyport/internal/testenv"
)

// The controllers run against a real API server without the admission
// webhooks, as they would when a policy reached the cluster while the webhook
// was down: what does not compile is stored, and status must say so.
var (
	env *testenv.Env
	op  *manager.Operator
)

func TestMain(m *testing.M) {
	testenv.Main(m, controlplane.Options{}, func(e *testenv.Env) (func(), error) {
		env = e
		o, stop, err := e.StartOperator(manager.Options{})
		op = o
		return stop, err
	})
}
