// Package faults_test injects faults into a running operator on a real API
// server and checks that it keeps deciding correctly: the link to the API
// server fails (an outage, or every watch cut at once) while decisions are
// served.
package faults_test

import (
	"io"
	"net/url"
	"os"
	"sync"
	"testing"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/sallyport/sallyport/internal/controlplane"
	"github.com/sallyport/sallyport/internal/manager"
	"github.com/sallyport/sallyport/internal/testenv"
)

// reviewTTL is how long the operator under test reuses a credential review.
const reviewTTL = 10 * time.Second

var (
	env       *testenv.Env
	op        *manager.Operator
	clientset *kubernetes.Clientset
	// link is the operator's only way to the API server; the tests cut it.
	link      *testenv.Proxy
	decideURL string
	logPath   string
	// operatorLog keeps the operator's log; minted keeps every token the
	// tests minted. TestZNoCredentialLeaks looks for the one in the other.
	operatorLog testenv.LockedBuffer
	minted      mintedTokens
)

// mintedTokens records tokens as they are minted.
type mintedTokens struct {
	mu     sync.Mutex
	tokens []string
}

func (m *mintedTokens) add(tok string) string {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.tokens = append(m.tokens, tok)
	return tok
}

func (m *mintedTokens) all() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]string(nil), m.tokens...)
}

func TestMain(m *testing.M) {
	testenv.Main(m, controlplane.Options{}, func(e *testenv.Env) (func(), error) {
		env = e
		clientset = e.Clientset
		server, err := url.Parse(e.Config.Host)
		if err != nil {
			return nil, err
		}
		if link, err = testenv.StartProxy(server.Host); err != nil {
			return nil, err
		}
		opEnv := *e
		opEnv.OperatorLog = io.MultiWriter(os.Stderr, &operatorLog)
		opEnv.Config = rest.CopyConfig(e.Config)
		opEnv.Config.Host = "https://" + link.Addr()

		d, stop, err := opEnv.StartDecider(manager.Options{TokenReviewCacheTTL: reviewTTL}, false)
		if err != nil {
			return nil, err
		}
		op, decideURL, logPath = d.Op, d.URL, d.LogPath
		return func() {
			stop()
			link.Close()
		}, nil
	})
}
