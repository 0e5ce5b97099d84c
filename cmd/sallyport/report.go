package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/sallyport/sallyport/internal/loader"
	"github.com/sallyport/sallyport/internal/report"
)

const reportUsage = `Usage: sallyport report -f <policy file or dir>... --decision-log <file>... [flags]

Lists the grants the policies give that the decisions in the logs never used,
over a window: per ConnectionPolicy, reach entries no allowed decision took
part in and scopes never requested; per ResourcePolicy, Allow rules that
never allowed and connections they name that never came, and Deny rules that
never denied (reported, kept). Each policy comes with a tightened reach or
rule set to paste into a policy change. A grant is used when it takes part
in an allowed decision: a request the resource then denied needed no grant.

The window reaches back --window from --until (default: now; give the time
of the newest decision to analyse old logs). Logs are streamed, however
large. Only Enforce decisions and policies are counted. Give the logs of
every replica: each logs its own decisions.

Exit codes: 0 a report was printed, 2 unusable input.

Flags:
`

// runReport runs `sallyport report`.
func runReport(args []string) int {
	return reportMain(args, os.Stdout, os.Stderr)
}

// reportMain is runReport with its output streams, for tests.
func reportMain(args []string, stdout, stderr io.Writer) int {
	fs := commandFlags("sallyport report", reportUsage, stderr)
	var policies, logs stringList
	fs.Var(&policies, "f", "policy `file or directory` (repeatable)")
	fs.Var(&logs, "decision-log", "decision log `file` (repeatable; - for standard input)")
	window := fs.Duration("window", 30*24*time.Hour, "how far back from --until to count")
	until := fs.String("until", "", "end of the window, RFC 3339 (default: now)")
	format := fs.String("format", "text", "output format: text or json (with the suggested reach and rules)")
	if err := fs.Parse(args); err != nil {
		return parseExit(err)
	}
	fail := usageFailer("sallyport report", stderr)
	switch {
	case fs.NArg() > 0:
		return fail("unexpected arguments %q (policies go with -f)", fs.Args())
	case len(policies) == 0:
		return fail("no policies (-f)")
	case len(logs) == 0:
		return fail("no decision logs (--decision-log)")
	case *window <= 0:
		return fail("--window must be positive")
	case *format != "text" && *format != "json":
		return fail("--format must be text or json, not %q", *format)
	}
	set, err := loader.Load(policies...)
	if err != nil {
		return fail("policies do not load:\n%v", err)
	}

	end := time.Now()
	if *until != "" {
		if end, err = time.Parse(time.RFC3339, *until); err != nil {
			return fail("--until: %v", err)
		}
	}
	classOf := report.ClassesOf(set)
	u := report.NewUsage()
	u.Until = end
	for _, name := range logs {
		if err := readLog(u, name, end.Add(-*window), classOf); err != nil {
			return fail("%v", err)
		}
	}
	r := report.Build(set.ConnectionPolicies, set.ResourcePolicies, u)
	if *format == "json" {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(r); err != nil {
			return fail("%v", err)
		}
		return 0
	}
	r.WriteText(stdout)
	return 0
}

// readLog streams one decision log (or standard input, "-") into u.
func readLog(u *report.Usage, name string, since time.Time, classOf func(string) (string, bool)) error {
	var r io.Reader = os.Stdin
	if name != "-" {
		f, err := os.Open(name)
		if err != nil {
			return fmt.Errorf("read decision log: %w", err)
		}
		defer f.Close()
		r = f
	}
	return u.Read(r, name, since, classOf)
}
