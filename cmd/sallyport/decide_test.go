package main

import (
	"bytes"
	"context"
	"path/filepath"
	"strings"
	"testing"
)

const ledgerSuite = "testdata/test/pass/ledger_test.yaml"

// TestDecideGolden runs `sallyport decide` and compares exit code and
// output with testdata/decide/golden. Decision IDs are made stable.
func TestDecideGolden(t *testing.T) {
	saved := newDecisionID
	newDecisionID = func() string { return "offline-decision" }
	t.Cleanup(func() { newDecisionID = saved })
	readEntry := "testdata/decide/read-entry.json"
	for _, tc := range []cliRun{
		{name: "allowed", args: []string{"--suite", ledgerSuite, "--connection", "billing-worker", "--request", readEntry}, code: 0},
		{name: "denied", args: []string{"--suite", ledgerSuite, "--connection", "billing-worker", "--request", "testdata/decide/delete-entry.json"}, code: 0},
		{name: "denied-exit-code", args: []string{"--exit-code", "--suite", ledgerSuite, "--connection", "billing-worker", "--request", "testdata/decide/delete-entry.json"}, code: 1},
		{name: "allowed-exit-code", args: []string{"--exit-code", "--suite", ledgerSuite, "--connection", "billing-worker", "--request", readEntry}, code: 0},
		{name: "trace", args: []string{"--trace", "--suite", ledgerSuite, "--connection", "intruder", "--request", readEntry}, code: 0},
		{name: "stdin", args: []string{"-f", "testdata/test/pass/policies", "--now", "2026-03-02T10:30:00Z"},
			stdin: `{"resource":{"namespace":"ledger","service":"ledger-api","name":"/healthz"},"action":"GET"}`, code: 0},
		{name: "unverified-token", args: []string{"-f", "testdata/test/pass/policies", "--now", "2026-03-02T10:30:00Z", "--request", "testdata/decide/with-token.json"}, code: 0},
		{name: "expired-token", args: []string{"-f", "testdata/test/pass/policies", "--now", "2026-03-02T11:00:00Z", "--request", "testdata/decide/with-token.json"}, code: 0},
		{name: "bad-request", args: []string{"-f", "testdata/test/pass/policies", "--request", "testdata/decide/bad.json"}, code: 2},
		{name: "bad-json", args: []string{"-f", "testdata/test/pass/policies"}, stdin: `{"action":`, code: 2},
		{name: "bad-policies", args: []string{"-f", "testdata/test/badpolicy/policies", "--request", readEntry}, code: 2},
		{name: "unknown-connection", args: []string{"--suite", ledgerSuite, "--connection", "nobody", "--request", readEntry}, code: 2},
		{name: "token-and-connection", args: []string{"--suite", ledgerSuite, "--connection", "billing-worker", "--request", "testdata/decide/with-token.json"}, code: 2},
		{name: "connection-without-suite", args: []string{"--connection", "billing-worker", "-f", "testdata/test/pass/policies", "--request", readEntry}, code: 2},
		{name: "no-policies", args: []string{"--request", readEntry}, code: 2},
		{name: "bad-now", args: []string{"-f", "testdata/test/pass/policies", "--now", "noon", "--request", readEntry}, code: 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := decideMain(context.Background(), tc.args, strings.NewReader(tc.stdin), &stdout, &stderr)
			if code != tc.code {
				t.Errorf("exit %d, want %d; stderr:\n%s", code, tc.code, stderr.String())
			}
			checkGolden(t, filepath.Join("testdata", "decide", "golden", tc.name+".golden"), transcript(code, stdout.String(), stderr.String()))
		})
	}
}

// Offline and as a suite case, one request gets one answer: decide and
// test share the fixtures and the engine.
func TestDecideMatchesSuite(t *testing.T) {
	var stdout, stderr bytes.Buffer
	code := decideMain(context.Background(), []string{"--suite", ledgerSuite, "--connection", "billing-worker", "--request", "testdata/decide/read-entry.json"},
		strings.NewReader(""), &stdout, &stderr)
	if code != 0 || !strings.Contains(stdout.String(), `"rule":"read-entries","reason":"Matched"`) {
		t.Errorf("exit %d, stdout %s, stderr %s", code, stdout.String(), stderr.String())
	}
}
