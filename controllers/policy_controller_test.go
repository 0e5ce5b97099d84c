package controllers_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	eventsv1 "k8s.io/api/events/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/sallyport/sallyport/api/v1alpha1"
	"github.com/sallyport/sallyport/internal/manager"
	"github.com/sallyport/sallyport/internal/policy"
	"github.com/sallyport/sallyport/internal/testenv"
)

const timeout = 30 * time.Second

func connectionPolicy(ns, name string) *v1alpha1.ConnectionPolicy {
	return &v1alpha1.ConnectionPolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: v1alpha1.ConnectionPolicySpec{
			ServiceAccountName: "worker",
			Reach: []v1alpha1.Reach{{
				Class:             "ledger",
				Scopes:            []v1alpha1.Scope{"ledger.read"},
				MaxClassification: v1alpha1.ClassificationConfidential,
			}},
			When: `connection.lifetime <= duration("1h")`,
		},
	}
}

func resourcePolicy(ns, name string) *v1alpha1.ResourcePolicy {
	return &v1alpha1.ResourcePolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: v1alpha1.ResourcePolicySpec{
			Service:        name,
			Class:          "ledger",
			Classification: v1alpha1.ClassificationConfidential,
			Rules: []v1alpha1.Rule{
				{Name: "no-deletes", Effect: v1alpha1.EffectDeny, Actions: []string{"DELETE"}, Resources: []string{"/**"}},
				{
					Name: "read-entries", Effect: v1alpha1.EffectAllow,
					Actions: []string{"GET"}, Resources: []string{"/entries/*"},
					Scopes:      []v1alpha1.Scope{"ledger.read"},
					Connections: []v1alpha1.ConnectionRef{{Namespace: "billing", Name: "billing-to-ledger"}},
					When:        `resource.classification == "confidential" && request.action == "GET"`,
				},
			},
		},
	}
}

// waitReady waits until obj's Ready condition has the status and reason,
// for its current generation, and returns the condition.
func waitReady(t *testing.T, obj client.Object, status metav1.ConditionStatus, reason string) metav1.Condition {
	t.Helper()
	var got metav1.Condition
	testenv.Eventually(t, timeout, func() error {
		if err := env.Client.Get(context.Background(), client.ObjectKeyFromObject(obj), obj); err != nil {
			return err
		}
		conds, observed := conditionsOf(obj)
		c := meta.FindStatusCondition(conds, v1alpha1.ConditionReady)
		switch {
		case c == nil:
			return fmt.Errorf("no Ready condition yet")
		case observed != obj.GetGeneration() || c.ObservedGeneration != obj.GetGeneration():
			return fmt.Errorf("status observed generation %d (condition %d), object is at %d", observed, c.ObservedGeneration, obj.GetGeneration())
		case c.Status != status || c.Reason != reason:
			return fmt.Errorf("Ready=%s reason %s (%s), want Ready=%s reason %s", c.Status, c.Reason, c.Message, status, reason)
		}
		got = *c
		return nil
	})
	return got
}

func conditionsOf(obj client.Object) ([]metav1.Condition, int64) {
	switch o := obj.(type) {
	case *v1alpha1.ConnectionPolicy:
		return o.Status.Conditions, o.Status.ObservedGeneration
	case *v1alpha1.ResourcePolicy:
		return o.Status.Conditions, o.Status.ObservedGeneration
	}
	panic(fmt.Sprintf("unexpected %T", obj))
}

func create(t *testing.T, obj client.Object) {
	t.Helper()
	if err := env.Client.Create(context.Background(), obj); err != nil {
		t.Fatalf("create %s: %v", obj.GetName(), err)
	}
}

func update(t *testing.T, obj client.Object, mutate func()) {
	t.Helper()
	if err := env.Client.Get(context.Background(), client.ObjectKeyFromObject(obj), obj); err != nil {
		t.Fatalf("get %s: %v", obj.GetName(), err)
	}
	mutate()
	if err := env.Client.Update(context.Background(), obj); err != nil {
		t.Fatalf("update %s: %v", obj.GetName(), err)
	}
}

func TestConnectionPolicyBecomesReady(t *testing.T) {
	ns := env.Namespace(t, nil)
	cp := connectionPolicy(ns, "billing-to-ledger")
	create(t, cp)

	ready := waitReady(t, cp, metav1.ConditionTrue, v1alpha1.ReasonReady)
	if !strings.Contains(ready.Message, "serves decisions") {
		t.Errorf("Ready message = %q", ready.Message)
	}
	compiled := meta.FindStatusCondition(cp.Status.Conditions, v1alpha1.ConditionCompiled)
	if compiled == nil || compiled.Status != metav1.ConditionTrue || compiled.Reason != v1alpha1.ReasonCompiled {
		t.Fatalf("Compiled condition = %+v", compiled)
	}
	if want := policy.DefaultAudience(ns, "billing-to-ledger"); cp.Status.Audience != want {
		t.Errorf("status.audience = %q, want %q", cp.Status.Audience, want)
	}
	if c := cp.Status.Compiled; c == nil || c.Generation != cp.Generation || c.Rules != 1 || c.Expressions != 1 || c.EstimatedCost <= 0 {
		t.Errorf("status.compiled = %+v", c)
	}
	// The CRD's defaults are applied by the API server.
	if cp.Spec.Enforcement != v1alpha1.EnforcementEnforce || cp.Spec.MaxTokenLifetime.Duration != time.Hour {
		t.Errorf("defaults: enforcement %q, maxTokenLifetime %s", cp.Spec.Enforcement, cp.Spec.MaxTokenLifetime.Duration)
	}

	served, ok := op.Store.Snapshot().ConnectionByAudience(v1alpha1.EnforcementEnforce, cp.Status.Audience)
	if !ok || served.Ref != (types.NamespacedName{Namespace: ns, Name: cp.Name}) {
		t.Fatalf("store does not serve the audience: %v %+v", ok, served)
	}
}

func TestResourcePolicyBecomesReady(t *testing.T) {
	ns := env.Namespace(t, nil)
	rp := resourcePolicy(ns, "ledger-api")
	create(t, rp)
	waitReady(t, rp, metav1.ConditionTrue, v1alpha1.ReasonReady)
	if c := rp.Status.Compiled; c == nil || c.Rules != 2 || c.Expressions != 1 {
		t.Errorf("status.compiled = %+v", c)
	}
	served, ok := op.Store.Snapshot().ResourceByService(v1alpha1.EnforcementEnforce, ns, "ledger-api")
	if !ok || served.Meta.Generation != rp.Generation || len(served.Deny) != 1 || len(served.Allow) != 1 {
		t.Fatalf("store serves %+v, %v", served, ok)
	}
}

// An invalid policy stored while the webhook is not registered reports
// Ready=False with the compiler's message, and its last good generation keeps
// serving.
func TestInvalidUpdateKeepsLastGoodVersion(t *testing.T) {
	ns := env.Namespace(t, nil)
	rp := resourcePolicy(ns, "ledger-api")
	create(t, rp)
	waitReady(t, rp, metav1.ConditionTrue, v1alpha1.ReasonReady)
	good := rp.Generation

	update(t, rp, func() { rp.Spec.Rules[1].When = "request.action == 1 ||\n  resource.nme == \"x\"" })
	ready := waitReady(t, rp, metav1.ConditionFalse, v1alpha1.ReasonCompileFailed)
	for _, want := range []string{
		fmt.Sprintf("Generation %d keeps serving", good),
		`spec.rules[1].when`,
		`rule "read-entries"`,
		"line 1, column",
		"line 2, column",
		"resource.nme",
	} {
		if !strings.Contains(ready.Message, want) {
			t.Errorf("Ready message does not contain %q:\n%s", want, ready.Message)
		}
	}
	compiled := meta.FindStatusCondition(rp.Status.Conditions, v1alpha1.ConditionCompiled)
	if compiled == nil || compiled.Status != metav1.ConditionFalse || compiled.Message != ready.Message {
		t.Errorf("Compiled condition = %+v", compiled)
	}
	if rp.Status.Compiled == nil || rp.Status.Compiled.Generation != good {
		t.Errorf("status.compiled = %+v, want generation %d", rp.Status.Compiled, good)
	}
	served, ok := op.Store.Snapshot().ResourceByService(v1alpha1.EnforcementEnforce, ns, "ledger-api")
	if !ok || served.Meta.Generation != good {
		t.Fatalf("store serves %+v (ok %v), want generation %d", served, ok, good)
	}
	if w := served.Allow[0].When; w == nil || !strings.Contains(w.Source(), `resource.classification == "confidential"`) {
		t.Errorf("served rule is not the last good one: %+v", served.Allow[0])
	}

	// A Warning Event records the failure.
	testenv.Eventually(t, timeout, func() error {
		var events eventsv1.EventList
		if err := env.Client.List(context.Background(), &events, client.InNamespace(ns)); err != nil {
			return err
		}
		for _, e := range events.Items {
			if e.Regarding.Name == rp.Name && e.Type == "Warning" && e.Reason == v1alpha1.ReasonCompileFailed && strings.Contains(e.Note, "read-entries") {
				return nil
			}
		}
		return fmt.Errorf("no CompileFailed Warning event among %d events", len(events.Items))
	})

	// Fixing it serves the new generation.
	update(t, rp, func() { rp.Spec.Rules[1].When = `request.action == "GET"` })
	waitReady(t, rp, metav1.ConditionTrue, v1alpha1.ReasonReady)
	served, _ = op.Store.Snapshot().ResourceByService(v1alpha1.EnforcementEnforce, ns, "ledger-api")
	if served.Meta.Generation != rp.Generation {
		t.Errorf("store serves generation %d, want %d", served.Meta.Generation, rp.Generation)
	}
}

func TestInvalidNewPolicyServesNothing(t *testing.T) {
	ns := env.Namespace(t, nil)
	cp := connectionPolicy(ns, "broken")
	cp.Spec.When = `connection.age < duration("10m") && request.nope`
	create(t, cp)
	ready := waitReady(t, cp, metav1.ConditionFalse, v1alpha1.ReasonCompileFailed)
	for _, want := range []string{"serves nothing", "spec.when", "line 1, column", "nope"} {
		if !strings.Contains(ready.Message, want) {
			t.Errorf("Ready message does not contain %q:\n%s", want, ready.Message)
		}
	}
	if cp.Status.Compiled != nil {
		t.Errorf("status.compiled = %+v, want none", cp.Status.Compiled)
	}
	if _, ok := op.Store.Snapshot().ConnectionByAudience(v1alpha1.EnforcementEnforce, policy.DefaultAudience(ns, "broken")); ok {
		t.Error("store serves a policy that never compiled")
	}
}

func TestOverBudgetExpressionIsReported(t *testing.T) {
	ns := env.Namespace(t, nil)
	cp := connectionPolicy(ns, "expensive")
	cp.Spec.When = `request.attributes.all(k, request.attributes.all(k2, request.attributes[k].matches(request.attributes[k2])))`
	create(t, cp)
	ready := waitReady(t, cp, metav1.ConditionFalse, v1alpha1.ReasonCompileFailed)
	if !strings.Contains(ready.Message, "cost") || !strings.Contains(ready.Message, "spec.when") {
		t.Errorf("Ready message does not explain the cost:\n%s", ready.Message)
	}
}

func TestUpdateRecompilesAndDeleteRemoves(t *testing.T) {
	ns := env.Namespace(t, nil)
	cp := connectionPolicy(ns, "billing-to-ledger")
	create(t, cp)
	waitReady(t, cp, metav1.ConditionTrue, v1alpha1.ReasonReady)
	aud := cp.Status.Audience

	update(t, cp, func() {
		cp.Spec.Reach = append(cp.Spec.Reach, v1alpha1.Reach{Class: "payments", Scopes: []v1alpha1.Scope{"payments.read"}})
	})
	waitReady(t, cp, metav1.ConditionTrue, v1alpha1.ReasonReady)
	if cp.Status.Compiled == nil || cp.Status.Compiled.Rules != 2 || cp.Status.ObservedGeneration != 2 {
		t.Errorf("after update: observedGeneration %d, compiled %+v", cp.Status.ObservedGeneration, cp.Status.Compiled)
	}
	served, ok := op.Store.Snapshot().ConnectionByAudience(v1alpha1.EnforcementEnforce, aud)
	if !ok || served.Meta.Generation != 2 {
		t.Fatalf("store serves %+v", served)
	}
	if _, ok := served.Reach["payments"]; !ok {
		t.Errorf("served reach %v lacks payments", served.Reach)
	}

	if err := env.Client.Delete(context.Background(), cp); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, timeout, func() error {
		if _, ok := op.Store.Snapshot().ConnectionByAudience(v1alpha1.EnforcementEnforce, aud); ok {
			return fmt.Errorf("store still serves %s", aud)
		}
		return nil
	})
}

// Two policies claiming one audience: the older keeps it on every replica,
// the younger reports AudienceConflict and takes it only when the older
// lets go.
func TestAudienceConflict(t *testing.T) {
	ns := env.Namespace(t, nil)
	older := connectionPolicy(ns, "a-older")
	older.Spec.Audience = "https://ledger.example.com/" + ns
	create(t, older)
	waitReady(t, older, metav1.ConditionTrue, v1alpha1.ReasonReady)

	// The younger sorts after the older by name too, so the outcome does not
	// depend on whether both were created within the same second.
	younger := connectionPolicy(ns, "b-younger")
	younger.Spec.Audience = older.Spec.Audience
	create(t, younger)
	ready := waitReady(t, younger, metav1.ConditionFalse, v1alpha1.ReasonAudienceConflict)
	if !strings.Contains(ready.Message, ns+"/a-older") || !strings.Contains(ready.Message, older.Spec.Audience) {
		t.Errorf("conflict message = %q", ready.Message)
	}

	// A change to the younger does not take the audience over.
	update(t, younger, func() { younger.Spec.Reach[0].Scopes = []v1alpha1.Scope{"ledger.read", "ledger.write"} })
	waitReady(t, younger, metav1.ConditionFalse, v1alpha1.ReasonAudienceConflict)
	waitReady(t, older, metav1.ConditionTrue, v1alpha1.ReasonReady)
	served, _ := op.Store.Snapshot().ConnectionByAudience(v1alpha1.EnforcementEnforce, older.Spec.Audience)
	if served == nil || served.Ref.Name != "a-older" {
		t.Fatalf("audience served by %+v, want a-older", served)
	}

	// A DryRun policy may claim the audience: uniqueness is per enforcement.
	dry := connectionPolicy(ns, "c-dryrun")
	dry.Spec.Audience = older.Spec.Audience
	dry.Spec.Enforcement = v1alpha1.EnforcementDryRun
	create(t, dry)
	waitReady(t, dry, metav1.ConditionTrue, v1alpha1.ReasonReady)

	if err := env.Client.Delete(context.Background(), older); err != nil {
		t.Fatal(err)
	}
	waitReady(t, younger, metav1.ConditionTrue, v1alpha1.ReasonReady)
	served, _ = op.Store.Snapshot().ConnectionByAudience(v1alpha1.EnforcementEnforce, older.Spec.Audience)
	if served == nil || served.Ref.Name != "b-younger" {
		t.Fatalf("audience served by %+v after the older was deleted, want b-younger", served)
	}
}

func TestHostConflict(t *testing.T) {
	ns := env.Namespace(t, nil)
	host := "ledger." + ns + ".example.com"
	older := resourcePolicy(ns, "a-older")
	older.Spec.Hosts = []string{host}
	create(t, older)
	waitReady(t, older, metav1.ConditionTrue, v1alpha1.ReasonReady)

	// The younger sorts after the older by name too, so the outcome does not
	// depend on whether both were created within the same second.
	younger := resourcePolicy(ns, "b-younger")
	younger.Spec.Hosts = []string{"other." + ns + ".example.com", host}
	create(t, younger)
	ready := waitReady(t, younger, metav1.ConditionFalse, v1alpha1.ReasonHostConflict)
	if !strings.Contains(ready.Message, host) || !strings.Contains(ready.Message, ns+"/a-older") {
		t.Errorf("conflict message = %q", ready.Message)
	}
	// The loser serves nothing, not even its uncontested host.
	if _, ok := op.Store.Snapshot().ResourceByHost(v1alpha1.EnforcementEnforce, "other."+ns+".example.com"); ok {
		t.Error("the losing policy serves its other host")
	}
}

func TestAPIServerAudiencesAreRefused(t *testing.T) {
	ns := env.Namespace(t, nil)
	for i, aud := range []string{"https://kubernetes.default.svc", "https://kubernetes.default.svc.cluster.local/"} {
		cp := connectionPolicy(ns, fmt.Sprintf("api-%d", i))
		cp.Spec.Audience = aud
		create(t, cp)
		ready := waitReady(t, cp, metav1.ConditionFalse, v1alpha1.ReasonCompileFailed)
		if !strings.Contains(ready.Message, "spec.audience") {
			t.Errorf("audience %q: message %q does not name spec.audience", aud, ready.Message)
		}
	}
}

// The CRD schema rejects what is malformed before any controller sees it,
// naming the field.
func TestSchemaValidation(t *testing.T) {
	ns := env.Namespace(t, nil)
	long := strings.Repeat("a", 300)
	tests := []struct {
		name  string
		obj   client.Object
		field string
	}{
		{"unknown classification", func() client.Object {
			rp := resourcePolicy(ns, "x1")
			rp.Spec.Classification = "secret"
			return rp
		}(), "spec.classification"},
		{"unknown maxClassification", func() client.Object {
			cp := connectionPolicy(ns, "x2")
			cp.Spec.Reach[0].MaxClassification = "top-secret"
			return cp
		}(), "spec.reach[0].maxClassification"},
		{"unknown effect", func() client.Object {
			rp := resourcePolicy(ns, "x3")
			rp.Spec.Rules[0].Effect = "Maybe"
			return rp
		}(), "spec.rules[0].effect"},
		{"unknown enforcement", func() client.Object {
			cp := connectionPolicy(ns, "x4")
			cp.Spec.Enforcement = "Audit"
			return cp
		}(), "spec.enforcement"},
		{"serviceAccountName too long", func() client.Object {
			cp := connectionPolicy(ns, "x5")
			cp.Spec.ServiceAccountName = long
			return cp
		}(), "spec.serviceAccountName"},
		{"expression too long", func() client.Object {
			cp := connectionPolicy(ns, "x6")
			cp.Spec.When = v1alpha1.Expression("true && " + strings.Repeat("true && ", 600) + "true")
			return cp
		}(), "spec.when"},
		{"too many scopes", func() client.Object {
			cp := connectionPolicy(ns, "x7")
			for i := range 70 {
				cp.Spec.Reach[0].Scopes = append(cp.Spec.Reach[0].Scopes, v1alpha1.Scope(fmt.Sprintf("s%d", i)))
			}
			return cp
		}(), "spec.reach[0].scopes"},
		{"token lifetime 3607", func() client.Object {
			cp := connectionPolicy(ns, "x8")
			cp.Spec.Token = &v1alpha1.TokenSpec{Mode: v1alpha1.TokenModeProjected, ExpirationSeconds: new(int64(3607))}
			cp.Spec.MaxTokenLifetime = metav1.Duration{Duration: 2 * time.Hour}
			return cp
		}(), "spec.token.expirationSeconds"},
		{"token outlives maxTokenLifetime", func() client.Object {
			cp := connectionPolicy(ns, "x9")
			cp.Spec.Token = &v1alpha1.TokenSpec{Mode: v1alpha1.TokenModeProjected, ExpirationSeconds: new(int64(7200))}
			return cp
		}(), "spec.token.expirationSeconds"},
		{"token below the API server's floor", func() client.Object {
			cp := connectionPolicy(ns, "x10")
			cp.Spec.Token = &v1alpha1.TokenSpec{Mode: v1alpha1.TokenModeSecret, ExpirationSeconds: new(int64(60))}
			return cp
		}(), "spec.token.expirationSeconds"},
		{"secretName without Secret mode", func() client.Object {
			cp := connectionPolicy(ns, "x11")
			cp.Spec.Token = &v1alpha1.TokenSpec{Mode: v1alpha1.TokenModeProjected, SecretName: "t"}
			return cp
		}(), "spec.token.secretName"},
		{"maxTokenLifetime over 48h", func() client.Object {
			cp := connectionPolicy(ns, "x12")
			cp.Spec.MaxTokenLifetime = metav1.Duration{Duration: 72 * time.Hour}
			return cp
		}(), "spec.maxTokenLifetime"},
		{"Allow rule without connections", func() client.Object {
			rp := resourcePolicy(ns, "x13")
			rp.Spec.Rules[1].Connections = nil
			return rp
		}(), "spec.rules[1].connections"},
		{"connection entry with both name and selector", func() client.Object {
			rp := resourcePolicy(ns, "x14")
			rp.Spec.Rules[1].Connections = []v1alpha1.ConnectionRef{{Name: "a", NamespaceSelector: &v1alpha1.LabelSelector{}}}
			return rp
		}(), "spec.rules[1].connections[0]"},
		{"duplicate rule names", func() client.Object {
			rp := resourcePolicy(ns, "x15")
			rp.Spec.Rules[1].Name = rp.Spec.Rules[0].Name
			return rp
		}(), "spec.rules[1]"},
		{"duplicate reach classes", func() client.Object {
			cp := connectionPolicy(ns, "x16")
			cp.Spec.Reach = append(cp.Spec.Reach, cp.Spec.Reach[0])
			return cp
		}(), "spec.reach[1]"},
		{"invalid rule name", func() client.Object {
			rp := resourcePolicy(ns, "x17")
			rp.Spec.Rules[0].Name = "No Deletes"
			return rp
		}(), "spec.rules[0].name"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := env.Client.Create(context.Background(), tc.obj)
			if !apierrors.IsInvalid(err) {
				t.Fatalf("create: got %v, want Invalid", err)
			}
			if !strings.Contains(err.Error(), tc.field) {
				t.Errorf("error does not name %s:\n%v", tc.field, err)
			}
		})
	}
}

// Every replica compiles and serves policies; only the leader writes status.
// A second manager that never wins the election (the Lease is held by
// another identity) still serves what the first one reports Ready.
func TestReplicaWithoutLeadershipServes(t *testing.T) {
	ns := env.Namespace(t, nil)
	holder := "another-replica"
	lease := &coordinationv1.Lease{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: manager.LeaderElectionID},
		Spec: coordinationv1.LeaseSpec{
			HolderIdentity:       &holder,
			LeaseDurationSeconds: new(int32(3600)),
			AcquireTime:          &metav1.MicroTime{Time: time.Now()},
			RenewTime:            &metav1.MicroTime{Time: time.Now()},
		},
	}
	create(t, lease)

	replica, stop, err := env.StartOperator(manager.Options{
		LeaderElect: true, LeaderElectionNamespace: ns, ReplicaOfAnother: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer stop()

	rp := resourcePolicy(ns, "ledger-api")
	create(t, rp)
	waitReady(t, rp, metav1.ConditionTrue, v1alpha1.ReasonReady)
	testenv.Eventually(t, timeout, func() error {
		served, ok := replica.Store.Snapshot().ResourceByService(v1alpha1.EnforcementEnforce, ns, "ledger-api")
		if !ok || served.Meta.Generation != rp.Generation {
			return fmt.Errorf("the replica serves %+v", served)
		}
		return nil
	})
	select {
	case <-replica.Manager.Elected():
		t.Fatal("the replica was elected although another holds the lease")
	default:
	}
}
