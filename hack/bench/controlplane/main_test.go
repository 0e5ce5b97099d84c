package main

import (
	"context"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"
)

// TestSmoke runs the benchmark small, so it cannot rot: every policy must
// become Ready, every change must be seen by the decision API and in the
// status, the operator's status writes must be counted, and the result
// files must be written. It asserts no timing: the numbers live in
// docs/benchmarks-controlplane.md.
func TestSmoke(t *testing.T) {
	const policies, changes = 20, 5
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	out := t.TempDir()
	res, err := run(ctx, options{
		Policies: policies, Namespaces: 4, Workers: 8, ClientQPS: 1000, ClientBurst: 2000, ReadyTimeout: 2 * time.Minute,
		Changes: changes, Gap: 20 * time.Millisecond, ChangeTimeout: 30 * time.Second, PollInterval: time.Millisecond,
		OperatorQPS: -1, Out: out,
	}, testr.New(t))
	if err != nil {
		t.Fatal(err)
	}

	a := res.Apply
	if a == nil || a.Connections+a.Resources != policies || len(a.Samples) != policies {
		t.Fatalf("bulk apply: %+v", a)
	}
	for _, s := range a.Samples {
		if s.Created <= 0 || s.Ready <= 0 {
			t.Errorf("%s %s: created %s, ready %s", s.Kind, s.Name, s.Created, s.Ready)
		}
	}
	if a.Ready <= 0 || a.Served <= 0 || a.Created <= 0 {
		t.Errorf("bulk apply durations: created %s, served %s, ready %s", a.Created, a.Served, a.Ready)
	}
	// Every policy's status is written at least once, by a patch of its
	// status subresource: the counter must have seen them all.
	statusPatches := map[string]int{}
	for _, c := range a.Calls {
		if c.Verb == "patch" && strings.HasSuffix(c.Resource, "/status") {
			statusPatches[c.Resource] += c.N
		}
	}
	for _, r := range []string{"connectionpolicies.policy.sallyport.dev/status", "resourcepolicies.policy.sallyport.dev/status"} {
		if statusPatches[r] < policies/2 {
			t.Errorf("%d patches of %s counted, want at least %d; calls: %v", statusPatches[r], r, policies/2, a.Calls)
		}
	}

	p := res.Propagation
	if p == nil || len(p.Samples) != changes {
		t.Fatalf("propagation: %+v", p)
	}
	for i, s := range p.Samples {
		if s.Decide <= 0 || s.Status <= 0 || s.Generation != int64(i+2) {
			t.Errorf("change %d: %+v", i+1, s)
		}
	}
	if p.Polls == 0 || p.Unexpected != 0 {
		t.Errorf("%d polls, %d unexpected answers", p.Polls, p.Unexpected)
	}
	if totalCalls(p.Calls, "patch") < changes {
		t.Errorf("propagation: %d patches counted for %d changes: %v", totalCalls(p.Calls, "patch"), changes, p.Calls)
	}

	table := res.table()
	if err := res.write(out, table); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"summary.txt", "apply-ready.tsv", "apply-calls.tsv", "apply-calls-settled.tsv", "propagation.tsv", "propagation-calls.tsv"} {
		raw, err := os.ReadFile(filepath.Join(out, f))
		if err != nil {
			t.Fatal(err)
		}
		if lines := strings.Count(string(raw), "\n"); lines < 2 {
			t.Errorf("%s has %d lines", f, lines)
		}
	}
	t.Log("\n" + table)
}

func TestClassify(t *testing.T) {
	for _, tc := range []struct {
		method, url string
		want        call
	}{
		{http.MethodPatch, "/apis/policy.sallyport.dev/v1alpha1/namespaces/a/resourcepolicies/x/status", call{"patch", "resourcepolicies.policy.sallyport.dev/status"}},
		{http.MethodGet, "/apis/policy.sallyport.dev/v1alpha1/connectionpolicies?watch=true&resourceVersion=1", call{"watch", "connectionpolicies.policy.sallyport.dev"}},
		{http.MethodGet, "/apis/policy.sallyport.dev/v1alpha1/connectionpolicies?limit=500", call{"list", "connectionpolicies.policy.sallyport.dev"}},
		{http.MethodGet, "/api/v1/namespaces/a/secrets/s", call{"get", "secrets"}},
		{http.MethodGet, "/api/v1/namespaces/a", call{"get", "namespaces"}},
		{http.MethodPut, "/api/v1/namespaces/a/status", call{"update", "namespaces/status"}},
		{http.MethodPost, "/apis/events.k8s.io/v1/namespaces/a/events", call{"create", "events.events.k8s.io"}},
		{http.MethodPost, "/api/v1/namespaces/a/serviceaccounts/w/token", call{"create", "serviceaccounts/token"}},
		{http.MethodPost, "/apis/authentication.k8s.io/v1/tokenreviews", call{"create", "tokenreviews.authentication.k8s.io"}},
		{http.MethodDelete, "/api/v1/namespaces/a/pods", call{"deletecollection", "pods"}},
		{http.MethodGet, "/apis", call{"get", "/apis"}},
		{http.MethodGet, "/version", call{"get", "/version"}},
	} {
		r, err := http.NewRequest(tc.method, "https://127.0.0.1:6443"+tc.url, nil)
		if err != nil {
			t.Fatal(err)
		}
		if got := classify(r); got != tc.want {
			t.Errorf("%s %s: got %+v, want %+v", tc.method, tc.url, got, tc.want)
		}
	}
}
