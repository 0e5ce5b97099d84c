package main

import (
	"bytes"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
)

func TestReportCommand(t *testing.T) {
	const dir = "testdata/report/"
	base := []string{"-f", dir + "policies.yaml", "--decision-log", dir + "decisions.log", "--until", "2026-12-01T13:00:00Z"}

	var out, errOut bytes.Buffer
	if code := reportMain(append(base, "--window", "24h"), &out, &errOut); code != 0 {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
	for _, want := range []string{
		"2 decisions from 2026-12-01T12:00:00Z to 2026-12-01T12:01:00Z.",
		`ConnectionPolicy billing/to-ledger: reach "audit" was never used`,
		`ConnectionPolicy billing/to-ledger: reach "ledger": scopes never requested: ledger.write`,
		`ResourcePolicy ledger/ledger-api: Allow rule "write" never allowed a request`,
		`ResourcePolicy ledger/ledger-api: Deny rule "no-admin" never denied a request`,
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("report lacks %q:\n%s", want, out.String())
		}
	}

	// A wider window takes in the old write: the rule and the scope count.
	out.Reset()
	if code := reportMain(append(base, "--window", "1000h", "--format", "json"), &out, &errOut); code != 0 {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
	var r struct {
		Decisions int `json:"decisions"`
		Resources []struct {
			Policy           string   `json:"policy"`
			UnusedAllowRules []string `json:"unusedAllowRules"`
		} `json:"resourcePolicies"`
	}
	if err := json.Unmarshal(out.Bytes(), &r); err != nil {
		t.Fatalf("JSON report: %v\n%s", err, out.String())
	}
	if r.Decisions != 3 {
		t.Errorf("%d decisions in 1000h, want 3", r.Decisions)
	}
	for _, rp := range r.Resources {
		if rp.Policy == "ledger/ledger-api" && len(rp.UnusedAllowRules) != 0 {
			t.Errorf("unused Allow rules %v, want none in 1000h", rp.UnusedAllowRules)
		}
	}

	for _, bad := range [][]string{
		{},
		{"-f", dir + "policies.yaml"},
		{"-f", dir + "policies.yaml", "--decision-log", dir + "missing.log"},
		{"-f", dir + "policies.yaml", "--decision-log", dir + "decisions.log", "--window", "0s"},
		{"-f", dir + "policies.yaml", "--decision-log", dir + "policies.yaml"},
		{"-f", dir + "policies.yaml", "--decision-log", dir + "decisions.log", "--until", "yesterday"},
	} {
		errOut.Reset()
		if code := reportMain(bad, &out, &errOut); code != 2 || !strings.Contains(errOut.String(), "sallyport report:") {
			t.Errorf("sallyport report %s: exit %d, stderr %q; want 2 with a message", strings.Join(bad, " "), code, errOut.String())
		}
	}
}

// TestReportGolden compares exit code and output of `sallyport report`
// with testdata/report/golden: the decision-log report, and the command
// lines of the cluster source that fail before or at reaching the cluster.
// A report read from a real cluster is checked in test/report, which
// starts an API server.
func TestReportGolden(t *testing.T) {
	const dir = "testdata/report/"
	files := []string{"-f", dir + "policies.yaml", "--decision-log", dir + "decisions.log"}
	for _, tc := range []cliRun{
		{name: "logs", args: append([]string{"--until", "2026-12-01T13:00:00Z", "--window", "24h"}, files...), code: 0},
		{name: "cluster-and-files", args: append([]string{"--cluster"}, files...), code: 2},
		{name: "kubeconfig-and-log", args: []string{"--kubeconfig", dir + "unreachable.kubeconfig", "--decision-log", dir + "decisions.log"}, code: 2},
		{name: "namespace-without-cluster", args: append([]string{"-n", "billing"}, files...), code: 2},
		{name: "no-source", args: nil, code: 2},
		{name: "missing-kubeconfig", args: []string{"--kubeconfig", dir + "no-such.kubeconfig"}, code: 2},
		{name: "unreachable-cluster", args: []string{"--kubeconfig", dir + "unreachable.kubeconfig", "-n", "billing"}, code: 2},
		{name: "cluster-bad-window", args: []string{"--cluster", "--window", "-1h"}, code: 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := reportMain(tc.args, &stdout, &stderr)
			if code != tc.code {
				t.Errorf("exit %d, want %d; stderr:\n%s", code, tc.code, stderr.String())
			}
			checkGolden(t, filepath.Join("testdata", "report", "golden", tc.name+".golden"), transcript(code, stdout.String(), stderr.String()))
		})
	}
}

// --cluster without --kubeconfig finds the cluster through $KUBECONFIG.
func TestReportClusterFromEnvironment(t *testing.T) {
	t.Setenv("KUBECONFIG", "testdata/report/unreachable.kubeconfig")
	var stdout, stderr bytes.Buffer
	code := reportMain([]string{"--cluster"}, &stdout, &stderr)
	if code != 2 || !strings.Contains(stderr.String(), "read the cluster at https://127.0.0.1:1") {
		t.Errorf("exit %d, stderr %q; want 2, naming the cluster of $KUBECONFIG", code, stderr.String())
	}
}
