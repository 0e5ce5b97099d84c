package policytest_test

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/sallyport/sallyport/internal/controlplane"
	"github.com/sallyport/sallyport/internal/decision"
	"github.com/sallyport/sallyport/internal/policytest"
	"github.com/sallyport/sallyport/internal/testenv"
)

// suiteFile is the suite `sallyport test`'s golden tests run too. Its
// expectations do not depend on the clock (no case moves it, no fixture
// has fixed times), since the live server decides with the wall clock and
// real tokens are issued now; and every fixture lives at least 600 s, the
// TokenRequest minimum.
const suiteFile = "../../cmd/sallyport/testdata/test/pass/ledger_test.yaml"

// TestOfflineAndOnlineAgree decides every case of the suite offline and on
// the live decision server and requires the same answer from both, and
// that both meet the suite's expectations.
func TestOfflineAndOnlineAgree(t *testing.T) {
	ctx := context.Background()
	suite, err := policytest.LoadSuite(suiteFile)
	if err != nil {
		t.Fatal(err)
	}
	runner, err := policytest.NewRunner(policytest.Options{})
	if err != nil {
		t.Fatal(err)
	}
	offline, err := runner.Prepare(ctx, suite)
	if err != nil {
		t.Fatalf("policies do not load offline: %v", err)
	}

	applyPolicies(t, suite)
	createServiceAccounts(t, suite)
	testenv.WaitServing(t, decideURL)

	tokens := map[string]string{}
	for _, c := range suite.Cases {
		t.Run(c.Name, func(t *testing.T) {
			want, _ := offline.Decide(ctx, c, false)
			if m := policytest.Compare(c.Expect, want); len(m) > 0 {
				t.Errorf("offline answer misses the suite's expectations: %v", m)
			}

			req := suite.Request(c, suite.CaseNow(c), nil)
			req.Token = ""
			if conn := suite.CaseConnection(c); conn != nil {
				if tokens[conn.Name] == "" {
					tokens[conn.Name] = mint(t, conn, suite.Now)
				}
				req.Token = tokens[conn.Name]
			}
			got := testenv.Decide(t, decideURL, body(req))

			// Compared: everything that does not depend on the token's
			// bytes or the clock. Not compared: the decision ID (random
			// per decision), the credential ID (the API server's JTI
			// against the fixture's) and messages (they may quote times,
			// such as an expiry, and the offline authenticator's words
			// for a rejected credential differ from a TokenReview's).
			type answer struct {
				Allowed                          bool
				ConnAllowed                      bool
				ConnReason, ConnPolicy, Identity string
				ResAllowed                       bool
				ResReason, ResPolicy, ResRule    string
			}
			on := answer{got.Allowed, got.Connection.Allowed, got.Connection.Reason, got.Connection.Policy, got.Connection.Identity,
				got.Resource.Allowed, got.Resource.Reason, got.Resource.Policy, got.Resource.Rule}
			off := answer{want.Allowed, want.Connection.Allowed, want.Connection.Reason, want.Connection.Policy, want.Connection.Identity,
				want.Resource.Allowed, want.Resource.Reason, want.Resource.Policy, want.Resource.Rule}
			if on != off {
				t.Errorf("answers differ\n online: %+v\n   (%s / %s)\noffline: %+v\n   (%s / %s)",
					on, got.Connection.Message, got.Resource.Message, off, want.Connection.Message, want.Resource.Message)
			}
			if got.Connection.Allowed && !strings.HasPrefix(got.Connection.CredentialID, "JTI=") {
				t.Errorf("online credential ID %q", got.Connection.CredentialID)
			}
		})
	}
}

// applyPolicies applies the suite's policy files to the API server and
// waits until every policy reports Ready=True.
func applyPolicies(t *testing.T, suite *policytest.Suite) {
	t.Helper()
	ctx := context.Background()
	var objs []*unstructured.Unstructured
	for _, p := range suite.Policies {
		info, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if !info.IsDir() {
			t.Fatalf("%s: this test applies policy directories only", p)
		}
		applied, err := controlplane.ApplyDir(ctx, env.Client, p)
		if err != nil {
			t.Fatal(err)
		}
		objs = append(objs, applied...)
	}
	if len(objs) == 0 {
		t.Fatal("no policies applied")
	}
	testenv.Eventually(t, time.Minute, func() error {
		for _, o := range objs {
			u := &unstructured.Unstructured{}
			u.SetGroupVersionKind(o.GroupVersionKind())
			if err := env.Client.Get(ctx, client.ObjectKeyFromObject(o), u); err != nil {
				return err
			}
			if !ready(u) {
				return fmt.Errorf("%s %s/%s is not Ready", o.GetKind(), o.GetNamespace(), o.GetName())
			}
		}
		return nil
	})
}

func ready(u *unstructured.Unstructured) bool {
	conds, _, _ := unstructured.NestedSlice(u.Object, "status", "conditions")
	for _, c := range conds {
		m, ok := c.(map[string]any)
		if ok && m["type"] == "Ready" && m["status"] == "True" {
			gen, _, _ := unstructured.NestedInt64(m, "observedGeneration")
			return gen == 0 || gen == u.GetGeneration()
		}
	}
	return false
}

// createServiceAccounts creates the fixtures' namespaces and
// ServiceAccounts, so TokenRequest can mint their tokens.
func createServiceAccounts(t *testing.T, suite *policytest.Suite) {
	t.Helper()
	ctx := context.Background()
	for _, c := range suite.Connections {
		ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: c.Namespace}}
		if err := env.Client.Create(ctx, ns); err != nil && !apierrors.IsAlreadyExists(err) {
			t.Fatal(err)
		}
		sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: c.Namespace, Name: c.ServiceAccount}}
		if err := env.Client.Create(ctx, sa); err != nil && !apierrors.IsAlreadyExists(err) {
			t.Fatal(err)
		}
	}
}

// mint returns a real token for a fixture: its ServiceAccount, its
// audience, and the lifetime it describes (exp − iat).
func mint(t *testing.T, c *policytest.Connection, now time.Time) string {
	t.Helper()
	iat, exp := c.Times(now)
	seconds := int64(exp.Sub(iat) / time.Second)
	tr := &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{Audiences: []string{c.Audience}, ExpirationSeconds: &seconds}}
	out, err := clientset.CoreV1().ServiceAccounts(c.Namespace).CreateToken(context.Background(), c.ServiceAccount, tr, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("TokenRequest for fixture %s: %v", c.Name, err)
	}
	if got := time.Until(out.Status.ExpirationTimestamp.Time); got < time.Duration(seconds-60)*time.Second {
		t.Fatalf("fixture %s: the API server granted %s, not the %ds the fixture describes", c.Name, got, seconds)
	}
	return out.Status.Token
}

// body is the /v1/decide request body of a decision request.
func body(req *decision.Request) map[string]any {
	res := map[string]any{"name": req.Target.Name}
	if req.Target.Service != "" {
		res["namespace"], res["service"] = req.Target.Namespace, req.Target.Service
	} else {
		res["host"] = req.Target.Host
	}
	b := map[string]any{"resource": res, "action": req.Action}
	if req.Token != "" {
		b["credential"] = map[string]any{"token": req.Token}
	}
	if req.Scopes != nil {
		b["scopes"] = req.Scopes
	}
	if req.Attributes != nil {
		b["attributes"] = req.Attributes
	}
	return b
}
