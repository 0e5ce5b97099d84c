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

import metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

// UsageSummary is what the decisions of every replica, merged by the leader,
// say about how much of an enforced policy's grants is used.
type UsageSummary struct {
	// window is how long a grant must go unused to be counted in unused.
	// +optional
	Window *metav1.Duration `json:"window,omitempty"`

	// updatedAt is when the leader last merged the replicas' reports into
	// this status. Replicas report at an interval, so a use shows here up
	// to about two intervals later.
	// +optional
	UpdatedAt *metav1.Time `json:"updatedAt,omitempty"`

	// lastUsed is the latest use of any of the policy's grants.
	// +optional
	LastUsed *metav1.Time `json:"lastUsed,omitempty"`

	// unused counts the grants (Allow rules, reach entries) that were
	// tracked for at least the window and not used in it. A Deny rule that
	// never denied is marked in its entry but not counted: it is a guard,
	// not a grant.
	// +optional
	Unused int32 `json:"unused"`
}

// GrantUsage is the merged use of one grant: a ResourcePolicy rule or a
// ConnectionPolicy reach entry.
type GrantUsage struct {
	// decisions counts the decisions the grant made since tracking began:
	// for an Allow rule the requests it allowed, for a Deny rule those it
	// denied, for a reach entry the allowed requests it let through.
	// +optional
	Decisions int64 `json:"decisions"`

	// lastUsed is the latest of those decisions; absent while there was
	// none.
	// +optional
	LastUsed *metav1.Time `json:"lastUsed,omitempty"`

	// trackedSince is when a replica first served the grant: a grant is
	// counted unused only once it has been tracked for the whole window.
	// +optional
	TrackedSince *metav1.Time `json:"trackedSince,omitempty"`

	// unused is set when the grant was tracked for at least the window and
	// not used in it.
	// +optional
	Unused bool `json:"unused,omitempty"`
}

// RuleUsage is the merged use of one ResourcePolicy rule.
type RuleUsage struct {
	// name is the rule's name.
	// +required
	// +kubebuilder:validation:MaxLength=63
	Name string `json:"name"`

	// effect is the rule's effect.
	// +optional
	Effect Effect `json:"effect,omitempty"`

	GrantUsage `json:",inline"`
}

// ReachUsage is the merged use of one ConnectionPolicy reach entry.
type ReachUsage struct {
	// class is the reach entry's resource class.
	// +required
	// +kubebuilder:validation:MaxLength=63
	Class string `json:"class"`

	GrantUsage `json:",inline"`
}

// ResourceUsageStatus is the merged use of an enforced ResourcePolicy's
// rules.
type ResourceUsageStatus struct {
	UsageSummary `json:",inline"`

	// rules holds each rule's use, in spec order.
	// +optional
	// +listType=map
	// +listMapKey=name
	// +kubebuilder:validation:MaxItems=64
	Rules []RuleUsage `json:"rules,omitempty"`
}

// ConnectionUsageStatus is the merged use of an enforced ConnectionPolicy's
// reach entries.
type ConnectionUsageStatus struct {
	UsageSummary `json:",inline"`

	// reach holds each reach entry's use, in spec order.
	// +optional
	// +listType=map
	// +listMapKey=class
	// +kubebuilder:validation:MaxItems=32
	Reach []ReachUsage `json:"reach,omitempty"`
}

// DryRunStatus counts, over every replica, the decisions a DryRun policy's
// generation was evaluated in and how often it disagreed with the enforced
// answer. A pipeline promotes the policy to Enforce when, over enough
// decisions, both disagreement counts are zero.
type DryRunStatus struct {
	// generation is the generation the counts are for; a new generation
	// starts from zero.
	// +optional
	Generation int64 `json:"generation,omitempty"`

	// decisions counts the shadow decisions this generation took part in.
	// +optional
	Decisions int64 `json:"decisions"`

	// wouldDeny counts the requests that were allowed but this policy
	// would have denied.
	// +optional
	WouldDeny int64 `json:"wouldDeny"`

	// wouldAllow counts the requests that were denied but this policy would
	// have allowed.
	// +optional
	WouldAllow int64 `json:"wouldAllow"`

	// lastDisagreement is when the latest disagreement was decided.
	// +optional
	LastDisagreement *metav1.Time `json:"lastDisagreement,omitempty"`

	// updatedAt is when the leader last merged the replicas' counts.
	// +optional
	UpdatedAt *metav1.Time `json:"updatedAt,omitempty"`
}
