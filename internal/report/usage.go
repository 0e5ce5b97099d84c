// Package report finds the grants policies give that traffic never used:
// from decision log lines, per ConnectionPolicy the reach entries and
// scopes no allowed connection needed, per ResourcePolicy the Allow rules
// that never allowed and the connections they name that never came; with a
// tightened reach and rule set to paste into a policy change. Deny rules
// are reported but never suggested for removal.
package report

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/types"

	"github.com/sallyport/sallyport/internal/loader"
)

// Usage is what decision log lines show was used.
type Usage struct {
	// Reach is keyed by ConnectionPolicy ("ns/name") and class.
	Reach map[ReachKey]*Use
	// Rules is keyed by ResourcePolicy ("ns/name") and rule name.
	Rules map[RuleKey]*Use
	// From and To are the earliest and latest decision read; Lines the
	// Enforce lines read within the window.
	From, To time.Time
	Lines    int
	// Until, when set, is the end of the window: later lines are not
	// counted.
	Until time.Time
}

// ReachKey names a reach entry.
type ReachKey struct{ Connection, Class string }

// RuleKey names a rule.
type RuleKey struct{ Resource, Rule string }

// Use is how often and when something was used, and with what.
type Use struct {
	Count int
	Last  time.Time
	// Scopes are the scopes requested; Connections the ConnectionPolicies
	// that used a rule.
	Scopes      map[string]bool
	Connections map[string]bool
}

// NewUsage returns an empty usage.
func NewUsage() *Usage {
	return &Usage{Reach: map[ReachKey]*Use{}, Rules: map[RuleKey]*Use{}}
}

// ClassesOf returns the classOf function Read needs, from loaded policies:
// the class of a ResourcePolicy named "ns/name".
func ClassesOf(set *loader.Set) func(resource string) (string, bool) {
	return func(name string) (string, bool) {
		ns, n, _ := strings.Cut(name, "/")
		rp, ok := set.Resources[types.NamespacedName{Namespace: ns, Name: n}]
		if !ok {
			return "", false
		}
		return rp.Class, true
	}
}

// logLine is the part of a decision log line (docs/decision-api.md) the
// report reads.
type logLine struct {
	Time        time.Time `json:"time"`
	Enforcement string    `json:"enforcement"`
	Scopes      []string  `json:"scopes"`
	Connection  struct {
		Allowed bool   `json:"allowed"`
		Policy  string `json:"policy"`
	} `json:"connection"`
	Resource struct {
		Allowed bool   `json:"allowed"`
		Policy  string `json:"policy"`
		Rule    string `json:"rule"`
		Reason  string `json:"reason"`
	} `json:"resource"`
}

// Read adds the Enforce lines of a decision log made at or after since to
// u. classOf maps a ResourcePolicy ("ns/name") to its class, which the log
// line does not carry; a line for an unknown ResourcePolicy counts for its
// rules but not for a reach. name names the log in errors.
func (u *Usage) Read(r io.Reader, name string, since time.Time, classOf func(resource string) (string, bool)) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for n := 1; sc.Scan(); n++ {
		var l logLine
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			return fmt.Errorf("%s:%d: not a decision log line: %w", name, n, err)
		}
		if l.Enforcement != "Enforce" || l.Time.Before(since) || (!u.Until.IsZero() && l.Time.After(u.Until)) {
			continue
		}
		u.Lines++
		if u.From.IsZero() || l.Time.Before(u.From) {
			u.From = l.Time
		}
		if l.Time.After(u.To) {
			u.To = l.Time
		}
		// A grant is used when it takes part in an allowed decision: a
		// request the resource then denied needed no reach or scope. A Deny
		// rule is used when it denies.
		allowed := l.Connection.Allowed && l.Resource.Allowed
		if class, ok := classOf(l.Resource.Policy); ok && allowed {
			use(u.Reach, ReachKey{l.Connection.Policy, class}, l.Time, l.Scopes, "")
		}
		if l.Resource.Rule != "" && (allowed || l.Resource.Reason == "DeniedByRule") {
			use(u.Rules, RuleKey{l.Resource.Policy, l.Resource.Rule}, l.Time, l.Scopes, l.Connection.Policy)
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("read %s: %w", name, err)
	}
	return nil
}

func use[K comparable](m map[K]*Use, k K, at time.Time, scopes []string, conn string) {
	u := m[k]
	if u == nil {
		u = &Use{Scopes: map[string]bool{}, Connections: map[string]bool{}}
		m[k] = u
	}
	u.Count++
	if at.After(u.Last) {
		u.Last = at
	}
	for _, s := range scopes {
		u.Scopes[s] = true
	}
	if conn != "" {
		u.Connections[conn] = true
	}
}
