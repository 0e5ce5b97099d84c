package expr

import "time"

// Bounds on the values a decision request may carry. The decision API refuses
// larger input, and the static cost estimate of every expression relies on
// them, so an expression's worst case is known at admission.
const (
	// MaxScopes is the most scopes one request may carry.
	MaxScopes = 64
	// MaxScopeLength is the longest scope, in bytes.
	MaxScopeLength = 128
	// MaxActionLength is the longest action, in bytes.
	MaxActionLength = 64
	// MaxAttributes is the most attributes one request may carry.
	MaxAttributes = 64
	// MaxAttributeKeyLength is the longest attribute name, in bytes.
	MaxAttributeKeyLength = 128
	// MaxAttributeValueLength is the longest attribute value, in bytes.
	MaxAttributeValueLength = 4096
	// MaxObjectNameLength is the longest object path, in bytes.
	MaxObjectNameLength = 4096
	// MaxAudienceLength is the longest audience, in bytes.
	MaxAudienceLength = 512
	// MaxCredentialIDLength is the longest credential ID, in bytes.
	MaxCredentialIDLength = 256
)

// Connection is the CEL variable `connection`: who is calling, with which
// credential. Every field is present; unknown ones are empty.
type Connection struct {
	// Identity is the reviewed user name, system:serviceaccount:<ns>:<name>.
	Identity string `cel:"identity"`
	// Namespace is the caller's namespace.
	Namespace string `cel:"namespace"`
	// ServiceAccount is the caller's ServiceAccount name.
	ServiceAccount string `cel:"serviceAccount"`
	// Audience is the audience the credential was reviewed for.
	Audience string `cel:"audience"`
	// Policy is the ConnectionPolicy, "<namespace>/<name>".
	Policy string `cel:"policy"`
	// CredentialID identifies the credential (for example "JTI=…").
	CredentialID string `cel:"credentialID"`
	// IssuedAt is the credential's iat.
	IssuedAt time.Time `cel:"issuedAt"`
	// ExpiresAt is the credential's exp.
	ExpiresAt time.Time `cel:"expiresAt"`
	// Lifetime is ExpiresAt - IssuedAt.
	Lifetime time.Duration `cel:"lifetime"`
	// Age is request.time - IssuedAt.
	Age time.Duration `cel:"age"`
	// Pod is the name of the pod the credential is bound to, if any.
	Pod string `cel:"pod"`
}

// Request is the CEL variable `request`: what the caller asks to do.
type Request struct {
	// Action is the method or verb.
	Action string `cel:"action"`
	// Scopes are the scopes the request carries.
	Scopes []string `cel:"scopes"`
	// Time is the server's clock, read once per decision.
	Time time.Time `cel:"time"`
	// Attributes are free-form request attributes from the caller or gateway.
	Attributes map[string]string `cel:"attributes"`
}

// Resource is the CEL variable `resource`: the object acted on.
type Resource struct {
	// Namespace is the ResourcePolicy's namespace.
	Namespace string `cel:"namespace"`
	// Service is the protected service.
	Service string `cel:"service"`
	// Name is the canonical object path.
	Name string `cel:"name"`
	// Class is the service's resource class.
	Class string `cel:"class"`
	// Classification is the service's data classification.
	Classification string `cel:"classification"`
}
