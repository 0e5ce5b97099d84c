// Package decision decides requests: the connection gate (credential,
// identity, lifetime, reach, scopes, classification, condition) and the
// resource gate (Deny rules, then Allow rules), each with a stable reason.
package decision

import "time"

// Reason codes. They are part of the decision API: gateways, alerts and
// auditors match on them, so they never change meaning.
const (
	// Connection gate.
	ReasonMatched                    = "Matched"
	ReasonMissingCredential          = "MissingCredential"
	ReasonInvalidCredential          = "InvalidCredential"
	ReasonCredentialReviewFailed     = "CredentialReviewFailed"
	ReasonNoConnectionPolicy         = "NoConnectionPolicy"
	ReasonTokenLifetimeExceeded      = "TokenLifetimeExceeded"
	ReasonClassNotReachable          = "ClassNotReachable"
	ReasonScopeNotReachable          = "ScopeNotReachable"
	ReasonClassificationNotReachable = "ClassificationNotReachable"
	ReasonConditionFalse             = "ConditionFalse"
	ReasonEvaluationError            = "EvaluationError"

	// Resource gate (and Matched, EvaluationError).
	ReasonNotEvaluated     = "NotEvaluated"
	ReasonNoResourcePolicy = "NoResourcePolicy"
	ReasonNoRuleMatched    = "NoRuleMatched"
	ReasonDeniedByRule     = "DeniedByRule"
)

// Target names the object a request acts on: a service by namespace and
// name, or by host, and the object's path within it.
type Target struct {
	// Namespace and Service, when set (both are then required), pick the
	// ResourcePolicy; Host is not consulted, even when no policy serves
	// the service, because the gateway chose the service.
	Namespace string
	Service   string
	// Host picks the ResourcePolicy when Namespace and Service are empty.
	// It is matched case-insensitively and without a trailing dot, as
	// "host:port" first and then as the host alone, so a policy may claim
	// one port of a host or all of them.
	Host string
	// Name is the object path as received, query included; the engine
	// canonicalises it (see CanonicalPath). Empty means "/".
	Name string
}

// Request is one question: may the holder of Token do Action on Target with
// Scopes? Validate checks that it is well formed; Engine.Decide checks it
// again and never evaluates one that is not.
type Request struct {
	Token      string
	Target     Target
	Action     string
	Scopes     []string
	Attributes map[string]string
}

// Connection is the connection gate's answer.
type Connection struct {
	Allowed bool `json:"allowed"`
	// Policy is the ConnectionPolicy, "<namespace>/<name>", when one was
	// found; Generation its compiled generation.
	Policy       string `json:"policy,omitempty"`
	Generation   int64  `json:"-"`
	Identity     string `json:"identity,omitempty"`
	CredentialID string `json:"credentialID,omitempty"`
	Reason       string `json:"reason"`
	Message      string `json:"message,omitempty"`
}

// Resource is the resource gate's answer.
type Resource struct {
	Allowed bool `json:"allowed"`
	// Policy is the ResourcePolicy, "<namespace>/<name>", when one was found;
	// Generation its compiled generation.
	Policy     string `json:"policy,omitempty"`
	Generation int64  `json:"-"`
	// Rule is the rule that decided: the matching Allow rule, the Deny rule
	// that denied, or the rule whose evaluation failed.
	Rule    string `json:"rule,omitempty"`
	Reason  string `json:"reason"`
	Message string `json:"message,omitempty"`
}

// Decision is the answer to a Request: allowed only when both gates allow.
type Decision struct {
	ID         string     `json:"decisionID"`
	Allowed    bool       `json:"allowed"`
	Connection Connection `json:"connection"`
	Resource   Resource   `json:"resource"`

	// Time is when the decision was made (request.time); Path the canonical
	// object path it judged. Both go to the decision log.
	Time time.Time `json:"-"`
	Path string    `json:"-"`

	// DryRun is the shadow decision: the same request decided with the
	// DryRun policies that exist for its audience or target in place of the
	// enforced ones. Nil when none does. It never changes the answer and is
	// never sent to the client; servers log it when it disagrees.
	DryRun *Shadow `json:"-"`
}

// Shadow is a decision made with DryRun policies beside the enforced one.
type Shadow struct {
	Allowed    bool
	Connection Connection
	Resource   Resource
}

// Disagreement says how a shadow decision differs from the enforced one:
// "WouldDeny" (enforced allowed, DryRun denies), "WouldAllow" (the
// reverse), or "" when both answer the same.
func (d *Decision) Disagreement() string {
	switch {
	case d.DryRun == nil || d.DryRun.Allowed == d.Allowed:
		return ""
	case d.Allowed:
		return DisagreementWouldDeny
	default:
		return DisagreementWouldAllow
	}
}

// Disagreements of a DryRun decision with the enforced one.
const (
	DisagreementWouldDeny  = "WouldDeny"
	DisagreementWouldAllow = "WouldAllow"
)
