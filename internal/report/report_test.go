package report

import (
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/sallyport/sallyport/api/v1alpha1"
	"github.com/sallyport/sallyport/internal/decision"
	"github.com/sallyport/sallyport/internal/decisionlog"
	"github.com/sallyport/sallyport/internal/loader"
	"github.com/sallyport/sallyport/internal/policytest"
	"github.com/sallyport/sallyport/internal/store"
)

const policies = `apiVersion: policy.sallyport.dev/v1alpha1
kind: ConnectionPolicy
metadata: {name: to-ledger, namespace: billing}
spec:
  serviceAccountName: worker
  reach:
    - {class: ledger, scopes: [ledger.read, ledger.write]}
    - {class: audit, scopes: [audit.read]}
---
apiVersion: policy.sallyport.dev/v1alpha1
kind: ConnectionPolicy
metadata: {name: to-reports, namespace: billing}
spec:
  serviceAccountName: reporter
  reach:
    - {class: ledger, scopes: [ledger.read]}
---
apiVersion: policy.sallyport.dev/v1alpha1
kind: ResourcePolicy
metadata: {name: ledger-api, namespace: ledger}
spec:
  service: ledger-api
  class: ledger
  classification: internal
  rules:
    - {name: no-deletes, effect: Deny, actions: [DELETE], resources: ["/**"]}
    - {name: no-admin, effect: Deny, actions: [GET], resources: ["/admin/**"]}
    - name: read
      effect: Allow
      actions: [GET]
      resources: ["/entries/*"]
      scopes: [ledger.read]
      connections: [{namespace: billing, name: to-ledger}, {namespace: billing, name: to-reports}]
    - name: write
      effect: Allow
      actions: [POST]
      resources: ["/entries"]
      scopes: [ledger.write]
      connections: [{namespace: billing, name: to-ledger}]
---
apiVersion: policy.sallyport.dev/v1alpha1
kind: ResourcePolicy
metadata: {name: audit-api, namespace: audit}
spec:
  service: audit-api
  class: audit
  classification: internal
  rules:
    - name: read
      effect: Allow
      actions: [GET]
      resources: ["/**"]
      scopes: [audit.read]
      connections: [{namespace: billing, name: to-ledger}]
`

// The report on a scripted traffic pattern names exactly the grants it
// never exercised: the traffic goes through the real engine and the real
// decision log, and the report reads the log back.
func TestReportOnScriptedTraffic(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "policies.yaml"), []byte(policies), 0o600); err != nil {
		t.Fatal(err)
	}
	set, err := loader.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	st := store.New()
	st.Publish(set.Snapshot, true)
	now := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	clock := now
	engine := decision.NewEngine(st, policytest.NewAuthenticator(true), decision.Options{Clock: func() time.Time { return clock }})
	var logBuf bytes.Buffer
	dlog := decisionlog.New(&logBuf, decisionlog.Options{})

	tok := token("billing", "worker", "sallyport.dev/billing/to-ledger", now)
	script := []struct {
		action, name string
		scopes       []string
		times        int
	}{
		{"GET", "/entries/1", []string{"ledger.read"}, 3},
		{"DELETE", "/entries/1", nil, 1},
		{"GET", "/entries/1", []string{"ledger.write"}, 1}, // denied by no rule: not a use of the read rule
	}
	for _, s := range script {
		for range s.times {
			req := &decision.Request{Token: tok, Action: s.action, Scopes: s.scopes,
				Target: decision.Target{Namespace: "ledger", Service: "ledger-api", Name: s.name}}
			d := engine.Decide(context.Background(), req)
			if err := dlog.Log(&decisionlog.Entry{Decision: d, Request: req, Enforcement: "Enforce", Endpoint: "decide"}); err != nil {
				t.Fatal(err)
			}
			clock = clock.Add(time.Minute)
		}
	}
	if err := dlog.Close(); err != nil {
		t.Fatal(err)
	}

	u := NewUsage()
	classOf := ClassesOf(set)
	if err := u.Read(&logBuf, "decisions.log", now.Add(-time.Hour), classOf); err != nil {
		t.Fatal(err)
	}
	r := Build(set.ConnectionPolicies, set.ResourcePolicies, u)
	if r.Decisions != 5 {
		t.Errorf("%d decisions read, want 5", r.Decisions)
	}

	byConn := map[string]ConnectionReport{}
	for _, c := range r.Connections {
		byConn[c.Policy] = c
	}
	check := func(what string, got, want any) {
		t.Helper()
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s = %v, want %v", what, got, want)
		}
	}
	check("to-ledger unused reach", byConn["billing/to-ledger"].UnusedReach, []string{"audit"})
	check("to-ledger unused scopes", byConn["billing/to-ledger"].UnusedScopes, map[string][]string{"ledger": {"ledger.write"}})
	check("to-ledger suggested reach", byConn["billing/to-ledger"].SuggestedReach,
		[]v1alpha1.Reach{{Class: "ledger", Scopes: []v1alpha1.Scope{"ledger.read"}, MaxClassification: v1alpha1.ClassificationInternal}})
	check("to-reports unused reach", byConn["billing/to-reports"].UnusedReach, []string{"ledger"})

	byRes := map[string]ResourceReport{}
	for _, rr := range r.Resources {
		byRes[rr.Policy] = rr
	}
	check("ledger-api unused Allow rules", byRes["ledger/ledger-api"].UnusedAllowRules, []string{"write"})
	check("ledger-api unused Deny rules", byRes["ledger/ledger-api"].UnusedDenyRules, []string{"no-admin"})
	check("ledger-api unused connections", byRes["ledger/ledger-api"].UnusedConnections, map[string][]string{"read": {"billing/to-reports"}})
	var kept []string
	for _, rule := range byRes["ledger/ledger-api"].SuggestedRules {
		kept = append(kept, rule.Name)
	}
	check("ledger-api suggested rules", kept, []string{"no-deletes", "no-admin", "read"})
	check("audit-api unused Allow rules", byRes["audit/audit-api"].UnusedAllowRules, []string{"read"})

	var text bytes.Buffer
	r.WriteText(&text)
	for _, want := range []string{
		`ConnectionPolicy billing/to-ledger: reach "audit" was never used`,
		`ResourcePolicy ledger/ledger-api: Allow rule "read": connections that never came: billing/to-reports`,
		"6 unused grants.",
	} {
		if !strings.Contains(text.String(), want) {
			t.Errorf("text report lacks %q:\n%s", want, text.String())
		}
	}
}

// token is an unsigned JWT of a ServiceAccount for an audience; offline
// its claims are taken as given.
func token(ns, sa, aud string, now time.Time) string {
	enc := base64.RawURLEncoding.EncodeToString
	claims := fmt.Sprintf(`{"aud":[%q],"sub":"system:serviceaccount:%s:%s","iat":%d,"exp":%d,"jti":"j"}`,
		aud, ns, sa, now.Add(-time.Minute).Unix(), now.Add(10*time.Minute).Unix())
	return enc([]byte(`{"alg":"none"}`)) + "." + enc([]byte(claims)) + ".c2ln"
}
