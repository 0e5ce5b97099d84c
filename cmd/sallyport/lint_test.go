package main

import (
	"bytes"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
)

// TestLintGolden runs `sallyport lint` on the policies in testdata/lint
// and compares its exit code, standard output and standard error with the
// golden files in testdata/lint/golden (-update rewrites them; see
// test_cmd_test.go).
func TestLintGolden(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		code int
	}{
		{"findings-text", []string{"testdata/lint/findings"}, 1},
		{"findings-json", []string{"--format", "json", "testdata/lint/findings"}, 1},
		{"findings-disabled", []string{"--disable", "SP1007,SP1008,SP2001,shadowed-rule,SP4001,SP4002", "testdata/lint/findings/connections.yaml", "testdata/lint/findings/ledger-api.yaml"}, 0},
		{"warnings", []string{"testdata/lint/warnings"}, 0},
		{"warnings-strict", []string{"--strict", "testdata/lint/warnings"}, 1},
		{"clean", []string{"testdata/lint/clean"}, 0},
		{"clean-json", []string{"--format=json", "testdata/lint/clean"}, 0},
		{"no-paths", nil, 2},
		{"missing-path", []string{"testdata/lint/clean", "testdata/lint/missing.yaml"}, 2},
		{"bad-format", []string{"--format", "sarif", "testdata/lint/clean"}, 2},
		{"bad-disable", []string{"--disable", "SP9999", "testdata/lint/clean"}, 2},
		{"bad-flag", []string{"--no-such-flag", "testdata/lint/clean"}, 2},
		{"codes", []string{"--codes"}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := lintMain(tc.args, &stdout, &stderr)
			if code != tc.code {
				t.Errorf("exit %d, want %d\nstdout:\n%s\nstderr:\n%s", code, tc.code, stdout.String(), stderr.String())
			}
			checkGolden(t, filepath.Join("testdata", "lint", "golden", tc.name+".golden"), transcript(code, stdout.String(), stderr.String()))
		})
	}
}

// The JSON report parses, carries its version and agrees with its summary.
func TestLintJSON(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if code := lintMain([]string{"--format", "json", "testdata/lint/findings"}, &stdout, &stderr); code != 1 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	var r struct {
		Version  int `json:"version"`
		Findings []struct {
			Code, Check, Severity, File, Message string
			Line                                 int
		} `json:"findings"`
		Summary struct{ Errors, Warnings, Info int } `json:"summary"`
	}
	if err := json.Unmarshal(stdout.Bytes(), &r); err != nil {
		t.Fatal(err)
	}
	if r.Version != 1 {
		t.Errorf("version %d", r.Version)
	}
	count := map[string]int{}
	for _, f := range r.Findings {
		if !strings.HasPrefix(f.Code, "SP") || f.Check == "" || f.File == "" || f.Line == 0 || f.Message == "" {
			t.Errorf("incomplete finding %+v", f)
		}
		count[f.Severity]++
	}
	if count["error"] != r.Summary.Errors || count["warning"] != r.Summary.Warnings || count["info"] != r.Summary.Info || r.Summary.Errors == 0 {
		t.Errorf("summary %+v, counted %v", r.Summary, count)
	}
}
