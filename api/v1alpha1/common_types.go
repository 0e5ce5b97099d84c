/*
Copyright 2026 The sallyport Authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
You may obtain a copy of the License at

    http://www.apache.org/licenses/LICENSE-2.0

Unless required by applicable law or agreed to in writing, software
distributed under the License is distributed on an "AS IS" BASIS,
WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
See the License for the specific language governing permissions and
limitations under the License.
*/

package v1alpha1

// Enforcement says whether a policy decides requests or is only evaluated
// beside the enforced policies.
// +kubebuilder:validation:Enum=Enforce;DryRun
type Enforcement string

const (
	// EnforcementEnforce makes the policy take part in decisions.
	EnforcementEnforce Enforcement = "Enforce"
	// EnforcementDryRun evaluates the policy beside the enforced one; it never
	// changes an answer.
	EnforcementDryRun Enforcement = "DryRun"
)

// Classification is a data classification, ordered
// public < internal < confidential < restricted.
// +kubebuilder:validation:Enum=public;internal;confidential;restricted
type Classification string

const (
	// ClassificationPublic is data anyone may see.
	ClassificationPublic Classification = "public"
	// ClassificationInternal is data for the organisation only.
	ClassificationInternal Classification = "internal"
	// ClassificationConfidential is data for a need-to-know audience.
	ClassificationConfidential Classification = "confidential"
	// ClassificationRestricted is the most sensitive data.
	ClassificationRestricted Classification = "restricted"
)

// ResourceClass names a class of resource, the unit a ConnectionPolicy's
// reach grants and a ResourcePolicy declares.
// +kubebuilder:validation:MinLength=1
// +kubebuilder:validation:MaxLength=63
// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$`
type ResourceClass string

// Scope is one scope a request may carry, such as "ledger.read".
// +kubebuilder:validation:MinLength=1
// +kubebuilder:validation:MaxLength=128
// +kubebuilder:validation:Pattern=`^[!#-\[\]-~]+$`
type Scope string

// Expression is a CEL expression that evaluates to a bool. It is
// type-checked against the declared variables, and its estimated cost must
// fit the per-expression budget.
// +kubebuilder:validation:MaxLength=4096
type Expression string

// Condition types and reasons shared by both kinds. Reasons are stable: alerts
// and pipelines may match on them.
const (
	// ConditionReady is True when the current generation of the policy is
	// compiled and serving decisions.
	ConditionReady = "Ready"
	// ConditionCompiled is True when the current generation compiled.
	ConditionCompiled = "Compiled"
	// ConditionTokenIssued is True when the credential spec.token asks for
	// is in place: a fresh token in its Secret (Secret mode), or the pod
	// webhook ready to project it (Projected mode).
	ConditionTokenIssued = "TokenIssued"

	// ReasonReady says the policy serves its current generation.
	ReasonReady = "Ready"
	// ReasonCompiled says the current generation compiled.
	ReasonCompiled = "Compiled"
	// ReasonCompileFailed says the current generation did not compile; the
	// message names the field, the rule and the position, and the last good
	// generation (status.compiled.generation), if any, keeps serving.
	ReasonCompileFailed = "CompileFailed"
	// ReasonAudienceConflict says an older ConnectionPolicy holds the
	// audience this one claims.
	ReasonAudienceConflict = "AudienceConflict"
	// ReasonHostConflict says an older ResourcePolicy holds a host this one
	// claims.
	ReasonHostConflict = "HostConflict"
	// ReasonTokenIssued says the Secret holds a fresh token.
	ReasonTokenIssued = "Issued"
	// ReasonTokenProjected says pods asking for the connection get a
	// projected token from the kubelet.
	ReasonTokenProjected = "Projected"
	// ReasonProjectedTokenChanged is the Event reason when a Projected-mode
	// policy's audience or lifetime changes: running pods keep the token
	// volume they were admitted with until they restart.
	ReasonProjectedTokenChanged = "ProjectedTokenChanged"
	// ReasonNotDelegated says the operator may not mint tokens for the
	// ServiceAccount: nobody bound the sallyport-token-issuer ClusterRole to
	// it in the namespace.
	ReasonNotDelegated = "NotDelegated"
	// ReasonSecretConflict says a Secret of the token's name exists and is
	// not the operator's; it is left untouched.
	ReasonSecretConflict = "SecretConflict"
	// ReasonIssuanceFailed says the last attempt to issue a token failed; a
	// token that is still valid stays in place.
	ReasonIssuanceFailed = "IssuanceFailed"

	// ReasonServiceConflict says an older ResourcePolicy of the same
	// enforcement mode in the namespace already names this service.
	ReasonServiceConflict = "ServiceConflict"
)

// CompiledStatus summarises the compiled version of a policy that serves
// decisions now. Its generation lags metadata.generation while a newer
// generation fails to compile.
type CompiledStatus struct {
	// generation of the policy that is compiled and serving.
	// +optional
	Generation int64 `json:"generation,omitempty"`
	// rules is the number of rules (ResourcePolicy) or reach entries
	// (ConnectionPolicy).
	// +optional
	Rules int32 `json:"rules,omitempty"`
	// expressions is the number of CEL expressions compiled.
	// +optional
	Expressions int32 `json:"expressions,omitempty"`
	// estimatedCost is the sum of the static worst-case cost estimates of the
	// policy's CEL expressions, in CEL cost units.
	// +optional
	EstimatedCost int64 `json:"estimatedCost,omitempty"`
}

// LabelSelector selects objects by their labels. It means what
// metav1.LabelSelector means (the results of matchLabels and
// matchExpressions are ANDed; an empty selector matches everything), with
// bounded sizes so the API server can bound its validation cost.
type LabelSelector struct {
	// matchLabels are key/value pairs an object's labels must all have.
	// +optional
	// +kubebuilder:validation:MaxProperties=16
	MatchLabels map[string]LabelValue `json:"matchLabels,omitempty"`

	// matchExpressions are requirements an object's labels must all meet.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=16
	MatchExpressions []LabelSelectorRequirement `json:"matchExpressions,omitempty"`
}

// LabelValue is the value of a label: at most 63 characters.
// +kubebuilder:validation:MaxLength=63
type LabelValue string

// LabelSelectorRequirement is a key, an operator and values, as in
// metav1.LabelSelectorRequirement.
type LabelSelectorRequirement struct {
	// key is the label key the requirement applies to.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=317
	Key string `json:"key"`

	// operator relates the key to the values: In, NotIn, Exists or
	// DoesNotExist.
	// +required
	// +kubebuilder:validation:Enum=In;NotIn;Exists;DoesNotExist
	Operator string `json:"operator"`

	// values must be non-empty for In and NotIn, and empty for Exists and
	// DoesNotExist.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=64
	Values []LabelValue `json:"values,omitempty"`
}
