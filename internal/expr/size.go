package expr

import (
	"strings"

	"github.com/google/cel-go/checker"
)

// maxSizes bounds every variable path whose size CEL cannot know. The decision
// API enforces the request bounds (see vars.go); the rest follow from
// Kubernetes name limits. Without these, the estimator would assume unbounded
// strings and lists and reject every comprehension.
var maxSizes = map[string]uint64{
	"connection.identity":       uint64(len("system:serviceaccount:")) + 63 + 1 + 253,
	"connection.namespace":      63,
	"connection.serviceAccount": 253,
	"connection.audience":       MaxAudienceLength,
	"connection.policy":         63 + 1 + 253,
	"connection.credentialID":   MaxCredentialIDLength,
	"connection.pod":            253,

	"request.action":             MaxActionLength,
	"request.scopes":             MaxScopes,
	"request.scopes.@items":      MaxScopeLength,
	"request.attributes":         MaxAttributes,
	"request.attributes.@keys":   MaxAttributeKeyLength,
	"request.attributes.@values": MaxAttributeValueLength,

	"resource.namespace":      63,
	"resource.service":        63,
	"resource.name":           MaxObjectNameLength,
	"resource.class":          63,
	"resource.classification": uint64(len("confidential")),
}

// sizeEstimator answers the cost estimator's size questions from maxSizes.
type sizeEstimator struct{}

// EstimateSize implements checker.CostEstimator.
func (sizeEstimator) EstimateSize(node checker.AstNode) *checker.SizeEstimate {
	path := node.Path()
	if len(path) == 0 {
		return nil
	}
	if n, ok := maxSizes[strings.Join(path, ".")]; ok {
		return &checker.SizeEstimate{Min: 0, Max: n}
	}
	return nil
}

// EstimateCallCost implements checker.CostEstimator; the library estimator
// that wraps this one prices the calls.
func (sizeEstimator) EstimateCallCost(string, string, *checker.AstNode, []checker.AstNode) *checker.CallEstimate {
	return nil
}
