// Package pathpattern matches canonical object paths against the resource
// patterns of ResourcePolicy rules: "*" matches exactly one non-empty
// segment, "**" any number of segments (zero included), anything else matches
// a segment of the same bytes.
package pathpattern

import (
	"errors"
	"fmt"
	"strings"
)

// Pattern is a compiled resource pattern.
type Pattern struct {
	raw  string
	segs []string
	// literal is set when the pattern has no wildcard, so matching is one
	// string comparison.
	literal bool
}

const (
	segOne = "*"
	segAny = "**"
)

// Compile checks a pattern and compiles it. A pattern starts with "/"; its
// segments are "*", "**" or literals without "*"; "." and ".." segments and
// empty segments (other than a trailing "/") are refused, because canonical
// paths never contain them.
func Compile(p string) (Pattern, error) {
	if !strings.HasPrefix(p, "/") {
		return Pattern{}, errors.New(`must start with "/"`)
	}
	segs := Split(p)
	literal := true
	for i, s := range segs {
		switch {
		case s == segOne || s == segAny:
			literal = false
		case strings.Contains(s, "*"):
			return Pattern{}, fmt.Errorf("segment %d (%q): \"*\" and \"**\" must be a whole segment", i+1, s)
		case s == "." || s == "..":
			return Pattern{}, fmt.Errorf("segment %d: %q segments are not allowed", i+1, s)
		case s == "" && i != len(segs)-1:
			return Pattern{}, fmt.Errorf("segment %d is empty (repeated \"/\")", i+1)
		}
	}
	return Pattern{raw: p, segs: segs, literal: literal}, nil
}

// String returns the pattern as written.
func (p Pattern) String() string { return p.raw }

// Split returns the segments of a path that starts with "/": "/" has none,
// "/a/b" has "a" and "b", and "/a/" has "a" and "".
func Split(path string) []string {
	path = strings.TrimPrefix(path, "/")
	if path == "" {
		return nil
	}
	return strings.Split(path, "/")
}

// MatchPath reports whether a canonical path matches.
func (p Pattern) MatchPath(path string) bool {
	if p.literal {
		return path == p.raw
	}
	return p.Match(Split(path))
}

// Match reports whether the segments of a canonical path match. It is
// wildcard matching with backtracking to the last "**", so it runs in
// O(len(pattern) × len(path)) at worst, whatever the input.
func (p Pattern) Match(path []string) bool {
	pi, si := 0, 0
	star, mark := -1, 0
	for si < len(path) {
		switch {
		case pi < len(p.segs) && p.segs[pi] == segAny:
			star, mark = pi, si
			pi++
		case pi < len(p.segs) && (p.segs[pi] == path[si] || (p.segs[pi] == segOne && path[si] != "")):
			pi++
			si++
		case star >= 0:
			pi = star + 1
			mark++
			si = mark
		default:
			return false
		}
	}
	for pi < len(p.segs) && p.segs[pi] == segAny {
		pi++
	}
	return pi == len(p.segs)
}
