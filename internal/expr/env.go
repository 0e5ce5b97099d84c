// Package expr compiles and evaluates the CEL expressions of sallyport
// policies: one environment with typed variables (connection, request,
// resource), the Kubernetes CEL libraries that ValidatingAdmissionPolicy users
// know (without the authorizer), a static cost estimate checked against a
// budget at compile time, and a cost limit at run time.
package expr

import (
	"fmt"
	"reflect"
	"sync"

	"github.com/google/cel-go/cel"
	"github.com/google/cel-go/checker"
	"github.com/google/cel-go/ext"
	"k8s.io/apiserver/pkg/cel/library"
)

// Scope says which variables an expression may use.
type Scope int

const (
	// ConnectionScope is a ConnectionPolicy's `when`: connection and request.
	ConnectionScope Scope = iota
	// RuleScope is a ResourcePolicy rule's `when`: connection, request and
	// resource.
	RuleScope
)

// String names the scope in messages.
func (s Scope) String() string {
	if s == ConnectionScope {
		return "connection"
	}
	return "rule"
}

// Variable names, as expressions spell them.
const (
	VarConnection = "connection"
	VarRequest    = "request"
	VarResource   = "resource"
)

// CEL type names of the variables (NativeTypes names a Go struct
// "<package>.<Type>").
var (
	connectionType = cel.ObjectType("expr.Connection")
	requestType    = cel.ObjectType("expr.Request")
	resourceType   = cel.ObjectType("expr.Resource")
)

// libraryOptions is the dialect of ValidatingAdmissionPolicy at Kubernetes
// 1.37 (k8s.io/apiserver/pkg/cel/environment), minus the authorizer
// libraries: a policy decides on its inputs alone and never calls the API
// server.
func libraryOptions() []cel.EnvOption {
	return []cel.EnvOption{
		cel.HomogeneousAggregateLiterals(),
		cel.EagerlyValidateDeclarations(true),
		cel.DefaultUTCTimeZone(true),
		cel.CrossTypeNumericComparisons(true),
		cel.OptionalTypes(),
		cel.ASTValidators(
			cel.ValidateDurationLiterals(),
			cel.ValidateTimestampLiterals(),
			cel.ValidateRegexLiterals(),
			cel.ValidateHomogeneousAggregateLiterals(),
		),
		// has() costs nothing, as in Kubernetes.
		cel.CostEstimatorOptions(checker.PresenceTestHasCost(false)),

		library.URLs(),
		library.Regex(),
		library.Quantity(),
		ext.Strings(ext.StringsVersion(2)),
		ext.Sets(),
		library.IP(),
		library.CIDR(),
		library.Format(),
		ext.TwoVarComprehensions(),
		library.SemverLib(library.SemverVersion(1)),
		ext.Lists(ext.ListsVersion(3)),
		library.Lists(library.ListsVersion(1)),
	}
}

var envs = sync.OnceValues(func() ([2]*cel.Env, error) {
	var out [2]*cel.Env
	base, err := cel.NewEnv(append(libraryOptions(),
		ext.NativeTypes(
			reflect.TypeFor[Connection](),
			reflect.TypeFor[Request](),
			reflect.TypeFor[Resource](),
			ext.ParseStructTags(true),
		),
		fastFields(),
		cel.Variable(VarConnection, connectionType),
		cel.Variable(VarRequest, requestType),
	)...)
	if err != nil {
		return out, fmt.Errorf("build CEL environment: %w", err)
	}
	rule, err := base.Extend(cel.Variable(VarResource, resourceType))
	if err != nil {
		return out, fmt.Errorf("build CEL rule environment: %w", err)
	}
	out[ConnectionScope], out[RuleScope] = base, rule
	return out, nil
})

// env returns the shared environment of a scope. Building it validates every
// library declaration, so it is done once per process.
func env(s Scope) (*cel.Env, error) {
	e, err := envs()
	if err != nil {
		return nil, err
	}
	return e[s], nil
}
