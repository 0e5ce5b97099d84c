// Package tokens_test drives Secret-mode token issuance end to end on a real
// API server: the operator runs with exactly the rights config/rbac ships
// (as its ServiceAccount, impersonated), namespaces delegate Secret mode by
// binding sallyport-token-issuer, the ValidatingAdmissionPolicy from
// config/admissionpolicy guards who may ask for it, and the tokens the
// operator issues are presented to the decision API.
package tokens_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/sallyport/sallyport/api/v1alpha1"
	"github.com/sallyport/sallyport/controllers"
	"github.com/sallyport/sallyport/internal/controlplane"
	"github.com/sallyport/sallyport/internal/manager"
	"github.com/sallyport/sallyport/internal/testenv"
	"github.com/sallyport/sallyport/internal/token"
)

// The operator's identity: the ServiceAccount config/default binds its
// ClusterRole to.
const (
	operatorNamespace      = "sallyport-system"
	operatorServiceAccount = "sallyport-controller-manager"
	operatorUser           = "system:serviceaccount:" + operatorNamespace + ":" + operatorServiceAccount
)

// Schedule of the operator under test: a short overlap and fast retries, so
// the tests wait seconds, not minutes. The rules are the shipped ones.
const (
	testOverlap = 3 * time.Second
	testResync  = 4 * time.Second
)

var (
	env       *testenv.Env
	clientset *kubernetes.Clientset
	decideURL string
	requester *flakyRequester
)

func TestMain(m *testing.M) {
	testenv.Main(m, controlplane.Options{}, func(e *testenv.Env) (func(), error) {
		env = e
		ctx := context.Background()
		clientset = e.Clientset
		root, err := controlplane.RepoRoot()
		if err != nil {
			return nil, err
		}
		// The shipped RBAC (the manager's ClusterRole and its binding to the
		// operator's ServiceAccount, and sallyport-token-issuer, bound to
		// nothing) and the shipped admission policy, as config/default
		// renders them.
		rendered, err := controlplane.Render(ctx, root)
		if err != nil {
			return nil, err
		}
		var objs []*unstructured.Unstructured
		for _, o := range rendered {
			switch o.GetKind() {
			case "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding",
				"ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding":
				objs = append(objs, o)
			}
		}
		if err := controlplane.Apply(ctx, e.Client, objs); err != nil {
			return nil, err
		}
		if err := waitForAdmissionPolicy(ctx); err != nil {
			return nil, err
		}

		// The operator runs as its ServiceAccount, with only those rights.
		opCfg := rest.CopyConfig(e.Config)
		opCfg.Impersonate = rest.ImpersonationConfig{UserName: operatorUser}
		opCS, err := kubernetes.NewForConfig(opCfg)
		if err != nil {
			return nil, err
		}
		requester = &flakyRequester{next: token.ClientsetRequester{Clientset: opCS}, fail: map[string]int{}, shorten: map[string]int64{}, calls: map[string]int{}}
		opEnv := *e
		opEnv.Config = opCfg
		d, stop, err := opEnv.StartDecider(manager.Options{
			TokenReviewCacheTTL: time.Second,
			Tokens: controllers.TokenOptions{
				Schedule:  token.Config{Overlap: testOverlap, BackoffBase: 500 * time.Millisecond, BackoffMax: 2 * time.Second},
				Resync:    testResync,
				Requester: requester,
			},
		}, false)
		if err != nil {
			return nil, err
		}
		decideURL = d.URL
		return stop, nil
	})
}

// waitForAdmissionPolicy waits until the API server enforces the admission
// policy: a user without the right to mint tokens is refused a Secret-mode
// policy (in a dry run, so nothing is stored).
func waitForAdmissionPolicy(ctx context.Context) error {
	ns := "vap-probe"
	if err := createNamespace(ctx, ns); err != nil {
		return err
	}
	if err := grantPolicyEditing(ctx, ns, "probe"); err != nil {
		return err
	}
	probe, err := impersonating("probe")
	if err != nil {
		return err
	}
	deadline := time.Now().Add(time.Minute)
	for {
		err := probe.Create(ctx, secretPolicy(ns, "probe"), client.DryRunAll)
		if apierrors.IsForbidden(err) || apierrors.IsInvalid(err) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the admission policy is not enforced within a minute (last answer: %w)", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// flakyRequester wraps the operator's TokenRequest client: it fails the
// next N requests of a namespace, or caps their lifetime as an API server
// with --service-account-max-token-expiration would, and keeps every token
// it returns so tests can check that none leaks.
type flakyRequester struct {
	next    token.Requester
	mu      sync.Mutex
	fail    map[string]int
	shorten map[string]int64
	calls   map[string]int
	tokens  []string
}

func (f *flakyRequester) CreateToken(ctx context.Context, namespace, sa string, req *authenticationv1.TokenRequest) (*authenticationv1.TokenRequest, error) {
	f.mu.Lock()
	f.calls[namespace]++
	if f.fail[namespace] > 0 {
		f.fail[namespace]--
		f.mu.Unlock()
		return nil, apierrors.NewServiceUnavailable("injected TokenRequest failure")
	}
	limit := f.shorten[namespace]
	f.mu.Unlock()
	if limit > 0 && req.Spec.ExpirationSeconds != nil && *req.Spec.ExpirationSeconds > limit {
		req = req.DeepCopy()
		req.Spec.ExpirationSeconds = &limit
	}
	out, err := f.next.CreateToken(ctx, namespace, sa, req)
	if err == nil {
		f.mu.Lock()
		f.tokens = append(f.tokens, out.Status.Token)
		f.mu.Unlock()
	}
	return out, err
}

func (f *flakyRequester) failNext(namespace string, n int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.fail[namespace] = n
}

func (f *flakyRequester) capLifetime(namespace string, seconds int64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.shorten[namespace] = seconds
}

func (f *flakyRequester) callsIn(namespace string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls[namespace]
}

func (f *flakyRequester) issued() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.tokens...)
}

// impersonating is a client acting as user (who is also in
// system:authenticated).
func impersonating(user string) (client.Client, error) {
	cfg := rest.CopyConfig(env.Config)
	cfg.Impersonate = rest.ImpersonationConfig{UserName: user}
	return client.New(cfg, client.Options{Scheme: manager.Scheme()})
}

func createNamespace(ctx context.Context, name string) error {
	if _, err := clientset.CoreV1().Namespaces().Create(ctx, namespaceObject(name), metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("create namespace %s: %w", name, err)
	}
	return nil
}

// grantPolicyEditing lets user manage ConnectionPolicies in namespace.
func grantPolicyEditing(ctx context.Context, namespace, user string) error {
	name := "edit-connpol-" + user
	role := &rbacv1.Role{
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name},
		Rules: []rbacv1.PolicyRule{{
			APIGroups: []string{v1alpha1.GroupVersion.Group}, Resources: []string{"connectionpolicies"},
			Verbs: []string{"get", "list", "watch", "create", "update", "patch", "delete"},
		}},
	}
	if err := env.Client.Create(ctx, role); err != nil {
		return fmt.Errorf("create role: %w", err)
	}
	return bindRole(ctx, namespace, name, "Role", name, rbacv1.Subject{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: user})
}

func bindRole(ctx context.Context, namespace, name, kind, role string, subject rbacv1.Subject) error {
	rb := &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: kind, Name: role},
		Subjects:   []rbacv1.Subject{subject},
	}
	if err := env.Client.Create(ctx, rb); err != nil {
		return fmt.Errorf("create rolebinding %s/%s: %w", namespace, name, err)
	}
	return nil
}
