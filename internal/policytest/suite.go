// Package policytest runs sallyport policy test suites offline: YAML files
// that name policy files, connection fixtures, requests and the answers
// expected of them. It decides with the decision engine the cluster runs
// (internal/decision); only the authenticator differs, answering for the
// fixtures instead of the API server. See docs/policy-testing.md.
package policytest

import (
	"bytes"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	yaml "go.yaml.in/yaml/v3"

	"github.com/sallyport/sallyport/internal/decision"
)

// APIVersion and Kind identify a suite file, so that neither a policy
// loader nor a person mistakes one for the other.
const (
	APIVersion = "test.sallyport.dev/v1alpha1"
	Kind       = "PolicyTestSuite"
)

// DefaultLifetime is the lifetime of a fixture's token when the fixture
// gives neither expiresAt nor lifetime: the API server's TokenRequest
// minimum, so the same fixture can be minted for real.
const DefaultLifetime = 10 * time.Minute

// Suite is one loaded, checked suite file.
type Suite struct {
	// File is the suite's path as found.
	File string
	// Name is metadata.name, or the file name without its suffix.
	Name        string
	Description string
	// Policies are the policy files and directories, resolved against the
	// suite file's directory.
	Policies []string
	// Now is the suite's fixed clock.
	Now time.Time
	// Connections and Requests are the named fixtures.
	Connections map[string]*Connection
	Requests    map[string]*Request
	// Cases are the cases in file order.
	Cases []*Case
}

// Connection is a connection fixture: the credential a request presents,
// described by what a TokenReview would say about it.
type Connection struct {
	Name string
	// Identity is system:serviceaccount:<namespace>:<name>; Namespace and
	// ServiceAccount split it.
	Identity       string
	Namespace      string
	ServiceAccount string
	// Audience is the token's one audience.
	Audience string
	// IssuedAt is fixed, or, when zero, Age before the case's clock.
	IssuedAt time.Time
	Age      time.Duration
	// ExpiresAt is fixed, or, when zero, Lifetime after the issue time.
	ExpiresAt time.Time
	Lifetime  time.Duration
	// CredentialID is what the review reports ("JTI=…"); default
	// "JTI=<fixture name>".
	CredentialID string
	// Pod is the pod the token is bound to, if any.
	Pod string
	// Line is where the fixture is written.
	Line int
}

// Times returns the token's issue and expiry times at the clock now.
func (c *Connection) Times(now time.Time) (iat, exp time.Time) {
	iat = c.IssuedAt
	if iat.IsZero() {
		iat = now.Add(-c.Age)
	}
	exp = c.ExpiresAt
	if exp.IsZero() {
		exp = iat.Add(c.Lifetime)
	}
	return iat, exp
}

// Request is a named request: a decision.Request without its token, which
// comes from the connection fixture it names.
type Request struct {
	Name string
	// Connection names the fixture whose token the request presents;
	// empty means no credential.
	Connection string
	Target     decision.Target
	Action     string
	Scopes     []string
	Attributes map[string]string
	Line       int
}

// Case is one row of the suite's table: a request, optionally with another
// connection or clock, and what is expected of its decision.
type Case struct {
	Name string
	// Request names the request.
	Request string
	// Connection, when set, replaces the request's connection; NoConnection
	// sends the request without a credential.
	Connection   string
	NoConnection bool
	// Now is the case's clock; zero means the suite's.
	Now    time.Time
	Expect Expect
	Line   int
}

// Expect is what a case expects. Only what is given is compared.
type Expect struct {
	Allowed    *bool
	Connection GateExpect
	Resource   GateExpect
}

// GateExpect is what a case expects of one gate. A nil field is not
// compared; a pointer to "" expects the field to be empty.
type GateExpect struct {
	Allowed  *bool
	Reason   *string
	Policy   *string
	Rule     *string
	Identity *string
}

// The file format, decoded strictly: an unknown field is an error.
type (
	rawSuite struct {
		APIVersion  string                    `yaml:"apiVersion"`
		Kind        string                    `yaml:"kind"`
		Metadata    rawMetadata               `yaml:"metadata"`
		Policies    []string                  `yaml:"policies"`
		Now         string                    `yaml:"now"`
		Connections map[string]*rawConnection `yaml:"connections"`
		Requests    map[string]*rawRequest    `yaml:"requests"`
		Cases       []*rawCase                `yaml:"cases"`
	}
	rawMetadata struct {
		Name        string `yaml:"name"`
		Description string `yaml:"description"`
	}
	rawConnection struct {
		Identity     string `yaml:"identity"`
		Audience     string `yaml:"audience"`
		IssuedAt     string `yaml:"issuedAt"`
		Age          string `yaml:"age"`
		ExpiresAt    string `yaml:"expiresAt"`
		Lifetime     string `yaml:"lifetime"`
		CredentialID string `yaml:"credentialID"`
		Pod          string `yaml:"pod"`
	}
	rawRequest struct {
		Connection string            `yaml:"connection"`
		Resource   rawResource       `yaml:"resource"`
		Action     string            `yaml:"action"`
		Scopes     []string          `yaml:"scopes"`
		Attributes map[string]string `yaml:"attributes"`
	}
	rawResource struct {
		Namespace string `yaml:"namespace"`
		Service   string `yaml:"service"`
		Host      string `yaml:"host"`
		Name      string `yaml:"name"`
	}
	rawCase struct {
		Name       string    `yaml:"name"`
		Request    string    `yaml:"request"`
		Connection *string   `yaml:"connection"`
		Now        string    `yaml:"now"`
		Expect     rawExpect `yaml:"expect"`
	}
	rawExpect struct {
		Allowed    *bool         `yaml:"allowed"`
		Connection rawGateExpect `yaml:"connection"`
		Resource   rawGateExpect `yaml:"resource"`
	}
	rawGateExpect struct {
		Allowed  *bool   `yaml:"allowed"`
		Reason   *string `yaml:"reason"`
		Policy   *string `yaml:"policy"`
		Rule     *string `yaml:"rule"`
		Identity *string `yaml:"identity"`
	}
)

// friendly names the raw types in strict-decoding errors.
var friendly = map[string]string{
	"policytest.rawSuite":      "the suite",
	"policytest.rawMetadata":   "metadata",
	"policytest.rawConnection": "a connection",
	"policytest.rawRequest":    "a request",
	"policytest.rawResource":   "a request's resource",
	"policytest.rawCase":       "a case",
	"policytest.rawExpect":     "a case's expect",
	"policytest.rawGateExpect": "an expected gate",
}

// Problem is one thing wrong with a suite file.
type Problem struct {
	File string
	// Line is 1-based; zero when the problem is about the whole file.
	Line int
	// Field is the field path, such as cases[2].request.
	Field   string
	Message string
}

// String renders file:line: field: message.
func (p Problem) String() string {
	var b strings.Builder
	b.WriteString(p.File)
	if p.Line > 0 {
		b.WriteString(":" + strconv.Itoa(p.Line))
	}
	b.WriteString(": ")
	if p.Field != "" {
		b.WriteString(p.Field + ": ")
	}
	b.WriteString(p.Message)
	return b.String()
}

// SuiteError lists every problem of one suite file.
type SuiteError struct {
	Problems []Problem
}

// Error lists the problems, one per line.
func (e *SuiteError) Error() string {
	lines := make([]string, len(e.Problems))
	for i, p := range e.Problems {
		lines[i] = p.String()
	}
	return strings.Join(lines, "\n")
}

// identityRE is a ServiceAccount user name; fixtures must be
// ServiceAccounts, as every identity a ConnectionPolicy names is.
var identityRE = regexp.MustCompile(`^system:serviceaccount:([a-z0-9]([-a-z0-9]*[a-z0-9])?):([a-z0-9]([-a-z0-9.]*[a-z0-9])?)$`)

// typeErrorRE matches yaml.v3's strict-decoding messages.
var typeErrorRE = regexp.MustCompile(`^line (\d+): (.*)$`)

// fieldNotFoundRE matches an unknown field.
var fieldNotFoundRE = regexp.MustCompile(`^field (\S+) not found in type (\S+)$`)

// LoadSuite reads and checks one suite file. Its error is a *SuiteError
// naming file, line and field of every problem, or an I/O error.
func LoadSuite(file string) (*Suite, error) {
	raw, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("read suite: %w", err)
	}
	l := &suiteLoader{file: file}
	s := l.load(raw)
	if len(l.problems) > 0 {
		return nil, &SuiteError{Problems: l.problems}
	}
	return s, nil
}

type suiteLoader struct {
	file     string
	root     *yaml.Node
	problems []Problem
}

func (l *suiteLoader) problem(line int, field, format string, args ...any) {
	l.problems = append(l.problems, Problem{File: l.file, Line: line, Field: field, Message: fmt.Sprintf(format, args...)})
}

func (l *suiteLoader) load(data []byte) *Suite {
	var rs rawSuite
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&rs); err != nil {
		l.decodeError(err)
		return nil
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); err == nil {
		l.problem(extra.Line, "", "more than one YAML document; a suite file holds one suite")
		return nil
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err == nil && len(doc.Content) == 1 {
		l.root = doc.Content[0]
	}

	if rs.APIVersion != APIVersion || rs.Kind != Kind {
		l.problem(l.line("kind"), "", "apiVersion must be %s and kind %s, got %q and %q", APIVersion, Kind, rs.APIVersion, rs.Kind)
	}
	s := &Suite{
		File:        l.file,
		Name:        rs.Metadata.Name,
		Description: rs.Metadata.Description,
		Connections: map[string]*Connection{},
		Requests:    map[string]*Request{},
	}
	if s.Name == "" {
		s.Name = SuiteName(l.file)
	}
	if len(rs.Policies) == 0 {
		l.problem(l.line("policies"), "policies", "at least one policy file or directory is required")
	}
	dir := filepath.Dir(l.file)
	for i, p := range rs.Policies {
		if p == "" {
			l.problem(l.line("policies", i), fmt.Sprintf("policies[%d]", i), "empty path")
			continue
		}
		if !filepath.IsAbs(p) {
			p = filepath.Join(dir, p)
		}
		s.Policies = append(s.Policies, p)
	}
	if rs.Now == "" {
		l.problem(l.line("now"), "now", "required: the suite's fixed clock, RFC 3339 (2026-03-02T10:30:00Z)")
	} else {
		s.Now = l.time(rs.Now, "now", l.line("now"))
	}
	for _, name := range slices.Sorted(maps.Keys(rs.Connections)) {
		s.Connections[name] = l.connection(name, rs.Connections[name])
	}
	for _, name := range slices.Sorted(maps.Keys(rs.Requests)) {
		s.Requests[name] = l.request(name, rs.Requests[name], s)
	}
	if len(rs.Cases) == 0 {
		l.problem(l.line("cases"), "cases", "at least one case is required")
	}
	seen := map[string]bool{}
	for i, rc := range rs.Cases {
		c := l.testCase(i, rc, s)
		if c == nil {
			continue
		}
		if seen[c.Name] {
			l.problem(c.Line, fmt.Sprintf("cases[%d].name", i), "case %q is defined twice", c.Name)
		}
		seen[c.Name] = true
		s.Cases = append(s.Cases, c)
	}
	return s
}

// decodeError turns yaml.v3's errors into problems with lines.
func (l *suiteLoader) decodeError(err error) {
	var te *yaml.TypeError
	if !errors.As(err, &te) {
		l.problem(0, "", "not a YAML suite: %s", strings.TrimPrefix(err.Error(), "yaml: "))
		return
	}
	for _, msg := range te.Errors {
		line := 0
		if m := typeErrorRE.FindStringSubmatch(msg); m != nil {
			line, _ = strconv.Atoi(m[1])
			msg = m[2]
		}
		if m := fieldNotFoundRE.FindStringSubmatch(msg); m != nil {
			where := friendly[m[2]]
			if where == "" {
				where = m[2]
			}
			l.problem(line, m[1], "unknown field in %s", where)
			continue
		}
		for raw, nice := range friendly {
			msg = strings.ReplaceAll(msg, raw, nice)
		}
		l.problem(line, "", "%s", msg)
	}
}

func (l *suiteLoader) connection(name string, rc *rawConnection) *Connection {
	line := l.line("connections", name)
	field := "connections." + name
	c := &Connection{Name: name, Line: line, Lifetime: DefaultLifetime}
	if rc == nil {
		l.problem(line, field, "empty fixture; identity and audience are required")
		return c
	}
	c.Identity, c.Audience, c.CredentialID, c.Pod = rc.Identity, rc.Audience, rc.CredentialID, rc.Pod
	if m := identityRE.FindStringSubmatch(rc.Identity); m != nil {
		c.Namespace, c.ServiceAccount = m[1], m[3]
	} else {
		l.problem(l.line("connections", name, "identity"), field+".identity", "%q is not a ServiceAccount identity, system:serviceaccount:<namespace>:<name>", rc.Identity)
	}
	if rc.Audience == "" {
		l.problem(line, field+".audience", "required: the token's one audience (a ConnectionPolicy's audience, sallyport.dev/<namespace>/<name> by default)")
	}
	if c.CredentialID == "" {
		c.CredentialID = "JTI=" + name
	}
	switch {
	case rc.IssuedAt != "" && rc.Age != "":
		l.problem(l.line("connections", name, "age"), field+".age", "give issuedAt or age, not both")
	case rc.IssuedAt != "":
		c.IssuedAt = l.time(rc.IssuedAt, field+".issuedAt", l.line("connections", name, "issuedAt"))
	case rc.Age != "":
		c.Age = l.duration(rc.Age, field+".age", l.line("connections", name, "age"))
	}
	switch {
	case rc.ExpiresAt != "" && rc.Lifetime != "":
		l.problem(l.line("connections", name, "lifetime"), field+".lifetime", "give expiresAt or lifetime, not both")
	case rc.ExpiresAt != "":
		c.ExpiresAt = l.time(rc.ExpiresAt, field+".expiresAt", l.line("connections", name, "expiresAt"))
	case rc.Lifetime != "":
		c.Lifetime = l.duration(rc.Lifetime, field+".lifetime", l.line("connections", name, "lifetime"))
		if c.Lifetime <= 0 {
			l.problem(l.line("connections", name, "lifetime"), field+".lifetime", "must be positive")
		}
	}
	return c
}

func (l *suiteLoader) request(name string, rr *rawRequest, s *Suite) *Request {
	line := l.line("requests", name)
	field := "requests." + name
	r := &Request{Name: name, Line: line}
	if rr == nil {
		l.problem(line, field, "empty request; action and resource are required")
		return r
	}
	r.Connection, r.Action, r.Scopes, r.Attributes = rr.Connection, rr.Action, rr.Scopes, rr.Attributes
	r.Target = decision.Target{Namespace: rr.Resource.Namespace, Service: rr.Resource.Service, Host: rr.Resource.Host, Name: rr.Resource.Name}
	if r.Connection != "" {
		if _, ok := s.Connections[r.Connection]; !ok {
			l.problem(l.line("requests", name, "connection"), field+".connection", "unknown connection %q", r.Connection)
		}
	}
	// The checks the decision API makes, so a suite cannot test a request
	// no server would evaluate.
	if err := decision.Validate(&decision.Request{Token: "", Target: r.Target, Action: r.Action, Scopes: r.Scopes, Attributes: r.Attributes}); err != nil {
		l.problem(line, field, "%v", err)
	}
	return r
}

func (l *suiteLoader) testCase(i int, rc *rawCase, s *Suite) *Case {
	line := l.line("cases", i)
	field := fmt.Sprintf("cases[%d]", i)
	if rc == nil {
		l.problem(line, field, "empty case")
		return nil
	}
	c := &Case{Name: rc.Name, Request: rc.Request, Line: line}
	if c.Name == "" {
		l.problem(line, field+".name", "required")
		c.Name = fmt.Sprintf("#%d", i+1)
	} else if strings.ContainsAny(c.Name, "/\n") {
		l.problem(line, field+".name", "%q: a case name may not contain / or a line break (--run matches suite/case)", c.Name)
	}
	if _, ok := s.Requests[c.Request]; !ok {
		if c.Request == "" {
			l.problem(line, field+".request", "required: the name of a request")
		} else {
			l.problem(l.line("cases", i, "request"), field+".request", "unknown request %q", c.Request)
		}
	}
	if rc.Connection != nil {
		switch c.Connection = *rc.Connection; {
		case c.Connection == "":
			c.NoConnection = true
		case s.Connections[c.Connection] == nil:
			l.problem(l.line("cases", i, "connection"), field+".connection", "unknown connection %q", c.Connection)
		}
	}
	if rc.Now != "" {
		c.Now = l.time(rc.Now, field+".now", l.line("cases", i, "now"))
	}
	c.Expect = Expect{
		Allowed:    rc.Expect.Allowed,
		Connection: GateExpect(rc.Expect.Connection),
		Resource:   GateExpect(rc.Expect.Resource),
	}
	if c.Expect.Connection.Rule != nil {
		l.problem(l.line("cases", i, "expect", "connection", "rule"), field+".expect.connection.rule", "the connection gate has no rule")
	}
	if c.Expect.Resource.Identity != nil {
		l.problem(l.line("cases", i, "expect", "resource", "identity"), field+".expect.resource.identity", "the resource gate has no identity; expect it of the connection")
	}
	if c.Expect == (Expect{}) {
		l.problem(line, field+".expect", "required: at least one expected field")
	}
	return c
}

func (l *suiteLoader) time(v, field string, line int) time.Time {
	t, err := time.Parse(time.RFC3339, v)
	if err != nil {
		l.problem(line, field, "%q is not an RFC 3339 time (2026-03-02T10:30:00Z)", v)
	}
	return t
}

func (l *suiteLoader) duration(v, field string, line int) time.Duration {
	d, err := time.ParseDuration(v)
	if err != nil || d < 0 {
		l.problem(line, field, "%q is not a non-negative Go duration (15m, 1h30m)", v)
	}
	return d
}

// line returns the line of the node at path (mapping keys and sequence
// indexes) in the suite, or of its closest ancestor that is written.
func (l *suiteLoader) line(path ...any) int {
	n := l.root
	if n == nil {
		return 0
	}
	line := n.Line
	for _, p := range path {
		var next *yaml.Node
		switch p := p.(type) {
		case string:
			if n.Kind == yaml.MappingNode {
				for i := 0; i+1 < len(n.Content); i += 2 {
					if n.Content[i].Value == p {
						line = n.Content[i].Line
						next = n.Content[i+1]
						break
					}
				}
			}
		case int:
			if n.Kind == yaml.SequenceNode && p < len(n.Content) {
				next = n.Content[p]
				line = next.Line
			}
		}
		if next == nil {
			return line
		}
		n = next
	}
	return line
}

// SuiteName is the name of a suite without metadata.name: its file name
// without the suite suffix.
func SuiteName(file string) string {
	base := filepath.Base(file)
	for _, suf := range Suffixes {
		if strings.HasSuffix(base, suf) {
			return strings.TrimSuffix(base, suf)
		}
	}
	return strings.TrimSuffix(base, filepath.Ext(base))
}
