package controllers

import (
	"context"
	"fmt"
	"time"

	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/recorder"

	"github.com/sallyport/sallyport/api/v1alpha1"
	"github.com/sallyport/sallyport/internal/store"
	"github.com/sallyport/sallyport/internal/usage"
)

// +kubebuilder:rbac:groups=policy.sallyport.dev,resources=connectionpolicies;resourcepolicies,verbs=get;list;watch
// +kubebuilder:rbac:groups=policy.sallyport.dev,resources=connectionpolicies/status;resourcepolicies/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch
// +kubebuilder:rbac:groups="",resources=namespaces,verbs=get;list;watch

// statusFields points at the status fields both kinds share.
type statusFields struct {
	conditions         *[]metav1.Condition
	observedGeneration *int64
	compiled           **v1alpha1.CompiledStatus
}

// kindOf adapts one policy kind to the shared reconciler.
type kindOf[T client.Object] struct {
	kind store.Kind
	// rules names what Summary.Rules counts, for messages.
	rules  string
	newObj func() T
	fields func(T) statusFields
	// extra sets the kind's own status fields.
	extra func(T, store.Status)
	// usage sets status.usage or status.dryRun from the merged view and
	// says when to look again (0: on the next change).
	usage func(*UsageTracking, T, store.Status, *usage.View) time.Duration
	// phase is the kind's own work in a reconcile (token issuance for
	// ConnectionPolicies); nil for none.
	phase phase[T]
	// predicates select the updates of the policy that are reconciled.
	predicates []predicate.Predicate
}

// phase is work a kind does in its reconcile besides reporting what the
// store compiled. It writes its results into the object's status, so the
// reconcile still ends in one status patch: the status has one writer.
type phase[T client.Object] interface {
	// fetch returns the object to reconcile: obj as the cache has it, or a
	// fresh read when the phase is about to act on what status records and
	// a lagging cache would make it act twice.
	fetch(ctx context.Context, obj T) (T, error)
	// finalize releases what the phase holds for an object being deleted
	// and removes its finalizer.
	finalize(ctx context.Context, obj T) error
	// prepare adds or removes the phase's finalizer (and releases what an
	// object no longer needs) before the status is computed. It may patch
	// the object's metadata.
	prepare(ctx context.Context, obj T) error
	// run does the phase's work and sets its status fields and condition on
	// obj. observedGeneration is the generation the status described before
	// this reconcile. The result says when to reconcile again.
	run(ctx context.Context, obj T, observedGeneration int64) ctrl.Result
	// forget drops what the phase keeps about a policy that is gone.
	forget(types.NamespacedName)
}

// PolicyReconciler reports in a policy's status what the store compiled and
// serves for it: one status patch per reconcile, with observedGeneration and
// the Ready and Compiled conditions.
type PolicyReconciler[T client.Object] struct {
	Client   client.Client
	Store    *store.Store
	Recorder recorder.EventRecorder
	// Usage is where the merged usage comes from; nil leaves status.usage
	// and status.dryRun alone.
	Usage *UsageTracking
	kind  kindOf[T]
}

// NewConnectionPolicyReconciler returns the ConnectionPolicy reconciler: the
// status of what the store compiled, and the tokens spec.token asks for,
// issued by tokens (nil issues none and reports nothing about tokens).
func NewConnectionPolicyReconciler(c client.Client, s *store.Store, rec recorder.EventRecorder, tokens *TokenIssuer) *PolicyReconciler[*v1alpha1.ConnectionPolicy] {
	k := kindOf[*v1alpha1.ConnectionPolicy]{
		kind:   store.KindConnection,
		rules:  "reach entries",
		newObj: func() *v1alpha1.ConnectionPolicy { return &v1alpha1.ConnectionPolicy{} },
		fields: func(o *v1alpha1.ConnectionPolicy) statusFields {
			return statusFields{&o.Status.Conditions, &o.Status.ObservedGeneration, &o.Status.Compiled}
		},
		extra:      func(o *v1alpha1.ConnectionPolicy, st store.Status) { o.Status.Audience = st.Audience },
		usage:      (*UsageTracking).connectionUsage,
		predicates: []predicate.Predicate{predicate.GenerationChangedPredicate{}},
	}
	if tokens != nil {
		tokens.rec = rec
		k.phase = tokens
		k.predicates = append(k.predicates, tokenPredicate())
	}
	return &PolicyReconciler[*v1alpha1.ConnectionPolicy]{Client: c, Store: s, Recorder: rec, kind: k}
}

// NewResourcePolicyReconciler returns the ResourcePolicy status reconciler.
func NewResourcePolicyReconciler(c client.Client, s *store.Store, rec recorder.EventRecorder) *PolicyReconciler[*v1alpha1.ResourcePolicy] {
	return &PolicyReconciler[*v1alpha1.ResourcePolicy]{Client: c, Store: s, Recorder: rec, kind: kindOf[*v1alpha1.ResourcePolicy]{
		kind:   store.KindResource,
		rules:  "rules",
		newObj: func() *v1alpha1.ResourcePolicy { return &v1alpha1.ResourcePolicy{} },
		fields: func(o *v1alpha1.ResourcePolicy) statusFields {
			return statusFields{&o.Status.Conditions, &o.Status.ObservedGeneration, &o.Status.Compiled}
		},
		extra:      func(*v1alpha1.ResourcePolicy, store.Status) {},
		usage:      (*UsageTracking).resourceUsage,
		predicates: []predicate.Predicate{predicate.GenerationChangedPredicate{}},
	}}
}

// Reconcile fetches the policy, reads the store's status of its current
// generation, runs the kind's phase and patches the status once.
func (r *PolicyReconciler[T]) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	obj := r.kind.newObj()
	if err := r.Client.Get(ctx, req.NamespacedName, obj); err != nil {
		if apierrors.IsNotFound(err) {
			forgetUsageMetrics(r.kind.kind, req.Namespace, req.Name)
			if r.kind.phase != nil {
				r.kind.phase.forget(req.NamespacedName)
			}
		}
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if ph := r.kind.phase; ph != nil {
		fresh, err := ph.fetch(ctx, obj)
		if err != nil {
			if apierrors.IsNotFound(err) {
				ph.forget(req.NamespacedName)
			}
			return ctrl.Result{}, client.IgnoreNotFound(err)
		}
		obj = fresh
		if !obj.GetDeletionTimestamp().IsZero() {
			return ctrl.Result{}, ph.finalize(ctx, obj)
		}
		if err := ph.prepare(ctx, obj); err != nil {
			return ctrl.Result{}, err
		}
	}
	st, ok := r.Store.Snapshot().Status(store.Ref{Kind: r.kind.kind, NamespacedName: req.NamespacedName})
	if !ok || st.UID != obj.GetUID() || st.Generation != obj.GetGeneration() {
		// The store has not compiled this generation yet; it will notify.
		return ctrl.Result{RequeueAfter: notCompiledRequeue}, nil
	}

	before, ok := obj.DeepCopyObject().(T)
	if !ok {
		return ctrl.Result{}, fmt.Errorf("deep copy of %s %s has type %T", r.kind.kind, req.NamespacedName, obj.DeepCopyObject())
	}
	f := r.kind.fields(obj)
	observed := *f.observedGeneration
	var res ctrl.Result
	if ph := r.kind.phase; ph != nil {
		res = ph.run(ctx, obj, observed)
	}
	ready, compiled := conditionsFor(obj.GetGeneration(), st, r.kind.rules)
	ready = withToken(ready, *f.conditions)
	setConditions(f.conditions, obj, r.Recorder, ready, compiled)
	*f.observedGeneration = obj.GetGeneration()
	*f.compiled = compiledStatus(st)
	r.kind.extra(obj, st)
	if r.Usage != nil {
		if v := r.Usage.Merger.View(); v != nil {
			if again := r.kind.usage(r.Usage, obj, st, v); again > 0 && (res.RequeueAfter == 0 || again < res.RequeueAfter) {
				res.RequeueAfter = again
			}
		}
	}
	if equality.Semantic.DeepEqual(before, obj) {
		return res, nil
	}
	if err := r.Client.Status().Patch(ctx, obj, client.MergeFrom(before)); err != nil {
		return ctrl.Result{}, fmt.Errorf("patch status of %s %s: %w", r.kind.kind, req.NamespacedName, err)
	}
	return res, nil
}

// concurrentReconciles is how many policies of a kind are reconciled at
// once. The workqueue never hands one policy to two workers; what the
// workers share is safe for concurrent use (the store and the merged usage
// are read atomically, the token phase's scheduler is stateless and its
// sweep record locked), and two policies that claim one Secret are told
// apart by the API server's optimistic concurrency (SecretConflict). Four
// shortens the time for 1,000 policies to be Ready by about a third
// (docs/benchmarks-controlplane.md).
const concurrentReconciles = 4

// SetupWithManager registers the reconciler: it runs when the policy's
// generation changes (for ConnectionPolicies that issue tokens also when the
// renew annotation changes or deletion starts) and whenever the store's view
// of the policy changes.
func (r *PolicyReconciler[T]) SetupWithManager(mgr ctrl.Manager) error {
	b := ctrl.NewControllerManagedBy(mgr).
		WithOptions(controller.Options{MaxConcurrentReconciles: concurrentReconciles}).
		For(r.kind.newObj(), builder.WithPredicates(predicate.Or(r.kind.predicates...))).
		WatchesRawSource(storeSource(r.Store, r.kind.kind))
	if r.Usage != nil {
		b = b.WatchesRawSource(usageSource(r.Usage.Merger, r.kind.kind))
	}
	return b.Named(string(r.kind.kind)).Complete(r)
}

// withToken folds a failed token issuance into Ready: a policy that asks for
// a token is ready only when its token is in place, so a pipeline that waits
// for Ready before starting the token's consumers waits for the token too.
func withToken(ready metav1.Condition, conds []metav1.Condition) metav1.Condition {
	tok := meta.FindStatusCondition(conds, v1alpha1.ConditionTokenIssued)
	if ready.Status != metav1.ConditionTrue || tok == nil || tok.Status == metav1.ConditionTrue {
		return ready
	}
	ready.Status, ready.Reason = metav1.ConditionFalse, tok.Reason
	ready.Message = truncate(ready.Message+" Its token is not issued: "+tok.Message, maxConditionMessage)
	return ready
}
