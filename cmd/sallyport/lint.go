package main

import (
	"context"
	"fmt"
	"io"
	"os"

	"github.com/sallyport/sallyport/internal/lint"
	"github.com/sallyport/sallyport/internal/loader"
)

const lintUsage = `Usage: sallyport lint [flags] <file or directory>...

Checks policies offline, as the API server and the admission webhook would,
and for conflicts, dead rules and risky grants. Directories are read
recursively (*.yaml, *.yml, *.json). Every finding has a stable code; see
docs/lint.md.

Exit codes: 0 no error findings (warnings allowed), 1 an error finding (or,
with --strict, a warning), 2 unusable input (no paths, a path that cannot
be read, bad flags).

Flags:
`

// runLint runs `sallyport lint`.
func runLint(args []string) int {
	return lintMain(args, os.Stdout, os.Stderr)
}

// lintMain is runLint with its output streams, for tests.
func lintMain(args []string, stdout, stderr io.Writer) int {
	fs := commandFlags("sallyport lint", lintUsage, stderr)
	format := fs.String("format", "text", "output format: text or json")
	strict := fs.Bool("strict", false, "fail (exit 1) on warnings too")
	disable := fs.String("disable", "", "comma-separated finding codes or check names to leave out (SP2004,unreachable-rule)")
	codes := fs.Bool("codes", false, "list the finding codes and exit")
	if err := fs.Parse(args); err != nil {
		return parseExit(err)
	}
	fail := usageFailer("sallyport lint", stderr)
	if *codes {
		for _, ci := range lint.Codes {
			closed := ""
			if ci.Closed {
				closed = " [closed world: assumes the linted set is complete]"
			}
			fmt.Fprintf(stdout, "%s  %-8s %-29s %s%s\n", ci.Code, ci.Severity, ci.Check, ci.Summary, closed)
		}
		return 0
	}
	if *format != "text" && *format != "json" {
		return fail("--format must be text or json, not %q", *format)
	}
	disabled, err := lint.ParseCodes(*disable)
	if err != nil {
		return fail("--disable: %v", err)
	}
	paths := fs.Args()
	if len(paths) == 0 {
		return fail("no files or directories given (usage: sallyport lint [flags] <file or directory>...)")
	}
	for _, p := range paths {
		if err := readable(p); err != nil {
			return fail("%v", err)
		}
	}

	l, err := loader.New(loader.Options{})
	if err != nil {
		return fail("%v", err)
	}
	set, loadErr := l.Load(context.Background(), paths...)
	findings := lint.Run(set, loadErr, lint.Options{Disable: disabled})

	write := lint.WriteText
	if *format == "json" {
		write = lint.WriteJSON
	}
	if err := write(stdout, findings); err != nil {
		return fail("%v", err)
	}
	n := lint.Count(findings)
	if n[lint.Error] > 0 || (*strict && n[lint.Warning] > 0) {
		return 1
	}
	return 0
}

// readable checks that a path given on the command line can be read, so
// that a mistyped path is a usage error (exit 2), not a finding.
func readable(p string) error {
	info, err := os.Stat(p)
	if err != nil {
		return err
	}
	if info.IsDir() {
		_, err = os.ReadDir(p)
		return err
	}
	f, err := os.Open(p)
	if err != nil {
		return err
	}
	return f.Close()
}
