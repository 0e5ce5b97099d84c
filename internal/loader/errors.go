package loader

import (
	"fmt"
	"strings"
)

// Location is where an object was read: a file, the document in it and,
// for an item of a List, the item.
type Location struct {
	// File is the path as it was found (the argument, or below it).
	File string
	// Document is the 1-based index of the document in the file; empty
	// documents (only comments or blank lines) are not counted. Zero when
	// the problem concerns the whole file.
	Document int
	// Item is the 1-based index of the object in a List document, zero for
	// a document that is the object itself.
	Item int
	// Line is the 1-based line where the document's content starts; zero
	// when unknown (JSON files report 1).
	Line int
}

// String renders file:line, document and item, leaving out what is unknown.
func (l Location) String() string {
	var b strings.Builder
	b.WriteString(l.File)
	if l.Line > 0 {
		fmt.Fprintf(&b, ":%d", l.Line)
	}
	if l.Document > 0 {
		fmt.Fprintf(&b, ": document %d", l.Document)
	}
	if l.Item > 0 {
		fmt.Fprintf(&b, ", item %d", l.Item)
	}
	return b.String()
}

// ProblemType sorts problems by what went wrong, so that a caller (the
// linter) can tell a file it could not read from a policy the API server
// would refuse. The values are stable.
type ProblemType string

// The problem types.
const (
	// ProblemFile: a path could not be read, or a directory holds no
	// policy files.
	ProblemFile ProblemType = "File"
	// ProblemSyntax: not YAML or JSON, a bad document separator, or a
	// document (or List item) that is not an object.
	ProblemSyntax ProblemType = "Syntax"
	// ProblemKind: apiVersion or kind missing or not supported.
	ProblemKind ProblemType = "Kind"
	// ProblemUnknownField: a field the schema does not know.
	ProblemUnknownField ProblemType = "UnknownField"
	// ProblemSchema: what the API server's validation refuses (OpenAPI
	// schema, x-kubernetes-validations rules, metadata), and a policy
	// without a namespace.
	ProblemSchema ProblemType = "Schema"
	// ProblemDuplicate: the same object defined twice.
	ProblemDuplicate ProblemType = "Duplicate"
	// ProblemCompile: what the compiler (and so the admission webhook)
	// refuses: CEL expressions, audiences, patterns, selectors.
	ProblemCompile ProblemType = "Compile"
	// ProblemWarning: a warning the admission webhook would return (only
	// in Set.Warnings).
	ProblemWarning ProblemType = "Warning"
)

// Problem is one thing wrong with (or, as a warning, worth saying about) one
// loaded document.
type Problem struct {
	Location
	// Type sorts the problem.
	Type ProblemType
	// FieldLine is the line Field is written on (or, for a field not
	// written in the file, its closest written ancestor); for a problem
	// about a whole object, the line the object starts at (a List item's
	// own line). Zero when unknown, as for a problem about a whole file.
	// Location.Line stays the line the document starts at.
	FieldLine int
	// APIVersion, Kind, Namespace and Name identify the object, as far as
	// they are known.
	APIVersion, Kind, Namespace, Name string
	// Field is the field path the API server or compiler names, such as
	// spec.rules[0].when; empty when the problem is not about one field.
	Field string
	// Message says what is wrong. It may span lines (a CEL error shows the
	// expression with a caret); String keeps it on one line.
	Message string
}

// String renders the problem on one line (source excerpts dropped):
// file:line: document N (Kind ns/name): field: message.
func (p Problem) String() string {
	var b strings.Builder
	b.WriteString(p.Location.String())
	if p.Kind != "" || p.Name != "" {
		b.WriteString(" (")
		b.WriteString(p.Kind)
		if p.Name != "" || p.Namespace != "" {
			if p.Kind != "" {
				b.WriteByte(' ')
			}
			if p.Namespace != "" {
				b.WriteString(p.Namespace + "/")
			}
			b.WriteString(p.Name)
		}
		b.WriteByte(')')
	}
	b.WriteString(": ")
	if p.Field != "" {
		b.WriteString(p.Field + ": ")
	}
	b.WriteString(oneLine(p.Message))
	return b.String()
}

// oneLine drops the source excerpt lines (" | …") a CEL error carries after
// its "line L, column C" message and joins what remains.
func oneLine(msg string) string {
	if !strings.Contains(msg, "\n") {
		return msg
	}
	var keep []string
	for _, l := range strings.Split(msg, "\n") {
		if t := strings.TrimSpace(l); t != "" && !strings.HasPrefix(t, "|") {
			keep = append(keep, t)
		}
	}
	return strings.Join(keep, "; ")
}

// LoadError holds every problem found while loading, not only the first.
type LoadError struct {
	Problems []Problem
}

// Error lists the problems, one per line.
func (e *LoadError) Error() string {
	lines := make([]string, len(e.Problems))
	for i, p := range e.Problems {
		lines[i] = p.String()
	}
	return strings.Join(lines, "\n")
}
