// Command runlocal is what `make run` starts when $KUBECONFIG is not set: a
// local control plane (the kube-apiserver and etcd the tests use) with
// sallyport's CRDs and webhooks installed, the manager (bin/sallyport) as a
// child process serving those webhooks, and the samples of config/samples
// applied. It runs until SIGINT or SIGTERM and then stops everything it
// started.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/sallyport/sallyport/internal/controlplane"
	"github.com/sallyport/sallyport/internal/manager"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintf(os.Stderr, "run: %v\n", err)
		os.Exit(1)
	}
}

func run() error {
	probeAddr := flag.String("health-probe-bind-address", "127.0.0.1:8081", "probe address of the manager")
	metricsAddr := flag.String("metrics-bind-address", "127.0.0.1:8080", "metrics address of the manager")
	decisionAddr := flag.String("decision-bind-address", "127.0.0.1:8443", "plain-HTTP decision API address of the manager (loopback)")
	grpcAddr := flag.String("grpc-bind-address", "127.0.0.1:9001", "plaintext ext_authz address of the manager (loopback)")
	samples := flag.Bool("samples", true, "apply config/samples once the manager is ready")
	kubeconfigOut := flag.String("kubeconfig-out", "", "where to write the kubeconfig (default bin/local/kubeconfig in the repository)")
	managerBin := flag.String("manager", "", "the sallyport binary to run (default bin/sallyport in the repository)")
	flag.Usage = func() {
		fmt.Fprintf(flag.CommandLine.Output(), "Usage: runlocal [flags] [-- manager flags]\n")
		flag.PrintDefaults()
	}
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	root, err := controlplane.RepoRoot()
	if err != nil {
		return err
	}
	bin := *managerBin
	if bin == "" {
		bin = filepath.Join(root, "bin", "sallyport")
	}
	if _, err := os.Stat(bin); err != nil {
		return fmt.Errorf("%s is missing; run make build (make run does): %w", bin, err)
	}

	env, err := controlplane.New(ctx, root, controlplane.Options{Webhooks: true})
	if err != nil {
		return err
	}
	fmt.Println("Starting the local control plane (kube-apiserver and etcd on loopback)")
	cfg, err := env.Start()
	if err != nil {
		// envtest leaves the processes it started running when a later
		// step (installing CRDs or webhooks) fails.
		_ = env.Stop()
		return fmt.Errorf("start the local control plane: %w", err)
	}
	defer func() {
		if err := env.Stop(); err != nil {
			fmt.Fprintf(os.Stderr, "run: stop the local control plane: %v\n", err)
		}
		fmt.Println("Local control plane stopped")
	}()

	kubeconfig := *kubeconfigOut
	if kubeconfig == "" {
		kubeconfig = filepath.Join(root, "bin", "local", "kubeconfig")
	}
	if err := writeKubeconfig(env, kubeconfig); err != nil {
		return err
	}

	wh := env.WebhookInstallOptions
	args := []string{"manager",
		"--kubeconfig", kubeconfig,
		"--webhook-host", wh.LocalServingHost,
		"--webhook-port", strconv.Itoa(wh.LocalServingPort),
		"--webhook-cert-path", wh.LocalServingCertDir,
		// envtest made the certificate and put its CA in the webhook
		// configurations.
		"--cert-management=external",
		"--health-probe-bind-address", *probeAddr,
		"--metrics-bind-address", *metricsAddr,
		"--decision-bind-address", *decisionAddr,
		"--grpc-bind-address", *grpcAddr,
		"--decision-insecure",
		"--shutdown-delay=0",
		// Usage in the policies' status, refreshed often enough to watch
		// it move while trying policies out.
		"--usage-namespace=default",
		"--usage-interval=10s",
		"--zap-devel",
	}
	args = append(args, flag.Args()...)
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	// Its own process group, so Ctrl-C reaches it once, from us, after which
	// we stop the control plane; and a signal if we die first.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", bin, err)
	}
	// exited is closed when the manager exits, with its error in exitErr;
	// a closed channel tells every waiter, not just the first.
	exited := make(chan struct{})
	var exitErr error
	go func() { exitErr = cmd.Wait(); close(exited) }()
	// stopManager asks the manager to shut down gracefully, then insists.
	stopManager := func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(40 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
			fmt.Fprintln(os.Stderr, "run: the manager did not stop within 40s of SIGTERM; killed it")
		}
		if exitErr != nil {
			fmt.Fprintf(os.Stderr, "run: the manager exited: %v\n", exitErr)
		}
	}

	if err := waitReady(ctx, "http://"+*probeAddr+"/readyz", exited); err != nil {
		stopManager()
		return err
	}
	if *samples {
		c, err := client.New(cfg, client.Options{Scheme: manager.Scheme()})
		if err != nil {
			stopManager()
			return fmt.Errorf("create client: %w", err)
		}
		objs, err := controlplane.ApplyDir(ctx, c, filepath.Join(root, "config", "samples"))
		if err != nil {
			stopManager()
			return fmt.Errorf("apply config/samples: %w", err)
		}
		for _, o := range objs {
			fmt.Printf("Applied %s %s/%s\n", o.GetKind(), o.GetNamespace(), o.GetName())
		}
	}

	rel, _ := filepath.Rel(mustGetwd(), kubeconfig)
	fmt.Printf(`
sallyport is running on a local control plane. In another shell:

  export KUBECONFIG=%s
  kubectl get connpol,respol -A

The decision API is at http://%s/v1/decide, Envoy ext_authz at %s.

Press Ctrl-C to stop everything.
`, rel, *decisionAddr, *grpcAddr)

	select {
	case <-ctx.Done():
		fmt.Println("Stopping")
		stopManager()
		return nil
	case <-exited:
		return fmt.Errorf("the manager exited: %w", exitErr)
	}
}

// writeKubeconfig writes an admin kubeconfig for the local control plane.
func writeKubeconfig(env *envtest.Environment, path string) error {
	user, err := env.AddUser(envtest.User{Name: "local-admin", Groups: []string{"system:masters"}}, nil)
	if err != nil {
		return fmt.Errorf("add the local admin user: %w", err)
	}
	raw, err := user.KubeConfig()
	if err != nil {
		return fmt.Errorf("render kubeconfig: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("create %s: %w", filepath.Dir(path), err)
	}
	if err := os.WriteFile(path, raw, 0o600); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	fmt.Printf("Wrote the local control plane's kubeconfig to %s\n", path)
	return nil
}

// waitReady polls the manager's readiness endpoint until it answers 200, the
// manager exits, or ctx ends.
func waitReady(ctx context.Context, url string, exited <-chan struct{}) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if resp, err := http.DefaultClient.Do(req); err == nil {
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-exited:
			return errors.New("the manager exited before it was ready; its log above says why")
		case <-ctx.Done():
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				return fmt.Errorf("the manager was not ready at %s within 2 minutes", url)
			}
			return ctx.Err()
		case <-tick.C:
		}
	}
}

func mustGetwd() string {
	wd, err := os.Getwd()
	if err != nil {
		return "."
	}
	return wd
}
