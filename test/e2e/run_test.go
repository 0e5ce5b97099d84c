// Package e2e drives sallyport as a user does: `make run`'s local control
// plane (hack/runlocal) with the real binary, and kubectl.
package e2e

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"k8s.io/client-go/tools/clientcmd"

	"github.com/sallyport/sallyport/internal/controlplane"
	"github.com/sallyport/sallyport/internal/testenv"
)

// TestLocalRun starts the local control plane as `make run` does, checks
// what a newcomer would check with kubectl, and stops it with SIGINT.
func TestLocalRun(t *testing.T) {
	kubectl, err := exec.LookPath("kubectl")
	if err != nil {
		t.Fatalf("kubectl is required by the end-to-end tests: %v", err)
	}
	root, err := controlplane.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	if _, err := controlplane.Assets(ctx, root); err != nil {
		t.Fatal(err)
	}

	tmp := t.TempDir()
	managerBin := filepath.Join(tmp, "sallyport")
	runlocalBin := filepath.Join(tmp, "runlocal")
	goBuild(t, root, managerBin, "./cmd/sallyport")
	goBuild(t, root, runlocalBin, "./hack/runlocal")
	kubeconfig := filepath.Join(tmp, "kubeconfig")

	decisionAddr := freeAddr(t)
	cmd := exec.Command(runlocalBin,
		"--manager", managerBin,
		"--kubeconfig-out", kubeconfig,
		"--health-probe-bind-address", freeAddr(t),
		"--metrics-bind-address", freeAddr(t),
		"--decision-bind-address", decisionAddr,
		"--grpc-bind-address", freeAddr(t),
	)
	cmd.Dir = root
	cmd.Env = os.Environ()
	var logs bytes.Buffer
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = &syncWriter{w: &logs}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	started := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stdout)
		signalled := false
		for sc.Scan() {
			line := sc.Text()
			fmt.Fprintln(&syncWriter{w: &logs}, line)
			if !signalled && strings.Contains(line, "sallyport is running") {
				close(started)
				signalled = true
			}
		}
		_, _ = io.Copy(io.Discard, stdout)
		exited <- cmd.Wait()
	}()
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			_ = cmd.Process.Signal(syscall.SIGINT)
			<-exited
		}
		if t.Failed() {
			logMu.Lock()
			t.Logf("runlocal output:\n%s", logs.String())
			logMu.Unlock()
		}
	})

	select {
	case <-started:
	case err := <-exited:
		stopped = true
		t.Fatalf("runlocal exited before it was up: %v", err)
	case <-ctx.Done():
		t.Fatal("runlocal was not up within 10 minutes")
	}

	run := func(args ...string) (string, error) {
		c := exec.CommandContext(ctx, kubectl, append([]string{"--kubeconfig", kubeconfig}, args...)...)
		out, err := c.CombinedOutput()
		return string(out), err
	}
	mustRun := func(args ...string) string {
		t.Helper()
		out, err := run(args...)
		if err != nil {
			t.Fatalf("kubectl %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return out
	}

	// A GitOps pipeline gates on Ready.
	mustRun("wait", "--for=condition=Ready", "--timeout=60s", "-n", "billing", "connpol/billing-to-ledger")
	mustRun("wait", "--for=condition=Ready", "--timeout=60s", "-n", "ledger", "respol/ledger-api")

	out := mustRun("get", "connpol,respol", "-A")
	for _, want := range []string{
		"billing-to-ledger", "billing-worker", "sallyport.dev/billing/billing-to-ledger",
		"ledger-api", "confidential",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("kubectl get connpol,respol -A does not show %q:\n%s", want, out)
		}
	}
	if n := strings.Count(out, "True"); n != 2 {
		t.Errorf("kubectl get shows %d Ready policies, want 2:\n%s", n, out)
	}

	out = mustRun("explain", "connectionpolicy.spec.reach")
	for _, want := range []string{"class", "scopes", "maxClassification", "public, internal, confidential, restricted"} {
		if !strings.Contains(out, want) {
			t.Errorf("kubectl explain connectionpolicy.spec.reach lacks %q:\n%s", want, out)
		}
	}

	// The sample connection's token, minted as a user would, is allowed to
	// read entries and refused a delete, each by the right gate.
	token := strings.TrimSpace(mustRun("create", "token", "billing-worker", "-n", "billing",
		"--audience", "sallyport.dev/billing/billing-to-ledger", "--duration", "10m"))
	for _, tc := range []struct {
		action string
		want   string
	}{
		{"GET", `"allowed":true`},
		{"DELETE", `"reason":"DeniedByRule"`},
	} {
		body := fmt.Sprintf(`{"credential":{"token":%q},"resource":{"namespace":"ledger","service":"ledger-api","name":"/entries/42"},"action":%q,"scopes":["ledger.read"]}`, token, tc.action)
		resp, err := http.Post("http://"+decisionAddr+"/v1/decide", "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		answer, _ := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusOK || !strings.Contains(string(answer), tc.want) {
			t.Errorf("%s /entries/42: %d %s, want %s", tc.action, resp.StatusCode, answer, tc.want)
		}
	}
	logMu.Lock()
	leaked := strings.Contains(logs.String(), token)
	logMu.Unlock()
	if leaked {
		t.Error("the run's output (manager log and decision log) holds the token")
	}

	bad := filepath.Join(tmp, "bad.yaml")
	if err := os.WriteFile(bad, []byte(`apiVersion: policy.sallyport.dev/v1alpha1
kind: ResourcePolicy
metadata:
  name: bad
  namespace: ledger
spec:
  service: bad
  class: ledger
  classification: internal
  rules:
    - name: read
      effect: Allow
      actions: ["GET"]
      resources: ["/x"]
      connections: [{namespace: billing, name: billing-to-ledger}]
      when: |
        request.action == "GET" &&
          resource.klass == "internal"
`), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err = run("apply", "-f", bad)
	if err == nil {
		t.Fatalf("kubectl apply of a policy that does not compile succeeded:\n%s", out)
	}
	for _, want := range []string{"spec.rules[0].when", `rule "read"`, "line 2, column 11", "klass"} {
		if !strings.Contains(out, want) {
			t.Errorf("kubectl apply error lacks %q:\n%s", want, out)
		}
	}

	// make run keeps usage in status (every 10 s): the allowed read and the
	// denied delete each counted once, on the rules that decided them.
	deadline := time.Now().Add(90 * time.Second)
	for {
		out = mustRun("get", "respol", "ledger-api", "-n", "ledger", "-o",
			`jsonpath={range .status.usage.rules[*]}{.name}={.decisions} {end}`)
		total := 0
		for _, f := range strings.Fields(out) {
			var name string
			var n int
			if _, err := fmt.Sscanf(strings.Replace(f, "=", " ", 1), "%s %d", &name, &n); err == nil {
				total += n
			}
		}
		if total == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("status.usage of ledger-api counts %q, want the 2 decisions asked", out)
		}
		time.Sleep(2 * time.Second)
	}

	// Ctrl-C stops everything runlocal started.
	server := apiServer(t, kubeconfig)
	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	stopped = true
	select {
	case err := <-exited:
		if err != nil {
			t.Errorf("runlocal exited with %v after SIGINT", err)
		}
	case <-time.After(2 * time.Minute):
		_ = cmd.Process.Kill()
		t.Fatal("runlocal did not stop after SIGINT")
	}
	if conn, err := net.DialTimeout("tcp", server, time.Second); err == nil {
		_ = conn.Close()
		t.Errorf("the API server at %s still accepts connections after runlocal stopped", server)
	}
}

func goBuild(t *testing.T, root, out, pkg string) {
	t.Helper()
	cmd := exec.Command("go", "build", "-o", out, pkg)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build %s: %v\n%s", pkg, err, b)
	}
}

func freeAddr(t *testing.T) string {
	t.Helper()
	addr, err := testenv.FreeLoopbackAddr()
	if err != nil {
		t.Fatal(err)
	}
	return addr
}

// apiServer returns host:port of the kubeconfig's server.
func apiServer(t *testing.T, kubeconfig string) string {
	t.Helper()
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSuffix(strings.TrimPrefix(cfg.Host, "https://"), "/")
}
