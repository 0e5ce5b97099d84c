package controllers_test

import (
	"context"
	"fmt"
	"strings"
	"testing"

	eventsv1 "k8s.io/api/events/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/sallyport/sallyport/api/v1alpha1"
	"github.com/sallyport/sallyport/internal/testenv"
)

// A Projected-mode policy reports what the pod webhook does, in the same
// status patch as Ready and Compiled; without spec.token the condition goes.
// (Secret mode is tested end to end in test/tokens.)
func TestProjectedModeReportsTheProjection(t *testing.T) {
	ctx := context.Background()
	ns := env.Namespace(t, nil)
	cp := connectionPolicy(ns, "to-ledger")
	cp.Spec.Token = &v1alpha1.TokenSpec{Mode: v1alpha1.TokenModeProjected, ExpirationSeconds: ptr.To[int64](1200)}
	if err := env.Client.Create(ctx, cp); err != nil {
		t.Fatal(err)
	}
	key := types.NamespacedName{Namespace: ns, Name: "to-ledger"}
	var msg string
	testenv.Eventually(t, timeout, func() error {
		got := &v1alpha1.ConnectionPolicy{}
		if err := env.Client.Get(ctx, key, got); err != nil {
			return err
		}
		c := meta.FindStatusCondition(got.Status.Conditions, v1alpha1.ConditionTokenIssued)
		if c == nil || c.Status != metav1.ConditionTrue || c.Reason != v1alpha1.ReasonTokenProjected {
			return fmt.Errorf("TokenIssued = %+v", c)
		}
		if r := meta.FindStatusCondition(got.Status.Conditions, v1alpha1.ConditionReady); r == nil || r.Status != metav1.ConditionTrue {
			return fmt.Errorf("Ready = %+v", r)
		}
		if got.Status.Token != nil || len(got.Finalizers) != 0 {
			return fmt.Errorf("status.token %+v, finalizers %v", got.Status.Token, got.Finalizers)
		}
		msg = c.Message
		return nil
	})
	for _, want := range []string{"sallyport.dev/connections: to-ledger", "1200 s", "/var/run/secrets/sallyport.dev/to-ledger/token", "restart them", "sallyport.dev/" + ns + "/to-ledger"} {
		if !strings.Contains(msg, want) {
			t.Errorf("message lacks %q: %s", want, msg)
		}
	}

	// A new lifetime is reported: running pods keep the old token until
	// they restart.
	if err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		got := &v1alpha1.ConnectionPolicy{}
		if err := env.Client.Get(ctx, key, got); err != nil {
			return err
		}
		got.Spec.Token.ExpirationSeconds = ptr.To[int64](900)
		return env.Client.Update(ctx, got)
	}); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, timeout, func() error {
		var events eventsv1.EventList
		if err := env.Client.List(ctx, &events, client.InNamespace(ns)); err != nil {
			return err
		}
		for _, e := range events.Items {
			if e.Regarding.Name == "to-ledger" && e.Reason == v1alpha1.ReasonProjectedTokenChanged && strings.Contains(e.Note, "valid 900 s") && strings.Contains(e.Note, "restart") {
				return nil
			}
		}
		return fmt.Errorf("no %s event among %d", v1alpha1.ReasonProjectedTokenChanged, len(events.Items))
	})

	if err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		got := &v1alpha1.ConnectionPolicy{}
		if err := env.Client.Get(ctx, key, got); err != nil {
			return err
		}
		got.Spec.Token = nil
		return env.Client.Update(ctx, got)
	}); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, timeout, func() error {
		got := &v1alpha1.ConnectionPolicy{}
		if err := env.Client.Get(ctx, key, got); err != nil {
			return err
		}
		if c := meta.FindStatusCondition(got.Status.Conditions, v1alpha1.ConditionTokenIssued); c != nil {
			return fmt.Errorf("TokenIssued still set: %+v", c)
		}
		return nil
	})
}
