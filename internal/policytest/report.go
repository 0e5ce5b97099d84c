package policytest

import (
	"fmt"
	"io"
	"strings"

	"github.com/sallyport/sallyport/internal/decision"
)

// WriteCase writes one case's outcome for people: a failing case with its
// mismatches and the actual answer of both gates; with verbose, every case,
// and its trace when it has one.
func WriteCase(w io.Writer, s *Suite, c *CaseResult, verbose bool) {
	if c.Passed() && !verbose {
		return
	}
	id := s.Name + "/" + c.Case.Name
	where := fmt.Sprintf("%s:%d", s.File, c.Case.Line)
	if verbose {
		fmt.Fprintf(w, "=== CASE %s (%s)\n", id, where)
	}
	if c.Passed() {
		writeDecision(w, c.Decision, c.Trace)
		fmt.Fprintf(w, "--- PASS: %s\n", id)
		return
	}
	if !verbose {
		fmt.Fprintf(w, "--- FAIL: %s (%s)\n", id, where)
	}
	for _, m := range c.Mismatches {
		fmt.Fprintf(w, "    %s\n", m)
	}
	writeDecision(w, c.Decision, c.Trace)
	if verbose {
		fmt.Fprintf(w, "--- FAIL: %s\n", id)
	}
}

// writeDecision writes both gates' actual answers, and the trace if any.
func writeDecision(w io.Writer, d *decision.Decision, tr *decision.Trace) {
	cn := &d.Connection
	fmt.Fprintf(w, "    connection: %s\n", gateLine(cn.Allowed, cn.Reason, cn.Policy, "", cn.Identity, cn.Message))
	rs := &d.Resource
	fmt.Fprintf(w, "    resource:   %s\n", gateLine(rs.Allowed, rs.Reason, rs.Policy, rs.Rule, "", rs.Message))
	if tr != nil {
		fmt.Fprintf(w, "    trace:\n%s", tr.Format("      "))
	}
}

func gateLine(allowed bool, reason, policy, rule, identity, msg string) string {
	parts := []string{"denied"}
	if allowed {
		parts[0] = "allowed"
	}
	parts = append(parts, reason)
	if policy != "" {
		parts = append(parts, "policy "+policy)
	}
	if rule != "" {
		parts = append(parts, fmt.Sprintf("rule %q", rule))
	}
	if identity != "" {
		parts = append(parts, "identity "+identity)
	}
	out := strings.Join(parts, ", ")
	if msg != "" {
		out += ": " + msg
	}
	return out
}

// Totals adds up the results of suites.
func Totals(results []*SuiteResult) (passed, failed int) {
	for _, r := range results {
		p, f := r.Counts()
		passed += p
		failed += f
	}
	return passed, failed
}

// WriteSummary writes the last line of a run: "N passed, N failed".
func WriteSummary(w io.Writer, results []*SuiteResult) {
	p, f := Totals(results)
	fmt.Fprintf(w, "%d passed, %d failed\n", p, f)
}
