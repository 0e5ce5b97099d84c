package controllers

import (
	"context"
	"fmt"

	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/recorder"

	"github.com/sallyport/sallyport/api/v1alpha1"
	"github.com/sallyport/sallyport/internal/store"
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
}

// PolicyReconciler reports in a policy's status what the store compiled and
// serves for it: one status patch per reconcile, with observedGeneration and
// the Ready and Compiled conditions.
type PolicyReconciler[T client.Object] struct {
	Client   client.Client
	Store    *store.Store
	Recorder recorder.EventRecorder
	kind     kindOf[T]
}

// NewConnectionPolicyReconciler returns the ConnectionPolicy status
// reconciler.
func NewConnectionPolicyReconciler(c client.Client, s *store.Store, rec recorder.EventRecorder) *PolicyReconciler[*v1alpha1.ConnectionPolicy] {
	return &PolicyReconciler[*v1alpha1.ConnectionPolicy]{Client: c, Store: s, Recorder: rec, kind: kindOf[*v1alpha1.ConnectionPolicy]{
		kind:   store.KindConnection,
		rules:  "reach entries",
		newObj: func() *v1alpha1.ConnectionPolicy { return &v1alpha1.ConnectionPolicy{} },
		fields: func(o *v1alpha1.ConnectionPolicy) statusFields {
			return statusFields{&o.Status.Conditions, &o.Status.ObservedGeneration, &o.Status.Compiled}
		},
		extra: func(o *v1alpha1.ConnectionPolicy, st store.Status) { o.Status.Audience = st.Audience },
	}}
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
		extra: func(*v1alpha1.ResourcePolicy, store.Status) {},
	}}
}

// Reconcile fetches the policy, reads the store's status of its current
// generation and patches the status once.
func (r *PolicyReconciler[T]) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	obj := r.kind.newObj()
	if err := r.Client.Get(ctx, req.NamespacedName, obj); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
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
	ready, compiled := conditionsFor(obj.GetGeneration(), st, r.kind.rules)
	setConditions(f.conditions, obj, r.Recorder, ready, compiled)
	*f.observedGeneration = obj.GetGeneration()
	*f.compiled = compiledStatus(st)
	r.kind.extra(obj, st)
	if equality.Semantic.DeepEqual(before, obj) {
		return ctrl.Result{}, nil
	}
	if err := r.Client.Status().Patch(ctx, obj, client.MergeFrom(before)); err != nil {
		return ctrl.Result{}, fmt.Errorf("patch status of %s %s: %w", r.kind.kind, req.NamespacedName, err)
	}
	return ctrl.Result{}, nil
}

// SetupWithManager registers the reconciler: it runs when the policy's
// generation changes and whenever the store's view of the policy changes.
func (r *PolicyReconciler[T]) SetupWithManager(mgr ctrl.Manager) error {
	return ctrl.NewControllerManagedBy(mgr).
		For(r.kind.newObj(), builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		WatchesRawSource(storeSource(r.Store, r.kind.kind)).
		Named(string(r.kind.kind)).
		Complete(r)
}
