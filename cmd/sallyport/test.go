package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"

	"github.com/sallyport/sallyport/internal/loader"
	"github.com/sallyport/sallyport/internal/policytest"
)

const testUsage = `Usage: sallyport test [flags] [paths...]

Runs policy test suites offline, with the decision engine the cluster runs.
A path is a suite file, or a directory searched recursively for suite files
(*_test.yaml, *_test.yml); the default is the current directory. Each suite
names its policy files, connection fixtures, requests and expected answers;
see docs/policy-testing.md.

Offline there is no API server: a fixture's token is an unsigned JWT, and
its claims (identity, audience, issue and expiry times) are taken as given.
Everything else is decided as in the cluster.

Prints every failing case (which gate, expected and actual reason, policy,
rule and message) and a summary "N passed, N failed".

Exit codes: 0 every case passed; 1 a case failed; 2 unusable input (a
suite that does not parse or refers to unknown fixtures, policies that do
not load, bad flags).

Flags:
`

// runTest is `sallyport test`.
func runTest(args []string) int { return testMain(context.Background(), args, os.Stdout, os.Stderr) }

func testMain(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := commandFlags("sallyport test", testUsage, stderr)
	junit := fs.String("junit", "", "also write the results as JUnit XML to `file`")
	runExpr := fs.String("run", "", "run only the cases whose \"suite/case\" matches `regexp`")
	verbose := fs.Bool("verbose", false, "print every decision, passed or not, with its trace")
	fs.BoolVar(verbose, "v", false, "short for --verbose")
	paths, err := parseInterspersed(fs, args)
	if err != nil {
		return parseExit(err)
	}
	if len(paths) == 0 {
		paths = []string{"."}
	}
	var filter *regexp.Regexp
	if *runExpr != "" {
		if filter, err = regexp.Compile(*runExpr); err != nil {
			fmt.Fprintf(stderr, "sallyport test: --run: %v\n", err)
			return 2
		}
	}

	files, err := policytest.Find(paths...)
	if err != nil {
		fmt.Fprintf(stderr, "sallyport test: %v\n", err)
		return 2
	}
	ld, err := loader.New(loader.Options{})
	if err != nil {
		fmt.Fprintf(stderr, "sallyport test: %v\n", err)
		return 2
	}
	runner, err := policytest.NewRunner(policytest.Options{Loader: ld, Run: filter, Trace: *verbose})
	if err != nil {
		fmt.Fprintf(stderr, "sallyport test: %v\n", err)
		return 2
	}

	// Every suite and its policies are loaded before any case runs, and
	// every problem is reported: a broken input is fixed in one round.
	var prepared []*policytest.Prepared
	unusable := false
	for _, f := range files {
		s, err := policytest.LoadSuite(f)
		if err != nil {
			unusable = true
			fmt.Fprintf(stderr, "%v\n", err)
			continue
		}
		p, err := runner.Prepare(ctx, s)
		if err != nil {
			unusable = true
			fmt.Fprintf(stderr, "%s: policies do not load:\n", s.File)
			if le, ok := errors.AsType[*loader.LoadError](err); ok {
				for _, pr := range le.Problems {
					fmt.Fprintf(stderr, "  %s\n", pr)
				}
			} else {
				fmt.Fprintf(stderr, "  %v\n", err)
			}
			continue
		}
		prepared = append(prepared, p)
	}
	if unusable {
		fmt.Fprintln(stderr, "sallyport test: unusable input; no case was run")
		return 2
	}

	var results []*policytest.SuiteResult
	selected := 0
	for _, p := range prepared {
		r := runner.Run(ctx, p)
		results = append(results, r)
		selected += len(r.Cases)
		for _, c := range r.Cases {
			policytest.WriteCase(stdout, p.Suite, c, *verbose)
		}
	}
	if filter != nil && selected == 0 {
		fmt.Fprintf(stderr, "sallyport test: warning: --run %q matches no case\n", *runExpr)
	}
	policytest.WriteSummary(stdout, results)

	if *junit != "" {
		if err := writeJUnitFile(*junit, results); err != nil {
			fmt.Fprintf(stderr, "sallyport test: --junit: %v\n", err)
			return 2
		}
	}
	if _, failed := policytest.Totals(results); failed > 0 {
		return 1
	}
	return 0
}

// writeJUnitFile writes the report next to its final name and renames it,
// so a CI job never reads half a file.
func writeJUnitFile(path string, results []*policytest.SuiteResult) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".junit-*.xml")
	if err != nil {
		return err
	}
	defer func() { _ = os.Remove(tmp.Name()) }()
	if err := policytest.WriteJUnit(tmp, results); err != nil {
		_ = tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Chmod(tmp.Name(), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

// parseInterspersed parses flags anywhere among the arguments (the flag
// package stops at the first argument that is not a flag), so that
// `sallyport test policies/ --junit out.xml` works. Arguments after "--"
// are never flags.
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var tail []string
	if i := slices.Index(args, "--"); i >= 0 {
		args, tail = args[:i], args[i+1:]
	}
	var rest []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		args = fs.Args()
		if len(args) == 0 {
			return append(rest, tail...), nil
		}
		rest = append(rest, args[0])
		args = args[1:]
	}
}
