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

// ConnectionPolicySpec is one trust boundary: this workload identity, holding
// a credential for this audience, may reach these classes of resource, with at
// most these scopes, up to this data classification.
// +kubebuilder:validation:XValidation:rule="!has(self.token) || !has(self.token.expirationSeconds) || !has(self.maxTokenLifetime) || self.token.expirationSeconds <= duration(self.maxTokenLifetime).getSeconds()",message="token.expirationSeconds may not exceed maxTokenLifetime",fieldPath=".token.expirationSeconds"
type ConnectionPolicySpec struct {
	// enforcement says whether this policy decides requests (Enforce) or is
	// only evaluated beside the enforced policy and never changes an answer
	// (DryRun). Uniqueness of audiences applies per enforcement mode.
	// Default Enforce.
	// +kubebuilder:default=Enforce
	// +optional
	Enforcement Enforcement `json:"enforcement,omitempty"`

	// serviceAccountName is the workload identity: a ServiceAccount in the
	// policy's namespace. A credential reviewed as any other identity is
	// refused.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`
	ServiceAccountName string `json:"serviceAccountName"`

	// audience is the one audience tokens for this connection must carry.
	// When empty it is "sallyport.dev/<namespace>/<name>", so a token minted
	// for one connection is useless on any other; status.audience shows the
	// effective value. The API server's own audiences are refused. When two
	// policies claim one audience, the older keeps it and the other reports
	// Ready=False, reason AudienceConflict.
	// +optional
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[!-~]+$`
	Audience string `json:"audience,omitempty"`

	// maxTokenLifetime is the longest lifetime (exp - iat) a presented token
	// may have, wherever it was minted; a longer-lived token is refused.
	// Between 10m and 48h; default 1h.
	// +kubebuilder:default="1h"
	// +optional
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:MaxLength=32
	// +kubebuilder:validation:Pattern=`^([0-9]+(\.[0-9]+)?(ns|us|ms|s|m|h))+$`
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('10m') && duration(self) <= duration('48h')",message="must be between 10m and 48h"
	MaxTokenLifetime metav1.Duration `json:"maxTokenLifetime,omitzero"`

	// reach lists the resource classes this connection may reach, each with
	// the scopes it may exercise there and the highest data classification it
	// may touch. A class that is not listed cannot be reached.
	// +optional
	// +listType=map
	// +listMapKey=class
	// +kubebuilder:validation:MaxItems=32
	Reach []Reach `json:"reach,omitempty"`

	// when is an optional CEL expression over `connection` and `request`; the
	// connection is allowed only when it evaluates to true. An expression that
	// fails at run time denies.
	// +optional
	When Expression `json:"when,omitempty"`

	// token asks the operator to issue short-lived tokens for this
	// connection.
	// +optional
	Token *TokenSpec `json:"token,omitempty"`
}

// Reach grants a connection one class of resource.
type Reach struct {
	// class is the resource class (a ResourcePolicy's spec.class).
	// +required
	Class ResourceClass `json:"class"`

	// scopes are the scopes the connection may exercise on this class. Empty
	// means none: only requests without scopes pass. "*" means any scope.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=64
	Scopes []Scope `json:"scopes,omitempty"`

	// maxClassification is the highest data classification the connection
	// may touch on this class (public < internal < confidential <
	// restricted). Default internal.
	// +kubebuilder:default=internal
	// +optional
	MaxClassification Classification `json:"maxClassification,omitempty"`
}

// TokenMode says how the operator hands tokens to workloads.
// +kubebuilder:validation:Enum=Projected;Secret
type TokenMode string

const (
	// TokenModeProjected injects a kubelet-rotated projected token into
	// annotated pods.
	TokenModeProjected TokenMode = "Projected"
	// TokenModeSecret keeps a token in a Secret the operator owns and rotates.
	TokenModeSecret TokenMode = "Secret"
)

// AnnotationConnections on a pod names, comma-separated, the Projected-mode
// ConnectionPolicies in the pod's namespace whose tokens the pod asks for:
// `sallyport.dev/connections: billing-to-ledger,billing-to-audit`.
const AnnotationConnections = "sallyport.dev/connections"

// TokenSpec asks the operator to issue short-lived, audience-bound tokens for
// the policy's ServiceAccount.
// +kubebuilder:validation:XValidation:rule="self.mode == 'Secret' || !has(self.secretName)",message="secretName is only valid with mode Secret",fieldPath=".secretName"
type TokenSpec struct {
	// mode is Projected (a projected volume in annotated pods, rotated by the
	// kubelet) or Secret (a Secret kept fresh by the operator).
	// +required
	Mode TokenMode `json:"mode"`

	// secretName is the Secret that holds the token in Secret mode. Default
	// "<policy>-token". The operator never writes into a Secret it does not
	// own.
	// +optional
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`
	SecretName string `json:"secretName,omitempty"`

	// expirationSeconds is the requested token lifetime: at least 600 (the
	// API server's floor), at most maxTokenLifetime; default 900. 3607 is
	// refused: the API server treats that value as a legacy-token request
	// and may extend it.
	// +kubebuilder:default=900
	// +optional
	// +kubebuilder:validation:Minimum=600
	// +kubebuilder:validation:Maximum=172800
	// +kubebuilder:validation:XValidation:rule="self != 3607",message="3607 is reserved by the API server for extended legacy tokens; use 3600 or 3608"
	ExpirationSeconds *int64 `json:"expirationSeconds,omitempty"`
}

// ConnectionPolicyStatus is the observed state of a ConnectionPolicy.
type ConnectionPolicyStatus struct {
	// observedGeneration is the generation the conditions describe.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// conditions: Ready and Compiled, and TokenIssued when spec.token is set.
	// +optional
	// +listType=map
	// +listMapKey=type
	// +kubebuilder:validation:MaxItems=16
	Conditions []metav1.Condition `json:"conditions,omitempty"`

	// audience is the effective audience: spec.audience, or its default.
	// +optional
	Audience string `json:"audience,omitempty"`

	// compiled summarises the version of this policy that serves decisions.
	// +optional
	Compiled *CompiledStatus `json:"compiled,omitempty"`

	// token reports the credential the operator keeps in Secret mode. It
	// never holds the token itself.
	// +optional
	Token *TokenStatus `json:"token,omitempty"`

	// usage is how much of an enforced policy's reach the decisions of all
	// replicas used, merged by the leader at the usage interval.
	// +optional
	Usage *ConnectionUsageStatus `json:"usage,omitempty"`

	// dryRun counts the disagreements of a DryRun policy with the enforced
	// answer, over all replicas.
	// +optional
	DryRun *DryRunStatus `json:"dryRun,omitempty"`
}

// TokenStatus describes the current token of a Secret-mode ConnectionPolicy
// and its rotation schedule. The operator rebuilds its schedule from it after
// a restart.
type TokenStatus struct {
	// secretName is the Secret that holds the token.
	// +optional
	// +kubebuilder:validation:MaxLength=253
	SecretName string `json:"secretName,omitempty"`

	// anchor is the Secret the current token is bound to; deleting it
	// revokes the token.
	// +optional
	// +kubebuilder:validation:MaxLength=253
	Anchor string `json:"anchor,omitempty"`

	// credentialID identifies the current token ("JTI=…"), as decisions and
	// the decision log name it.
	// +optional
	// +kubebuilder:validation:MaxLength=256
	CredentialID string `json:"credentialID,omitempty"`

	// issuedAt, expiresAt and renewAt are when the current token was
	// issued, when it expires, and when the operator will replace it.
	// +optional
	IssuedAt *metav1.Time `json:"issuedAt,omitempty"`
	// +optional
	ExpiresAt *metav1.Time `json:"expiresAt,omitempty"`
	// +optional
	RenewAt *metav1.Time `json:"renewAt,omitempty"`

	// requestedExpirationSeconds is the lifetime asked for;
	// grantedExpirationSeconds the lifetime the API server granted, which may
	// be shorter.
	// +optional
	RequestedExpirationSeconds int64 `json:"requestedExpirationSeconds,omitempty"`
	// +optional
	GrantedExpirationSeconds int64 `json:"grantedExpirationSeconds,omitempty"`

	// previousAnchor is the anchor of the token this one replaced, deleted
	// (revoking that token) at revokePreviousAt, once the new token has had
	// time to reach its consumers.
	// +optional
	// +kubebuilder:validation:MaxLength=253
	PreviousAnchor string `json:"previousAnchor,omitempty"`
	// +optional
	RevokePreviousAt *metav1.Time `json:"revokePreviousAt,omitempty"`

	// failures counts consecutive failed issuance attempts; lastFailure says
	// why the last one failed, and lastFailureTime when.
	// +optional
	Failures int32 `json:"failures,omitempty"`
	// +optional
	// +kubebuilder:validation:MaxLength=1024
	LastFailure string `json:"lastFailure,omitempty"`
	// +optional
	LastFailureTime *metav1.Time `json:"lastFailureTime,omitempty"`

	// renewRequest is the value of the sallyport.dev/renew annotation last
	// acted on; a new value renews at once.
	// +optional
	// +kubebuilder:validation:MaxLength=256
	RenewRequest string `json:"renewRequest,omitempty"`
}

// ConnectionPolicy is the outer gate: it says which workload identity, with
// which short-lived credential for which audience, may reach which classes of
// resource, with which scopes, up to which data classification.
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=connpol,categories=sallyport
// +kubebuilder:printcolumn:name="Service Account",type=string,JSONPath=`.spec.serviceAccountName`
// +kubebuilder:printcolumn:name="Audience",type=string,JSONPath=`.status.audience`
// +kubebuilder:printcolumn:name="Reach",type=string,JSONPath=`.spec.reach[*].class`
// +kubebuilder:printcolumn:name="Enforcement",type=string,JSONPath=`.spec.enforcement`,priority=1
// +kubebuilder:printcolumn:name="Unused",type=integer,JSONPath=`.status.usage.unused`
// +kubebuilder:printcolumn:name="Last Used",type=date,JSONPath=`.status.usage.lastUsed`,priority=1
// +kubebuilder:printcolumn:name="Would Deny",type=integer,JSONPath=`.status.dryRun.wouldDeny`,priority=1
// +kubebuilder:printcolumn:name="Would Allow",type=integer,JSONPath=`.status.dryRun.wouldAllow`,priority=1
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Reason",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].reason`,priority=1
// +kubebuilder:printcolumn:name="Token Expires",type=string,JSONPath=`.status.token.expiresAt`
// +kubebuilder:printcolumn:name="Renew At",type=string,JSONPath=`.status.token.renewAt`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type ConnectionPolicy struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// spec is the desired trust boundary.
	// +required
	Spec ConnectionPolicySpec `json:"spec"`

	// status is what the operator observed and serves.
	// +optional
	Status ConnectionPolicyStatus `json:"status,omitempty"`
}

// ConnectionPolicyList is a list of ConnectionPolicies.
// +kubebuilder:object:root=true
type ConnectionPolicyList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []ConnectionPolicy `json:"items"`
}

func init() {
	objects = append(objects, &ConnectionPolicy{}, &ConnectionPolicyList{})
}
