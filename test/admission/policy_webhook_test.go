package admission_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/sallyport/sallyport/api/v1alpha1"
	"github.com/sallyport/sallyport/internal/testenv"
)

func connectionPolicy(ns, name string) *v1alpha1.ConnectionPolicy {
	return &v1alpha1.ConnectionPolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: v1alpha1.ConnectionPolicySpec{
			ServiceAccountName: "worker",
			Reach:              []v1alpha1.Reach{{Class: "ledger", Scopes: []v1alpha1.Scope{"ledger.read"}}},
		},
	}
}

func resourcePolicy(ns, name string) *v1alpha1.ResourcePolicy {
	return &v1alpha1.ResourcePolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: v1alpha1.ResourcePolicySpec{
			Service:        name,
			Class:          "ledger",
			Classification: v1alpha1.ClassificationInternal,
			Rules: []v1alpha1.Rule{{
				Name: "read-entries", Effect: v1alpha1.EffectAllow,
				Actions: []string{"GET"}, Resources: []string{"/entries/**"},
				Scopes:      []v1alpha1.Scope{"ledger.read"},
				Connections: []v1alpha1.ConnectionRef{{Namespace: "billing", Name: "billing-to-ledger"}},
			}},
		},
	}
}

// requireInvalid checks that err is the webhook's Invalid answer and that its
// message holds every want.
func requireInvalid(t *testing.T, err error, want ...string) {
	t.Helper()
	if !apierrors.IsInvalid(err) {
		t.Fatalf("got %v, want an Invalid error", err)
	}
	msg := err.Error()
	if !strings.Contains(msg, "denied the request") {
		t.Errorf("the error does not come from the admission webhook:\n%s", msg)
	}
	for _, w := range want {
		if !strings.Contains(msg, w) {
			t.Errorf("error does not contain %q:\n%s", w, msg)
		}
	}
}

func TestRejectsCELThatDoesNotCompile(t *testing.T) {
	ns := env.Namespace(t, nil)
	rp := resourcePolicy(ns, "ledger-api")
	rp.Spec.Rules[0].When = "request.action == \"GET\" &&\n  resource.klass == \"internal\""
	err := env.Client.Create(context.Background(), rp)
	requireInvalid(t, err,
		`vresourcepolicy.sallyport.dev`,
		`spec.rules[0].when`,
		`rule "read-entries"`,
		`line 2, column`,
		`klass`,
	)

	cp := connectionPolicy(ns, "billing-to-ledger")
	cp.Spec.When = `connection.age < duration("10m") && resource.name == "x"`
	err = env.Client.Create(context.Background(), cp)
	// resource is not in scope in a ConnectionPolicy's condition.
	requireInvalid(t, err, `vconnectionpolicy.sallyport.dev`, `spec.when`, `line 1, column`, `resource`)
}

func TestRejectsNonBoolAndTypeErrors(t *testing.T) {
	ns := env.Namespace(t, nil)
	cp := connectionPolicy(ns, "c1")
	cp.Spec.When = `connection.namespace`
	requireInvalid(t, env.Client.Create(context.Background(), cp), `spec.when`, `bool`)

	cp = connectionPolicy(ns, "c2")
	cp.Spec.When = `request.scopes == "ledger.read"`
	requireInvalid(t, env.Client.Create(context.Background(), cp), `spec.when`, `line 1, column`)
}

func TestRejectsExpressionsOverBudget(t *testing.T) {
	ns := env.Namespace(t, nil)
	rp := resourcePolicy(ns, "ledger-api")
	rp.Spec.Rules[0].When = `request.attributes.all(k, request.attributes.all(k2, request.attributes[k].matches(request.attributes[k2])))`
	requireInvalid(t, env.Client.Create(context.Background(), rp), `spec.rules[0].when`, `rule "read-entries"`, `cost`)
}

func TestRejectsBadPatternsAndAPIAudiences(t *testing.T) {
	ns := env.Namespace(t, nil)
	rp := resourcePolicy(ns, "ledger-api")
	rp.Spec.Rules[0].Resources = []string{"/entries/**/../admin"}
	requireInvalid(t, env.Client.Create(context.Background(), rp), `spec.rules[0].resources[0]`)

	cp := connectionPolicy(ns, "api")
	cp.Spec.Audience = "https://kubernetes.default.svc"
	requireInvalid(t, env.Client.Create(context.Background(), cp), `spec.audience`)
}

func TestAcceptsValidPoliciesWithWarnings(t *testing.T) {
	ns := env.Namespace(t, nil)
	warnings.take()

	cp := connectionPolicy(ns, "wide")
	cp.Spec.Reach[0].Scopes = []v1alpha1.Scope{"*"}
	cp.Spec.MaxTokenLifetime.Duration = 6 * time.Hour
	if err := warned.Create(context.Background(), cp); err != nil {
		t.Fatalf("create: %v", err)
	}
	got := strings.Join(warnings.take(), "\n")
	for _, want := range []string{`spec.reach[0]`, `scope "*"`, `spec.maxTokenLifetime`} {
		if !strings.Contains(got, want) {
			t.Errorf("warnings do not contain %q:\n%s", want, got)
		}
	}

	rp := resourcePolicy(ns, "vault")
	rp.Spec.Classification = v1alpha1.ClassificationRestricted
	rp.Spec.Rules[0].Actions = []string{"*"}
	if err := warned.Create(context.Background(), rp); err != nil {
		t.Fatalf("create: %v", err)
	}
	got = strings.Join(warnings.take(), "\n")
	if !strings.Contains(got, `spec.rules[0]`) || !strings.Contains(got, `action "*"`) {
		t.Errorf("warnings = %q", got)
	}

	// A policy without risky settings gets no warning.
	if err := warned.Create(context.Background(), connectionPolicy(ns, "narrow")); err != nil {
		t.Fatalf("create: %v", err)
	}
	if got := warnings.take(); len(got) != 0 {
		t.Errorf("unexpected warnings %q", got)
	}
}

// Admission warns, rather than rejects, when an older policy holds the
// audience: the older one may be leaving in the same sync.
func TestWarnsAboutAudienceHeldByAnotherPolicy(t *testing.T) {
	ns := env.Namespace(t, nil)
	first := connectionPolicy(ns, "a-first")
	first.Spec.Audience = "https://ledger.example.com/" + ns
	if err := env.Client.Create(context.Background(), first); err != nil {
		t.Fatal(err)
	}
	second := connectionPolicy(ns, "b-second")
	second.Spec.Audience = first.Spec.Audience
	var got string
	// The snapshot learns of the first policy through its watch.
	for range 100 {
		warnings.take()
		if err := warned.Create(context.Background(), second); err != nil {
			t.Fatal(err)
		}
		got = strings.Join(warnings.take(), "\n")
		if got != "" {
			break
		}
		if err := env.Client.Delete(context.Background(), second); err != nil {
			t.Fatal(err)
		}
		second = connectionPolicy(ns, "b-second")
		second.Spec.Audience = first.Spec.Audience
		waitGone(t, second)
	}
	for _, want := range []string{first.Spec.Audience, ns + "/a-first", v1alpha1.ReasonAudienceConflict} {
		if !strings.Contains(got, want) {
			t.Errorf("warning does not contain %q: %q", want, got)
		}
	}
}

// An update that leaves the spec alone is admitted, so a stored policy can
// always be labelled or have its finalizers removed.
func TestSpecPreservingUpdatesAreAdmitted(t *testing.T) {
	ns := env.Namespace(t, nil)
	rp := resourcePolicy(ns, "ledger-api")
	if err := env.Client.Create(context.Background(), rp); err != nil {
		t.Fatal(err)
	}
	before := rp.DeepCopy()
	rp.Labels = map[string]string{"team": "ledger"}
	if err := env.Client.Patch(context.Background(), rp, client.MergeFrom(before)); err != nil {
		t.Fatalf("label update: %v", err)
	}
	before = rp.DeepCopy()
	rp.Spec.Rules[0].When = "request.action ==="
	requireInvalid(t, env.Client.Patch(context.Background(), rp, client.MergeFrom(before)), `spec.rules[0].when`, `line 1, column`)
}

func waitGone(t *testing.T, obj client.Object) {
	t.Helper()
	testenv.Eventually(t, 10*time.Second, func() error {
		err := env.Client.Get(context.Background(), client.ObjectKeyFromObject(obj), obj.DeepCopyObject().(client.Object))
		if apierrors.IsNotFound(err) {
			return nil
		}
		return fmt.Errorf("%s still exists (%w)", obj.GetName(), err)
	})
}
