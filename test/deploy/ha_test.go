package deploy_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/sallyport/sallyport/api/v1alpha1"
	"github.com/sallyport/sallyport/internal/controlplane"
	"github.com/sallyport/sallyport/internal/manager"
	"github.com/sallyport/sallyport/internal/policy"
	"github.com/sallyport/sallyport/internal/testenv"
)

// The installed operator's identity and the names config/default gives.
const (
	operatorSA          = "sallyport-controller-manager"
	decisionServiceName = "sallyport-decision-service.sallyport-system.svc"
)

// TestHighAvailability installs config/default, then runs two replicas of
// the real binary the way the Deployment does (its arguments, as its
// ServiceAccount, with a token from the TokenRequest API), only with
// loopback addresses and the API server's webhook calls sent through a
// stand-in Service. It checks what a cluster admin relies on: the operator
// makes one certificate for both replicas and injects its CA into the
// webhooks and the ConfigMap sallyport-ca; both replicas serve HTTPS
// decisions a client verifies with that CA; the leader writes status; when
// the leader stops, the other takes over and status keeps being written.
func TestHighAvailability(t *testing.T) {
	ctx := context.Background()
	objs := renderConfig(t)

	tmp := t.TempDir()
	bin := filepath.Join(tmp, "sallyport")
	goBuild(t, bin)

	a := newReplica(t, "replica-a", tmp)
	b := newReplica(t, "replica-b", tmp)
	webhooks := startProxy(t, a.webhookAddr, b.webhookAddr)

	// Everything but the webhook configurations as rendered; those are
	// sent to the stand-in Service, since this API server cannot reach a
	// cluster Service.
	var install []*unstructured.Unstructured
	for _, o := range objs {
		switch o.GetKind() {
		case "ValidatingWebhookConfiguration", "MutatingWebhookConfiguration":
			install = append(install, throughURL(t, o, "https://"+webhooks.addr()))
		default:
			install = append(install, o)
		}
	}
	if err := controlplane.Apply(ctx, env.Client, install); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// Later tests of this package create policies; no webhook
		// configuration may point at replicas that are gone.
		for _, o := range install {
			if strings.HasSuffix(o.GetKind(), "WebhookConfiguration") {
				_ = env.Client.Delete(context.Background(), o)
			}
		}
	})

	kubeconfig := operatorKubeconfig(t, tmp)
	args := containerArgs(t, find(t, objs, "Deployment", "sallyport-controller-manager"))

	// The first replica alone becomes the leader.
	a.start(t, bin, args, kubeconfig)
	a.waitReady(t)
	firstLeader := waitLeader(t, "")
	b.start(t, bin, args, kubeconfig)
	b.waitReady(t)

	// The leader injects the CA into both webhook configurations and
	// publishes it; the serving certificate is in sallyport-certs.
	caPEM := waitCA(t)
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		t.Fatalf("ConfigMap sallyport-ca holds no PEM certificate:\n%s", caPEM)
	}

	// A caller and a service, applied through the admission webhooks.
	callerNS := env.Namespace(t, nil)
	serviceNS := env.Namespace(t, nil)
	if _, err := clientset.CoreV1().ServiceAccounts(callerNS).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "worker"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	cp := &v1alpha1.ConnectionPolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: callerNS, Name: "to-ledger"},
		Spec: v1alpha1.ConnectionPolicySpec{
			ServiceAccountName: "worker",
			Reach:              []v1alpha1.Reach{{Class: "ledger", Scopes: []v1alpha1.Scope{"ledger.read"}, MaxClassification: v1alpha1.ClassificationConfidential}},
		},
	}
	rp := &v1alpha1.ResourcePolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: serviceNS, Name: "ledger"},
		Spec: v1alpha1.ResourcePolicySpec{
			Service:        "ledger",
			Class:          "ledger",
			Classification: v1alpha1.ClassificationInternal,
			Rules: []v1alpha1.Rule{{
				Name: "read", Effect: v1alpha1.EffectAllow, Actions: []string{"GET"}, Resources: []string{"/entries/*"},
				Connections: []v1alpha1.ConnectionRef{{Namespace: callerNS, Name: "to-ledger"}},
			}},
		},
	}
	createThroughWebhook(t, cp)
	createThroughWebhook(t, rp)
	waitStatus(t, rp, rp.Generation)
	waitStatus(t, cp, cp.Generation)

	token := mint(t, callerNS, "worker", policy.DefaultAudience(callerNS, "to-ledger"))
	request := map[string]any{
		"credential": map[string]any{"token": token},
		"resource":   map[string]any{"namespace": serviceNS, "service": "ledger", "name": "/entries/42"},
		"action":     "GET",
	}
	served := map[string][]byte{}
	for _, r := range []*replica{a, b} {
		ans, cert := decideTLS(t, r.decisionAddr, pool, request)
		if !ans.Allowed || ans.Resource.Rule != "read" {
			t.Fatalf("%s answered %+v, want allowed by rule read", r.name, ans)
		}
		served[r.name] = cert
	}
	if !bytes.Equal(served[a.name], served[b.name]) {
		t.Error("the replicas serve different certificates; both should serve the one in sallyport-certs")
	}

	// The leader is told to stop, as the kubelet does, and stops
	// gracefully: it reports not ready and serves on (--shutdown-delay)
	// until the endpoints would have dropped it, then drains and releases
	// the Lease; the other takes over. Decisions asked of it until it is
	// not ready, as a Service would send them, are all answered in full.
	stopAsking := make(chan struct{})
	asked := make(chan []error, 1)
	answered := 0
	go func() {
		var errs []error
		hc := tlsClient(pool)
		for {
			select {
			case <-stopAsking:
				asked <- errs
				return
			default:
			}
			if _, err := postDecide(hc, a.decisionAddr, request); err != nil {
				errs = append(errs, err)
			} else {
				answered++
			}
		}
	}()
	time.Sleep(200 * time.Millisecond) // some decisions before the signal
	a.signal(t)
	testenv.Eventually(t, 30*time.Second, func() error {
		if code := a.readyz(); code == http.StatusOK {
			return fmt.Errorf("%s still ready after SIGTERM", a.name)
		}
		return nil
	})
	close(stopAsking)
	errs := <-asked // answered is written before this send
	for _, err := range errs {
		t.Errorf("a decision asked of %s while it was stopping failed: %v", a.name, err)
	}
	if answered == 0 {
		t.Errorf("%s answered no decision while it was asked during its shutdown", a.name)
	}
	a.waitExit(t)
	next := waitLeader(t, firstLeader)
	t.Logf("Leader %s stopped; %s took over", firstLeader, next)

	// Only the leader writes status: a changed policy reported Ready at
	// its new generation shows the new leader at work, and decisions
	// follow the change.
	testenv.Eventually(t, time.Minute, func() error {
		if err := env.Client.Get(ctx, client.ObjectKeyFromObject(rp), rp); err != nil {
			return err
		}
		rp.Spec.Rules[0].Actions = []string{"GET", "HEAD"}
		rp.Spec.Rules = append(rp.Spec.Rules[:1], v1alpha1.Rule{Name: "no-secrets", Effect: v1alpha1.EffectDeny, Actions: []string{"GET"}, Resources: []string{"/entries/42"}})
		return env.Client.Update(ctx, rp)
	})
	waitStatus(t, rp, rp.Generation)
	testenv.Eventually(t, 30*time.Second, func() error {
		ans, _ := decideTLS(t, b.decisionAddr, pool, request)
		if ans.Allowed || ans.Resource.Rule != "no-secrets" {
			return fmt.Errorf("answer %+v, want denied by rule no-secrets", ans)
		}
		return nil
	})
	b.stop(t)
}

// replica is one manager process.
type replica struct {
	name                               string
	dir                                string
	healthAddr, decisionAddr, grpcAddr string
	webhookAddr                        string
	cmd                                *exec.Cmd
	logs                               *lockedBuffer
	exited                             chan error
}

func newReplica(t *testing.T, name, tmp string) *replica {
	r := &replica{
		name: name, dir: filepath.Join(tmp, name),
		healthAddr: freeAddr(t), decisionAddr: freeAddr(t), grpcAddr: freeAddr(t), webhookAddr: freeAddr(t),
		logs: &lockedBuffer{}, exited: make(chan error, 1),
	}
	if err := os.MkdirAll(r.dir, 0o700); err != nil {
		t.Fatal(err)
	}
	return r
}

// start runs the binary with the Deployment's arguments, $(VAR) references
// expanded as the kubelet does, and after them the overrides a process on
// this machine needs (later flags win).
func (r *replica) start(t *testing.T, bin string, deploymentArgs []string, kubeconfig string) {
	t.Helper()
	vars := map[string]string{"POD_NAMESPACE": installNamespace, "POD_NAME": r.name}
	var args []string
	for _, a := range deploymentArgs {
		for k, v := range vars {
			a = strings.ReplaceAll(a, "$("+k+")", v)
		}
		args = append(args, a)
	}
	_, port, _ := net.SplitHostPort(r.webhookAddr)
	args = append(args,
		"--kubeconfig="+kubeconfig,
		"--health-probe-bind-address="+r.healthAddr,
		"--metrics-bind-address=0",
		"--webhook-host=127.0.0.1",
		"--webhook-port="+port,
		"--decision-bind-address="+r.decisionAddr,
		"--grpc-bind-address="+r.grpcAddr,
		"--webhook-cert-path="+filepath.Join(r.dir, "webhook-certs"),
		"--decision-cert-path="+filepath.Join(r.dir, "decision-certs"),
		"--decision-log="+filepath.Join(r.dir, "decisions.log"),
		// The stand-in Service and the decision clients reach the
		// replicas by loopback address.
		"--cert-extra-names=127.0.0.1",
	)
	r.cmd = exec.Command(bin, args...)
	r.cmd.Env = append(os.Environ(), "POD_NAMESPACE="+installNamespace, "POD_NAME="+r.name, "KUBECONFIG=")
	r.cmd.Stdout, r.cmd.Stderr = r.logs, r.logs
	if err := r.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { r.exited <- r.cmd.Wait() }()
	t.Cleanup(func() {
		if r.cmd.ProcessState == nil {
			_ = r.cmd.Process.Kill()
			<-r.exited
		}
		if t.Failed() {
			t.Logf("%s output:\n%s", r.name, r.logs.String())
		}
	})
}

func (r *replica) waitReady(t *testing.T) {
	t.Helper()
	testenv.Eventually(t, 2*time.Minute, func() error {
		select {
		case err := <-r.exited:
			t.Fatalf("%s exited before it was ready: %v\n%s", r.name, err, r.logs.String())
		default:
		}
		if code := r.readyz(); code != http.StatusOK {
			return fmt.Errorf("%s /readyz: %d", r.name, code)
		}
		return nil
	})
}

// readyz returns the status code of /readyz, 0 when it cannot be asked.
func (r *replica) readyz() int {
	resp, err := http.Get("http://" + r.healthAddr + "/readyz")
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

// stop sends SIGTERM, as the kubelet does, and requires a clean exit.
func (r *replica) stop(t *testing.T) {
	t.Helper()
	r.signal(t)
	r.waitExit(t)
}

func (r *replica) signal(t *testing.T) {
	t.Helper()
	if err := r.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
}

// waitExit waits for the process to end after SIGTERM and requires a clean
// exit within the Deployment's grace period.
func (r *replica) waitExit(t *testing.T) {
	t.Helper()
	select {
	case err := <-r.exited:
		if err != nil {
			t.Fatalf("%s exited with %v after SIGTERM\n%s", r.name, err, r.logs.String())
		}
	case <-time.After(40 * time.Second):
		t.Fatalf("%s still runs 40 s after SIGTERM (the Deployment's grace period)", r.name)
	}
}

// throughURL returns a webhook configuration whose webhooks call base plus
// their Service path, instead of the Service.
func throughURL(t *testing.T, o *unstructured.Unstructured, base string) *unstructured.Unstructured {
	t.Helper()
	o = o.DeepCopy()
	hooks, _, _ := unstructured.NestedSlice(o.Object, "webhooks")
	for _, h := range hooks {
		m := h.(map[string]any)
		path, _, _ := unstructured.NestedString(m, "clientConfig", "service", "path")
		if path == "" {
			t.Fatalf("%s: a webhook without a Service path", o.GetName())
		}
		unstructured.RemoveNestedField(m, "clientConfig", "service")
		if err := unstructured.SetNestedField(m, base+path, "clientConfig", "url"); err != nil {
			t.Fatal(err)
		}
	}
	if err := unstructured.SetNestedSlice(o.Object, hooks, "webhooks"); err != nil {
		t.Fatal(err)
	}
	return o
}

// operatorKubeconfig writes a kubeconfig that authenticates as the
// installed ServiceAccount with a token from the TokenRequest API, as a pod
// of the Deployment would.
func operatorKubeconfig(t *testing.T, dir string) string {
	t.Helper()
	tok := mint(t, installNamespace, operatorSA)
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["envtest"] = &clientcmdapi.Cluster{Server: env.Config.Host, CertificateAuthorityData: env.Config.CAData}
	cfg.AuthInfos["operator"] = &clientcmdapi.AuthInfo{Token: tok}
	cfg.Contexts["operator"] = &clientcmdapi.Context{Cluster: "envtest", AuthInfo: "operator"}
	cfg.CurrentContext = "operator"
	path := filepath.Join(dir, "operator.kubeconfig")
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		t.Fatal(err)
	}
	return path
}

func mint(t *testing.T, ns, sa string, audiences ...string) string {
	t.Helper()
	seconds := int64(3600)
	tr := &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{Audiences: audiences, ExpirationSeconds: &seconds}}
	out, err := clientset.CoreV1().ServiceAccounts(ns).CreateToken(context.Background(), sa, tr, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("TokenRequest for %s/%s: %v", ns, sa, err)
	}
	return out.Status.Token
}

// waitLeader waits until the Lease names a holder other than not, and
// returns it.
func waitLeader(t *testing.T, not string) string {
	t.Helper()
	var holder string
	testenv.Eventually(t, time.Minute, func() error {
		l, err := clientset.CoordinationV1().Leases(installNamespace).Get(context.Background(), manager.LeaderElectionID, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if l.Spec.HolderIdentity == nil || *l.Spec.HolderIdentity == "" || *l.Spec.HolderIdentity == not {
			return fmt.Errorf("lease holder is %v", l.Spec.HolderIdentity)
		}
		holder = *l.Spec.HolderIdentity
		return nil
	})
	return holder
}

// waitCA waits until the leader has published the CA in sallyport-ca and
// injected the same bundle into every webhook, and returns it.
func waitCA(t *testing.T) []byte {
	t.Helper()
	ctx := context.Background()
	var ca []byte
	testenv.Eventually(t, time.Minute, func() error {
		cm, err := clientset.CoreV1().ConfigMaps(installNamespace).Get(ctx, "sallyport-ca", metav1.GetOptions{})
		if err != nil {
			return err
		}
		ca = []byte(cm.Data["ca.crt"])
		if len(ca) == 0 {
			return fmt.Errorf("sallyport-ca has no ca.crt")
		}
		vwc, err := clientset.AdmissionregistrationV1().ValidatingWebhookConfigurations().Get(ctx, "sallyport-validating-webhook-configuration", metav1.GetOptions{})
		if err != nil {
			return err
		}
		mwc, err := clientset.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(ctx, "sallyport-mutating-webhook-configuration", metav1.GetOptions{})
		if err != nil {
			return err
		}
		var bundles [][]byte
		for _, w := range vwc.Webhooks {
			bundles = append(bundles, w.ClientConfig.CABundle)
		}
		for _, w := range mwc.Webhooks {
			bundles = append(bundles, w.ClientConfig.CABundle)
		}
		for _, b := range bundles {
			if !bytes.Equal(b, ca) {
				return fmt.Errorf("a webhook's caBundle (%d bytes) is not sallyport-ca's (%d bytes)", len(b), len(ca))
			}
		}
		return nil
	})
	if _, err := clientset.CoreV1().Secrets(installNamespace).Get(ctx, "sallyport-certs", metav1.GetOptions{}); err != nil {
		t.Fatalf("the serving certificate Secret: %v", err)
	}
	return ca
}

// createThroughWebhook creates obj; the validating webhook admits it. A
// refusal because the webhook cannot be called yet is retried.
func createThroughWebhook(t *testing.T, obj client.Object) {
	t.Helper()
	testenv.Eventually(t, time.Minute, func() error {
		err := env.Client.Create(context.Background(), obj)
		if apierrors.IsAlreadyExists(err) {
			return nil
		}
		return err
	})
}

// waitStatus waits until the leader reports obj Ready at generation gen.
func waitStatus(t *testing.T, obj client.Object, gen int64) {
	t.Helper()
	testenv.Eventually(t, time.Minute, func() error {
		if err := env.Client.Get(context.Background(), client.ObjectKeyFromObject(obj), obj); err != nil {
			return err
		}
		var conds []metav1.Condition
		var observed int64
		switch o := obj.(type) {
		case *v1alpha1.ConnectionPolicy:
			conds, observed = o.Status.Conditions, o.Status.ObservedGeneration
		case *v1alpha1.ResourcePolicy:
			conds, observed = o.Status.Conditions, o.Status.ObservedGeneration
		}
		if observed != gen {
			return fmt.Errorf("%s observedGeneration %d, want %d", obj.GetName(), observed, gen)
		}
		for _, c := range conds {
			if c.Type == v1alpha1.ConditionReady && c.Status == metav1.ConditionTrue {
				return nil
			}
		}
		return fmt.Errorf("%s not Ready: %+v", obj.GetName(), conds)
	})
}

// decideTLS asks a replica's decision API over HTTPS, verifying its
// certificate with pool for the decision Service's name, and returns the
// answer and the certificate served.
func decideTLS(t *testing.T, addr string, pool *x509.CertPool, body any) (testenv.Answer, []byte) {
	t.Helper()
	ans, err := postDecide(tlsClient(pool), addr, body)
	if err != nil {
		t.Fatal(err)
	}
	return ans.Answer, ans.cert
}

func tlsClient(pool *x509.CertPool) *http.Client {
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: decisionServiceName, MinVersion: tls.VersionTLS12},
	}}
}

type tlsAnswer struct {
	testenv.Answer
	cert []byte
}

// postDecide asks for a decision and requires a complete 200 answer.
func postDecide(hc *http.Client, addr string, body any) (tlsAnswer, error) {
	raw, err := json.Marshal(body)
	if err != nil {
		return tlsAnswer{}, err
	}
	resp, err := hc.Post("https://"+addr+"/v1/decide", "application/json", bytes.NewReader(raw))
	if err != nil {
		return tlsAnswer{}, fmt.Errorf("decide over TLS at %s: %w", addr, err)
	}
	defer resp.Body.Close()
	raw, err = io.ReadAll(resp.Body)
	if err != nil {
		return tlsAnswer{}, fmt.Errorf("decide at %s: read the answer: %w", addr, err)
	}
	if resp.StatusCode != http.StatusOK {
		return tlsAnswer{}, fmt.Errorf("decide at %s: %s: %s", addr, resp.Status, raw)
	}
	var ans tlsAnswer
	if err := json.Unmarshal(raw, &ans.Answer); err != nil {
		return tlsAnswer{}, fmt.Errorf("decide at %s: %w: %s", addr, err, raw)
	}
	ans.cert = resp.TLS.PeerCertificates[0].Raw
	return ans, nil
}

func goBuild(t *testing.T, out string) {
	t.Helper()
	cmd := exec.Command("go", "build", "-o", out, "./cmd/sallyport")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, b)
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

// lockedBuffer collects a process's output; the process writes while the
// test may read.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
