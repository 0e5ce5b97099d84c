// Package webhook serves sallyport's admission webhooks: validation of
// ConnectionPolicy and ResourcePolicy objects with the same compiler the
// snapshot builder uses, so what admission accepts is what the operator can
// serve.
package webhook

import (
	"context"
	"errors"
	"fmt"

	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	"github.com/sallyport/sallyport/api/v1alpha1"
	"github.com/sallyport/sallyport/internal/policy"
	"github.com/sallyport/sallyport/internal/store"
)

// The webhook configurations controller-gen renders into config/webhook.
// failurePolicy Fail: a policy that was not checked could be one that does
// not compile; the controllers still report such a policy as Ready=False and
// keep its last good version serving, so Fail only delays, never loses.

// +kubebuilder:webhook:path=/validate-policy-sallyport-dev-v1alpha1-connectionpolicy,mutating=false,failurePolicy=fail,sideEffects=None,groups=policy.sallyport.dev,resources=connectionpolicies,verbs=create;update,versions=v1alpha1,name=vconnectionpolicy.sallyport.dev,admissionReviewVersions=v1,timeoutSeconds=10
// +kubebuilder:webhook:path=/validate-policy-sallyport-dev-v1alpha1-resourcepolicy,mutating=false,failurePolicy=fail,sideEffects=None,groups=policy.sallyport.dev,resources=resourcepolicies,verbs=create;update,versions=v1alpha1,name=vresourcepolicy.sallyport.dev,admissionReviewVersions=v1,timeoutSeconds=10

// ConnectionPolicyValidator rejects ConnectionPolicies that do not compile and
// warns about legal but risky settings and about claims another policy holds.
type ConnectionPolicyValidator struct {
	Compiler *policy.Compiler
	// Store, when set, is read to warn about audiences already held.
	Store *store.Store
}

var _ admission.Validator[*v1alpha1.ConnectionPolicy] = (*ConnectionPolicyValidator)(nil)

// ValidateCreate implements admission.Validator.
func (v *ConnectionPolicyValidator) ValidateCreate(_ context.Context, cp *v1alpha1.ConnectionPolicy) (admission.Warnings, error) {
	return v.validate(cp)
}

// ValidateUpdate implements admission.Validator. An update that leaves the
// spec alone (labels, annotations, finalizers) is admitted even when the
// stored spec does not compile, so an invalid policy can still be labelled or
// deleted.
func (v *ConnectionPolicyValidator) ValidateUpdate(_ context.Context, old, cp *v1alpha1.ConnectionPolicy) (admission.Warnings, error) {
	if cp.DeletionTimestamp != nil || equality.Semantic.DeepEqual(old.Spec, cp.Spec) {
		return nil, nil
	}
	return v.validate(cp)
}

// ValidateDelete implements admission.Validator; deletion is always allowed.
func (v *ConnectionPolicyValidator) ValidateDelete(context.Context, *v1alpha1.ConnectionPolicy) (admission.Warnings, error) {
	return nil, nil
}

func (v *ConnectionPolicyValidator) validate(cp *v1alpha1.ConnectionPolicy) (admission.Warnings, error) {
	compiled, err := v.Compiler.CompileConnection(cp)
	if err != nil {
		return nil, invalid(schema.GroupKind{Group: v1alpha1.GroupVersion.Group, Kind: "ConnectionPolicy"}, cp.Name, err)
	}
	warnings := policy.ConnectionWarnings(cp)
	if v.Store != nil {
		snap := v.Store.Snapshot()
		if held, ok := snap.ConnectionByAudience(compiled.Enforcement, compiled.Audience); ok && held.Ref != compiled.Ref {
			warnings = append(warnings, claimWarning("audience", compiled.Audience, held.Ref, v1alpha1.ReasonAudienceConflict))
		}
	}
	return warnings, nil
}

// ResourcePolicyValidator rejects ResourcePolicies that do not compile and
// warns about legal but risky settings and about claims another policy holds.
type ResourcePolicyValidator struct {
	Compiler *policy.Compiler
	// Store, when set, is read to warn about hosts and services already held.
	Store *store.Store
}

var _ admission.Validator[*v1alpha1.ResourcePolicy] = (*ResourcePolicyValidator)(nil)

// ValidateCreate implements admission.Validator.
func (v *ResourcePolicyValidator) ValidateCreate(_ context.Context, rp *v1alpha1.ResourcePolicy) (admission.Warnings, error) {
	return v.validate(rp)
}

// ValidateUpdate implements admission.Validator, admitting spec-preserving
// updates like ConnectionPolicyValidator.ValidateUpdate.
func (v *ResourcePolicyValidator) ValidateUpdate(_ context.Context, old, rp *v1alpha1.ResourcePolicy) (admission.Warnings, error) {
	if rp.DeletionTimestamp != nil || equality.Semantic.DeepEqual(old.Spec, rp.Spec) {
		return nil, nil
	}
	return v.validate(rp)
}

// ValidateDelete implements admission.Validator; deletion is always allowed.
func (v *ResourcePolicyValidator) ValidateDelete(context.Context, *v1alpha1.ResourcePolicy) (admission.Warnings, error) {
	return nil, nil
}

func (v *ResourcePolicyValidator) validate(rp *v1alpha1.ResourcePolicy) (admission.Warnings, error) {
	compiled, err := v.Compiler.CompileResource(rp)
	if err != nil {
		return nil, invalid(schema.GroupKind{Group: v1alpha1.GroupVersion.Group, Kind: "ResourcePolicy"}, rp.Name, err)
	}
	warnings := policy.ResourceWarnings(rp)
	if v.Store != nil {
		snap := v.Store.Snapshot()
		if held, ok := snap.ResourceByService(compiled.Enforcement, compiled.Ref.Namespace, compiled.Service); ok && held.Ref != compiled.Ref {
			warnings = append(warnings, claimWarning("service", compiled.Service, held.Ref, v1alpha1.ReasonServiceConflict))
		}
		for _, h := range compiled.Hosts {
			if held, ok := snap.ResourceByHost(compiled.Enforcement, h); ok && held.Ref != compiled.Ref {
				warnings = append(warnings, claimWarning("host", h, held.Ref, v1alpha1.ReasonHostConflict))
			}
		}
	}
	return warnings, nil
}

// claimWarning says that an older policy keeps a claim. Admission warns
// rather than rejects: the older policy may be on its way out in the same
// GitOps sync, and the controllers report the outcome either way.
func claimWarning(what, claim string, holder types.NamespacedName, reason string) string {
	return fmt.Sprintf("%s %q is held by %s; this policy will not serve while that one holds it (Ready=False, reason %s)", what, claim, holder, reason)
}

// invalid turns a compile error into the API's Invalid status, one cause per
// field, so kubectl prints every problem with its field path.
func invalid(gk schema.GroupKind, name string, err error) error {
	if ie, ok := errors.AsType[*policy.InvalidError](err); ok {
		return apierrors.NewInvalid(gk, name, ie.Errs)
	}
	return apierrors.NewInternalError(fmt.Errorf("compile %s %s: %w", gk.Kind, name, err))
}

// Setup registers both validating webhooks with the manager's webhook server.
func Setup(mgr ctrl.Manager, c *policy.Compiler, s *store.Store) error {
	if err := ctrl.NewWebhookManagedBy(mgr, &v1alpha1.ConnectionPolicy{}).
		WithValidator(&ConnectionPolicyValidator{Compiler: c, Store: s}).
		Complete(); err != nil {
		return fmt.Errorf("register ConnectionPolicy webhook: %w", err)
	}
	if err := ctrl.NewWebhookManagedBy(mgr, &v1alpha1.ResourcePolicy{}).
		WithValidator(&ResourcePolicyValidator{Compiler: c, Store: s}).
		Complete(); err != nil {
		return fmt.Errorf("register ResourcePolicy webhook: %w", err)
	}
	return nil
}
