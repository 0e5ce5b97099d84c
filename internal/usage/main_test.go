package usage_test

import (
	"testing"

	"github.com/sallyport/sallyport/internal/controlplane"
	"github.com/sallyport/sallyport/internal/testenv"
)

// The Reporter and Merger tests run against one real API server; the unit
// tests of package usage share the binary and ignore it.
var env *testenv.Env

func TestMain(m *testing.M) {
	testenv.Main(m, controlplane.Options{}, func(e *testenv.Env) (func(), error) {
		env = e
		return nil, nil
	})
}
