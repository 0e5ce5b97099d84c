package lint

import (
	"fmt"
	"strings"
)

// The finding codes. SP1xxx: the input, as the API server and the
// admission webhook judge it; SP2xxx: claims and references between
// policies; SP3xxx: what can never take effect; SP4xxx: grants wider than
// they need be. docs/lint.md describes each. Never renumber or reuse one.
const (
	UnreadableInput     Code = "SP1001"
	InvalidDocument     Code = "SP1002"
	UnsupportedKind     Code = "SP1003"
	UnknownField        Code = "SP1004"
	SchemaViolation     Code = "SP1005"
	DuplicateObject     Code = "SP1006"
	CompileError        Code = "SP1007"
	CELError            Code = "SP1008"
	CELCost             Code = "SP1009"
	NotAPolicy          Code = "SP1010"
	DuplicateAudience   Code = "SP2001"
	DuplicateService    Code = "SP2002"
	DuplicateHost       Code = "SP2003"
	UnknownConnection   Code = "SP2004"
	UnservedClass       Code = "SP3001"
	ClassificationAbove Code = "SP3002"
	ShadowedRule        Code = "SP3003"
	RedundantDeny       Code = "SP3004"
	UnreachableRule     Code = "SP3005"
	RestrictedAction    Code = "SP4001"
	RestrictedResource  Code = "SP4002"
	NoScopeCeiling      Code = "SP4003"
	LongTokenLifetime   Code = "SP4004"
	BroadSelector       Code = "SP4005"
	AdmissionWarning    Code = "SP4099"
)

// CodeInfo describes one code.
type CodeInfo struct {
	Code     Code
	Check    string
	Severity Severity
	// Closed is set for checks that assume the linted set holds every
	// policy (a reference to a policy that is not in it is dangling); they
	// are worth disabling when linting part of a repository.
	Closed bool
	// Summary is one line for --help and docs.
	Summary string
}

// Codes lists every code in order.
var Codes = []CodeInfo{
	{UnreadableInput, "unreadable-input", Error, false, "a file or directory below a given path cannot be read, or a directory holds no policy files"},
	{InvalidDocument, "invalid-document", Error, false, "a document is not YAML or JSON, or not an object"},
	{UnsupportedKind, "unsupported-kind", Error, false, "apiVersion or kind is missing or not a sallyport policy, v1 Namespace or List"},
	{UnknownField, "unknown-field", Error, false, "a field the schema does not know (kubectl apply --validate=strict refuses it)"},
	{SchemaViolation, "schema-violation", Error, false, "the API server's validation refuses the object"},
	{DuplicateObject, "duplicate-object", Error, false, "the same object is defined twice"},
	{CompileError, "compile-error", Error, false, "the admission webhook refuses a field (audience, pattern, selector, token)"},
	{CELError, "cel-error", Error, false, "a CEL expression does not parse or type-check, or does not yield a bool"},
	{CELCost, "cel-cost", Error, false, "a CEL expression's estimated worst-case cost exceeds the budget"},
	{NotAPolicy, "not-a-policy", Info, false, "a document of another API (a Deployment, a kustomization.yaml) is skipped"},
	{DuplicateAudience, "duplicate-audience", Error, false, "two ConnectionPolicies claim one audience; the younger serves nothing"},
	{DuplicateService, "duplicate-service", Error, false, "two ResourcePolicies claim one service in a namespace; the younger serves nothing"},
	{DuplicateHost, "duplicate-host", Error, false, "two ResourcePolicies claim one host; the younger serves nothing"},
	{UnknownConnection, "unknown-connection", Warning, true, "a rule names a ConnectionPolicy that is not in the linted set"},
	{UnservedClass, "unserved-class", Warning, true, "a connection reaches a class no ResourcePolicy in the linted set serves"},
	{ClassificationAbove, "classification-unreachable", Warning, true, "a reach entry's maxClassification is below every service of its class"},
	{ShadowedRule, "shadowed-rule", Error, false, "an Allow rule can never match: a Deny rule without a condition covers it"},
	{RedundantDeny, "redundant-deny", Warning, false, "a Deny rule can never decide: an earlier Deny rule without a condition covers it"},
	{UnreachableRule, "unreachable-rule", Warning, true, "no ConnectionPolicy in the linted set can reach an Allow rule"},
	{RestrictedAction, "restricted-wildcard-action", Warning, false, `an Allow rule on a restricted service allows every action ("*")`},
	{RestrictedResource, "restricted-wildcard-resource", Warning, false, `an Allow rule on a restricted service allows objects at any depth ("**")`},
	{NoScopeCeiling, "no-scope-ceiling", Warning, false, `a reach entry allows any scope ("*")`},
	{LongTokenLifetime, "long-token-lifetime", Warning, false, "maxTokenLifetime or token.expirationSeconds is longer than 1h"},
	{BroadSelector, "broad-connection-selector", Info, false, "an Allow rule on a confidential or restricted service admits connections by selector, not by name"},
	{AdmissionWarning, "admission-warning", Warning, false, "another warning the admission webhook would return"},
}

// Lookup returns the description of a code.
func Lookup(c Code) (CodeInfo, bool) {
	for _, ci := range Codes {
		if ci.Code == c {
			return ci, true
		}
	}
	return CodeInfo{}, false
}

// ParseCodes parses a comma-separated list of codes or check names (as
// --disable takes them), refusing unknown ones.
func ParseCodes(list string) (map[Code]bool, error) {
	out := map[Code]bool{}
	for _, s := range strings.Split(list, ",") {
		s = strings.TrimSpace(s)
		if s == "" {
			continue
		}
		found := false
		for _, ci := range Codes {
			if strings.EqualFold(s, string(ci.Code)) || s == ci.Check {
				out[ci.Code] = true
				found = true
				break
			}
		}
		if !found {
			return nil, fmt.Errorf("unknown finding code %q (see docs/lint.md)", s)
		}
	}
	return out, nil
}
