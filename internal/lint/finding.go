// Package lint checks sallyport policies offline, for CI before a merge:
// what the API server or the admission webhook would refuse, what the
// cluster would resolve against the author's intent (conflicting claims),
// what can never take effect (dead reach entries, shadowed and unreachable
// rules) and what grants more than it should (wildcards on restricted
// services, missing scope ceilings, long-lived tokens).
//
// It judges the set of policies it is given. Checks that need the other
// side of a reference (does the ConnectionPolicy a rule names exist, does a
// ResourcePolicy serve the class a reach names) assume that set is
// complete, so lint the whole policy repository, or disable those checks
// (see Closed) when linting a part.
package lint

import (
	"cmp"
	"slices"
)

// Severity is how much a finding matters.
type Severity string

// The severities, from most to least severe.
const (
	// Error: the cluster would refuse the policy, or serve something other
	// than it says. The command fails.
	Error Severity = "error"
	// Warning: legal, but risky or dead. The command fails with --strict.
	Warning Severity = "warning"
	// Info: worth a look in review.
	Info Severity = "info"
)

// rank orders severities, most severe first.
func (s Severity) rank() int {
	switch s {
	case Error:
		return 0
	case Warning:
		return 1
	}
	return 2
}

// Code identifies a kind of finding. Codes are stable: a code is never
// renumbered or reused, so CI configurations may name them.
type Code string

// Finding is one thing lint found.
type Finding struct {
	// Code and Severity say what kind of finding this is; Check is the
	// code's short name (unknown-field, shadowed-rule, …).
	Code     Code
	Check    string
	Severity Severity
	// File and Line locate it: the line of the offending field when it can
	// be known, else of the document. Document is the 1-based document in
	// the file and Item the 1-based item of a List (0 when not a List).
	File     string
	Line     int
	Document int
	Item     int
	// Kind, Namespace and Name identify the policy, as far as known.
	Kind, Namespace, Name string
	// Field is the field path, such as spec.rules[2].when; empty when the
	// finding is about the whole document.
	Field string
	// Message says what is wrong and, where it helps, how to fix it. It is
	// one line.
	Message string
	// Detail holds further lines, such as a CEL expression's source line
	// with a caret under the column; empty when none.
	Detail string
}

// Sort orders findings by file, line, severity, code, policy, field and
// message, so output is stable.
func Sort(fs []Finding) {
	slices.SortStableFunc(fs, func(a, b Finding) int {
		return cmp.Or(
			cmp.Compare(a.File, b.File),
			cmp.Compare(a.Line, b.Line),
			cmp.Compare(a.Severity.rank(), b.Severity.rank()),
			cmp.Compare(a.Code, b.Code),
			cmp.Compare(a.Kind, b.Kind),
			cmp.Compare(a.Namespace, b.Namespace),
			cmp.Compare(a.Name, b.Name),
			cmp.Compare(a.Field, b.Field),
			cmp.Compare(a.Message, b.Message),
		)
	})
}

// Count returns the number of findings of each severity.
func Count(fs []Finding) map[Severity]int {
	out := map[Severity]int{Error: 0, Warning: 0, Info: 0}
	for _, f := range fs {
		out[f.Severity]++
	}
	return out
}
