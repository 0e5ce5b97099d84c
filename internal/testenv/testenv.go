// Package testenv gives a test package one real control plane (see
// internal/controlplane) for all its tests, and the helpers those tests
// share: a namespace per test and polling for a condition.
package testenv

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/sallyport/sallyport/internal/controlplane"
	"github.com/sallyport/sallyport/internal/manager"
)

// Env is a started control plane.
type Env struct {
	*envtest.Environment
	Config *rest.Config
	Client client.Client
	// Clientset is a typed client for what controller-runtime's lacks
	// (TokenRequest, SubjectAccessReviews, Leases by name).
	Clientset *kubernetes.Clientset
	// OperatorLog, when set, receives the log of operators StartOperator
	// starts (tests scan it for leaked credentials); default standard
	// error.
	OperatorLog io.Writer
}

// Start starts a control plane with sallyport's CRDs, and its webhooks when
// o.Webhooks is set.
func Start(o controlplane.Options) (*Env, error) {
	root, err := controlplane.RepoRoot()
	if err != nil {
		return nil, err
	}
	env, err := controlplane.New(context.Background(), root, o)
	if err != nil {
		return nil, err
	}
	cfg, err := env.Start()
	if err != nil {
		// envtest leaves the processes it started running when a later
		// step (installing CRDs or webhooks) fails.
		_ = env.Stop()
		return nil, fmt.Errorf("start control plane: %w", err)
	}
	c, err := client.New(cfg, client.Options{Scheme: manager.Scheme()})
	if err != nil {
		_ = env.Stop()
		return nil, fmt.Errorf("create client: %w", err)
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		_ = env.Stop()
		return nil, fmt.Errorf("create clientset: %w", err)
	}
	return &Env{Environment: env, Config: cfg, Client: c, Clientset: cs}, nil
}

// Main runs a package's tests on one control plane and stops it afterwards.
// setup runs first, with the started control plane, to keep it and start what
// the tests need (a manager, say); the stop it returns runs after the tests,
// before the control plane stops. Main is meant to be TestMain's whole body.
//
// A fuzzing worker process (go test -fuzz starts several) runs only the
// fuzz target, never a test that needs the control plane, so it starts
// none: a control plane per worker would stall the fuzzing.
func Main(m *testing.M, o controlplane.Options, setup func(*Env) (stop func(), err error)) {
	flag.Parse()
	if f := flag.Lookup("test.fuzzworker"); f != nil && f.Value.String() == "true" {
		os.Exit(m.Run())
	}
	env, err := Start(o)
	if err != nil {
		fmt.Fprintf(os.Stderr, "testenv: %v\n", err)
		os.Exit(1)
	}
	code := 1
	if stop, err := setup(env); err != nil {
		fmt.Fprintf(os.Stderr, "testenv: %v\n", err)
	} else {
		code = m.Run()
		if stop != nil {
			stop()
		}
	}
	if err := env.Stop(); err != nil {
		fmt.Fprintf(os.Stderr, "testenv: stop control plane: %v\n", err)
	}
	os.Exit(code)
}

// Namespace creates a namespace for one test and deletes it when the test
// ends. The namespace controller does not run on a bare API server, so its
// objects stay until the control plane stops; tests must not depend on their
// removal.
func (e *Env) Namespace(t testing.TB, labels map[string]string) string {
	t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "t-", Labels: labels}}
	if err := e.Client.Create(context.Background(), ns); err != nil {
		t.Fatalf("create namespace: %v", err)
	}
	t.Cleanup(func() { _ = e.Client.Delete(context.Background(), ns) })
	return ns.Name
}

// Eventually calls f until it returns nil, failing the test with f's last
// error when timeout passes. It polls; it asserts nothing about time.
func Eventually(t testing.TB, timeout time.Duration, f func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %s: %v", timeout, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// FreeLoopbackAddr returns a loopback address with a port that was free a
// moment ago, for a server a test starts. The port is drawn below the
// kernel's ephemeral range (32768 and up on Linux), from which the API
// server, etcd and every outgoing connection take theirs, so none of them
// can take it between now and the test's server binding it.
func FreeLoopbackAddr() (string, error) {
	for range 100 {
		port := 20000 + rand.IntN(12000) //nolint:gosec // a test port, not a secret
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		l, err := net.Listen("tcp", addr)
		if err != nil {
			continue
		}
		return addr, l.Close()
	}
	return "", errors.New("find a free port: none free among 100 tries in 20000-31999")
}
