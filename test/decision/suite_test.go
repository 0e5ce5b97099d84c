// Package decision_test drives the decision API end to end on a real API
// server: ServiceAccount tokens minted with the TokenRequest API, policies
// compiled by the manager, and decisions asked over HTTP, forward auth and
// Envoy ext_authz, with the decision log read back.
package decision_test

import (
	"testing"
	"time"

	"k8s.io/client-go/kubernetes"

	"github.com/sallyport/sallyport/internal/controlplane"
	"github.com/sallyport/sallyport/internal/manager"
	"github.com/sallyport/sallyport/internal/testenv"
)

var (
	env       *testenv.Env
	op        *manager.Operator
	clientset *kubernetes.Clientset
	// decideURL is the decision API's base URL; grpcAddr the ext_authz one.
	decideURL string
	grpcAddr  string
	// logPath is the decision log file.
	logPath string
)

func TestMain(m *testing.M) {
	testenv.Main(m, controlplane.Options{}, func(e *testenv.Env) (func(), error) {
		env = e
		clientset = e.Clientset
		d, stop, err := e.StartDecider(manager.Options{
			// Short, so the revocation test need not wait long for our
			// cache; the API server's own cache still takes 10 s.
			TokenReviewCacheTTL: 2e9,
			// Usage merged into status quickly, for the DryRun counts.
			Usage: manager.UsageOptions{Namespace: "default", Replica: "decision-suite", Interval: 200 * time.Millisecond, Window: 720 * time.Hour},
		}, true)
		if err != nil {
			return nil, err
		}
		op, decideURL, grpcAddr, logPath = d.Op, d.URL, d.GRPCAddr, d.LogPath
		return stop, nil
	})
}
