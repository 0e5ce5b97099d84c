// Package admission_test checks the admission webhooks registered on a real
// API server and served by the manager, as kubectl apply meets them.
package admission_test

import (
	"sync"
	"testing"

	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/sallyport/sallyport/internal/controlplane"
	"github.com/sallyport/sallyport/internal/manager"
	"github.com/sallyport/sallyport/internal/testenv"
)

// The admission webhooks registered on a real API server, served by the
// manager in this process: what kubectl apply sees.
var (
	env      *testenv.Env
	warnings = &warningRecorder{}
	// warned is a client whose requests record the API server's warnings.
	warned client.Client
)

func TestMain(m *testing.M) {
	testenv.Main(m, controlplane.Options{Webhooks: true}, func(e *testenv.Env) (func(), error) {
		env = e
		cfg := rest.CopyConfig(e.Config)
		cfg.WarningHandler = warnings
		c, err := client.New(cfg, client.Options{Scheme: manager.Scheme()})
		if err != nil {
			return nil, err
		}
		warned = c
		_, stop, err := e.StartOperator(manager.Options{EnableWebhooks: true})
		return stop, err
	})
}

// warningRecorder keeps the warnings of API responses.
type warningRecorder struct {
	mu   sync.Mutex
	msgs []string
}

// HandleWarningHeader implements rest.WarningHandler.
func (w *warningRecorder) HandleWarningHeader(_ int, _ string, msg string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.msgs = append(w.msgs, msg)
}

// take returns the warnings recorded so far and forgets them. Tests that
// use it do not run in parallel.
func (w *warningRecorder) take() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := w.msgs
	w.msgs = nil
	return out
}
