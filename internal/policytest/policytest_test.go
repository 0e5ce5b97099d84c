package policytest

import (
	"bytes"
	"context"
	"encoding/xml"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sallyport/sallyport/internal/credential"
	"github.com/sallyport/sallyport/internal/decision"
)

const passDir = "../../cmd/sallyport/testdata/test/pass"

func writeSuite(t *testing.T, body string) string {
	t.Helper()
	f := filepath.Join(t.TempDir(), "x_test.yaml")
	if err := os.WriteFile(f, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return f
}

const header = `apiVersion: test.sallyport.dev/v1alpha1
kind: PolicyTestSuite
policies: [p]
now: "2026-03-02T10:30:00Z"
`

func TestLoadSuiteProblems(t *testing.T) {
	for _, tc := range []struct {
		name, body string
		want       []string
	}{
		{"unknown top-level field", header + "casez: []\n", []string{":5: casez: unknown field in the suite"}},
		{"unknown nested field", header + `connections:
  a: {identity: "system:serviceaccount:ns:sa", audience: x, lifetim: 1m}
`, []string{":6: lifetim: unknown field in a connection"}},
		{"wrong kind", strings.Replace(header, "PolicyTestSuite", "Suite", 1) + "cases: []\n", []string{":2: apiVersion must be"}},
		{"unknown references", header + `connections:
  a: {identity: "system:serviceaccount:ns:sa", audience: x}
requests:
  r: {connection: b, action: GET, resource: {namespace: n, service: s}}
cases:
  - {name: one, request: q, expect: {allowed: true}}
  - {name: two, request: r, connection: c, expect: {allowed: true}}
  - {name: two, request: r, expect: {allowed: true}}
`, []string{
			`:8: requests.r.connection: unknown connection "b"`,
			`:10: cases[0].request: unknown request "q"`,
			`:11: cases[1].connection: unknown connection "c"`,
			`:12: cases[2].name: case "two" is defined twice`,
		}},
		{"times", header + `connections:
  a: {identity: "system:serviceaccount:ns:sa", audience: x, age: 1m, issuedAt: "2026-01-01T00:00:00Z", lifetime: -5m}
requests:
  r: {action: GET}
cases:
  - {name: one, request: r, now: yesterday, expect: {connection: {rule: x}}}
`, []string{
			"connections.a.age: give issuedAt or age, not both",
			`connections.a.lifetime: "-5m" is not a non-negative Go duration`,
			`cases[0].now: "yesterday" is not an RFC 3339 time`,
			"cases[0].expect.connection.rule: the connection gate has no rule",
		}},
		{"two documents", header + "cases: []\n---\nfoo: bar\n", []string{"more than one YAML document"}},
		{"not YAML", "{[", []string{"not a YAML suite"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := writeSuite(t, tc.body)
			_, err := LoadSuite(f)
			var se *SuiteError
			if !errors.As(err, &se) {
				t.Fatalf("error %v, want a *SuiteError", err)
			}
			msg := err.Error()
			for _, w := range tc.want {
				if !strings.Contains(msg, w) {
					t.Errorf("error does not contain %q:\n%s", w, msg)
				}
			}
			for _, p := range se.Problems {
				if p.File != f {
					t.Errorf("problem %v names file %q, not %q", p, p.File, f)
				}
			}
		})
	}
}

func TestLoadSuite(t *testing.T) {
	s, err := LoadSuite(filepath.Join(passDir, "ledger_test.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if s.Name != "ledger" || len(s.Cases) != 13 || len(s.Connections) != 5 || s.Now != time.Date(2026, 3, 2, 10, 30, 0, 0, time.UTC) {
		t.Errorf("suite %s: %d cases, %d connections, now %s", s.Name, len(s.Cases), len(s.Connections), s.Now)
	}
	if want := filepath.Join(passDir, "policies"); len(s.Policies) != 1 || s.Policies[0] != want {
		t.Errorf("policies %v, want [%s]", s.Policies, want)
	}
	w := s.Connections["billing-worker"]
	iat, exp := w.Times(s.Now)
	if iat != s.Now.Add(-time.Minute) || exp != iat.Add(15*time.Minute) || w.Namespace != "billing" || w.ServiceAccount != "billing-worker" || w.CredentialID != "JTI=billing-worker" {
		t.Errorf("fixture %+v: iat %s exp %s", w, iat, exp)
	}
	if d := s.Connections["intruder"]; d.Lifetime != DefaultLifetime {
		t.Errorf("default lifetime %s", d.Lifetime)
	}
	if c := s.Cases[8]; !c.NoConnection || s.CaseConnection(c) != nil {
		t.Errorf("case %q should present no credential", c.Name)
	}
}

func TestFind(t *testing.T) {
	files, err := Find("../../cmd/sallyport/testdata/test")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		if !IsSuiteFile(filepath.Base(f)) {
			t.Errorf("%s is not a suite file", f)
		}
	}
	if len(files) < 5 {
		t.Errorf("found %v", files)
	}
	if _, err := Find("../../cmd/sallyport/testdata/decide"); err == nil || !strings.Contains(err.Error(), "no suite files") {
		t.Errorf("a directory without suites: %v", err)
	}
	// A file is a suite whatever its name.
	if files, err := Find(filepath.Join(passDir, "policies", "ledger.yaml")); err != nil || len(files) != 1 {
		t.Errorf("Find(file) = %v, %v", files, err)
	}
}

func TestAuthenticator(t *testing.T) {
	now := time.Date(2026, 3, 2, 10, 30, 0, 0, time.UTC)
	c := &Connection{Name: "w", Identity: "system:serviceaccount:billing:worker", Namespace: "billing", ServiceAccount: "worker",
		Audience: "aud-1", Age: time.Minute, Lifetime: 10 * time.Minute, CredentialID: "JTI=w", Pod: "worker-1"}
	tok := c.Token(now)
	ctx := context.Background()

	strict := NewAuthenticator(false)
	if _, err := strict.Authenticate(ctx, tok, "aud-1"); !errors.Is(err, credential.ErrInvalid) {
		t.Errorf("unregistered token: %v", err)
	}
	strict.Register(tok, c.Review(now))
	rev, err := strict.Authenticate(ctx, tok, "aud-1")
	if err != nil || rev.Identity != c.Identity || rev.IssuedAt != now.Add(-time.Minute) || rev.ExpiresAt != now.Add(9*time.Minute) {
		t.Errorf("registered token: %+v, %v", rev, err)
	}
	if _, err := strict.Authenticate(ctx, tok, "aud-2"); !errors.Is(err, credential.ErrInvalid) {
		t.Errorf("another audience: %v", err)
	}

	// The fixture's token read as an unverified JWT says what the fixture
	// says.
	loose := NewAuthenticator(true)
	rev, err = loose.Authenticate(ctx, tok, "aud-1")
	want := c.Review(now)
	if err != nil || *rev != *want {
		t.Errorf("unverified review\n got %+v, %v\nwant %+v", rev, err, want)
	}
	if _, err := loose.Authenticate(ctx, "not-a-jwt", "aud-1"); !errors.Is(err, credential.ErrInvalid) {
		t.Errorf("not a JWT: %v", err)
	}
}

func TestRunnerAndReports(t *testing.T) {
	s, err := LoadSuite(filepath.Join(passDir, "ledger_test.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	// Break one expectation, to see it reported.
	s.Cases[0].Expect.Resource.Rule = ptr("nope")
	r, err := NewRunner(Options{Trace: true})
	if err != nil {
		t.Fatal(err)
	}
	p, err := r.Prepare(context.Background(), s)
	if err != nil {
		t.Fatal(err)
	}
	res := r.Run(context.Background(), p)
	if passed, failed := res.Counts(); passed != 12 || failed != 1 {
		t.Fatalf("%d passed, %d failed", passed, failed)
	}
	c := res.Cases[0]
	if c.Trace == nil || len(c.Mismatches) != 1 || c.Mismatches[0].String() != `resource gate: rule: want "nope", got "read-entries"` {
		t.Errorf("case result %+v", c)
	}

	var text bytes.Buffer
	WriteCase(&text, s, c, false)
	WriteSummary(&text, []*SuiteResult{res})
	for _, w := range []string{"--- FAIL: ledger/reads an entry", `want "nope"`, "trace:", "12 passed, 1 failed"} {
		if !strings.Contains(text.String(), w) {
			t.Errorf("report lacks %q:\n%s", w, text.String())
		}
	}
	var junit bytes.Buffer
	if err := WriteJUnit(&junit, []*SuiteResult{res}); err != nil {
		t.Fatal(err)
	}
	var parsed struct {
		Tests    int `xml:"tests,attr"`
		Failures int `xml:"failures,attr"`
	}
	if err := xml.Unmarshal(junit.Bytes(), &parsed); err != nil || parsed.Tests != 13 || parsed.Failures != 1 {
		t.Errorf("JUnit %+v, %v", parsed, err)
	}
}

func TestCompare(t *testing.T) {
	d := &decision.Decision{Allowed: false,
		Connection: decision.Connection{Allowed: true, Reason: "Matched", Policy: "a/b", Identity: "id"},
		Resource:   decision.Resource{Reason: "NoRuleMatched", Policy: "c/d"}}
	if m := Compare(Expect{}, d); m != nil {
		t.Errorf("nothing expected, got %v", m)
	}
	m := Compare(Expect{Allowed: ptr(true), Resource: GateExpect{Rule: ptr(""), Reason: ptr("Matched")}, Connection: GateExpect{Identity: ptr("id")}}, d)
	want := []string{"decision: allowed: want true, got false", `resource gate: reason: want "Matched", got "NoRuleMatched"`}
	if len(m) != len(want) {
		t.Fatalf("mismatches %v, want %v", m, want)
	}
	for i := range m {
		if m[i].String() != want[i] {
			t.Errorf("mismatch %d: %s, want %s", i, m[i], want[i])
		}
	}
}

func ptr[T any](v T) *T { return &v }
