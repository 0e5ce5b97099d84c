// Package controllers reconciles the status of ConnectionPolicies and
// ResourcePolicies from what the policy store compiled, and issues and
// rotates the tokens ConnectionPolicies ask for (token_phase.go), as a phase
// of the same reconcile that ends in the same single status patch. They run
// on the leader only; the store itself is built on every replica.
package controllers

import (
	"context"
	"fmt"
	"time"
	"unicode/utf8"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/util/workqueue"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/recorder"
	"sigs.k8s.io/controller-runtime/pkg/source"

	"github.com/sallyport/sallyport/api/v1alpha1"
	"github.com/sallyport/sallyport/internal/store"
)

const (
	// notCompiledRequeue is a backstop for the store's notification when a
	// reconcile sees a generation the store has not compiled yet.
	notCompiledRequeue = 5 * time.Second
	// maxConditionMessage is metav1.Condition's limit on message length.
	maxConditionMessage = 32768
	// maxEventNote is the events.k8s.io/v1 limit on a note.
	maxEventNote = 1024
)

// storeSource enqueues the policies of one kind whenever the store's view of
// them changes: compiled, failed, or won or lost a conflict.
func storeSource(s *store.Store, kind store.Kind) source.Source {
	return source.Func(func(_ context.Context, q workqueue.TypedRateLimitingInterface[reconcile.Request]) error {
		s.Subscribe(func(ref store.Ref) {
			if ref.Kind == kind {
				q.Add(reconcile.Request{NamespacedName: ref.NamespacedName})
			}
		})
		return nil
	})
}

// conditionsFor derives the Ready and Compiled conditions from the store's
// status of the object's current generation. what describes the summary's
// rules ("reach entries" or "rules").
func conditionsFor(generation int64, st store.Status, what string) (ready, compiled metav1.Condition) {
	ready = metav1.Condition{Type: v1alpha1.ConditionReady, ObservedGeneration: generation}
	compiled = metav1.Condition{Type: v1alpha1.ConditionCompiled, ObservedGeneration: generation}

	if st.Err != nil {
		serving := "No generation of this policy has compiled: it serves nothing."
		if st.Served > 0 {
			serving = fmt.Sprintf("Generation %d keeps serving.", st.Served)
		}
		msg := truncate(fmt.Sprintf("Generation %d does not compile. %s\n%s", generation, serving, st.Err.Error()), maxConditionMessage)
		compiled.Status, compiled.Reason, compiled.Message = metav1.ConditionFalse, v1alpha1.ReasonCompileFailed, msg
		ready.Status, ready.Reason, ready.Message = metav1.ConditionFalse, v1alpha1.ReasonCompileFailed, msg
		return ready, compiled
	}

	compiled.Status, compiled.Reason = metav1.ConditionTrue, v1alpha1.ReasonCompiled
	compiled.Message = fmt.Sprintf("Generation %d compiled: %d %s, %d expressions, estimated cost %d.",
		generation, st.Summary.Rules, what, st.Summary.Expressions, st.Summary.EstimatedCost)

	if c := st.Conflict; c != nil {
		ready.Status, ready.Reason = metav1.ConditionFalse, c.Reason
		ready.Message = fmt.Sprintf("%s %q is held by the older policy %s; this policy serves nothing while that one claims it.",
			claimNoun(c.Reason), c.Claim, c.Holder)
		return ready, compiled
	}
	ready.Status, ready.Reason = metav1.ConditionTrue, v1alpha1.ReasonReady
	ready.Message = fmt.Sprintf("Generation %d serves decisions.", generation)
	return ready, compiled
}

func claimNoun(reason string) string {
	switch reason {
	case v1alpha1.ReasonAudienceConflict:
		return "Audience"
	case v1alpha1.ReasonHostConflict:
		return "Host"
	}
	return "Service"
}

// compiledStatus summarises the served generation, nil when none serves.
func compiledStatus(st store.Status) *v1alpha1.CompiledStatus {
	if st.Served == 0 {
		return nil
	}
	return &v1alpha1.CompiledStatus{
		Generation:    st.Served,
		Rules:         int32(st.Summary.Rules),
		Expressions:   int32(st.Summary.Expressions),
		EstimatedCost: int64(st.Summary.EstimatedCost),
	}
}

// setConditions applies ready and compiled to conds and emits an Event when
// Ready changes, so `kubectl describe` shows the history.
func setConditions(conds *[]metav1.Condition, obj runtime.Object, rec recorder.EventRecorder, ready, compiled metav1.Condition) {
	prev := meta.FindStatusCondition(*conds, v1alpha1.ConditionReady)
	// A new failure is news even when the reason stays; a new healthy
	// generation is not.
	changed := prev == nil || prev.Status != ready.Status || prev.Reason != ready.Reason ||
		(ready.Status != metav1.ConditionTrue && prev.Message != ready.Message)
	meta.SetStatusCondition(conds, compiled)
	meta.SetStatusCondition(conds, ready)
	if !changed || rec == nil {
		return
	}
	note := truncate(ready.Message, maxEventNote)
	if ready.Status == metav1.ConditionTrue {
		rec.Eventf(obj, nil, corev1.EventTypeNormal, ready.Reason, "Compile", "%s", note)
	} else {
		rec.Eventf(obj, nil, corev1.EventTypeWarning, ready.Reason, "Compile", "%s", note)
	}
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	const more = "… (truncated)"
	cut := n - len(more)
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + more
}
