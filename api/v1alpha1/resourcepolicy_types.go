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

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// ResourcePolicySpec describes one protected service and what may be done to
// it.
type ResourcePolicySpec struct {
	// enforcement says whether this policy decides requests (Enforce) or is
	// only evaluated beside the enforced policy and never changes an answer
	// (DryRun). Uniqueness of services and hosts applies per enforcement mode.
	// Default Enforce.
	// +kubebuilder:default=Enforce
	// +optional
	Enforcement Enforcement `json:"enforcement,omitempty"`

	// service is the name gateways use for this service; unique per
	// namespace. The older policy keeps a name two policies claim.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
	Service string `json:"service"`

	// hosts are host names of the service, for gateways that can pass only
	// the request's host (Istio CUSTOM, Envoy HTTP ext_authz). Unique across
	// the cluster: the older policy keeps a host two policies claim, and the
	// other reports Ready=False, reason HostConflict. Lower case, optionally
	// with a port.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=16
	// +kubebuilder:validation:items:MaxLength=253
	// +kubebuilder:validation:items:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*(:[0-9]{1,5})?$`
	Hosts []string `json:"hosts,omitempty"`

	// class is the resource class of the service: what a ConnectionPolicy's
	// reach names.
	// +required
	Class ResourceClass `json:"class"`

	// classification is the data classification of the service:
	// public < internal < confidential < restricted. A connection reaches the
	// service only if its reach's maxClassification is at least this.
	// +required
	Classification Classification `json:"classification"`

	// rules say who may do what. Deny rules win over Allow rules; when no
	// Allow rule matches, the request is denied.
	// +optional
	// +listType=map
	// +listMapKey=name
	// +kubebuilder:validation:MaxItems=64
	Rules []Rule `json:"rules,omitempty"`
}

// Effect is what a matching rule does.
// +kubebuilder:validation:Enum=Allow;Deny
type Effect string

const (
	// EffectAllow permits the request unless a Deny rule matches.
	EffectAllow Effect = "Allow"
	// EffectDeny refuses the request.
	EffectDeny Effect = "Deny"
)

// Rule matches requests by action, object, scopes, connection and condition.
// +kubebuilder:validation:XValidation:rule="self.effect == 'Deny' || (has(self.connections) && size(self.connections) > 0)",message="an Allow rule must name at least one connection, so the resource owner chooses who gets in",fieldPath=".connections"
type Rule struct {
	// name identifies the rule in decisions, logs and status.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
	Name string `json:"name"`

	// effect is Allow or Deny.
	// +required
	Effect Effect `json:"effect"`

	// actions are exact, case-sensitive methods or verbs ("GET", "read");
	// "*" is any action.
	// +required
	// +listType=set
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=32
	// +kubebuilder:validation:items:MinLength=1
	// +kubebuilder:validation:items:MaxLength=64
	// +kubebuilder:validation:items:Pattern=`^(\*|[A-Za-z0-9][-A-Za-z0-9._:]*)$`
	Actions []string `json:"actions"`

	// resources are patterns over the canonical object path, starting with
	// "/": "*" matches one segment, "**" any number of segments, anything
	// else matches itself. "." and ".." segments are refused.
	// +required
	// +listType=set
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=32
	// +kubebuilder:validation:items:MinLength=1
	// +kubebuilder:validation:items:MaxLength=1024
	// +kubebuilder:validation:items:Pattern=`^/[!-~]*$`
	Resources []string `json:"resources"`

	// scopes: an Allow rule matches when the request's scopes are all among
	// them (an empty list matches only requests without scopes); a Deny rule
	// matches when the request carries any of them, or always when the list
	// is empty.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=64
	Scopes []Scope `json:"scopes,omitempty"`

	// connections are the ConnectionPolicies this rule applies to. An Allow
	// rule must name at least one; an empty list on a Deny rule means every
	// connection.
	// +optional
	// +kubebuilder:validation:MaxItems=32
	Connections []ConnectionRef `json:"connections,omitempty"`

	// when is an optional CEL expression over `connection`, `request` and
	// `resource`. An Allow rule whose expression fails does not match; a Deny
	// rule whose expression fails denies.
	// +optional
	When Expression `json:"when,omitempty"`
}

// ConnectionRef names ConnectionPolicies, either one by name
// ({namespace, name}) or many by labels ({namespaceSelector,
// policySelector}). A selector left out means the policy's own namespace
// (namespaceSelector) or every policy (policySelector); {namespaceSelector:
// {}} means every namespace.
// +kubebuilder:validation:XValidation:rule="has(self.name) != (has(self.namespaceSelector) || has(self.policySelector))",message="set either name (with an optional namespace) or namespaceSelector/policySelector"
// +kubebuilder:validation:XValidation:rule="!has(self.namespace) || has(self.name)",message="namespace is only valid with name",fieldPath=".namespace"
type ConnectionRef struct {
	// namespace of the ConnectionPolicy named by name; default the
	// ResourcePolicy's namespace.
	// +optional
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
	Namespace string `json:"namespace,omitempty"`

	// name of one ConnectionPolicy.
	// +optional
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`
	Name string `json:"name,omitempty"`

	// namespaceSelector selects the namespaces whose ConnectionPolicies this
	// entry names; {} selects every namespace.
	// +optional
	NamespaceSelector *LabelSelector `json:"namespaceSelector,omitempty"`

	// policySelector selects ConnectionPolicies by their labels.
	// +optional
	PolicySelector *LabelSelector `json:"policySelector,omitempty"`
}

// ResourcePolicyStatus is the observed state of a ResourcePolicy.
type ResourcePolicyStatus struct {
	// observedGeneration is the generation the conditions describe.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// conditions: Ready and Compiled.
	// +optional
	// +listType=map
	// +listMapKey=type
	// +kubebuilder:validation:MaxItems=16
	Conditions []metav1.Condition `json:"conditions,omitempty"`

	// compiled summarises the version of this policy that serves decisions.
	// +optional
	Compiled *CompiledStatus `json:"compiled,omitempty"`

	// usage is how much of an enforced policy's rules the decisions of all
	// replicas used, merged by the leader at the usage interval.
	// +optional
	Usage *ResourceUsageStatus `json:"usage,omitempty"`

	// dryRun counts the disagreements of a DryRun policy with the enforced
	// answer, over all replicas.
	// +optional
	DryRun *DryRunStatus `json:"dryRun,omitempty"`
}

// ResourcePolicy is the inner gate: it describes one protected service, its
// class and data classification, and the rules that say which connection may
// do which action on which object.
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=respol,categories=sallyport
// +kubebuilder:printcolumn:name="Service",type=string,JSONPath=`.spec.service`
// +kubebuilder:printcolumn:name="Class",type=string,JSONPath=`.spec.class`
// +kubebuilder:printcolumn:name="Classification",type=string,JSONPath=`.spec.classification`
// +kubebuilder:printcolumn:name="Rules",type=integer,JSONPath=`.status.compiled.rules`
// +kubebuilder:printcolumn:name="Enforcement",type=string,JSONPath=`.spec.enforcement`,priority=1
// +kubebuilder:printcolumn:name="Unused",type=integer,JSONPath=`.status.usage.unused`
// +kubebuilder:printcolumn:name="Last Used",type=date,JSONPath=`.status.usage.lastUsed`,priority=1
// +kubebuilder:printcolumn:name="Would Deny",type=integer,JSONPath=`.status.dryRun.wouldDeny`,priority=1
// +kubebuilder:printcolumn:name="Would Allow",type=integer,JSONPath=`.status.dryRun.wouldAllow`,priority=1
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Reason",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].reason`,priority=1
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type ResourcePolicy struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// spec describes the service and its rules.
	// +required
	Spec ResourcePolicySpec `json:"spec"`

	// status is what the operator observed and serves.
	// +optional
	Status ResourcePolicyStatus `json:"status,omitempty"`
}

// ResourcePolicyList is a list of ResourcePolicies.
// +kubebuilder:object:root=true
type ResourcePolicyList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []ResourcePolicy `json:"items"`
}

func init() {
	objects = append(objects, &ResourcePolicy{}, &ResourcePolicyList{})
}
