package deploy_test

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"maps"
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
	rbacv1 "k8s.io/api/rbac/v1"
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
	"github.com/sallyport/sallyport/internal/usage"
)

// installation is what one installer puts in the cluster, and the names a
// test needs from it.
type installation struct {
	name       string
	namespace  string
	objs       []*unstructured.Unstructured
	deployment string
	// serviceAccount is the operator's, in namespace.
	serviceAccount string
	// crash kills the leader with SIGKILL (its Lease expires) instead of
	// stopping it with SIGTERM (it releases the Lease).
	crash bool
	// deniedPath is the object path the changed rule denies, distinct per
	// installation since the samples are shared.
	deniedPath string
}

// TestHighAvailability installs sallyport with each installer in turn and
// runs two replicas of the real binary the way its Deployment does (its
// arguments, as its ServiceAccount, with a token from the TokenRequest
// API, so the shipped RBAC is proven sufficient), only with loopback
// addresses and the API server's webhook calls sent through a stand-in
// Service. It checks what a cluster admin relies on: the operator makes one
// certificate for both replicas and injects its CA into the webhooks and
// the ConfigMap sallyport-ca; the samples are admitted through the
// webhooks; both replicas answer HTTPS decisions a client verifies with
// that CA; the leader writes status and issues Secret-mode tokens; when the
// leader stops (config/default: SIGTERM, with every decision asked of it
// meanwhile answered) or dies (chart: SIGKILL), the other takes over status
// and token rotation.
func TestHighAvailability(t *testing.T) {
	tmp := t.TempDir()
	bin := filepath.Join(tmp, "sallyport")
	goBuild(t, bin)

	// One after the other: both register the same cluster-wide names
	// (webhook configurations, ClusterRoles), each applied over the other.
	t.Run("config-default", func(t *testing.T) {
		runInstallation(t, bin, installation{
			name: "config-default", namespace: installNamespace, objs: renderConfig(t),
			deployment: "sallyport-controller-manager", serviceAccount: "sallyport-controller-manager",
			deniedPath: "/entries/41",
		})
	})
	t.Run("chart", func(t *testing.T) {
		const ns = "sallyport-chart"
		runInstallation(t, bin, installation{
			name: "chart", namespace: ns, objs: renderChartIn(t, ns),
			deployment: "sallyport", serviceAccount: "sallyport",
			crash: true, deniedPath: "/entries/42",
		})
	})
}

func runInstallation(t *testing.T, bin string, inst installation) {
	ctx := context.Background()
	decided.reset()
	tmp := t.TempDir()
	a := newReplica(t, "replica-a", tmp)
	b := newReplica(t, "replica-b", tmp)
	webhooks, err := testenv.StartProxy(a.webhookAddr, b.webhookAddr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(webhooks.Close)

	// Everything but what needs a kubelet (nothing here runs pods: the
	// Deployment is applied and stays unscheduled) as rendered, except the
	// webhook configurations, which are sent to the stand-in Service, since
	// this API server cannot reach a cluster Service.
	var install []*unstructured.Unstructured
	for _, o := range inst.objs {
		switch o.GetKind() {
		case "ValidatingWebhookConfiguration", "MutatingWebhookConfiguration":
			install = append(install, throughURL(t, o, "https://"+webhooks.Addr()))
		default:
			install = append(install, o)
		}
	}
	if err := controlplane.Apply(ctx, env.Client, install); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// Nothing may be left sending admission requests to replicas
		// that are gone.
		for _, o := range install {
			if strings.HasSuffix(o.GetKind(), "WebhookConfiguration") {
				_ = env.Client.Delete(context.Background(), o)
			}
		}
	})

	var secrets secretValues
	kubeconfig, operatorToken := operatorKubeconfig(t, tmp, inst.namespace, inst.serviceAccount)
	secrets.add(operatorToken)
	args := containerArgs(t, find(t, inst.objs, "Deployment", inst.deployment))
	decisionName := flagValue(args, "--decision-service-name") + "." + inst.namespace + ".svc"

	// The first replica alone becomes the leader.
	a.start(t, bin, args, kubeconfig, inst.namespace)
	a.waitReady(t)
	firstLeader := waitLeader(t, inst.namespace, "")
	b.start(t, bin, args, kubeconfig, inst.namespace)
	b.waitReady(t)

	// The leader injects the CA into both webhook configurations and
	// publishes it; the serving certificate is in sallyport-certs.
	caPEM := waitCA(t, inst.namespace)
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		t.Fatalf("ConfigMap sallyport-ca holds no PEM certificate:\n%s", caPEM)
	}

	// The samples, admitted by the webhooks; a Secret-mode ConnectionPolicy
	// beside them, delegated to this operator as docs/tokens.md says.
	testenv.Eventually(t, time.Minute, func() error {
		_, err := controlplane.ApplyDir(ctx, env.Client, filepath.Join(root, "config", "samples"))
		return err
	})
	cp := &v1alpha1.ConnectionPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "billing", Name: "billing-to-ledger"}}
	rp := &v1alpha1.ResourcePolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "ledger", Name: "ledger-api"}}
	waitStatus(t, cp)
	waitStatus(t, rp)
	issued := secretModePolicy(t, inst)

	// The shortest TokenRequest allows; the sample's maxTokenLifetime is 15m.
	token := mint(t, "billing", "billing-worker", 600, policy.DefaultAudience("billing", "billing-to-ledger"))
	secrets.add(token)
	request := map[string]any{
		"credential": map[string]any{"token": token},
		"resource":   map[string]any{"namespace": "ledger", "service": "ledger-api", "name": inst.deniedPath},
		"action":     "GET",
		"scopes":     []string{"ledger.read"},
	}
	served := map[string][]byte{}
	for _, r := range []*replica{a, b} {
		ans, cert := decideTLS(t, r.decisionAddr, decisionName, pool, request)
		if !ans.Allowed || ans.Resource.Rule != "read-entries" {
			t.Fatalf("%s answered %+v, want allowed by rule read-entries", r.name, ans)
		}
		served[r.name] = cert
	}
	if !bytes.Equal(served[a.name], served[b.name]) {
		t.Error("the replicas serve different certificates; both should serve the one in sallyport-certs")
	}
	checkListeners(t, a, decisionName)
	secrets.add(checkMetricsAuth(t, a, inst.name)...)

	if inst.crash {
		// A killed replica loses the decisions since its last usage
		// report (docs/least-privilege.md): wait until its report holds
		// its decision, so the merged count below is exact. The rule and
		// the reach entry can sit in different shards, written one after
		// the other, so wait for both.
		testenv.Eventually(t, 30*time.Second, func() error {
			if n := reportedDecisions(t, inst.namespace, a.name, usage.KindResource, "ledger", "ledger-api", "read-entries"); n < 1 {
				return fmt.Errorf("%s reported %d decisions of rule read-entries", a.name, n)
			}
			if n := reportedDecisions(t, inst.namespace, a.name, usage.KindConnection, "billing", "billing-to-ledger", "ledger"); n < 1 {
				return fmt.Errorf("%s reported %d decisions of billing-to-ledger's reach into ledger", a.name, n)
			}
			return nil
		})
		a.kill(t)
	} else {
		stopWhileAsked(t, a, decisionName, pool, request)
	}
	next := waitLeader(t, inst.namespace, firstLeader)
	t.Logf("Leader %s stopped; %s took over", firstLeader, next)

	// The new leader writes status: a changed policy is reported Ready at
	// its new generation, and decisions follow the change.
	denyRule := "stop-" + inst.name
	testenv.Eventually(t, time.Minute, func() error {
		if err := env.Client.Get(ctx, client.ObjectKeyFromObject(rp), rp); err != nil {
			return err
		}
		rp.Spec.Rules = append(rp.Spec.Rules, v1alpha1.Rule{Name: denyRule, Effect: v1alpha1.EffectDeny, Actions: []string{"GET"}, Resources: []string{inst.deniedPath}})
		return env.Client.Update(ctx, rp)
	})
	waitStatus(t, rp)
	testenv.Eventually(t, 30*time.Second, func() error {
		ans, _ := decideTLS(t, b.decisionAddr, decisionName, pool, request)
		if ans.Allowed || ans.Resource.Rule != denyRule {
			return fmt.Errorf("answer %+v, want denied by rule %s", ans, denyRule)
		}
		return nil
	})

	// The usage both processes counted, the stopped one's to its last
	// decision, is merged by the new leader into status, exactly.
	checkUsageMerged(t, inst, cp, rp, denyRule)

	// And it rotates tokens: asked to renew, it issues a new one.
	secrets.addIssued(t, "billing")
	renewSecretModeToken(t, issued)
	secrets.addIssued(t, "billing")
	b.stop(t)

	// No credential handed out or issued during the run appears in what the
	// operator wrote.
	assertNothingLeaks(t, secrets, a, b)
}

// issuedToken is a Secret-mode ConnectionPolicy and the credential ID of
// the token it was issued.
type issuedToken struct {
	policy       *v1alpha1.ConnectionPolicy
	credentialID string
}

// secretModePolicy creates a Secret-mode ConnectionPolicy in billing,
// delegates token issuance there to the installation's operator, and waits
// for the leader to issue its token.
func secretModePolicy(t *testing.T, inst installation) issuedToken {
	t.Helper()
	ctx := context.Background()
	rb := &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Namespace: "billing", Name: "sallyport-token-issuer-" + inst.name},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: v1alpha1.TokenIssuerClusterRole},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Namespace: inst.namespace, Name: inst.serviceAccount}},
	}
	if err := env.Client.Create(ctx, rb); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	cp := &v1alpha1.ConnectionPolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: "billing", Name: "batch-" + inst.name},
		Spec: v1alpha1.ConnectionPolicySpec{
			ServiceAccountName: "billing-worker",
			Reach:              []v1alpha1.Reach{{Class: "ledger", Scopes: []v1alpha1.Scope{"ledger.read"}, MaxClassification: v1alpha1.ClassificationConfidential}},
			Token:              &v1alpha1.TokenSpec{Mode: v1alpha1.TokenModeSecret},
		},
	}
	createThroughWebhook(t, cp)
	var id string
	testenv.Eventually(t, time.Minute, func() error {
		if err := env.Client.Get(ctx, client.ObjectKeyFromObject(cp), cp); err != nil {
			return err
		}
		if cp.Status.Token == nil || cp.Status.Token.CredentialID == "" {
			return fmt.Errorf("no token issued yet: %+v", cp.Status.Conditions)
		}
		id = cp.Status.Token.CredentialID
		return nil
	})
	return issuedToken{policy: cp, credentialID: id}
}

// renewSecretModeToken asks for a new token with the renew annotation and
// waits until one with another credential ID is issued and acknowledged.
func renewSecretModeToken(t *testing.T, it issuedToken) {
	t.Helper()
	ctx := context.Background()
	cp := it.policy
	stamp := testenv.AskRenewal(t, env.Client, cp, time.Minute)
	testenv.Eventually(t, time.Minute, func() error {
		if err := env.Client.Get(ctx, client.ObjectKeyFromObject(cp), cp); err != nil {
			return err
		}
		tok := cp.Status.Token
		if tok == nil || tok.RenewRequest != stamp || tok.CredentialID == it.credentialID {
			return fmt.Errorf("token not renewed for request %s yet: %+v", stamp, tok)
		}
		return nil
	})
}

// stopWhileAsked stops a replica as the kubelet does while decisions are
// asked of it, as a Service sends them until the replica is not ready: it
// reports not ready and serves on (--shutdown-delay), then drains and
// releases the Lease. Every decision asked of it must be answered in full.
func stopWhileAsked(t *testing.T, r *replica, serverName string, pool *x509.CertPool, request any) {
	t.Helper()
	stopAsking := make(chan struct{})
	asked := make(chan []error, 1)
	answered := 0
	go func() {
		var errs []error
		hc := tlsClient(pool, serverName)
		for {
			select {
			case <-stopAsking:
				asked <- errs
				return
			default:
			}
			if _, err := postDecide(hc, r.decisionAddr, request); err != nil {
				errs = append(errs, err)
			} else {
				answered++
			}
		}
	}()
	time.Sleep(200 * time.Millisecond) // some decisions before the signal
	r.signal(t)
	testenv.Eventually(t, 30*time.Second, func() error {
		if code := r.readyz(); code == http.StatusOK {
			return fmt.Errorf("%s still ready after SIGTERM", r.name)
		}
		return nil
	})
	close(stopAsking)
	errs := <-asked // answered is written before this send
	for _, err := range errs {
		t.Errorf("a decision asked of %s while it was stopping failed: %v", r.name, err)
	}
	if answered == 0 {
		t.Errorf("%s answered no decision while it was asked during its shutdown", r.name)
	}
	r.waitExit(t)
}

// replica is one manager process.
type replica struct {
	name                               string
	dir                                string
	healthAddr, decisionAddr, grpcAddr string
	webhookAddr, metricsAddr           string
	cmd                                *exec.Cmd
	logs                               *testenv.LockedBuffer
	exited                             chan error
}

func newReplica(t *testing.T, name, tmp string) *replica {
	r := &replica{
		name: name, dir: filepath.Join(tmp, name),
		healthAddr: freeAddr(t), decisionAddr: freeAddr(t), grpcAddr: freeAddr(t), webhookAddr: freeAddr(t), metricsAddr: freeAddr(t),
		logs: &testenv.LockedBuffer{}, exited: make(chan error, 1),
	}
	if err := os.MkdirAll(r.dir, 0o700); err != nil {
		t.Fatal(err)
	}
	return r
}

// start runs the binary with the Deployment's arguments, $(VAR) references
// expanded as the kubelet does, and after them the overrides a process on
// this machine needs (later flags win).
func (r *replica) start(t *testing.T, bin string, deploymentArgs []string, kubeconfig, namespace string) {
	t.Helper()
	vars := map[string]string{"POD_NAMESPACE": namespace, "POD_NAME": r.name}
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
		"--metrics-bind-address="+r.metricsAddr,
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
		// Usage reports and merges often enough to check them here.
		"--usage-interval=500ms",
	)
	r.cmd = exec.Command(bin, args...)
	r.cmd.Env = append(os.Environ(), "POD_NAMESPACE="+namespace, "POD_NAME="+r.name, "KUBECONFIG=")
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

// kill ends the process with SIGKILL, as a node failure would: it
// releases nothing.
func (r *replica) kill(t *testing.T) {
	t.Helper()
	if err := r.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-r.exited
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
func operatorKubeconfig(t *testing.T, dir, ns, sa string) (path, token string) {
	t.Helper()
	tok := mint(t, ns, sa, 3600)
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["envtest"] = &clientcmdapi.Cluster{Server: env.Config.Host, CertificateAuthorityData: env.Config.CAData}
	cfg.AuthInfos["operator"] = &clientcmdapi.AuthInfo{Token: tok}
	cfg.Contexts["operator"] = &clientcmdapi.Context{Cluster: "envtest", AuthInfo: "operator"}
	cfg.CurrentContext = "operator"
	path = filepath.Join(dir, "operator.kubeconfig")
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		t.Fatal(err)
	}
	return path, tok
}

// mint returns a token of ns/sa for audiences, valid for seconds.
func mint(t *testing.T, ns, sa string, seconds int64, audiences ...string) string {
	t.Helper()
	tr := &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{Audiences: audiences, ExpirationSeconds: &seconds}}
	out, err := clientset.CoreV1().ServiceAccounts(ns).CreateToken(context.Background(), sa, tr, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("TokenRequest for %s/%s: %v", ns, sa, err)
	}
	return out.Status.Token
}

// waitLeader waits until the Lease names a holder other than not, and
// returns it.
func waitLeader(t *testing.T, ns, not string) string {
	t.Helper()
	var holder string
	testenv.Eventually(t, time.Minute, func() error {
		l, err := clientset.CoordinationV1().Leases(ns).Get(context.Background(), manager.LeaderElectionID, metav1.GetOptions{})
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
func waitCA(t *testing.T, ns string) []byte {
	t.Helper()
	ctx := context.Background()
	var ca []byte
	testenv.Eventually(t, time.Minute, func() error {
		cm, err := clientset.CoreV1().ConfigMaps(ns).Get(ctx, "sallyport-ca", metav1.GetOptions{})
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
	if _, err := clientset.CoreV1().Secrets(ns).Get(ctx, "sallyport-certs", metav1.GetOptions{}); err != nil {
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

// waitStatus waits until the leader reports obj Ready at its current
// generation.
func waitStatus(t *testing.T, obj client.Object) {
	t.Helper()
	testenv.Eventually(t, time.Minute, func() error {
		if err := env.Client.Get(context.Background(), client.ObjectKeyFromObject(obj), obj); err != nil {
			return err
		}
		gen := obj.GetGeneration()
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
// certificate with pool for serverName (the decision Service's), and
// returns the answer and the certificate served.
func decideTLS(t *testing.T, addr, serverName string, pool *x509.CertPool, body any) (testenv.Answer, []byte) {
	t.Helper()
	ans, err := postDecide(tlsClient(pool, serverName), addr, body)
	if err != nil {
		t.Fatal(err)
	}
	return ans.Answer, ans.cert
}

func tlsClient(pool *x509.CertPool, serverName string) *http.Client {
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: serverName, MinVersion: tls.VersionTLS12},
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
	decided.add(addr, ans.Answer)
	return ans, nil
}

// decided tallies the decisions the replicas answered in one installation's
// run, as status.usage should count them.
var decided tally

type tally struct {
	mu sync.Mutex
	// rules counts the decisions each rule made (allowed by an Allow rule,
	// denied by a Deny rule); allowed the allowed decisions, which each
	// used the connection's reach entry; byReplica the decisions per
	// decision address.
	rules     map[string]int64
	allowed   int64
	byReplica map[string]int
}

func (d *tally) reset() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.rules, d.allowed, d.byReplica = map[string]int64{}, 0, map[string]int{}
}

func (d *tally) add(addr string, a testenv.Answer) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.byReplica[addr]++
	if a.Allowed {
		d.allowed++
	}
	if a.Resource.Rule != "" && (a.Allowed || a.Resource.Reason == "DeniedByRule") {
		d.rules[a.Resource.Rule]++
	}
}

// checkUsageMerged waits until the leader's merge of both replicas'
// reports shows in status exactly the decisions the test tallied: per rule
// of the ResourcePolicy and for the ConnectionPolicy's reach entry.
func checkUsageMerged(t *testing.T, inst installation, cp *v1alpha1.ConnectionPolicy, rp *v1alpha1.ResourcePolicy, denyRule string) {
	t.Helper()
	ctx := context.Background()
	decided.mu.Lock()
	want, allowed, replicas := maps.Clone(decided.rules), decided.allowed, len(decided.byReplica)
	decided.mu.Unlock()
	if replicas != 2 || want["read-entries"] == 0 || want[denyRule] == 0 {
		t.Fatalf("the test should have had both replicas decide, with both rules: %d replicas, rules %v", replicas, want)
	}
	t.Cleanup(func() {
		if t.Failed() {
			dumpUsageReports(t, inst.namespace)
		}
	})
	testenv.Eventually(t, time.Minute, func() error {
		if err := env.Client.Get(ctx, client.ObjectKeyFromObject(rp), rp); err != nil {
			return err
		}
		if err := env.Client.Get(ctx, client.ObjectKeyFromObject(cp), cp); err != nil {
			return err
		}
		u := rp.Status.Usage
		if u == nil {
			return fmt.Errorf("%s has no status.usage", rp.Name)
		}
		got := map[string]int64{}
		for _, r := range u.Rules {
			if r.Decisions > 0 {
				got[r.Name] = r.Decisions
			}
			if r.Decisions > 0 && r.LastUsed == nil {
				return fmt.Errorf("rule %s: %d decisions but no lastUsed", r.Name, r.Decisions)
			}
		}
		if !maps.Equal(got, want) {
			return fmt.Errorf("status.usage of %s counts %v, the replicas decided %v", rp.Name, got, want)
		}
		if cu := cp.Status.Usage; cu == nil || len(cu.Reach) != 1 || cu.Reach[0].Decisions != allowed {
			return fmt.Errorf("status.usage of %s is %+v, want %d allowed decisions on its reach entry", cp.Name, cu, allowed)
		}
		return nil
	})
	// Both processes reported: the merge is a sum over two reports.
	var reports corev1.ConfigMapList
	if err := env.Client.List(ctx, &reports, client.InNamespace(inst.namespace), client.MatchingLabels{usage.LabelRole: usage.RoleReplica}); err != nil {
		t.Fatal(err)
	}
	reporters := map[string]bool{}
	for i := range reports.Items {
		reporters[decodeReport(t, &reports.Items[i]).Replica] = true
	}
	if len(reporters) != 2 {
		t.Errorf("usage reports in %s come from %v, want both replicas", inst.namespace, reporters)
	}
}

// reportedDecisions is what replica's usage report (in namespace ns) says
// of one grant of the policy kind policyNS/policyName: a rule by name, or a
// reach entry by class.
func reportedDecisions(t *testing.T, ns, replica, kind, policyNS, policyName, grant string) uint64 {
	t.Helper()
	for k := range usage.Shards {
		cm := &corev1.ConfigMap{}
		if err := env.Client.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: usage.ReportName(replica, k)}, cm); err != nil {
			continue
		}
		for _, p := range decodeReport(t, cm).Policies {
			if p.Kind == kind && p.Namespace == policyNS && p.Name == policyName {
				return p.Grants[grant].Decisions
			}
		}
	}
	return 0
}

func decodeReport(t *testing.T, cm *corev1.ConfigMap) *usage.Report {
	t.Helper()
	zr, err := gzip.NewReader(bytes.NewReader(cm.BinaryData["usage.json.gz"]))
	if err != nil {
		t.Fatalf("usage report %s: %v", cm.Name, err)
	}
	var rep usage.Report
	if err := json.NewDecoder(zr).Decode(&rep); err != nil {
		t.Fatalf("usage report %s: %v", cm.Name, err)
	}
	return &rep
}

// dumpUsageReports logs the usage reports in ns, for a failed check.
func dumpUsageReports(t *testing.T, ns string) {
	var reports corev1.ConfigMapList
	if err := env.Client.List(context.Background(), &reports, client.InNamespace(ns)); err != nil {
		t.Log(err)
		return
	}
	for _, cm := range reports.Items {
		for k, v := range cm.BinaryData {
			zr, err := gzip.NewReader(bytes.NewReader(v))
			if err != nil {
				t.Logf("%s/%s: %v", cm.Name, k, err)
				continue
			}
			raw, _ := io.ReadAll(zr)
			t.Logf("%s/%s: %s", cm.Name, k, raw)
		}
	}
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
