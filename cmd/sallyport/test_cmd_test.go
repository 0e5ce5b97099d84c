package main

import (
	"bytes"
	"context"
	"encoding/xml"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/sallyport/sallyport/internal/testenv"
)

// The -update flag rewrites the golden files of the CLI tests:
//
//	go test ./cmd/sallyport -run 'Golden' -update
//
// Every golden test of the package (test, decide, lint) uses it, with
// transcript and checkGolden.
var update = flag.Bool("update", false, "rewrite the golden files of the CLI tests")

func updating() bool { return *update }

// cliRun is one command line of a golden test.
type cliRun struct {
	name  string
	args  []string
	stdin string
	code  int
}

// transcript renders what a command did: its exit code and both streams.
func transcript(code int, stdout, stderr string) string {
	return fmt.Sprintf("exit %d\n--- stdout\n%s--- stderr\n%s", code, stdout, stderr)
}

// checkGolden compares got with the golden file, or rewrites it with -update.
func checkGolden(t *testing.T, file, got string) {
	t.Helper()
	testenv.CheckGolden(t, file, got, updating())
}

// TestTestGolden runs `sallyport test` over the suites in testdata/test and
// compares exit code and output with testdata/test/golden.
func TestTestGolden(t *testing.T) {
	for _, tc := range []cliRun{
		{name: "pass", args: []string{"testdata/test/pass"}, code: 0},
		{name: "fail", args: []string{"testdata/test/fail"}, code: 1},
		{name: "all", args: []string{"testdata/test/fail", "testdata/test/pass"}, code: 1},
		{name: "bad-suite", args: []string{"testdata/test/badsuite"}, code: 2},
		{name: "bad-policies", args: []string{"testdata/test/badpolicy"}, code: 2},
		{name: "run-filter", args: []string{"--run", "ledger/(deletes|no credential)", "testdata/test/pass"}, code: 0},
		{name: "run-filter-fail", args: []string{"testdata/test/fail", "--run", "^wrong/reads"}, code: 1},
		{name: "run-no-match", args: []string{"--run", "nothing-matches-this", "testdata/test/pass"}, code: 0},
		{name: "verbose", args: []string{"--verbose", "--run", "ledger/(reads an entry|writes without|scopes beyond|another workload)", "testdata/test/pass/ledger_test.yaml"}, code: 0},
		{name: "verbose-fail", args: []string{"-v", "--run", "deletes", "testdata/test/fail"}, code: 1},
		{name: "no-suites", args: []string{"testdata/decide"}, code: 2},
		{name: "missing-path", args: []string{"testdata/no-such-dir"}, code: 2},
		{name: "bad-run", args: []string{"--run", "(", "testdata/test/pass"}, code: 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := testMain(context.Background(), tc.args, &stdout, &stderr)
			if code != tc.code {
				t.Errorf("exit %d, want %d; stderr:\n%s", code, tc.code, stderr.String())
			}
			checkGolden(t, filepath.Join("testdata", "test", "golden", tc.name+".golden"), transcript(code, stdout.String(), stderr.String()))
		})
	}
}

// The JUnit report is checked by parsing it, as a CI system would.
func TestTestJUnit(t *testing.T) {
	type testcase struct {
		Name      string `xml:"name,attr"`
		Classname string `xml:"classname,attr"`
		Time      string `xml:"time,attr"`
		Failure   *struct {
			Message string `xml:"message,attr"`
			Type    string `xml:"type,attr"`
			Text    string `xml:",chardata"`
		} `xml:"failure"`
	}
	type testsuite struct {
		Name     string     `xml:"name,attr"`
		Tests    int        `xml:"tests,attr"`
		Failures int        `xml:"failures,attr"`
		Errors   int        `xml:"errors,attr"`
		Time     string     `xml:"time,attr"`
		Cases    []testcase `xml:"testcase"`
	}
	var report struct {
		XMLName  xml.Name    `xml:"testsuites"`
		Tests    int         `xml:"tests,attr"`
		Failures int         `xml:"failures,attr"`
		Time     string      `xml:"time,attr"`
		Suites   []testsuite `xml:"testsuite"`
	}

	out := filepath.Join(t.TempDir(), "report.xml")
	var stdout, stderr bytes.Buffer
	code := testMain(context.Background(), []string{"--junit", out, "testdata/test/fail", "testdata/test/pass"}, &stdout, &stderr)
	if code != 1 {
		t.Fatalf("exit %d, want 1; stderr:\n%s", code, stderr.String())
	}
	raw, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if err := xml.Unmarshal(raw, &report); err != nil {
		t.Fatalf("report is not XML: %v\n%s", err, raw)
	}
	if report.Tests != 18 || report.Failures != 2 {
		t.Errorf("testsuites: tests=%d failures=%d, want 18 and 2", report.Tests, report.Failures)
	}
	seconds := func(what, v string) {
		if f, err := strconv.ParseFloat(v, 64); err != nil || f < 0 {
			t.Errorf("%s: time %q is not a number of seconds", what, v)
		}
	}
	seconds("testsuites", report.Time)
	want := map[string][2]int{"wrong": {3, 2}, "clock": {2, 0}, "ledger": {13, 0}}
	if len(report.Suites) != len(want) {
		t.Fatalf("%d testsuites, want %d", len(report.Suites), len(want))
	}
	failures := 0
	for _, s := range report.Suites {
		w, ok := want[s.Name]
		if !ok || s.Tests != w[0] || s.Failures != w[1] || s.Errors != 0 || len(s.Cases) != s.Tests {
			t.Errorf("testsuite %q: tests=%d failures=%d errors=%d cases=%d, want %v", s.Name, s.Tests, s.Failures, s.Errors, len(s.Cases), w)
		}
		seconds("testsuite "+s.Name, s.Time)
		for _, c := range s.Cases {
			seconds("testcase "+c.Name, c.Time)
			if c.Classname != s.Name || c.Name == "" {
				t.Errorf("testcase %q has classname %q in suite %q", c.Name, c.Classname, s.Name)
			}
			if c.Failure == nil {
				continue
			}
			failures++
			if c.Failure.Message == "" || c.Failure.Type == "" || !strings.Contains(c.Failure.Text, "connection:") {
				t.Errorf("testcase %q: failure %+v", c.Name, c.Failure)
			}
		}
	}
	if failures != 2 {
		t.Errorf("%d failure elements, want 2", failures)
	}
	var deletes *testcase
	for _, s := range report.Suites {
		for i := range s.Cases {
			if s.Name == "wrong" && s.Cases[i].Name == "deletes are allowed" {
				deletes = &s.Cases[i]
			}
		}
	}
	if deletes == nil || deletes.Failure == nil || deletes.Failure.Message != "decision: allowed: want true, got false" ||
		!strings.Contains(deletes.Failure.Text, `resource gate: rule: want "write-with-ticket", got "no-deletes"`) {
		t.Errorf("failure of wrong/deletes are allowed: %+v", deletes)
	}
}
